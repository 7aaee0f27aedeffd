"""Agreement and estimation statistics for the monitoring layer. Pure functions on plain numbers.

- Cohen's κ (optionally linear or quadratic weights for ordinal scales): scikit-learn's implementation.
- Krippendorff's α (nominal, ordinal, interval; missing ratings allowed): the `krippendorff` package.
- The mean of a quality label by prediction-powered inference (Angelopoulos et al., Science 2023) and its
  power-tuned form PPI++ (Angelopoulos, Duchi & Zrnic 2023): a judge's labels on every conversation,
  corrected by the human-labelled sample. Written here on numpy (the `ppi-python` package pulls numba, a
  downloader and a top-level `tests` package in); tests check it against
  values from `ppi_py.ppi_mean_ci` to 1e-9.
- How many reviews a proportion needs for a margin at a confidence (normal approximation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import norm

KappaWeights = Literal["linear", "quadratic"] | None
AlphaLevel = Literal["nominal", "ordinal", "interval", "ratio"]


class InsufficientDataError(ValueError):
    """Too few values for the statistic to mean anything: reported as such, never as a number."""


def cohen_kappa(a: Sequence[object], b: Sequence[object], weights: KappaWeights = None) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length ({len(a)} vs {len(b)})")
    if len(a) < 2:
        raise InsufficientDataError("kappa needs at least 2 pairs of ratings")
    if len(set(a) | set(b)) < 2:
        raise InsufficientDataError("kappa is undefined when every rating is the same category")
    return float(cohen_kappa_score(list(a), list(b), weights=weights))


def krippendorff_alpha(data: Sequence[Sequence[float | None]], level: AlphaLevel = "nominal") -> float:
    """`data`: one row per coder, one column per item, None where a coder did not rate the item."""
    import krippendorff

    rows = [[math.nan if v is None else float(v) for v in row] for row in data]
    if len(rows) < 2 or len({len(r) for r in rows}) != 1:
        raise ValueError("alpha needs at least 2 coders, each with a value (or null) for every item")
    matrix = np.array(rows, dtype=float)
    pairable = int((np.sum(~np.isnan(matrix), axis=0) >= 2).sum())
    if pairable < 2:
        raise InsufficientDataError("alpha needs at least 2 items rated by 2 or more coders")
    if len(set(matrix[~np.isnan(matrix)].tolist())) < 2:
        raise InsufficientDataError("alpha is undefined when every rating is the same value")
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


@dataclass(frozen=True, slots=True)
class MeanEstimate:
    estimate: float
    ci: tuple[float, float]
    human_only_ci: tuple[float, float]  # the classical interval from the human labels alone
    lam: float  # 1: PPI; tuned (PPI++): in [0, 1], 0 ignores the judge


def ppi_mean(
    y: Sequence[float],
    yhat: Sequence[float],
    yhat_unlabeled: Sequence[float],
    *,
    alpha: float = 0.05,
    tuned: bool = False,
) -> MeanEstimate:
    """The mean of `y` (human labels) using a judge's labels: `yhat` on the same items, `yhat_unlabeled` on
    the items no human labelled. Two-sided (1 - alpha) normal intervals."""
    labels, judged, unlabeled = (np.asarray(v, dtype=float) for v in (y, yhat, yhat_unlabeled))
    n, big_n = labels.size, unlabeled.size
    if labels.shape != judged.shape:
        raise ValueError(f"y and yhat must have the same length ({labels.size} vs {judged.size})")
    if n < 2 or big_n < 1:
        raise InsufficientDataError("PPI needs at least 2 human-labelled items and 1 judge-only item")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    lam = _tuned_lambda(labels, judged, unlabeled) if tuned else 1.0
    estimate, half = _ppi(labels, judged, unlabeled, lam, alpha)
    human, human_half = _ppi(labels, judged, unlabeled, 0.0, alpha)
    return MeanEstimate(
        estimate=estimate,
        ci=(estimate - half, estimate + half),
        human_only_ci=(human - human_half, human + human_half),
        lam=lam,
    )


def _ppi(
    labels: np.ndarray, judged: np.ndarray, unlabeled: np.ndarray, lam: float, alpha: float
) -> tuple[float, float]:
    estimate = float(np.mean(lam * unlabeled) + np.mean(labels - lam * judged))
    imputed = np.std(lam * unlabeled) / math.sqrt(unlabeled.size)
    rectifier = np.std(labels - lam * judged) / math.sqrt(labels.size)
    return estimate, float(norm.ppf(1 - alpha / 2) * math.sqrt(imputed**2 + rectifier**2))


def _tuned_lambda(labels: np.ndarray, judged: np.ndarray, unlabeled: np.ndarray) -> float:
    """PPI++'s variance-minimising weight on the judge, clipped to [0, 1]."""
    n, big_n = labels.size, unlabeled.size
    covariance = float(np.mean((labels - labels.mean()) * (judged - judged.mean())))
    variance = float(np.var(np.concatenate([judged, unlabeled]), ddof=1))
    if variance == 0:
        return 0.0  # a judge that always says the same thing carries no information
    return float(np.clip(covariance / ((1 + n / big_n) * variance), 0.0, 1.0))


def review_size(p: float, margin: float, confidence: float = 0.95) -> int:
    """Reviews needed to estimate a proportion near `p` within ±`margin` at `confidence`."""
    if not 0 <= p <= 1:
        raise ValueError("p must be between 0 and 1")
    if not 0 < margin < 1:
        raise ValueError("margin must be between 0 and 1")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    return max(1, math.ceil(z * z * p * (1 - p) / (margin * margin)))
