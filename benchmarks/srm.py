"""Does the sample-ratio-mismatch check catch broken assignment, and leave fair splits alone?

    python -m benchmarks.srm [--repetitions 2000] [--json PATH]

Each repetition assigns n units to two arms configured 50/50, each unit landing in the first arm with the
delivered share (50 % for a fair split; 51 %, 52 %, 55 % for a planted mismatch, as a buggy redirect or a
logging loss would produce), and runs the shipped check (`optimization.statistics.srm`, χ² against the
allocation, mismatch at p < 0.001). Printed: the share of repetitions flagged, per delivered split and n
(fair splits: aim ≈ 0.001, the threshold), beside two checks dashboards use in the same run: the same χ² at
p < 0.05 (flags many fair splits), and "the share is off by more than 1 point" (misses small mismatches at
large n, cries wolf at small n).
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

from cxstack.optimization.statistics import srm

SHARES = (0.50, 0.51, 0.52, 0.55)
SIZES = (1_000, 10_000, 100_000)


def run(repetitions: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rows = []
    for share in SHARES:
        for n in SIZES:
            first = rng.binomial(n, share, repetitions)
            flagged = loose = off_by_a_point = 0
            for count in first.tolist():
                result = srm([count, n - count], [0.5, 0.5])
                flagged += result.mismatch
                loose += result.p < 0.05
                off_by_a_point += abs(count / n - 0.5) > 0.01
            rows.append(
                {
                    "delivered": share,
                    "n": n,
                    "cxstack": flagged / repetitions,
                    "chi2_p05": loose / repetitions,
                    "one_point": off_by_a_point / repetitions,
                }
            )
    return {"repetitions": repetitions, "seed": seed, "threshold": 0.001, "rows": rows}


def table(result: dict[str, Any]) -> Table:
    out = Table(
        title=f"Configured 50/50; share of {result['repetitions']} repetitions flagged as a mismatch",
        caption="50 %: a fair split (every flag is a false alarm; aim ≈ 0.001); other rows: a planted "
        "mismatch (every flag is a catch). cxstack: χ² p < 0.001; baselines: χ² p < 0.05, share off "
        "by > 1 point.",
    )
    for column in ("delivered", "units", "cxstack (p < 0.001)", "χ² p < 0.05", "off by > 1 point"):
        out.add_column(column, justify="right", no_wrap=True)
    for row in result["rows"]:
        out.add_row(
            f"{row['delivered']:.0%}",
            f"{row['n']:,}",
            f"{row['cxstack']:.4f}",
            f"{row['chi2_p05']:.4f}",
            f"{row['one_point']:.4f}",
            end_section=row["n"] == SIZES[-1],
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=2000, help="per split and size (default 2000)")
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.repetitions < 10:
        print("--repetitions: at least 10", file=sys.stderr)
        return 2
    result = run(args.repetitions, args.seed)
    Console(width=120).print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
