"""Is the experiment analysis safe to look at every day? A/A and A/B simulations with daily looks.

    python -m benchmarks.sequential_aa [--experiments 2000] [--days 30] [--json PATH]

Each simulated experiment splits `--per-day` units a day per arm for `--days` days; the metric is a rate
(baseline 20 %, e.g. conversations resolved). After every day the cumulative sums are analysed as
`cxstack experiment analyze` does (`optimization.statistics`: the always-valid p of the asymptotic confidence
sequence, tuned for the planned sample of a 20 % → 22 % MDE, and the two-proportion z test), and:

- A/A (no true difference): the false-positive rate, the share of experiments that are ever declared
  significant at α = 0.05 — the sequential test looked at daily (aim ≤ 0.05), beside the fixed-horizon z test
  looked at daily (peeking: the baseline, far above α) and the fixed-horizon test looked at once, at the end;
- A/B (a true 20 % → 22 %): the power of the same three, and the median day the sequential test first says so.

The same for a skewed mean (handle time, log-normal, mean ≈ 6.2 min; A/B 5 % shorter) through Welch's t and
the same sequential test on Σx and Σx², as the store sums them.

Arms are simulated in bulk with numpy, then fed through the shipped functions (`always_valid_p`,
`two_proportion_z`); one experiment is checked against `ab_test` itself so the bulk path cannot drift from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats as st

from cxstack.optimization.statistics import (
    MetricSums,
    ab_test,
    always_valid_p,
    sample_size_means,
    sample_size_proportions,
    two_proportion_z,
)

BASELINE, TARGET, ALPHA = 0.20, 0.22, 0.05
LOG_MEAN, LOG_SD, SHORTER = 1.5, 0.8, 0.95  # handle time in minutes (mean ≈ 6.2, sd ≈ 5.8); A/B: 5 % shorter


def simulate(
    rng: np.random.Generator, experiments: int, days: int, per_day: int, treatment_rate: float, n_star: float
) -> dict[str, Any]:
    a = rng.binomial(per_day, BASELINE, (experiments, days)).cumsum(axis=1)
    b = rng.binomial(per_day, treatment_rate, (experiments, days)).cumsum(axis=1)
    n = np.broadcast_to(per_day * np.arange(1, days + 1), a.shape)
    pa, pb = a / n, b / n
    variance = (pa * (1 - pa) + pb * (1 - pb)) / n  # as ab_test's for a proportion (gbstats' variance)
    sequential = always_valid_p(pb - pa, variance, 2 * n, n_star, ALPHA)
    _, fixed = two_proportion_z(a, n, b, n)
    check = ab_test(
        MetricSums(int(n[0, -1]), int(a[0, -1]), int(a[0, -1])),
        MetricSums(int(n[0, -1]), int(b[0, -1]), int(b[0, -1])),
        ALPHA,
        "proportion",
        n_star=n_star,
    )
    assert abs(check.sequential.p - sequential[0, -1]) < 1e-9 and abs(check.absolute.p - fixed[0, -1]) < 1e-9
    return _rates(sequential, fixed)


def simulate_means(
    rng: np.random.Generator, experiments: int, days: int, per_day: int, factor: float, n_star: float
) -> dict[str, Any]:
    """A skewed mean (a handle time, log-normal) summed per day as the store sums it: Σx and Σx² per arm."""
    sums = np.zeros((2, 2, experiments, days))  # arm, (Σx, Σx²), experiment, day
    for day in range(days):
        for arm, scale in enumerate((1.0, factor)):
            x = scale * rng.lognormal(LOG_MEAN, LOG_SD, (experiments, per_day))
            sums[arm, 0, :, day], sums[arm, 1, :, day] = x.sum(axis=1), np.square(x).sum(axis=1)
    sums = sums.cumsum(axis=3)
    n = np.broadcast_to(per_day * np.arange(1, days + 1), (experiments, days)).astype(float)
    means = sums[:, 0] / n
    variances = (sums[:, 1] - sums[:, 0] ** 2 / n) / (n - 1) / n  # of each arm's mean
    se2 = variances[0] + variances[1]
    dof = se2**2 / (variances[0] ** 2 / (n - 1) + variances[1] ** 2 / (n - 1))  # Welch–Satterthwaite
    effect = means[1] - means[0]
    fixed = 2 * st.t.sf(np.abs(effect) / np.sqrt(se2), dof)
    sequential = always_valid_p(effect, se2, 2 * n, n_star, ALPHA)
    check = ab_test(
        MetricSums(int(n[0, -1]), float(sums[0, 0, 0, -1]), float(sums[0, 1, 0, -1])),
        MetricSums(int(n[0, -1]), float(sums[1, 0, 0, -1]), float(sums[1, 1, 0, -1])),
        ALPHA,
        "mean",
        n_star=n_star,
    )
    assert abs(check.sequential.p - sequential[0, -1]) < 1e-9 and abs(check.absolute.p - fixed[0, -1]) < 1e-9
    return _rates(sequential, fixed)


def _rates(sequential: np.ndarray, fixed: np.ndarray) -> dict[str, Any]:
    crossed = sequential < ALPHA
    first_day = np.where(crossed.any(axis=1), crossed.argmax(axis=1) + 1, 0)
    return {
        "sequential_daily": float(crossed.any(axis=1).mean()),
        "fixed_daily": float((fixed < ALPHA).any(axis=1).mean()),
        "fixed_once": float((fixed[:, -1] < ALPHA).mean()),
        "sequential_median_day": float(np.median(first_day[first_day > 0]))
        if (first_day > 0).any()
        else None,
    }


def run(experiments: int, days: int, per_day: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    planned = sample_size_proportions(BASELINE, TARGET, ALPHA, 0.8)
    n_star = 2 * planned
    mean = float(np.exp(LOG_MEAN + LOG_SD**2 / 2))
    sd = mean * float(np.sqrt(np.exp(LOG_SD**2) - 1))
    planned_means = sample_size_means(mean, sd, (1 - SHORTER) * mean, ALPHA, 0.8)
    return {
        "experiments": experiments,
        "days": days,
        "per_day_per_arm": per_day,
        "planned_per_arm": planned,
        "seed": seed,
        "aa": simulate(rng, experiments, days, per_day, BASELINE, n_star),
        "ab": simulate(rng, experiments, days, per_day, TARGET, n_star),
        "planned_per_arm_means": planned_means,
        "aa_means": simulate_means(rng, experiments, days, per_day, 1.0, 2 * planned_means),
        "ab_means": simulate_means(rng, experiments, days, per_day, SHORTER, 2 * planned_means),
    }


def interval(rate: float, n: int) -> str:
    half = 1.96 * np.sqrt(rate * (1 - rate) / n)
    return f"{rate:.3f} (±{half:.3f})"


def table(result: dict[str, Any]) -> Table:
    n = result["experiments"]
    out = Table(
        title=f"{n} simulated experiments, {result['days']} daily looks, {result['per_day_per_arm']} units "
        f"per arm a day (planned samples: {result['planned_per_arm']:,} and "
        f"{result['planned_per_arm_means']:,} per arm); α = 0.05",
        caption="A/A: share of experiments ever declared significant (aim ≤ 0.05 for the sequential test); "
        "A/B: share detected by the last day. Fixed-horizon test: two-proportion z for the rate, Welch's t "
        "for handle time. ± is the simulation's 95 % margin.",
    )
    for column in ("metric", "test", "looks", "A/A false positives", "A/B power"):
        out.add_column(column, justify="right" if column.startswith("A/") else "left", no_wrap=True)
    for metric, aa, ab in (
        ("rate 20 % → 22 %", result["aa"], result["ab"]),
        ("handle time −5 % (log-normal)", result["aa_means"], result["ab_means"]),
    ):
        rows = (
            ("cxstack always-valid (sequential)", "daily", "sequential_daily"),
            ("fixed-horizon test (baseline)", "daily", "fixed_daily"),
            ("fixed-horizon test", "once, at the end", "fixed_once"),
        )
        for i, (test, looks, key) in enumerate(rows):
            out.add_row(
                metric if i == 0 else "",
                test,
                looks,
                interval(aa[key], n),
                interval(ab[key], n),
                end_section=i == len(rows) - 1,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", type=int, default=2000, help="simulated experiments (default 2000)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=250, help="units per arm per day (default 250)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.experiments < 10 or args.days < 1 or args.per_day < 10:
        print("--experiments ≥ 10, --days ≥ 1, --per-day ≥ 10", file=sys.stderr)
        return 2
    result = run(args.experiments, args.days, args.per_day, args.seed)
    Console(width=130).print(table(result))
    for name, key in (("rate", "ab"), ("handle time", "ab_means")):
        day = result[key]["sequential_median_day"]
        if day is not None:
            print(f"sequential test, {name}: median first day of detection under A/B: {day:g}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
