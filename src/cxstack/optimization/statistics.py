"""Statistics for experiments: planning, checking and analysing an A/B(/n) test from per-arm sums.

Pure functions, dataclasses in and out, no I/O. The store (or a script) gives sufficient statistics per arm
and metric; nothing here needs individual rows, so `cxstack experiment analyze` can feed it straight from
SQL aggregates.

Inputs
------
- `MetricSums(n, sum, sum_squares, covariate=None)`: for a proportion (converted, resolved, passed review)
  each unit contributes 0 or 1, so `sum_squares == sum`; for a mean, the sum of the values and of their
  squares. `covariate` (`CovariateSums`: the pre-period value's sum, sum of squares and sum of products with
  the metric) turns on CUPED for that metric when every arm has it.
- `ArmData(name, units, metrics={"resolved": MetricSums(...)}, weight=0.5)`: `units` is how many units were
  assigned (customers or conversations, whatever the experiment randomises); `weight` its configured
  allocation (the weights of all arms sum to 1).
- `Guardrail(metric, max_drop, relative=False)`: the treatment may not make `metric` worse than control by
  more than `max_drop` (absolute, or a fraction of control's value with `relative=True`); `lower_is_better`
  for metrics such as an escalation rate.

Functions
---------
- `sample_size_proportions(baseline, target, alpha, power, ratio, alternative)` → the control arm's n (the
  treatment's is n * ratio), Cohen's h with statsmodels' `NormalIndPower().solve_power`, rounded up;
  `sample_size_means(mean, sd, mde, ...)` the same with d = mde / sd; `power_curve(...)` power at several n
  (for a chart, `power_curve_svg`); `duration_days(n_per_arm, arms, allocation, daily_units)`.
- `srm(counts, weights, threshold=0.001)` → χ² goodness of fit of the assigned units against the configured
  allocation (scipy's `chisquare`).
- `ab_test(control, treatment, alpha, kind)` → absolute difference (two-proportion z with a pooled standard
  error for p, Wald interval, as statsmodels' `proportions_ztest` / `confint_proportions_2indep(method=
  "wald")`; Welch's t for means, as scipy's `ttest_ind_from_stats(equal_var=False)`), relative lift by the
  delta method with Welch–Satterthwaite degrees of freedom exactly as GrowthBook's frequentist engine
  (gbstats 0.8.0, `TwoSidedTTest`), and the always-valid sequential p and interval for both.
- `sequential_halfwidth` / `always_valid_p`: the asymptotic confidence sequence of Waudby-Smith et al. 2023
  ("Time-uniform central limit theory and asymptotic confidence sequences", eq. 9 and 155; the tuning ρ by
  their eq. 161), as GrowthBook's `SequentialTwoSidedTTest`: safe to look at every day. ρ is tuned for the
  planned total sample `n_star` (default 5,000 as GrowthBook's; `analyze` uses the sample the MDE needs).
  Its e-value is the mixture SPRT's likelihood ratio (Johari et al. 2017, Optimizely's always-valid p) with
  a normal mixing distribution of variance τ² = ρ²σ², so the two are one test here (`msprt_p` states it
  Johari's way; a test checks they agree). Arrays in, arrays out (the benchmark runs thousands of
  experiments at once through the same code).
- `plan_experiment(...)` → `Plan`: the above for every arm of an allocation, the days it takes at a daily
  traffic and the power curve, for `cxstack experiment plan`.
- `chance_to_beat_control`: Beta(1 + successes, 1 + failures) posteriors (uniform prior) compared by Monte
  Carlo with a fixed seed for proportions; the Gaussian approximation (as GrowthBook's) for means.
- `cuped_adjust(y, x)`: θ = cov(y, x) / var(x), y − θ(x − x̄), and the variance reduction it bought.
- `adjust_pvalues(p, method)`: Holm or Benjamini–Hochberg (statsmodels' `multipletests`).
- `analyze(arms, control=, primary=, guardrails=, alpha=, mde=, daily_units=, lower_is_better=)` →
  `Analysis` (`as_dict()` for JSON, `summary()` for a terminal, `report.render_analysis_html` for HTML):
  per-arm figures, every comparison, SRM, adjusted p across metrics, guardrail verdicts and a decision —
  ship / keep running (≈ N more units per arm, ≈ D days) / stop — with its reasons. Too little data gives
  `insufficient` and the required sample, never a p-value. `lower_is_better` names the metrics whose fall is
  the good direction (escalation, reopen and abandon rates).

gbstats is not a dependency: 0.8.0 (the registry's latest) requires numpy < 2 and pandas < 2. Tests pin our
numbers to values it printed on the same sums in a separate environment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats as st

Kind = Literal["proportion", "mean"]
Alternative = Literal["two-sided", "larger", "smaller"]
Verdict = Literal["ok", "broken", "unclear", "insufficient"]
Action = Literal["ship", "keep running", "stop"]

DEFAULT_N_STAR = 5000  # GrowthBook's default sequential tuning parameter (total units)
MIN_UNITS_PER_ARM = 100
MIN_EVENTS = 5  # successes and failures per arm before a normal approximation of a proportion means anything
SEED = 20_231_001


class InsufficientDataError(ValueError):
    """Too little data for the statistic to mean anything: reported as such, never as a number."""


# ---- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CovariateSums:
    """A pre-period covariate x over the same units as the metric y: Σx, Σx², Σxy."""

    sum: float
    sum_squares: float
    sum_products: float


@dataclass(frozen=True, slots=True)
class MetricSums:
    n: int
    sum: float
    sum_squares: float
    covariate: CovariateSums | None = None

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    def variance(self, kind: Kind) -> float:
        """Sample variance (n − 1) for means; p(1 − p) for proportions (as gbstats)."""
        if kind == "proportion":
            return self.mean * (1 - self.mean)
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sum_squares - self.sum**2 / self.n) / (self.n - 1))

    def check(self, kind: Kind, where: str = "") -> None:
        """Raise ValueError naming the field when the sums cannot come from real data."""
        at = f"{where}." if where else ""
        if self.n < 0 or int(self.n) != self.n:
            raise ValueError(f"{at}n: must be a whole number ≥ 0 (got {self.n})")
        values = (self.sum, self.sum_squares)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{at}sum: must be finite")
        if self.sum_squares < 0:
            raise ValueError(f"{at}sum_squares: cannot be negative (got {self.sum_squares})")
        if kind == "proportion":
            if not 0 <= self.sum <= self.n:
                raise ValueError(f"{at}sum: a proportion's successes must lie in [0, n] (got {self.sum})")
            if not math.isclose(self.sum_squares, self.sum, rel_tol=1e-9, abs_tol=1e-9):
                raise ValueError(f"{at}sum_squares: must equal sum for 0/1 values (got {self.sum_squares})")
        elif self.n and self.sum_squares < self.sum**2 / self.n * (1 - 1e-9) - 1e-9:
            # Cauchy–Schwarz: Σx² ≥ (Σx)² / n for any real values
            raise ValueError(f"{at}sum_squares: smaller than sum²/n, impossible for real values")


@dataclass(frozen=True, slots=True)
class ArmData:
    name: str
    units: int
    metrics: Mapping[str, MetricSums]
    weight: float


@dataclass(frozen=True, slots=True)
class Guardrail:
    metric: str
    max_drop: float
    relative: bool = False
    lower_is_better: bool = False


# ---- planning ----------------------------------------------------------------------------------------------


def _check_unit(name: str, value: float, *, open_low: bool = True) -> None:
    if not (0 < value < 1 if open_low else 0 <= value <= 1):
        raise ValueError(f"{name}: must lie strictly between 0 and 1 (got {value})")


def _solve_n(effect: float, alpha: float, power: float, ratio: float, alternative: Alternative) -> int:
    from statsmodels.stats.power import NormalIndPower

    _check_unit("alpha", alpha)
    _check_unit("power", power)
    if ratio <= 0:
        raise ValueError(f"ratio: must be positive (got {ratio})")
    if effect == 0:
        raise ValueError("target: must differ from the baseline (no effect to detect)")
    if (alternative == "larger" and effect < 0) or (alternative == "smaller" and effect > 0):
        raise ValueError(f"target: lies on the other side of the baseline than alternative={alternative!r}")
    n = NormalIndPower().solve_power(
        effect_size=effect, alpha=alpha, power=power, ratio=ratio, alternative=alternative
    )
    return math.ceil(float(np.asarray(n).item()) - 1e-9)


def cohen_h(baseline: float, target: float) -> float:
    """Cohen's h of target against baseline (statsmodels' `proportion_effectsize(target, baseline)`)."""
    return 2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(baseline))


def sample_size_proportions(
    baseline: float,
    target: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: Alternative = "two-sided",
) -> int:
    """Units in the control arm (the treatment needs n * ratio) to detect baseline → target."""
    _check_unit("baseline", baseline)
    _check_unit("target", target)
    return _solve_n(cohen_h(baseline, target), alpha, power, ratio, alternative)


def sample_size_means(
    mean: float,
    sd: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: Alternative = "two-sided",
) -> int:
    """Units in the control arm to detect a change of `mde` (absolute) in a mean with standard deviation sd.
    `mean` is not used by the normal approximation; it is kept so that a plan records what it assumed."""
    if not sd > 0:
        raise ValueError(f"sd: must be positive (got {sd})")
    del mean
    return _solve_n(mde / sd, alpha, power, ratio, alternative)


@dataclass(frozen=True, slots=True)
class PowerPoint:
    n_per_arm: int
    power: float


def power_curve(
    effect: float,
    ns: Sequence[int] | None = None,
    *,
    alpha: float = 0.05,
    ratio: float = 1.0,
    alternative: Alternative = "two-sided",
    points: int = 25,
) -> list[PowerPoint]:
    """Power at each control-arm n for a standardised effect (Cohen's h or d). Without `ns`: from 10 % to
    250 % of the n that reaches 80 % power."""
    from statsmodels.stats.power import NormalIndPower

    if effect == 0:
        raise ValueError("effect: must not be 0")
    if ns is None:
        n80 = _solve_n(effect, alpha, 0.8, ratio, alternative)
        ns = sorted({max(2, round(n80 * f)) for f in np.linspace(0.1, 2.5, points)})
    analysis = NormalIndPower()
    return [
        PowerPoint(
            int(n),
            float(
                analysis.power(effect_size=effect, nobs1=n, alpha=alpha, ratio=ratio, alternative=alternative)
            ),
        )
        for n in ns
    ]


def duration_days(n_per_arm: int, arms: int, allocation: Sequence[float] | None, daily_units: float) -> float:
    """Days until every arm has n_per_arm units, given the units entering the experiment per day. With an
    uneven allocation the smallest arm sets the pace."""
    if daily_units <= 0:
        raise ValueError(f"daily_units: must be positive (got {daily_units})")
    shares = _normalise(allocation if allocation is not None else [1.0] * arms, "allocation")
    if len(shares) != arms:
        raise ValueError(f"allocation: {len(shares)} weights for {arms} arms")
    return float(n_per_arm / (min(shares) * daily_units))


@dataclass(frozen=True, slots=True)
class Plan:
    kind: Kind
    effect_size: float  # Cohen's h (proportions) or d (means)
    n_per_arm: tuple[int, ...]  # in the order of the allocation; the first arm is control
    total: int
    days: float | None
    curve: tuple[PowerPoint, ...]  # power against control's n


def plan_experiment(
    baseline: float,
    mde: float,
    *,
    sd: float | None = None,
    relative_mde: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    allocation: Sequence[float] = (0.5, 0.5),
    daily_units: float | None = None,
    alternative: Alternative = "two-sided",
) -> Plan:
    """Units per arm to detect `mde` (absolute, or a fraction of baseline with relative_mde) on a proportion
    (sd None) or a mean with standard deviation sd; allocation[0] is control's share, each treatment is
    compared with it. The smallest treatment arm sets the sample; days at `daily_units` entering a day."""
    shares = _normalise(allocation, "allocation")
    if len(shares) < 2:
        raise ValueError("allocation: at least a control and one treatment")
    if abs(sum(allocation) - 1) > 1e-6:
        raise ValueError(f"allocation: must sum to 1 (got {sum(allocation):g})")
    shift = mde * baseline if relative_mde else mde
    ratio = min(shares[1:]) / shares[0]
    if sd is None:
        _check_unit("baseline", baseline)
        _check_unit("baseline + mde", baseline + shift)
        kind: Kind = "proportion"
        effect = cohen_h(baseline, baseline + shift)
        n_control = sample_size_proportions(baseline, baseline + shift, alpha, power, ratio, alternative)
    else:
        kind, effect = "mean", shift / sd if sd > 0 else 0.0
        n_control = sample_size_means(baseline, sd, shift, alpha, power, ratio, alternative)
    per_arm = tuple(math.ceil(n_control * share / shares[0] - 1e-9) for share in shares)
    if daily_units is not None and daily_units <= 0:
        raise ValueError(f"daily_units: must be positive (got {daily_units})")
    days = n_control / (shares[0] * daily_units) if daily_units else None
    curve = power_curve(effect, alpha=alpha, ratio=ratio, alternative=alternative)
    return Plan(kind, effect, per_arm, sum(per_arm), days, tuple(curve))


def _normalise(weights: Sequence[float], name: str) -> list[float]:
    if not weights or any(not (w > 0 and math.isfinite(w)) for w in weights):
        raise ValueError(f"{name}: every weight must be positive")
    total = float(sum(weights))
    return [w / total for w in weights]


# ---- sample ratio mismatch ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SRMResult:
    chi2: float
    p: float
    mismatch: bool
    expected: tuple[float, ...]


def srm(counts: Sequence[int], weights: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """χ² test of the assigned counts against the configured weights (normalised to sum to 1)."""
    if len(counts) != len(weights):
        raise ValueError(f"weights: {len(weights)} weights for {len(counts)} counts")
    if len(counts) < 2:
        raise ValueError("counts: at least 2 arms")
    if any(c < 0 or int(c) != c for c in counts):
        raise ValueError("counts: must be whole numbers ≥ 0")
    shares = _normalise(weights, "weights")
    total = sum(counts)
    if total == 0:
        raise InsufficientDataError("no units assigned yet")
    expected = [s * total for s in shares]
    chi2, p = st.chisquare(np.asarray(counts, dtype=float), np.asarray(expected))
    return SRMResult(float(chi2), float(p), bool(p < threshold), tuple(expected))


# ---- two-sample tests (arrays in, arrays out) --------------------------------------------------------------

ArrayLike = Any  # float or numpy array: the benchmark feeds thousands of experiments at once


def always_valid_p(
    effect: ArrayLike, variance: ArrayLike, n_total: ArrayLike, n_star: float, alpha: float = 0.05
) -> Any:
    """Always-valid p of H0 effect = 0 (Waudby-Smith et al. 2023, eq. 155, as GrowthBook): `variance` is the
    estimator's variance (e.g. var_a/n_a + var_b/n_b), n_total the units in both arms; ρ is tuned for alpha
    at n_star, as GrowthBook's."""
    n, rho2 = np.asarray(n_total, dtype=float), _rho(n_star, alpha) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.square(effect) * n / np.asarray(variance, dtype=float)
        tr2p1 = n * rho2 + 1
        log_evalue = rho2 * s2 / (2 * tr2p1) - 0.5 * np.log(tr2p1)
    # 1 / e-value, capped at 1; in logs, as a large effect overflows the e-value itself
    return np.exp(-np.maximum(log_evalue, 0.0))


def msprt_p(effect: ArrayLike, variance: ArrayLike, tau2: float) -> Any:
    """1 / Λ (capped at 1) of the mixture SPRT with a N(0, τ²) mixing distribution over the effect, for an
    estimate with variance V (Johari et al. 2017, eq. 11): Λ = √(V / (V + τ²)) · exp(τ² θ̂² / (2V (V + τ²))).
    The always-valid p is the running minimum of this over the looks."""
    v = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lambda = 0.5 * np.log(v / (v + tau2)) + tau2 * np.square(effect) / (2 * v * (v + tau2))
    return np.exp(-np.maximum(log_lambda, 0.0))


def _rho(n_star: float, alpha: float) -> float:
    # Waudby-Smith et al. 2023, eq. 161: ρ minimising the width at n_star
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / n_star)


def sequential_halfwidth(variance: ArrayLike, n_total: ArrayLike, alpha: float, n_star: float) -> Any:
    """Half-width of the (1 − alpha) asymptotic confidence sequence (Waudby-Smith et al. 2023, eq. 9)."""
    n, rho = np.asarray(n_total, dtype=float), _rho(n_star, alpha)
    s2 = np.asarray(variance, dtype=float) * n
    return np.sqrt(s2) * np.sqrt(
        2 * (n * rho**2 + 1) * np.log(np.sqrt(n * rho**2 + 1) / alpha) / np.square(n * rho)
    )


def z_test_p(effect: ArrayLike, se: ArrayLike) -> Any:
    """Two-sided normal p-value."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * st.norm.sf(np.abs(np.asarray(effect) / np.asarray(se)))


def two_proportion_z(x_a: ArrayLike, n_a: ArrayLike, x_b: ArrayLike, n_b: ArrayLike) -> tuple[Any, Any]:
    """Pooled two-proportion z statistic of b − a and its two-sided p (statsmodels' `proportions_ztest`)."""
    x_a, n_a, x_b, n_b = (np.asarray(v, dtype=float) for v in (x_a, n_a, x_b, n_b))
    pooled = (x_a + x_b) / (n_a + n_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x_b / n_b - x_a / n_a) / np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return z, 2 * st.norm.sf(np.abs(z))


@dataclass(frozen=True, slots=True)
class Estimate:
    effect: float
    ci: tuple[float, float]
    p: float

    def as_dict(self) -> dict[str, Any]:
        return {"effect": self.effect, "ci": list(self.ci), "p": self.p}


@dataclass(frozen=True, slots=True)
class ABResult:
    kind: Kind
    control_mean: float
    treatment_mean: float
    absolute: Estimate
    relative: Estimate | None  # None when control's value is 0 (a lift over nothing)
    sequential: Estimate  # always-valid, on the absolute difference
    sequential_relative: Estimate | None
    statistic: float  # z (proportions) or Welch's t (means)
    dof: float | None  # Welch–Satterthwaite, means only
    cuped: float | None = None  # share of the variance removed by CUPED, when it was used

    def as_dict(self) -> dict[str, Any]:
        return {
            "absolute": self.absolute.as_dict(),
            "relative": self.relative.as_dict() if self.relative else None,
            "sequential": {
                "absolute": self.sequential.as_dict(),
                "relative": self.sequential_relative.as_dict() if self.sequential_relative else None,
            },
        }


@dataclass(frozen=True, slots=True)
class _Summary:
    n: int
    mean: float
    variance: float  # of one unit's value


def _summaries(
    control: MetricSums, treatment: MetricSums, kind: Kind
) -> tuple[_Summary, _Summary, float | None]:
    """Per-arm mean and variance, CUPED-adjusted (θ pooled over both arms) when both carry a covariate."""
    a = _Summary(control.n, control.mean, control.variance(kind))
    b = _Summary(treatment.n, treatment.mean, treatment.variance(kind))
    ca, cb = control.covariate, treatment.covariate
    if ca is None or cb is None:
        return a, b, None
    n = control.n + treatment.n
    sx, sxx, sxy = ca.sum + cb.sum, ca.sum_squares + cb.sum_squares, ca.sum_products + cb.sum_products
    sy = control.sum + treatment.sum
    var_x = (sxx - sx**2 / n) / (n - 1)
    if var_x <= 0:
        return a, b, None
    theta = ((sxy - sx * sy / n) / (n - 1)) / var_x
    mean_x = sx / n

    def adjusted(arm: MetricSums, cov: CovariateSums, s: _Summary) -> _Summary:
        mx = cov.sum / arm.n
        vx = (cov.sum_squares - cov.sum**2 / arm.n) / (arm.n - 1)
        cxy = (cov.sum_products - cov.sum * arm.sum / arm.n) / (arm.n - 1)
        var = max(0.0, s.variance + theta**2 * vx - 2 * theta * cxy)
        return _Summary(arm.n, s.mean - theta * (mx - mean_x), var)

    a2, b2 = adjusted(control, ca, a), adjusted(treatment, cb, b)
    before = a.variance / a.n + b.variance / b.n
    after = a2.variance / a2.n + b2.variance / b2.n
    return a2, b2, (1 - after / before) if before > 0 else None


def ab_test(
    control: MetricSums,
    treatment: MetricSums,
    alpha: float = 0.05,
    kind: Kind = "mean",
    *,
    n_star: float = DEFAULT_N_STAR,
) -> ABResult:
    """Treatment against control on sufficient statistics. Raises InsufficientDataError below 2 units per
    arm or with no variance at all (every value the same in both arms)."""
    _check_unit("alpha", alpha)
    control.check(kind, "control")
    treatment.check(kind, "treatment")
    if control.n < 2 or treatment.n < 2:
        raise InsufficientDataError("each arm needs at least 2 units")
    a, b, reduction = _summaries(control, treatment, kind)
    var_a, var_b = a.variance / a.n, b.variance / b.n
    se = math.sqrt(var_a + var_b)
    if se == 0:
        raise InsufficientDataError("no variation in either arm: every value is the same")
    diff = b.mean - a.mean
    dof: float | None = None
    if kind == "proportion" and reduction is None:
        stat, p = (float(v) for v in two_proportion_z(control.sum, control.n, treatment.sum, treatment.n))
        half = float(st.norm.ppf(1 - alpha / 2)) * se
    else:
        dof = _welch_dof(a, b)
        stat = diff / se
        p = float(2 * st.t.sf(abs(stat), dof))
        half = float(st.t.ppf(1 - alpha / 2, dof)) * se
    absolute = Estimate(diff, (diff - half, diff + half), p)
    n_total = a.n + b.n
    seq_half = float(sequential_halfwidth(var_a + var_b, n_total, alpha, n_star))
    sequential = Estimate(
        diff,
        (diff - seq_half, diff + seq_half),
        float(always_valid_p(diff, var_a + var_b, n_total, n_star, alpha)),
    )
    relative = sequential_relative = None
    unadjusted_a = control.mean
    if unadjusted_a != 0:
        lift = diff / unadjusted_a
        # gbstats' delta method: uses the unadjusted means in the variance, the adjusted ones in the lift
        rel_var = b.variance / (unadjusted_a**2 * b.n) + a.variance * treatment.mean**2 / (
            unadjusted_a**4 * a.n
        )
        rel_dof = _welch_dof(a, b)
        rel_half = float(st.t.ppf(1 - alpha / 2, rel_dof)) * math.sqrt(rel_var)
        rel_p = float(2 * st.t.sf(abs(lift) / math.sqrt(rel_var), rel_dof)) if rel_var > 0 else 1.0
        relative = Estimate(lift, (lift - rel_half, lift + rel_half), rel_p)
        seq_rel_half = float(sequential_halfwidth(rel_var, n_total, alpha, n_star))
        sequential_relative = Estimate(
            lift,
            (lift - seq_rel_half, lift + seq_rel_half),
            float(always_valid_p(lift, rel_var, n_total, n_star, alpha)),
        )
    return ABResult(
        kind=kind,
        control_mean=a.mean,
        treatment_mean=b.mean,
        absolute=absolute,
        relative=relative,
        sequential=sequential,
        sequential_relative=sequential_relative,
        statistic=float(stat),
        dof=dof,
        cuped=reduction,
    )


def _welch_dof(a: _Summary, b: _Summary) -> float:
    va, vb = a.variance / a.n, b.variance / b.n
    denominator = va**2 / (a.n - 1) + vb**2 / (b.n - 1)
    return (va + vb) ** 2 / denominator if denominator > 0 else float(a.n + b.n - 2)


# ---- Bayesian chance to beat control, CUPED, multiple comparisons ------------------------------------------


def chance_to_beat_control(
    control: MetricSums, treatment: MetricSums, kind: Kind = "mean", *, draws: int = 200_000, seed: int = SEED
) -> float:
    """P(treatment's true value > control's). Proportions: Beta(1 + successes, 1 + failures) posteriors
    (uniform prior), Monte Carlo with a fixed seed; means: the Gaussian approximation (flat prior)."""
    if control.n < 2 or treatment.n < 2:
        raise InsufficientDataError("each arm needs at least 2 units")
    if kind == "proportion":
        rng = np.random.default_rng(seed)
        a = rng.beta(1 + control.sum, 1 + control.n - control.sum, draws)
        b = rng.beta(1 + treatment.sum, 1 + treatment.n - treatment.sum, draws)
        return float(np.mean(b > a))
    se = math.sqrt(control.variance(kind) / control.n + treatment.variance(kind) / treatment.n)
    diff = treatment.mean - control.mean
    if se == 0:
        return 0.5 if diff == 0 else float(diff > 0)
    return float(st.norm.sf(0, loc=diff, scale=se))


@dataclass(frozen=True, slots=True)
class CupedResult:
    adjusted: Any  # numpy array, y − θ (x − x̄)
    theta: float
    variance_reduction: float  # 1 − var(adjusted) / var(y)


def cuped_adjust(y: Sequence[float], x: Sequence[float]) -> CupedResult:
    """CUPED (Deng et al. 2013): θ = cov(y, x) / var(x) with x a pre-period covariate."""
    ys, xs = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    if ys.shape != xs.shape:
        raise ValueError(f"x: must have the same length as y ({xs.size} vs {ys.size})")
    if ys.size < 3:
        raise InsufficientDataError("CUPED needs at least 3 units")
    var_x = float(np.var(xs, ddof=1))
    if var_x == 0:
        raise InsufficientDataError("the covariate does not vary")
    theta = float(np.cov(ys, xs, ddof=1)[0, 1] / var_x)
    adjusted = ys - theta * (xs - xs.mean())
    var_y = float(np.var(ys, ddof=1))
    reduction = 1 - float(np.var(adjusted, ddof=1)) / var_y if var_y > 0 else 0.0
    return CupedResult(adjusted, theta, reduction)


def adjust_pvalues(p: Sequence[float], method: Literal["holm", "fdr_bh"] = "holm") -> list[float]:
    """Holm (family-wise) or Benjamini–Hochberg (false discovery rate) adjusted p-values."""
    from statsmodels.stats.multitest import multipletests

    if not p:
        return []
    return [float(v) for v in multipletests(list(p), method=method)[1]]


# ---- the analysis ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric, one treatment arm against control. `result` is None when the data are insufficient."""

    metric: str
    arm: str
    kind: Kind
    control: MetricSums
    treatment: MetricSums
    result: ABResult | None
    chance_to_beat: float | None
    adjusted_p: float | None  # the always-valid p, adjusted across arms and (primary + secondary) metrics
    insufficient: str | None = None


@dataclass(frozen=True, slots=True)
class GuardrailResult:
    guardrail: Guardrail
    arm: str
    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    line: str
    reasons: tuple[str, ...]
    arm: str | None = None  # the arm to ship
    more_units_per_arm: int | None = None
    more_days: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative sums at the end of one day, for the chart of the sequential interval over time."""

    day: str
    arms: Sequence[ArmData]


@dataclass(frozen=True, slots=True)
class SequentialPoint:
    day: str
    arm: str
    effect: float
    ci: tuple[float, float]
    p: float


@dataclass(frozen=True, slots=True)
class Analysis:
    control: str
    primary: str
    alpha: float
    arms: tuple[ArmData, ...]
    kinds: Mapping[str, Kind]
    srm: SRMResult | None
    comparisons: tuple[MetricResult, ...]
    guardrails: tuple[GuardrailResult, ...]
    decision: Decision
    required_per_arm: int | None  # for the primary metric at the MDE, when it could be computed
    correction: str
    history: tuple[SequentialPoint, ...] = field(default=())

    def summary(self) -> list[str]:
        """Lines for a terminal: the decision first, then each comparison and the checks."""
        lines = [self.decision.line]
        if self.srm is not None:
            verdict = "MISMATCH" if self.srm.mismatch else "ok"
            lines.append(f"sample ratio: {verdict} (χ² {self.srm.chi2:.2f}, p {self.srm.p:.3g})")
        for c in self.comparisons:
            if c.result is None:
                lines.append(f"{c.metric} · {c.arm}: insufficient ({c.insufficient})")
                continue
            r = c.result
            lift = f", lift {r.relative.effect:+.1%}" if r.relative else ""
            lines.append(
                f"{c.metric} · {c.arm}: {r.control_mean:.4g} → {r.treatment_mean:.4g} "
                f"(difference {r.absolute.effect:+.4g}{lift}; always-valid CI {r.sequential.ci[0]:+.4g} to "
                f"{r.sequential.ci[1]:+.4g}, p {r.sequential.p:.3g}"
                + (f", adjusted {c.adjusted_p:.3g}" if c.adjusted_p is not None else "")
                + (f"; chance to beat {c.chance_to_beat:.1%}" if c.chance_to_beat is not None else "")
                + ")"
            )
        lines += [
            f"guardrail {g.guardrail.metric} · {g.arm}: {g.verdict} — {g.reason}" for g in self.guardrails
        ]
        return lines

    def comparison(self, metric: str, arm: str) -> MetricResult:
        return next(c for c in self.comparisons if c.metric == metric and c.arm == arm)

    def as_dict(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "primary": self.primary,
            "alpha": self.alpha,
            "arms": [
                {
                    "name": a.name,
                    "units": a.units,
                    "weight": a.weight,
                    "metrics": {m: {"n": s.n, "mean": s.mean} for m, s in a.metrics.items()},
                }
                for a in self.arms
            ],
            "srm": None
            if self.srm is None
            else {"chi2": self.srm.chi2, "p": self.srm.p, "mismatch": self.srm.mismatch},
            "comparisons": [
                {
                    "metric": c.metric,
                    "arm": c.arm,
                    **(c.result.as_dict() if c.result else {"insufficient": c.insufficient}),
                    "chance_to_beat": c.chance_to_beat,
                    "adjusted_p": c.adjusted_p,
                }
                for c in self.comparisons
            ],
            "guardrails": [
                {"metric": g.guardrail.metric, "arm": g.arm, "verdict": g.verdict, "reason": g.reason}
                for g in self.guardrails
            ],
            "required_per_arm": self.required_per_arm,
            "history": [
                {"day": h.day, "arm": h.arm, "effect": h.effect, "ci": list(h.ci), "p": h.p}
                for h in self.history
            ],
            "decision": {
                "action": self.decision.action,
                "line": self.decision.line,
                "reasons": list(self.decision.reasons),
                "arm": self.decision.arm,
                "more_units_per_arm": self.decision.more_units_per_arm,
                "more_days": self.decision.more_days,
            },
        }


def metric_kind(arms: Sequence[ArmData], metric: str) -> Kind:
    """A metric whose every unit is 0 or 1 in every arm (Σx² = Σx ≤ n) is read as a proportion."""
    sums = [a.metrics[metric] for a in arms]
    binary = all(math.isclose(s.sum_squares, s.sum, abs_tol=1e-9) and s.sum <= s.n for s in sums)
    return "proportion" if binary else "mean"


def _insufficient(control: MetricSums, treatment: MetricSums, kind: Kind, min_units: int) -> str | None:
    for name, s in (("control", control), ("treatment", treatment)):
        if s.n < min_units:
            return f"{name} has {s.n} units; at least {min_units} per arm before any p-value"
        if kind == "proportion" and min(s.sum, s.n - s.sum) < MIN_EVENTS:
            return f"{name} has fewer than {MIN_EVENTS} successes or failures"
    return None


def _required(
    control: MetricSums, kind: Kind, mde: float | None, alpha: float, power: float, relative_mde: bool
) -> int | None:
    """The per-arm sample the primary metric needs to detect the MDE, from control's observed figures."""
    if mde is None or mde == 0 or control.n < 2:
        return None
    base = control.mean
    shift = mde * base if relative_mde else mde
    try:
        if kind == "proportion":
            target = base + shift
            if not 0 < base < 1 or not 0 < target < 1:
                return None
            return sample_size_proportions(base, target, alpha, power)
        sd = math.sqrt(control.variance(kind))
        return sample_size_means(base, sd, shift, alpha, power) if sd > 0 else None
    except ValueError:
        return None


def _guardrail(g: Guardrail, comparison: MetricResult, alpha: float) -> GuardrailResult:
    r = comparison.result
    if r is None:
        return GuardrailResult(g, comparison.arm, "insufficient", comparison.insufficient or "no data")
    estimate = r.sequential_relative if g.relative else r.sequential
    if estimate is None:
        return GuardrailResult(g, comparison.arm, "unclear", "control's value is 0: no relative change")
    sign = -1.0 if g.lower_is_better else 1.0
    # "worse" as a positive number: how much the treatment lowers (or raises, if lower is better) the metric
    worse = -sign * estimate.effect
    worse_low, worse_high = sorted((-sign * estimate.ci[0], -sign * estimate.ci[1]))
    unit = "" if not g.relative else " (relative)"
    limit = f"{g.max_drop:g}{unit}"
    if worse_low > 0 and worse > g.max_drop:
        return GuardrailResult(
            g,
            comparison.arm,
            "broken",
            f"{g.metric} worse by {worse:.4g}{unit} (always-valid {1 - alpha:.0%} CI of the "
            f"worsening {worse_low:.4g} to {worse_high:.4g}), more than the {limit} allowed",
        )
    if worse_high <= g.max_drop:
        return GuardrailResult(
            g,
            comparison.arm,
            "ok",
            f"{g.metric} cannot be worse by more than {limit} (at most {worse_high:.4g})",
        )
    return GuardrailResult(
        g,
        comparison.arm,
        "unclear",
        f"{g.metric} may be worse by up to {worse_high:.4g}{unit} (limit {limit})",
    )


def analyze(
    arms: Sequence[ArmData],
    *,
    control: str,
    primary: str,
    guardrails: Sequence[Guardrail] = (),
    metrics: Sequence[str] = (),
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float | None = None,
    relative_mde: bool = False,
    daily_units: float | None = None,
    kinds: Mapping[str, Kind] | None = None,
    correction: Literal["holm", "fdr_bh"] = "holm",
    srm_threshold: float = 0.001,
    min_units: int = MIN_UNITS_PER_ARM,
    n_star: float | None = None,
    history: Sequence[Snapshot] = (),
    lower_is_better: Collection[str] = (),
) -> Analysis:
    """Every treatment arm against `control` on the primary metric, the secondary `metrics` and the
    guardrails' metrics, and a decision. Decisions rest on the always-valid (sequential) p-values and
    intervals, so looking every day does not inflate false positives. `mde`: the smallest change of the
    primary metric worth detecting (absolute, or a fraction of control's value with relative_mde); it sets
    the required sample and tunes the sequential test (n_star = the planned total) unless n_star is given.
    `lower_is_better`: metrics where a fall is the good direction (an escalation rate): for the primary a
    win is then a significant fall, chance to beat is the chance of being lower, and guardrails on them
    guard against a rise.
    """
    _check_unit("alpha", alpha)
    names = [a.name for a in arms]
    if len(arms) < 2:
        raise ValueError("arms: at least a control and one treatment")
    if len(set(names)) != len(names):
        raise ValueError("arms: names must be unique")
    if control not in names:
        raise ValueError(f"control: no arm named {control!r}")
    for arm in arms:
        if arm.units < 0:
            raise ValueError(f"arms.{arm.name}.units: cannot be negative")
    _normalise([a.weight for a in arms], "arms.weight")
    if not math.isclose(sum(a.weight for a in arms), 1.0, abs_tol=1e-6):
        raise ValueError(f"arms.weight: allocations must sum to 1 (got {sum(a.weight for a in arms):g})")
    wanted = list(dict.fromkeys([primary, *metrics, *(g.metric for g in guardrails)]))
    for arm in arms:
        for metric in wanted:
            if metric not in arm.metrics:
                raise ValueError(f"arms.{arm.name}.metrics.{metric}: missing")
    resolved: dict[str, Kind] = {m: (kinds or {}).get(m) or metric_kind(arms, m) for m in wanted}
    for arm in arms:
        for metric in wanted:
            arm.metrics[metric].check(resolved[metric], f"arms.{arm.name}.metrics.{metric}")

    lower = set(lower_is_better)
    base = next(a for a in arms if a.name == control)
    treatments = [a for a in arms if a.name != control]
    required = _required(base.metrics[primary], resolved[primary], mde, alpha, power, relative_mde)
    star = n_star or (required * len(arms) if required else DEFAULT_N_STAR)

    try:
        srm_result: SRMResult | None = srm([a.units for a in arms], [a.weight for a in arms], srm_threshold)
    except InsufficientDataError:
        srm_result = None

    raw: list[MetricResult] = []
    for arm in treatments:
        for metric in wanted:
            kind, c, t = resolved[metric], base.metrics[metric], arm.metrics[metric]
            short = _insufficient(c, t, kind, min_units)
            result = chance = None
            if short is None:
                try:
                    result = ab_test(c, t, alpha, kind, n_star=star)
                    chance = chance_to_beat_control(c, t, kind)
                    if metric in lower:
                        chance = 1 - chance
                except InsufficientDataError as error:
                    short = str(error)
            raw.append(MetricResult(metric, arm.name, kind, c, t, result, chance, None, short))

    family = {
        i: r.result.sequential.p
        for i, r in enumerate(raw)
        if r.result is not None and r.metric in {primary, *metrics}
    }
    by_index = dict(zip(family, adjust_pvalues(list(family.values()), correction), strict=True))
    comparisons = tuple(
        MetricResult(
            r.metric,
            r.arm,
            r.kind,
            r.control,
            r.treatment,
            r.result,
            r.chance_to_beat,
            by_index.get(i),
            r.insufficient,
        )
        for i, r in enumerate(raw)
    )
    verdicts = tuple(
        _guardrail(
            dataclasses.replace(g, lower_is_better=g.lower_is_better or g.metric in lower),
            next(c for c in comparisons if c.metric == g.metric and c.arm == arm.name),
            alpha,
        )
        for arm in treatments
        for g in guardrails
    )
    decision = _decide(
        comparisons,
        verdicts,
        srm_result,
        primary,
        alpha,
        required,
        treatments,
        arms,
        daily_units,
        -1.0 if primary in lower else 1.0,
    )
    points = tuple(
        _history(history, control, primary, resolved[primary], alpha, star, min_units) if history else ()
    )
    return Analysis(
        control=control,
        primary=primary,
        alpha=alpha,
        arms=tuple(arms),
        kinds=resolved,
        srm=srm_result,
        comparisons=comparisons,
        guardrails=verdicts,
        decision=decision,
        required_per_arm=required,
        correction=correction,
        history=points,
    )


def _decide(
    comparisons: Sequence[MetricResult],
    verdicts: Sequence[GuardrailResult],
    srm_result: SRMResult | None,
    primary: str,
    alpha: float,
    required: int | None,
    treatments: Sequence[ArmData],
    arms: Sequence[ArmData],
    daily_units: float | None,
    better: float,
) -> Decision:
    if srm_result is not None and srm_result.mismatch:
        reason = (
            f"sample ratio mismatch: units {[a.units for a in arms]} against allocation "
            f"{[a.weight for a in arms]} (χ² {srm_result.chi2:.1f}, p {srm_result.p:.2g}): assignment or "
            "logging is broken, the data cannot be trusted"
        )
        return Decision("stop", "stop: " + reason, (reason,))
    broken = [v for v in verdicts if v.verdict == "broken"]
    if broken:
        reasons = tuple(f"{v.arm}: guardrail broken: {v.reason}" for v in broken)
        return Decision("stop", "stop: " + "; ".join(reasons), reasons)

    primaries = [c for c in comparisons if c.metric == primary]
    short = [c for c in primaries if c.result is None]
    fewest = min(
        min(a.units for a in arms), *(c.control.n for c in primaries), *(c.treatment.n for c in primaries)
    )
    more, days = _more(required, fewest, arms, daily_units)
    if short:
        need = f"; required sample ≈ {required:,} units per arm" if required else ""
        reasons = tuple(f"{c.arm}: insufficient data: {c.insufficient}{need}" for c in short)
        line = "keep running: too little data to compute a p-value" + _more_text(required, more, days)
        return Decision("keep running", line, reasons, None, more, days)

    winners = []
    for c in primaries:
        assert c.result is not None and c.adjusted_p is not None
        if c.adjusted_p < alpha and better * c.result.sequential.effect > 0:
            winners.append(c)
    for c in sorted(winners, key=lambda c: -(better * c.result.sequential.effect if c.result else 0)):
        assert c.result is not None
        arm_verdicts = [v for v in verdicts if v.arm == c.arm]
        unclear = [v for v in arm_verdicts if v.verdict != "ok"]
        win = (
            f"{primary} {c.result.control_mean:.4g} → {c.result.treatment_mean:.4g} "
            f"(always-valid {1 - alpha:.0%} CI of the difference {c.result.sequential.ci[0]:+.4g} to "
            f"{c.result.sequential.ci[1]:+.4g}, adjusted p {c.adjusted_p:.2g})"
        )
        if not unclear:
            reasons = (f"{c.arm}: {win}", *(f"{v.arm}: guardrail ok: {v.reason}" for v in arm_verdicts))
            return Decision("ship", f"ship {c.arm}: {win}", reasons, c.arm)
        reasons = (
            f"{c.arm}: {win}",
            *(f"{v.arm}: guardrail not yet shown safe: {v.reason}" for v in unclear),
        )
        return Decision(
            "keep running",
            f"keep running: {c.arm} wins on {primary} but its guardrails are not yet shown safe"
            + _more_text(required, more, days),
            reasons,
            None,
            more,
            days,
        )
    losers = [
        c
        for c in primaries
        if c.result
        and c.adjusted_p is not None
        and c.adjusted_p < alpha
        and better * c.result.sequential.effect < 0
    ]
    if losers and len(losers) == len(primaries):
        reasons = tuple(f"{c.arm}: {primary} significantly worse than control" for c in losers)
        return Decision("stop", "stop: every treatment is worse on " + primary, reasons)
    if required is not None and more == 0:
        reason = (
            f"the planned {required:,} units per arm are in and no arm differs significantly on {primary}: "
            "no effect as large as the MDE"
        )
        return Decision("stop", "stop: " + reason, (reason,))
    reasons = tuple(
        f"{c.arm}: {primary} difference {c.result.sequential.effect:+.4g}, always-valid CI "
        f"{c.result.sequential.ci[0]:+.4g} to {c.result.sequential.ci[1]:+.4g} "
        f"(adjusted p {c.adjusted_p:.2g})"
        for c in primaries
        if c.result
    )
    return Decision(
        "keep running",
        "keep running: no significant difference yet" + _more_text(required, more, days),
        reasons,
        None,
        more,
        days,
    )


def _more(
    required: int | None, fewest: int, arms: Sequence[ArmData], daily_units: float | None
) -> tuple[int | None, float | None]:
    if required is None:
        return None, None
    more = max(0, required - fewest)
    days = None
    if daily_units and daily_units > 0:
        days = duration_days(more, len(arms), [a.weight for a in arms], daily_units)
    return more, days


def _more_text(required: int | None, more: int | None, days: float | None) -> str:
    if required is None or more is None:
        return " (give an MDE to know for how long)"
    text = f" (≈{more:,} more units per arm of the {required:,} required"
    return text + (f", ≈{math.ceil(days)} days)" if days is not None else ")")


def _history(
    history: Sequence[Snapshot],
    control: str,
    primary: str,
    kind: Kind,
    alpha: float,
    n_star: float,
    min_units: int,
) -> list[SequentialPoint]:
    points = []
    for snapshot in history:
        by_name = {a.name: a for a in snapshot.arms}
        if control not in by_name:
            continue
        c = by_name[control].metrics[primary]
        for name, arm in by_name.items():
            if name == control:
                continue
            t = arm.metrics[primary]
            if _insufficient(c, t, kind, min_units):
                continue
            try:
                r = ab_test(c, t, alpha, kind, n_star=n_star)
            except InsufficientDataError:
                continue
            points.append(
                SequentialPoint(snapshot.day, name, r.sequential.effect, r.sequential.ci, r.sequential.p)
            )
    return points
