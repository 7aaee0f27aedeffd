"""Pure functions for measuring and fitting probability calibration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of a reliability diagram: predictions whose confidence fell in [lower, upper)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float


def reliability_bins(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; the last bin includes 1.0. Empty bins are kept with count 0."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hits = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hits.shape:
        raise ValueError(f"confidences and correct differ in length: {conf.shape[0]} != {hits.shape[0]}")
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, n_bins - 1)
    bins: list[ReliabilityBin] = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                mean_confidence=float(conf[members].mean()) if count else 0.0,
                accuracy=float(hits[members].mean()) if count else 0.0,
            )
        )
    return bins


def expected_calibration_error(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over equal-width confidence bins."""
    bins = reliability_bins(confidences, correct, n_bins)
    total = sum(b.count for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b.count * abs(b.accuracy - b.mean_confidence) for b in bins) / total)


def softmax(logits: NDArray[np.float64], temperature: float = 1.0) -> NDArray[np.float64]:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)


def fit_temperature(
    logits: NDArray[np.float64],
    targets: Sequence[int] | NDArray[np.int64],
    bounds: tuple[float, float] = (0.01, 100.0),
) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) (Guo et al. 2017).

    A golden-section search on log T: the NLL is unimodal in T, and one parameter needs no optimiser.
    """
    scores = np.asarray(logits, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    labels = np.asarray(targets, dtype=np.int64)
    if scores.shape[0] == 0:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = scores / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[rows, labels]))

    low, high = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = low + (1 - ratio) * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(np.exp((low + high) / 2.0))
