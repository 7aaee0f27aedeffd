"""Does the quality interval cover the true rate 95 times in 100, and how much does a judge narrow it?

    python -m benchmarks.ppi_coverage [--repetitions 1000] [--json PATH]

Simulation of what the product does: a fixed population of 5,000 conversations with a true pass rate of 80 %
(a "risky" fifth — escalations, low confidence — passing only 55 %); the sampler's design (5 % base rate, 3×
for the risky fifth, each conversation drawn independently with its probability); people label the drawn
ones; a judge labels everyone, right with probability 70 %, 80 % or 90 % (symmetric errors). Each repetition
draws a new sample and builds the same sums the store builds in SQL (`monitoring.quality.sums_of_units`),
then the shipped estimator (`estimate_quality`) gives three 95 % intervals:

- cxstack PPI++ (the judge corrected by the reviews, λ tuned), used where the judge is trusted;
- cxstack human-only (Hájek, reviews weighted by 1/π), shown beside it and used elsewhere;
- naive judge-only: the judge's pass rate with a Wilson interval, as a dashboard that trusts a judge blindly
  would show it (baseline).

Also in the same run, the classical PPI++ mean interval (`statistics.ppi_mean`, checked against ppi_py) under
simple random sampling of the same number of reviews, the textbook setting. Aim: coverage 95 % ± 1.5 %.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from cxstack.monitoring.quality import QualityPolicy, estimate_quality, sums_of_units, wilson
from cxstack.monitoring.statistics import ppi_mean

N = 5000
RISKY_SHARE = 0.2
RATES = (0.85, 0.55)  # pass rate of the ordinary and the risky conversations
BASE_RATE, OVERSAMPLE = 0.05, 3.0
ACCURACIES = (0.7, 0.8, 0.9)


def population(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    risky = rng.random(N) < RISKY_SHARE
    human = (rng.random(N) < np.where(risky, RATES[1], RATES[0])).astype(float)
    pi = np.where(risky, BASE_RATE * OVERSAMPLE, BASE_RATE)
    return human, pi


def run(repetitions: int, seed: int = 2024) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    human, pi = population(rng)
    truth = float(human.mean())
    policy = QualityPolicy(min_reviews=2, min_pairs=2, trust_threshold=0.0)  # always compute PPI++ here
    results: dict[str, Any] = {"truth": truth, "population": N, "repetitions": repetitions, "judges": {}}
    for accuracy in ACCURACIES:
        judge = np.where(rng.random(N) < accuracy, human, 1 - human)
        counts = {"ppi": 0, "human": 0, "naive": 0, "classical": 0}
        widths: dict[str, list[float]] = {name: [] for name in counts}
        reviewed_counts = []
        for _ in track(range(repetitions), description=f"judge {accuracy:.0%}", transient=True):
            drawn = rng.random(N) < pi
            reviewed_counts.append(int(drawn.sum()))
            estimate = estimate_quality(sums_of_units(human, judge, pi, drawn), policy)
            naive = wilson(int(judge.sum()), N, 0.95)
            srs = rng.choice(N, size=int(drawn.sum()), replace=False)
            mask = np.zeros(N, dtype=bool)
            mask[srs] = True
            classical = ppi_mean(human[mask], judge[mask], judge[~mask], tuned=True)
            intervals = {
                "ppi": (estimate.value.low, estimate.value.high) if estimate.value else None,
                "human": (estimate.human_only.low, estimate.human_only.high) if estimate.human_only else None,
                "naive": (naive.low, naive.high) if naive else None,
                "classical": classical.ci,
            }
            for name, interval in intervals.items():
                if interval is None:
                    continue
                counts[name] += interval[0] <= truth <= interval[1]
                widths[name].append(interval[1] - interval[0])
        human_width = float(np.mean(widths["human"]))
        results["judges"][f"{accuracy:.1f}"] = {
            "reviews_mean": float(np.mean(reviewed_counts)),
            **{
                name: {
                    "coverage": counts[name] / repetitions,
                    "width": float(np.mean(widths[name])),
                    "width_vs_human_only": float(np.mean(widths[name])) / human_width,
                }
                for name in counts
            },
        }
    return results


def table(result: dict[str, Any]) -> Table:
    out = Table(
        title=f"95 % intervals over {result['repetitions']} draws; true pass rate {result['truth']:.1%} of "
        f"{result['population']} conversations",
        caption=(
            "judge: its accuracy; coverage: share of draws whose interval holds the true rate (aim 95 % ± "
            "1.5 %); width: mean interval width, and relative to cxstack human-only in the same draws. "
            "cxstack: the sampler's design (oversampled, weighted by 1/π); judge alone: its pass rate with a "
            "Wilson interval; PPI++ on a simple sample: the textbook estimator (ppi_py's) on as many reviews "
            "drawn uniformly"
        ),
    )
    for column in ("judge", "reviews", "estimator", "coverage", "width", "vs human"):
        out.add_column(column, justify="left" if column in ("estimator",) else "right", no_wrap=True)
    names = {
        "ppi": "cxstack PPI++",
        "human": "cxstack human-only",
        "naive": "judge alone (baseline)",
        "classical": "PPI++ on a simple sample",
    }
    for accuracy, figures in result["judges"].items():
        for key, label in names.items():
            f = figures[key]
            out.add_row(
                f"{float(accuracy):.0%}" if key == "ppi" else "",
                f"{figures['reviews_mean']:.0f}" if key == "ppi" else "",
                label,
                f"{f['coverage']:.1%}",
                f"{f['width']:.3f}",
                f"{f['width_vs_human_only']:.2f}",
                end_section=key == "classical",
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=1000, help="draws per judge (default 1000)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.repetitions < 10:
        print("--repetitions: at least 10", file=sys.stderr)
        return 2
    result = run(args.repetitions, args.seed)
    Console().print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
