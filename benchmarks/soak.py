"""Soak: a scale-out deployment at 80 % of its measured maximum for 10 minutes; 0 lost, a backlog that drains,
flat memory.

    python -m benchmarks.soak [--minutes 10] [--rate TURNS_PER_S] [--fraction 0.8] [--workers 2] [--apis 2]
                              [--runtime procrastinate|embedded] [--embedder hashing] [--json PATH]

1. Starts the deployment (benchmarks/_deployment.py): by default 2 `cxstack serve --runtime procrastinate` API
   processes and 2 `cxstack worker` processes on a fresh PostgreSQL schema, with the demo back office.
2. Unless `--rate` is given, measures the maximum: a closed loop of `--probe-conversations` customers posting
   `--probe-messages` demo messages as fast as their turns are answered (the scale benchmark's load).
3. Offers `--fraction` of it for `--minutes` as an open loop: Poisson arrivals at that mean rate, whatever the
   service does, each the next message of a randomly chosen conversation (through both API processes).
4. Every `--sample-every` seconds: the resident memory of every process, the backlog in the store
   (conversations and messages waiting for a turn, replies not sent, jobs queued) and the answers so far.
5. Then waits for the backlog to drain and checks the store by id: 0 lost, 0 doubled.

Reports the memory slope per process (MB/min, least squares over the second half of the soak), the backlog's
maximum and drain time, latency percentiles per minute, and a chart (SVG: offered and answered rate, backlog,
memory over time) beside the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks._deployment import (
    DEFAULT_PG_URL,
    Deployment,
    LoadRun,
    OpenLoop,
    check_by_id,
    closed_loop,
    deployed,
    plan,
    rss_mb,
    spread_ms,
    wait_answered,
    wait_drained,
    warm_router_cache,
    write_json,
)

console = Console(width=None if sys.stdout.isatty() else 140)
FLAT_MB_PER_MIN = 0.5  # the line between flat and growing: 0.5 MB/min is 720 MB a day


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


async def take_sample(
    deployment: Deployment, loop: OpenLoop, samples: list[dict[str, Any]], started: float
) -> None:
    pids = await asyncio.to_thread(deployment.pids)
    backlog = await asyncio.to_thread(deployment.backlog)
    sent = loop.run.sent
    samples.append(
        {
            "t": round(time.monotonic() - started, 2),
            "rss_mb": {name: rss_mb(pid) for name, pid in pids.items()},
            "pids": pids,
            "arrived": len(sent),
            "answered": sum(1 for s in sent if s.answered_mono is not None),
            **backlog,
        }
    )


async def sample(
    deployment: Deployment, loop: OpenLoop, every_s: float, samples: list[dict[str, Any]], started: float
) -> None:
    """Appends a sample every `every_s` seconds until cancelled."""
    while True:
        await take_sample(deployment, loop, samples, started)
        await asyncio.sleep(every_s)


async def soak(
    deployment: Deployment, args: argparse.Namespace, rate: float
) -> tuple[OpenLoop, list[dict[str, Any]], dict[str, Any], list[Any]]:
    seconds = args.minutes * 60
    messages = max(20, math.ceil(rate * seconds * 1.2))  # more than the arrivals need, so none runs out
    conversations = plan(messages, max(10, messages // 15), args.seed + 1, prefix="soak")
    loop = OpenLoop(rate=rate, seconds=seconds, seed=args.seed)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    sampling = asyncio.create_task(sample(deployment, loop, args.sample_every, samples, started))
    reporter = asyncio.create_task(_progress(loop, samples, seconds))
    try:
        await loop.drive(deployment, conversations)
        arrivals_end = time.monotonic()
        assert loop.watcher is not None
        answered = await wait_answered(loop.watcher, args.drain_timeout)
        answered_s = time.monotonic() - arrivals_end
        drained, outbox_s = await asyncio.to_thread(wait_drained, deployment, args.drain_timeout)
        loop.drained_mono = time.monotonic()
    finally:
        reporter.cancel()
        await asyncio.sleep(0)
        sampling.cancel()
        await asyncio.gather(sampling, reporter, return_exceptions=True)
    await take_sample(deployment, loop, samples, started)  # the drained state closes the chart
    drain = {
        "all_answered": answered,
        "answered_after_s": round(answered_s, 1),
        "drained": drained,
        "drain_s": round(answered_s + outbox_s, 1),
        "arrivals_end_t": round(arrivals_end - started, 1),
    }
    return loop, samples, drain, conversations


async def _progress(loop: OpenLoop, samples: list[dict[str, Any]], seconds: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(30)
        last = samples[-1] if samples else {}
        console.print(
            f"[dim]soak {time.monotonic() - started:.0f}/{seconds:.0f} s: {len(loop.run.sent)} posted, "
            f"{last.get('answered', 0)} answered, backlog {last.get('pending_messages', '?')} messages, "
            f"outbox {last.get('outbox_pending', '?')}[/]"
        )


def per_minute(loop: OpenLoop) -> list[dict[str, Any]]:
    by_minute: defaultdict[int, list[Any]] = defaultdict(list)
    for one in loop.run.sent:
        by_minute[int((one.sent_mono - loop.run.started_mono) // 60)].append(one)
    rows = []
    for minute in sorted(by_minute):
        posted = by_minute[minute]
        rows.append(
            {
                "minute": minute + 1,
                "posted": len(posted),
                "ingest_ms": spread_ms([s.ingest_s for s in posted if s.ingest_s is not None]),
                "e2e_ms": spread_ms([s.e2e_s for s in posted if s.e2e_s is not None]),
            }
        )
    return rows


def memory(samples: list[dict[str, Any]], soak_end_t: float) -> dict[str, Any]:
    """Per process: RSS at the start and end of the soak, and the slope over its second half."""
    during = [s for s in samples if s["t"] <= soak_end_t]
    names = sorted({name for s in during for name in s["rss_mb"]})
    found: dict[str, Any] = {}
    for name in names:
        points = [(s["t"], s["rss_mb"][name]) for s in during if s["rss_mb"].get(name) is not None]
        if not points:
            continue
        pids = {s["pids"][name] for s in during if name in s["pids"]}
        second_half = [(t, v) for t, v in points if t >= soak_end_t / 2]
        slope = slope_per_min(second_half)
        found[name] = {
            "start_mb": round(points[0][1], 1),
            "end_mb": round(points[-1][1], 1),
            "max_mb": round(max(v for _, v in points), 1),
            "slope_mb_per_min_second_half": None if slope is None else round(slope, 3),
            "flat": slope is not None and slope <= FLAT_MB_PER_MIN,
            "restarted": len(pids) > 1,
        }
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"embedder": args.embedder}
    if args.runtime == "procrastinate":
        options |= {
            "workers": args.workers,
            "concurrency": args.concurrency,
            "apis": args.apis,
            "pg_url": args.pg_url,
        }
    with tempfile.TemporaryDirectory(prefix="cxstack-soak-") as tmp:
        root = args.keep or Path(tmp)
        console.print("[dim]training the demo's router once for every process of the run…[/]")
        options["router_cache"] = warm_router_cache(_router_cache(args), args.embedder)
        console.print(f"[dim]starting the {args.runtime} deployment (logs in {root})…[/]")
        with deployed(args.runtime, root, **options) as deployment:
            probe: dict[str, Any] | None = None
            probe_plan: list[Any] = []
            probe_run = LoadRun()
            if args.rate is None:
                console.print(f"[dim]measuring the maximum: {args.probe_messages} messages, closed loop…[/]")
                probe_plan = plan(args.probe_messages, args.probe_conversations, args.seed, prefix="probe")
                probe_run = asyncio.run(closed_loop(deployment, probe_plan, answer_timeout_s=120))
                answered = [s for s in probe_run.sent if s.e2e_s is not None]
                seconds = probe_run.ended_mono - probe_run.started_mono
                probe = {
                    "messages": len(probe_run.sent),
                    "answered": len(answered),
                    "seconds": round(seconds, 1),
                    "turns_per_s": round(len(answered) / seconds, 2),
                    "e2e_ms": spread_ms([s.e2e_s for s in answered if s.e2e_s is not None]),
                }
                wait_drained(deployment, args.drain_timeout)
                rate = args.fraction * probe["turns_per_s"]
                console.print(f"[dim]maximum {probe['turns_per_s']} turns/s; soaking at {rate:.2f}/s[/]")
            else:
                rate = args.rate
            loop, samples, drain, conversations = asyncio.run(soak(deployment, args, rate))
            both = LoadRun(sent=probe_run.sent + loop.run.sent)
            checked = check_by_id(deployment, probe_plan + conversations, both)
            processes = sorted(deployment.pids())
    arrivals_end_t = drain["arrivals_end_t"]
    soak_seconds = loop.run.ended_mono - loop.run.started_mono
    lateness = sorted(loop.lateness_s)
    return {
        "runtime": args.runtime,
        "workers": args.workers if args.runtime == "procrastinate" else 1,
        "api_processes": args.apis if args.runtime == "procrastinate" else 1,
        "concurrency_per_worker": args.concurrency,
        "embedder": args.embedder or "the workspace's (minilm, as shipped)",
        "cores": os.cpu_count(),
        "minutes": args.minutes,
        "probe": probe,
        "offered_rate": round(rate, 3),
        "fraction": args.fraction if args.rate is None else None,
        "arrived": len(loop.run.sent),
        "arrival_rate": round(len(loop.run.sent) / soak_seconds, 3) if soak_seconds else None,
        "client_lateness_p99_s": round(lateness[int(0.99 * (len(lateness) - 1))], 3) if lateness else None,
        "post_errors": dict(loop.run.post_errors),
        "hand_backs": loop.run.hand_backs,
        "desk_errors": dict(loop.run.desk_errors),
        "latency_ms": {
            "ingest": spread_ms([s.ingest_s for s in loop.run.sent if s.ingest_s is not None]),
            "e2e": spread_ms([s.e2e_s for s in loop.run.sent if s.e2e_s is not None]),
        },
        "per_minute": per_minute(loop),
        "backlog_max": {
            key: max((s.get(key, 0) for s in samples), default=0)
            for key in ("pending_conversations", "pending_messages", "outbox_pending", "jobs_todo")
            if any(key in s for s in samples)
        },
        "drain": drain,
        "memory": memory(samples, arrivals_end_t),
        "processes": processes,
        "check": checked,
        "samples": samples,
    }


def report(results: dict[str, Any]) -> None:
    check, drain, probe = results["check"], results["drain"], results["probe"]
    title = (
        f"soak: {results['runtime']}, {results['api_processes']} API + {results['workers']} worker "
        "process(es), "
        f"{results['minutes']} min at {results['offered_rate']} turns/s"
    )
    table = Table(
        title=title,
        caption=f"{results['cores']} cores for everything; embedder: {results['embedder']}; worker "
        f"concurrency {results['concurrency_per_worker']}. Memory is flat when its slope over the soak's "
        f"second half is at most {FLAT_MB_PER_MIN} MB/min (a short run reads a one-off step as a slope).",
    )
    table.add_column("measure")
    table.add_column("observed", justify="right")
    table.add_column("baseline / target", justify="right")
    if probe is not None:
        table.add_row("maximum (closed loop), turns/s", f"{probe['turns_per_s']}", "measured in this run")
        table.add_row(
            "offered rate (open loop), turns/s",
            f"{results['offered_rate']} (arrived {results['arrival_rate']}/s)",
            f"{results['fraction']:.0%} of the maximum",
        )
    else:
        table.add_row("offered rate (open loop), turns/s", f"{results['offered_rate']}", "--rate")
    table.add_row("messages posted", str(results["arrived"]), "-")
    counts = check["counts"]
    table.add_row(
        "turns, probe and soak: with a reply / silent (a person owned it)",
        f"{counts.get('replies', 0)} / {counts.get('no_reply_turns', 0)}",
        f"desk handed back {results['hand_backs']}",
    )
    table.add_row("lost (checked by id)", str(check["lost"]), "0")
    table.add_row("doubled (checked by id)", str(check["doubled"]), "0")
    backlog = results["backlog_max"]
    table.add_row(
        "backlog max: conversations / messages waiting",
        f"{backlog.get('pending_conversations')} / {backlog.get('pending_messages')}",
        "bounded",
    )
    table.add_row(
        "backlog max: replies unsent / jobs queued",
        f"{backlog.get('outbox_pending')} / {backlog.get('jobs_todo', '-')}",
        "bounded",
    )
    table.add_row(
        "drain after the last arrival, s",
        f"{drain['drain_s']} ({'drained' if drain['drained'] and drain['all_answered'] else 'NOT drained'})",
        "drains",
    )
    latency = results["latency_ms"]
    table.add_row("ingest p50 / p99 ms", f"{latency['ingest']['p50']} / {latency['ingest']['p99']}", "-")
    table.add_row(
        "end-to-end p50 / p99 ms",
        f"{latency['e2e']['p50']} / {latency['e2e']['p99']}",
        f"max probe: {probe['e2e_ms']['p50']} / {probe['e2e_ms']['p99']}" if probe else "-",
    )
    for name, figures in results["memory"].items():
        slope = figures["slope_mb_per_min_second_half"]
        verdict = "flat" if figures["flat"] else "GROWING" if slope is not None else "?"
        table.add_row(
            f"RSS {name}: start → end MB, slope MB/min",
            f"{figures['start_mb']} → {figures['end_mb']}, {slope} ({verdict})"
            + (" (restarted)" if figures["restarted"] else ""),
            f"≤ {FLAT_MB_PER_MIN}",
        )
    console.print(table)
    minutes = Table(title="latency per minute of the soak (by the minute a message was posted)")
    for column in ("minute", "posted", "ingest p50 / p99 ms", "e2e p50 / p99 ms"):
        minutes.add_column(column, justify="right")
    for row in results["per_minute"]:
        minutes.add_row(
            str(row["minute"]),
            str(row["posted"]),
            f"{row['ingest_ms']['p50']} / {row['ingest_ms']['p99']}",
            f"{row['e2e_ms']['p50']} / {row['e2e_ms']['p99']}",
        )
    console.print(minutes)
    if results["post_errors"]:
        console.print(f"[yellow]post errors (retried): {results['post_errors']}[/]")
    for problem in check["problems"][:10]:
        console.print(f"  [red]{problem}[/]")


# ---- the chart ---------------------------------------------------------------------------------------------


def chart_svg(results: dict[str, Any]) -> str:
    """Three panels over the soak's time: offered and answered turns/s, the backlog, each process's RSS."""
    samples = results["samples"]
    width, panel_h, left, gap = 900, 180, 70, 40
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    rates: dict[str, list[tuple[float, float]]] = {"offered (posted)/s": [], "answered/s": []}
    for before, after in itertools.pairwise(samples):
        dt = after["t"] - before["t"]
        if dt > 0:
            rates["offered (posted)/s"].append((after["t"], (after["arrived"] - before["arrived"]) / dt))
            rates["answered/s"].append((after["t"], (after["answered"] - before["answered"]) / dt))
    backlog = {
        key.replace("_", " "): [(s["t"], float(s[key])) for s in samples if key in s]
        for key in ("pending_messages", "outbox_pending", "jobs_todo")
    }
    names = sorted({name for s in samples for name in s["rss_mb"]})
    rss = {
        name: [(s["t"], float(s["rss_mb"][name])) for s in samples if s["rss_mb"].get(name) is not None]
        for name in names
    }
    panels = [("turns per second", rates), ("backlog", backlog), ("resident memory, MB", rss)]
    end_t = results["drain"]["arrivals_end_t"]
    t_max = max([end_t, *(s["t"] for s in samples)]) or 1.0
    height = len(panels) * (panel_h + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    plot_w = width - left - 200
    for index, (title, series) in enumerate(panels):
        top = gap + index * (panel_h + gap)
        values = [v for points in series.values() for _, v in points]
        v_max = max(values, default=1.0) or 1.0
        parts.append(f'<text x="{left}" y="{top - 8}" font-weight="bold">{title}</text>')
        parts.append(
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{v_max:.1f}</text>')
        parts.append(f'<text x="{left - 6}" y="{top + panel_h}" text-anchor="end">0</text>')
        x_end = left + plot_w * end_t / t_max
        parts.append(
            f'<line x1="{x_end:.1f}" y1="{top}" x2="{x_end:.1f}" y2="{top + panel_h}" stroke="#aaa" '
            'stroke-dasharray="4 3"/>'
        )
        for number, (name, points) in enumerate(series.items()):
            if not points:
                continue
            color = colors[number % len(colors)]
            path = " ".join(
                f"{left + plot_w * t / t_max:.1f},{top + panel_h - panel_h * v / v_max:.1f}"
                for t, v in points
            )
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            y = top + 14 + 16 * number
            parts.append(f'<text x="{left + plot_w + 10}" y="{y}" fill="{color}">{name}</text>')
    axis_y = height - 10
    parts.append(f'<text x="{left}" y="{axis_y}">0 s</text>')
    parts.append(
        f'<text x="{left + plot_w}" y="{axis_y}" text-anchor="end">{t_max:.0f} s '
        "(dashed: the last arrival; after it, the drain)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _router_cache(args: argparse.Namespace) -> Path:
    from cxstack.app import Settings

    return Path(args.router_cache or Settings().cache_dir())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--rate", type=float, help="turns/s to offer (default: --fraction of the measured max)"
    )
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--runtime", choices=("procrastinate", "embedded"), default="procrastinate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--apis", type=int, default=2, help="API processes (the client alternates)")
    parser.add_argument("--concurrency", type=int, default=2, help="jobs each worker runs at once")
    parser.add_argument(
        "--embedder", default=None, help="default: the workspace's (minilm); hashing is quick"
    )
    parser.add_argument("--probe-messages", type=int, default=300)
    parser.add_argument("--probe-conversations", type=int, default=24)
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL database (a schema is made in it)"
    )
    parser.add_argument(
        "--router-cache",
        type=Path,
        help="where the demo's trained router is kept between runs (default: the cache of CXSTACK_HOME, "
        "which serve uses too)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the run's logs in this folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--chart", type=Path, help="SVG chart (default: beside --json, same name)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 0 < args.fraction <= 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--minutes and --rate must be positive, --fraction in (0, 1]")
    if args.probe_conversations > args.probe_messages:
        parser.error("--probe-conversations must not exceed --probe-messages")
    results = run(args)
    report(results)
    chart = args.chart or (args.json.with_suffix(".svg") if args.json else None)
    if chart is not None:
        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_text(chart_svg(results), encoding="utf-8")
        console.print(f"[dim]chart: {chart}[/]")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
