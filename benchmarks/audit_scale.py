"""Knowledge audit at scale: 1k / 10k / 100k synthetic facts with planted near-duplicates and contradictions.

    python -m benchmarks.audit_scale [--json PATH] [--seed 1] [--sizes 1000,10000,100000]

Data (`benchmarks/_audit_facts_gen.py`): facts about products, stores and plans (each names its `subject`)
and a tenth about shipping destinations without a subject field; 5% of each set are planted second facts: half
paraphrases of another fact (synonyms, clause reordering, an added opening), half contradictions (a changed
number, amount or date, a negation, or a flipped policy word such as can/cannot, free/charged, includes/
excludes), a third of those also reworded. A planted pair counts as found when the audit reports that pair
with that kind; precision is over every near_duplicate and contradiction finding (base facts agree).

Systems, in the same run, each size in its own process (time of `audit_facts` only, without generating the
facts; peak memory = the process's maximum resident set, generation included):

* cxstack: `audit_facts` as shipped (blocking by subject; usearch HNSW for large searches, exact re-ranking).
* baseline: the audit before it scaled (`benchmarks/_audit_baseline.py`, main at 53ce3ff): brute-force
  nearest neighbours over all facts, number and negation checks only. Not run at 100k: its brute-force
  search compares every pair (10¹⁰ sparse dot products; about 100× its 10k time, and its distance matrix
  chunks); its 10k figure is the evidence.

Honesty: the audit's rules fitted on the synthetic data (the paraphrase rule's 0.6 / 0.65, the names rule,
the number-conflict floor 0.4 and the WordLlama paraphrase bar 0.85) were chosen on seed 11 only (seed 7 as a
check); this benchmark reports seed 1 by default (and any other seed but 11 is as fair). Until the
generator's fix of 2026-11-29, the 100k set had only 1,024 facts without a subject (1%, not a tenth): its
figures before then are not comparable.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 130)
DEV_SEED = 11


def run_one(size: int, seed: int, system: str) -> dict[str, Any]:
    from benchmarks._audit_facts_gen import generate

    facts, planted = generate(size, seed)
    started = time.perf_counter()
    if system == "baseline":
        from benchmarks._audit_baseline import pairs

        found = {frozenset(ids): kind for kind, ids in pairs(facts)}
    else:
        from cxstack.cli.services import paraphrase_embedder
        from cxstack.knowledge.audit import audit_facts

        # Loaded inside the timed part, as `kb audit` loads it.
        report = audit_facts(facts, date(2026, 1, 1), meaning=paraphrase_embedder())
        found = {
            frozenset(f.facts): f.kind
            for f in report.findings
            if f.kind in ("near_duplicate", "contradiction")
        }
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "system": system,
        "facts": len(facts),
        "planted": len(planted),
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_mb),
        "findings": len(found),
    }
    planted_keys = {frozenset(p.pair): p.kind for p in planted}
    for kind in ("near_duplicate", "contradiction", "all"):
        wanted = [p for p in planted if kind in ("all", p.kind)]
        hits = sum(found.get(frozenset(p.pair)) == p.kind for p in wanted)
        reported = [k for k, v in found.items() if kind in ("all", v)]
        right = sum(planted_keys.get(k) == found[k] for k in reported)
        result[kind] = {
            "recall": round(hits / max(1, len(wanted)), 4),
            "precision": round(right / max(1, len(reported)), 4),
        }
    by_how: dict[str, list[int]] = {}
    for p in planted:
        by_how.setdefault(p.how, []).append(int(found.get(frozenset(p.pair)) == p.kind))
    result["recall_by_change"] = {how: round(sum(v) / len(v), 3) for how, v in sorted(by_how.items())}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--baseline-max", type=int, default=10000, help="largest size the baseline runs at")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs=3, metavar=("SIZE", "SEED", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        size, seed, system = args.one
        sys.stdout.write(json.dumps(run_one(int(size), int(seed), system)) + "\n")
        return
    if args.seed == DEV_SEED:
        console.print(f"[yellow]seed {DEV_SEED} is the one the rules were chosen on: not a fair figure[/]")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        for system in ("cxstack", "baseline"):
            if system == "baseline" and size > args.baseline_max:
                rows.append({"system": system, "facts": size, "skipped": "brute force over all pairs"})
                continue
            command = [
                sys.executable,
                "-m",
                "benchmarks.audit_scale",
                "--one",
                str(size),
                str(args.seed),
                system,
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            console.print(f"{system} at {size}: {rows[-1]['seconds']} s", style="dim")
    table = Table(title=f"kb audit on synthetic facts (seed {args.seed}; rules chosen on seed {DEV_SEED})")
    for column in (
        "system",
        "facts",
        "planted pairs",
        "seconds",
        "peak MB",
        "recall",
        "precision",
        "dup R / P",
        "contra R / P",
    ):
        table.add_column(column, justify="left" if column == "system" else "right")
    for row in rows:
        if "skipped" in row:
            table.add_row(row["system"], f"{row['facts']:,}", "-", "skipped: " + row["skipped"], *["-"] * 5)
            continue
        table.add_row(
            row["system"],
            f"{row['facts']:,}",
            str(row["planted"]),
            f"{row['seconds']:.1f}",
            str(row["peak_mb"]),
            f"{row['all']['recall']:.3f}",
            f"{row['all']['precision']:.3f}",
            f"{row['near_duplicate']['recall']:.3f} / {row['near_duplicate']['precision']:.3f}",
            f"{row['contradiction']['recall']:.3f} / {row['contradiction']['precision']:.3f}",
        )
    console.print(table)
    for row in rows:
        if "recall_by_change" in row:
            console.print(f"{row['system']} {row['facts']:,}: recall by change {row['recall_by_change']}")
    total = round(time.perf_counter() - started, 1)
    console.print(f"total {total} s; time is audit_facts alone, memory the whole process (with generation)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"seed": args.seed, "dev_seed": DEV_SEED, "rows": rows, "seconds": total}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
        console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
