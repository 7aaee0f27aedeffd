"""The demo's held-out scripted conversations through replay, as `serve` runs them; thresholds tuned apart.

    python -m benchmarks.demo_heldout [--json PATH] [--embedder NAME] [--details]
    python -m benchmarks.demo_heldout --tune [--penalty 3] [--search coordinate|grid] [--json PATH]

Report (default): the demo workspace with its committed thresholds replays `conversations_heldout.jsonl`
through the service path (CxApp: store, turn worker, orchestrator; throwaway SQLite; actions against a fresh
demo back office per run, as `make run` serves it; every turn at a fixed Tuesday 10:00 New York time) and
prints routing accuracy, outcome agreement, automation and escalation rates, and wrong urgent escalations (an
escalation at priority urgent where the expected outcome is automated or the expected intent differs; aim 0),
each with its 95% Wilson interval and sample size. Beside it, measured in the same run:
  - the same engine on the tuning set (the data its thresholds were chosen on: the gap shows overfitting);
  - "route only": the same trained router on each conversation's first message, the outcome read off the
    predicted intent's mechanism (human or out of scope: escalated; otherwise automated). No context, no
    strategy rules, no slots, no confidence policy: what a plain intent classifier would score.

Tune (`--tune`): searches route_min_confidence, clarify_margin, knowledge_min_score, answer_min_confidence and
human_min_confidence (answer_min_confidence > knowledge_min_score, so a weak content answer can still be
refused) on the TUNING set
only, maximising outcome agreements minus `--penalty` x wrong urgent escalations (ties: more intents right,
then closest to the committed values), and prints the values to commit to the workspace's cxstack.yaml. It
never looks at the held-out set.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from scipy.stats import binomtest

from cxstack.app import Engine, build_engine, http_connectors
from cxstack.cli.services import replay_in_service
from cxstack.demo import demo_conversations_path, demo_workspace_path
from cxstack.demo.backoffice import create_backoffice_app
from cxstack.optimization.replay import (
    CONVERSATIONAL_INTENTS,
    ReplayedConversation,
    ScriptedConversation,
    load_scripts,
)
from cxstack.testing.http_standin import LocalHttpServer
from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content
from cxstack.workspace.workspace import Workspace

TUNED = (
    "route_min_confidence",
    "clarify_margin",
    "knowledge_min_score",
    "answer_min_confidence",
    "human_min_confidence",
)
# A replay of the tuning set takes ~5–10 s on 2 busy cores, so the grid is small: the coordinate search
# measures about 25–50 settings (~3–5 min), the full grid (--search grid) 255.
GRID: dict[str, tuple[float, ...]] = {
    "route_min_confidence": (0.30, 0.35, 0.40, 0.45, 0.50),
    "clarify_margin": (0.05, 0.10, 0.15),
    "knowledge_min_score": (0.25, 0.30, 0.35, 0.40),
    "answer_min_confidence": (0.35, 0.40, 0.45, 0.50, 0.55),
    "human_min_confidence": (0.40, 0.50, 0.60, 0.70, 0.80),
}
MIN_SAMPLE = 10  # below this a rate is "insufficient", not a number
# A Tuesday mid-morning in the demo's time zone (America/New_York): no weekend or night rule fires, as on most
# business days. Fixed, so that a figure does not depend on the day it is measured.
AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
# Conversations in flight at once: most of a turn's wall time is the channel's burst window (webchat waits
# 1.2 s for more messages), not CPU. The scratch store lives in RAM when the machine has /dev/shm.
CONCURRENCY = 64
SCRATCH = Path("/dev/shm")

console = Console(width=max(Console().width, 150))


# ---- figures ----------------------------------------------------------------------------------------------


@dataclass
class Figures:
    system: str
    sample_set: str
    conversations: int
    routing_labelled: int
    routing_correct: int
    outcome_labelled: int
    outcome_agreed: int
    automated: int
    escalated: int
    unresolved: int
    wrong_urgent: list[str] = field(default_factory=list)  # conversation ids; None when not measurable
    urgent_measured: bool = True
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def score(self, penalty: float) -> float:
        return self.outcome_agreed - penalty * len(self.wrong_urgent)

    def as_dict(self) -> dict[str, Any]:
        def rate(k: int, n: int) -> dict[str, Any]:
            low, high = wilson(k, n)
            return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [low, high] if n else None}

        return {
            "system": self.system,
            "set": self.sample_set,
            "conversations": self.conversations,
            "routing_accuracy": rate(self.routing_correct, self.routing_labelled),
            "outcome_agreement": rate(self.outcome_agreed, self.outcome_labelled),
            "automation_rate": rate(self.automated, self.conversations),
            "escalation_rate": rate(self.escalated, self.conversations),
            "unresolved": self.unresolved,
            "wrong_urgent_escalations": len(self.wrong_urgent) if self.urgent_measured else None,
            "wrong_urgent_ids": self.wrong_urgent,
            "disagreements": self.disagreements,
            "seconds": round(self.seconds, 2),
        }


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def from_replay(system: str, sample_set: str, results: Sequence[ReplayedConversation]) -> Figures:
    figures = Figures(system, sample_set, len(results), 0, 0, 0, 0, 0, 0, 0)
    for replayed in results:
        summary = replayed.outcome()
        script = replayed.script
        figures.automated += summary.outcome == "automated"
        figures.escalated += summary.outcome == "escalated"
        figures.unresolved += summary.outcome == "unresolved"
        intent_ok = outcome_ok = True
        if script.expected_intent is not None or script.expected_outcome is not None:
            figures.routing_labelled += 1
            intent_ok = summary.intent == script.expected_intent
            figures.routing_correct += intent_ok
        if script.expected_outcome is not None:
            figures.outcome_labelled += 1
            outcome_ok = summary.outcome == script.expected_outcome
            figures.outcome_agreed += outcome_ok
        escalation = replayed.escalation()
        if (
            escalation is not None
            and escalation.priority == "urgent"
            and (script.expected_outcome == "automated" or escalation.intent != script.expected_intent)
        ):
            figures.wrong_urgent.append(script.id)
        if not (intent_ok and outcome_ok):
            figures.disagreements.append(
                {
                    "id": script.id,
                    "expected": [script.expected_intent, script.expected_outcome],
                    "got": [summary.intent, summary.outcome],
                    "reason": summary.reason_code,
                }
            )
    return figures


def route_only(engine: Engine, workspace: Workspace, scripts: Sequence[ScriptedConversation]) -> Figures:
    """The trained router on the first message alone; outcome from the intent's mechanism."""
    threshold = workspace.settings.thresholds.route_min_confidence
    started = time.perf_counter()
    predictions = engine.router.predict_many([s.messages[0] for s in scripts], oos_threshold=threshold)
    figures = Figures(
        "route only (same router, first message, no context)", "held-out", len(scripts), 0, 0, 0, 0, 0, 0, 0
    )
    figures.urgent_measured = False
    for script, prediction in zip(scripts, predictions, strict=True):
        intent_cfg = workspace.intent(prediction.intent) if prediction.intent else None
        conversational = prediction.intent in CONVERSATIONAL_INTENTS
        # out of scope goes to a person; an intent goes where its mechanism says
        escalated = not conversational if intent_cfg is None else intent_cfg.mechanism == "human"
        outcome = "escalated" if escalated else "automated"
        figures.escalated += escalated
        figures.automated += not escalated
        if script.expected_intent is not None or script.expected_outcome is not None:
            figures.routing_labelled += 1
            figures.routing_correct += prediction.intent == script.expected_intent
        if script.expected_outcome is not None:
            figures.outcome_labelled += 1
            figures.outcome_agreed += outcome == script.expected_outcome
    figures.seconds = time.perf_counter() - started
    return figures


# ---- running ----------------------------------------------------------------------------------------------


def with_thresholds(workspace: Workspace, values: dict[str, float]) -> Workspace:
    content = canonical_content(workspace)
    content["settings"]["thresholds"].update(values)
    return workspace_from_content(content, root=workspace.root)


def replay(
    engine: Engine,
    workspace: Workspace,
    scripts: Sequence[ScriptedConversation],
    *,
    concurrency: int = CONCURRENCY,
) -> list[ReplayedConversation]:
    """Through the service path on a throwaway store; the trained router and knowledge index are reused.
    Back-office actions run against a fresh demo back office (its own SQLite seeded as `make run` seeds it),
    so an order the back office refuses to change is refused here too, and no run sees another's refunds.
    Every turn runs at AT, so rules on hours and weekdays give the same figures on any day. `concurrency`:
    conversations at once (1 when a model server that answers one request at a time is configured)."""
    with (
        tempfile.TemporaryDirectory(prefix="cxstack-backoffice-") as folder,
        LocalHttpServer(create_backoffice_app(Path(folder) / "northwind.db")) as backoffice_url,
    ):
        live = replace(engine, workspace=workspace).with_connectors(
            http_connectors(workspace, backoffice_url=backoffice_url)
        )
        return asyncio.run(
            replay_in_service(
                live,
                scripts,
                None,
                concurrency=concurrency,
                scratch_dir=SCRATCH if SCRATCH.is_dir() else None,
                at=AT,
            )
        )


def measure(
    system: str,
    sample_set: str,
    engine: Engine,
    workspace: Workspace,
    scripts: Sequence[ScriptedConversation],
) -> Figures:
    started = time.perf_counter()
    figures = from_replay(system, sample_set, replay(engine, workspace, scripts))
    figures.seconds = time.perf_counter() - started
    return figures


def cell(k: int, n: int) -> str:
    if n < MIN_SAMPLE:
        return f"insufficient (n={n})"
    low, high = wilson(k, n)
    return f"{k / n * 100:.1f} [{low * 100:.0f}–{high * 100:.0f}] n={n}"


def render(rows: Iterable[Figures], title: str) -> None:
    table = Table(title=title)
    for column in (
        "system",
        "set",
        "routing acc %",
        "outcome agreement %",
        "automation %",
        "escalation %",
        "unresolved",
        "wrong urgent (aim 0)",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.system,
            r.sample_set,
            cell(r.routing_correct, r.routing_labelled),
            cell(r.outcome_agreed, r.outcome_labelled),
            cell(r.automated, r.conversations),
            cell(r.escalated, r.conversations),
            str(r.unresolved),
            (str(len(r.wrong_urgent)) + (f" ({', '.join(r.wrong_urgent)})" if r.wrong_urgent else ""))
            if r.urgent_measured
            else "n/a (no priorities)",
        )
    console.print(table)
    console.print(
        "[dim]rates with 95% Wilson intervals. routing acc: the conversation's intent (its first request; a "
        "greeting only if nothing else) equals the expected one, out of scope included. outcome: automated, "
        "escalated or unresolved (ended while the bot was still asking) against the expected outcome.[/dim]"
    )


def details(figures: Figures) -> None:
    table = Table(title=f"disagreements: {figures.system}, {figures.sample_set}")
    for column in ("id", "expected intent / outcome", "got intent / outcome", "escalation reason"):
        table.add_column(column)
    for d in figures.disagreements:
        table.add_row(
            d["id"],
            " / ".join(map(str, d["expected"])),
            " / ".join(map(str, d["got"])),
            str(d["reason"] or ""),
        )
    console.print(table)


# ---- tuning -----------------------------------------------------------------------------------------------


@dataclass
class Search:
    engine: Engine
    workspace: Workspace
    scripts: Sequence[ScriptedConversation]
    penalty: float
    committed: dict[str, float]
    evaluated: dict[tuple[float, ...], Figures] = field(default_factory=dict)

    def evaluate(self, values: dict[str, float]) -> Figures:
        key = tuple(values[name] for name in TUNED)
        if key not in self.evaluated:
            label = ", ".join(f"{name}={values[name]:g}" for name in TUNED)
            self.evaluated[key] = measure(
                label, "tuning", self.engine, with_thresholds(self.workspace, values), self.scripts
            )
        return self.evaluated[key]

    def rank(self, values: dict[str, float]) -> tuple[float, int, float]:
        figures = self.evaluate(values)
        distance = sum(abs(values[n] - self.committed[n]) for n in TUNED)
        return (figures.score(self.penalty), figures.routing_correct, -distance)


def valid(values: dict[str, float]) -> bool:
    return values["answer_min_confidence"] > values["knowledge_min_score"]


def grid_search(search: Search) -> dict[str, float]:
    candidates = [
        dict(zip(TUNED, combo, strict=True)) for combo in itertools.product(*(GRID[n] for n in TUNED))
    ]
    candidates = [c for c in candidates if valid(c)]
    console.print(f"[dim]grid: {len(candidates)} threshold settings on the tuning set…[/dim]")
    return max(candidates, key=search.rank)


def coordinate_search(search: Search, rounds: int = 3) -> dict[str, float]:
    """One threshold at a time over its grid (knowledge_min_score and answer_min_confidence together, since
    they constrain each other), from the committed values, until a round changes nothing."""
    best = dict(search.committed)
    if not valid(best):
        best["answer_min_confidence"] = min(
            v for v in GRID["answer_min_confidence"] if v > best["knowledge_min_score"]
        )
    coordinates: list[tuple[str, ...]] = [
        ("route_min_confidence",),
        ("clarify_margin",),
        ("knowledge_min_score", "answer_min_confidence"),
        ("human_min_confidence",),
    ]
    for round_number in range(rounds):
        before = dict(best)
        for names in coordinates:
            options = [
                dict(best, **dict(zip(names, combo, strict=True)))
                for combo in itertools.product(*(GRID[n] for n in names))
            ]
            best = max([o for o in options if valid(o)], key=search.rank)
        console.print(
            f"[dim]round {round_number + 1}: {len(search.evaluated)} settings measured, best {best}[/dim]"
        )
        if best == before:
            break
    return best


def tune(args: argparse.Namespace, engine: Engine, workspace: Workspace) -> dict[str, Any]:
    scripts = load_scripts(args.tuning)
    thresholds = workspace.settings.thresholds
    committed = {name: float(getattr(thresholds, name)) for name in TUNED}
    search = Search(engine, workspace, scripts, args.penalty, committed)
    started = time.perf_counter()
    chosen = grid_search(search) if args.search == "grid" else coordinate_search(search)
    ranked = sorted(
        search.evaluated.items(),
        key=lambda kv: search.rank(dict(zip(TUNED, kv[0], strict=True))),
        reverse=True,
    )
    table = Table(
        title=f"tuning set: best of {len(search.evaluated)} settings "
        f"(score = agreements − {args.penalty:g} × wrong urgent)"
    )
    for column in (
        "settings",
        "score",
        "outcome agreement %",
        "routing acc %",
        "wrong urgent",
        "automation %",
    ):
        table.add_column(column)
    for _, figures in ranked[:10]:
        table.add_row(
            figures.system,
            f"{figures.score(args.penalty):g}",
            cell(figures.outcome_agreed, figures.outcome_labelled),
            cell(figures.routing_correct, figures.routing_labelled),
            str(len(figures.wrong_urgent)),
            cell(figures.automated, figures.conversations),
        )
    console.print(table)
    at_committed = search.evaluate(committed)
    console.print(
        f"committed values: score {at_committed.score(args.penalty):g} "
        f"(agreement {at_committed.outcome_agreed}/{at_committed.outcome_labelled}, "
        f"wrong urgent {len(at_committed.wrong_urgent)})"
        + ("" if valid(committed) else "; not a candidate: answer_min_confidence ≤ knowledge_min_score")
    )
    best = search.evaluate(chosen)
    console.print(
        f"chosen on the tuning set: score {best.score(args.penalty):g} (agreement {best.outcome_agreed}/"
        f"{best.outcome_labelled}, wrong urgent {len(best.wrong_urgent)}), "
        f"search took {time.perf_counter() - started:.0f} s"
    )
    console.print("thresholds for cxstack.yaml (then report with `python -m benchmarks.demo_heldout`):")
    console.print(
        "thresholds:\n" + "".join(f"  {name}: {chosen[name]:.2f}\n" for name in TUNED), highlight=False
    )
    return {
        "mode": "tune",
        "penalty": args.penalty,
        "search": args.search,
        "committed": committed,
        "committed_figures": at_committed.as_dict(),
        "chosen": chosen,
        "evaluated": [dict(zip(TUNED, key, strict=True), **fig.as_dict()) for key, fig in ranked],
    }


def report(args: argparse.Namespace, engine: Engine, workspace: Workspace) -> dict[str, Any]:
    heldout = load_scripts(args.heldout)
    tuning = load_scripts(args.tuning)
    ours = measure("cxstack (replay, committed thresholds)", "held-out", engine, workspace, heldout)
    on_tuning = measure(
        "same engine on the data its thresholds were chosen on", "tuning", engine, workspace, tuning
    )
    baseline = route_only(engine, workspace, heldout)
    thresholds = {name: float(getattr(workspace.settings.thresholds, name)) for name in TUNED}
    render(
        [ours, on_tuning, baseline],
        f"Demo held-out conversations ({workspace.settings.name}, {engine.embedder.name}, "
        + ", ".join(f"{k}={v:g}" for k, v in thresholds.items())
        + ")",
    )
    if args.details:
        details(ours)
    return {
        "mode": "report",
        "workspace_version": workspace.version,
        "thresholds": thresholds,
        "heldout": ours.as_dict(),
        "tuning": on_tuning.as_dict(),
        "route_only_heldout": baseline.as_dict(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--embedder", default=None, help="override the workspace's embedder")
    parser.add_argument("--workspace", type=Path, default=demo_workspace_path())
    parser.add_argument("--tuning", type=Path, default=demo_conversations_path("tuning"))
    parser.add_argument("--heldout", type=Path, default=demo_conversations_path("heldout"))
    parser.add_argument("--tune", action="store_true", help="choose thresholds on the tuning set")
    parser.add_argument(
        "--penalty", type=float, default=3.0, help="agreements one wrong urgent escalation costs"
    )
    parser.add_argument("--search", choices=("coordinate", "grid"), default="coordinate")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,…",
        help="replace one threshold's candidate values, e.g. --grid route_min_confidence=0.35,0.4,0.45",
    )
    parser.add_argument("--details", action="store_true", help="list every held-out disagreement")
    args = parser.parse_args(argv)
    for item in args.grid:
        name, _, values = item.partition("=")
        if name not in GRID or not values:
            parser.error(f"--grid {item}: expected NAME=V1,V2 with NAME one of {', '.join(TUNED)}")
        GRID[name] = tuple(float(v) for v in values.split(","))

    workspace = load_workspace(args.workspace)
    with console.status("training the router and indexing knowledge (as serve does)…"):
        engine = build_engine(workspace, embedder_name=args.embedder, dry_run_actions=True)  # rewired per run
    payload = tune(args, engine, workspace) if args.tune else report(args, engine, workspace)
    payload["embedder"] = engine.embedder.name
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    return payload


if __name__ == "__main__":
    main()
