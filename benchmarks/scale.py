"""Scale: answered turns per second and latency vs the number of `cxstack worker` processes on PostgreSQL,
beside the embedded default (`cxstack serve`, the process runtime on SQLite), in the same run.

    python -m benchmarks.scale [--messages 400] [--workers 1,2,4] [--concurrency 2] [--conversations 24]
                               [--apis 1] [--embedder hashing] [--no-embedded] [--json PATH]

For each deployment (see benchmarks/_deployment.py: real processes, each with its own CXSTACK_HOME, a fresh
SQLite file or PostgreSQL schema, the demo back office) a bounded client runs `--conversations` customers at
once through the HTTP API, each posting its next demo sample message as soon as the turn for the previous one
has committed (a closed loop: the workers always have more conversations waiting than they have job slots).
Turns/s is answered turns over the time from the first post to the last answer; the ratio to ideal divides it
by n times the 1-worker figure. Afterwards the store is checked message by message: lost and doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks._deployment import (
    DEFAULT_PG_URL,
    LoadRun,
    check_by_id,
    closed_loop,
    deployed,
    plan,
    spread_ms,
    wait_drained,
    warm_router_cache,
    write_json,
)

console = Console(width=None if sys.stdout.isatty() else 140)


def measure(
    kind: str, root: Path, args: argparse.Namespace, workers: int, progress: Progress
) -> dict[str, Any]:
    conversations = plan(args.messages, args.conversations, args.seed)
    total = sum(len(c.messages) for c in conversations)
    label = "embedded (SQLite)" if kind == "embedded" else f"procrastinate, {workers} worker(s)"
    task = progress.add_task(f"{label}: starting", total=total)
    if not sys.stdout.isatty():  # no live bar in a log: a line per phase instead
        progress.console.print(f"{label}: starting, then {total} messages")
    options: dict[str, Any] = {"embedder": args.embedder, "router_cache": _router_cache(args)}
    if kind == "procrastinate":
        options |= {
            "workers": workers,
            "concurrency": args.concurrency,
            "apis": args.apis,
            "pg_url": args.pg_url,
        }
    started = time.monotonic()
    with deployed(kind, root, **options) as deployment:
        startup_s = time.monotonic() - started
        progress.update(task, description=f"{label}: load")
        run: LoadRun = asyncio.run(
            closed_loop(
                deployment,
                conversations,
                answer_timeout_s=args.answer_timeout,
                progress=lambda n: progress.advance(task, n),
            )
        )
        progress.update(task, description=f"{label}: checking")
        if not sys.stdout.isatty():
            progress.console.print(
                f"{label}: load done in {run.ended_mono - run.started_mono:.0f} s, checking"
            )
        drained, _ = wait_drained(deployment, args.drain_timeout)
        checked = check_by_id(deployment, conversations, run)
    progress.update(task, description=f"{label}: done")
    answered = [s for s in run.sent if s.e2e_s is not None]
    seconds = run.ended_mono - run.started_mono
    return {
        "deployment": label,
        "kind": kind,
        "workers": workers if kind == "procrastinate" else 1,
        "messages": total,
        "acknowledged": len(run.acknowledged()),
        "answered_in_time": len(answered),
        "seconds": round(seconds, 2),
        "turns_per_s": round(len(answered) / seconds, 2) if seconds > 0 else None,
        "ingest_ms": spread_ms([s.ingest_s for s in run.sent if s.ingest_s is not None]),
        "e2e_ms": spread_ms([s.e2e_s for s in answered if s.e2e_s is not None]),
        "post_errors": dict(run.post_errors),
        "hand_backs": run.hand_backs,
        "desk_errors": dict(run.desk_errors),
        "drained": drained,
        "startup_s": round(startup_s, 1),
        **{k: checked[k] for k in ("lost", "doubled", "counts", "backoffice", "problems")},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds: list[tuple[str, int]] = [] if args.no_embedded else [("embedded", 1)]
    kinds += [("procrastinate", n) for n in args.workers]
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="cxstack-scale-") as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=not sys.stdout.isatty(),
        ) as progress,
    ):
        root = args.keep or Path(tmp)
        progress.console.print("[dim]training the demo's router once for every process of the run…[/]")
        warm_router_cache(_router_cache(args), args.embedder)
        for index, (kind, workers) in enumerate(kinds):
            rows.append(measure(kind, root / f"{index}-{kind}-{workers}", args, workers, progress))
    one = next((r["turns_per_s"] for r in rows if r["kind"] == "procrastinate" and r["workers"] == 1), None)
    for row in rows:
        if row["kind"] == "procrastinate" and one and row["turns_per_s"] is not None:
            row["ratio_to_ideal"] = round(row["turns_per_s"] / (row["workers"] * one), 2)
    return {
        "embedder": args.embedder or "the workspace's (minilm, as shipped)",
        "cores": os.cpu_count(),
        "concurrency_per_worker": args.concurrency,
        "api_processes": args.apis,
        "conversations_at_once": args.conversations,
        "seed": args.seed,
        "rows": rows,
    }


def report(results: dict[str, Any]) -> None:
    cores = results["cores"]
    table = Table(
        title=f"scale: answered turns/s vs workers, {results['rows'][0]['messages']} demo messages per row, "
        f"{results['conversations_at_once']} conversations at once",
        caption=f"This machine has {cores} cores for everything (API, workers, PostgreSQL, back office, this "
        f"client): {cores} workers at most can run at once, so more cannot scale here and the ratio to ideal "
        f"falls; on separate hosts each worker brings its own cores. Worker concurrency "
        f"{results['concurrency_per_worker']} jobs, {results['api_processes']} API process(es); embedder: "
        f"{results['embedder']}. Latency: ingest = POST to 2xx, end-to-end = POST to the turn committed "
        "(seen in the store, 25 ms polling). Lost/doubled checked by id in the store afterwards.",
    )
    for column in ("deployment", "turns/s", "ratio to ideal", "ingest p50 / p99 ms", "e2e p50 / p99 ms"):
        table.add_column(column, justify="left" if column == "deployment" else "right")
    table.add_column("lost", justify="right")
    table.add_column("doubled", justify="right")
    for row in results["rows"]:
        ratio = row.get("ratio_to_ideal")
        baseline = "baseline (default)" if row["kind"] == "embedded" else "-"
        table.add_row(
            row["deployment"],
            f"{row['turns_per_s']}",
            f"{ratio:.2f}" if ratio is not None else baseline,
            f"{row['ingest_ms']['p50']} / {row['ingest_ms']['p99']}",
            f"{row['e2e_ms']['p50']} / {row['e2e_ms']['p99']}",
            f"[{'red' if row['lost'] else 'green'}]{row['lost']}[/]",
            f"[{'red' if row['doubled'] else 'green'}]{row['doubled']}[/]",
        )
    console.print(table)
    for row in results["rows"]:
        late = row["messages"] - row["answered_in_time"]
        extras = []
        if late:
            extras.append(f"{late} not answered within the timeout")
        if row["post_errors"]:
            extras.append(f"post errors {row['post_errors']}")
        if not row["drained"]:
            extras.append("backlog NOT drained")
        if row["desk_errors"]:
            extras.append(f"desk errors {row['desk_errors']}")
        extras.append(
            f"escalations handed back by the desk {row['hand_backs']}, "
            f"no-reply turns {row['counts'].get('no_reply_turns', 0)}, replies sent "
            f"{row['counts'].get('replies_sent', 0)}/{row['counts'].get('replies', 0)}, "
            f"startup {row['startup_s']} s"
        )
        console.print(f"[dim]{row['deployment']}: {'; '.join(extras)}[/]")
        for problem in row["problems"][:10]:
            console.print(f"  [red]{problem}[/]")


def _workers(value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers takes counts like 1,2,4, not {value!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--workers takes counts of at least 1, not {value!r}")
    return counts


def _router_cache(args: argparse.Namespace) -> Path:
    from cxstack.app import Settings

    return Path(args.router_cache or Settings().cache_dir())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=400, help="messages per deployment")
    parser.add_argument("--workers", type=_workers, default=[1, 2, 4], help="worker counts, e.g. 1,2,4")
    parser.add_argument("--concurrency", type=int, default=2, help="jobs each worker runs at once")
    parser.add_argument("--conversations", type=int, default=24, help="customers posting at once")
    parser.add_argument("--apis", type=int, default=1, help="API processes of the scale-out deployment")
    parser.add_argument(
        "--embedder", default=None, help="default: the workspace's (minilm); hashing is quick"
    )
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded default's row")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL database (a schema is made in it)"
    )
    parser.add_argument("--answer-timeout", type=float, default=120.0, help="longest wait for one turn")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument(
        "--router-cache",
        type=Path,
        help="where the demo's trained router is kept between runs (default: the cache of CXSTACK_HOME, "
        "which serve uses too)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the runs' logs and SQLite files in this folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.conversations < 1 or args.conversations > args.messages:
        parser.error("--messages and --conversations must be at least 1, and conversations <= messages")
    results = run(args)
    report(results)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
