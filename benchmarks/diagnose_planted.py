"""diagnose_planted: does `cxstack diagnose` point at the layer and the change behind a planted fault?

    python -m benchmarks.diagnose_planted [--json PATH] [--embedder NAME] [--scripts PATH]

On the demo workspace, the sample conversations (`conversations_heldout.jsonl` by default) are replayed
through the service path into ONE store with the original workspace, then once more for each planted fault
with a copy of the workspace carrying that fault and two decoy changes that should not matter (the review
sampling rate, and the owner of a fact no conversation cited). After each faulty replay, `diagnose` runs from
the original version to the faulty one, exactly as `cxstack diagnose --from V1 --to V2` does. A hit: the
planted layer ranks first among the layers (and the planted change first among the workspace changes); top-2
is also counted; a change ranked first on a tie at zero contribution is a miss. Each fault is diagnosed twice:
from the trace signals alone, and with a stand-in reviewer's verdicts, as a team that reviews would have them:
the intent against the script's `expected` intent, and every answer from facts against the original run's
answer to the same message (a golden set: a broken fact's text is sent as a grounded answer, and only a
reader can tell).
The baseline is measured in the same run: rank the layers by the raw count of failing conversations in the
faulty window alone (no comparison with the original); and chance, 1/#layers.

Faults (one per layer): a fact's text broken (the fact the original replay cited most), the routing
threshold raised (and, separately, lowered), an action pointed at a path the back office does not have
(every call fails), a policy rule forcing a person on the busiest automated intent, and an agent's turn
budget cut to one (so the agent of multi-turn refunds hands off mid-task). Back-office calls go to a fresh
demo back office per replay (its own SQLite), so no replay sees another's refunds. Every turn runs at the
same instant.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cxstack.app import Settings, build_engine, http_connectors, open_store
from cxstack.cli.services import replay_in_service
from cxstack.demo import demo_conversations_path, demo_workspace_path
from cxstack.demo.backoffice import create_backoffice_app
from cxstack.integrations.embedders.registry import load_embedder
from cxstack.optimization.diagnose import Diagnosis, FaultLayer, QualityNote, diagnose
from cxstack.optimization.replay import load_scripts
from cxstack.testing.http_standin import LocalHttpServer
from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content
from cxstack.workspace.workspace import Workspace

console = Console(soft_wrap=True)
AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # a Tuesday afternoon in New York: no hour or weekend rule
CONCURRENCY = 16
LAYERS = [layer for layer in FaultLayer if layer is not FaultLayer.UNATTRIBUTED]


@dataclass
class Fault:
    name: str
    layer: FaultLayer
    changes: tuple[str, ...]  # names of the planted workspace change(s) a hit may name
    plant: Callable[[dict[str, Any]], None]


def add_decoys(content: dict[str, Any], spare_fact: str) -> None:
    content["settings"]["review_sampling"]["rate"] = 0.3
    for fact in content["facts"]:
        if fact["id"] == spare_fact:
            fact["owner"] = "someone-else@northwind.example"


def plan_faults(content: dict[str, Any], cited: Counter[str], intents: Counter[str]) -> list[Fault]:
    fact = cited.most_common(1)[0][0]
    busiest = intents.most_common(1)[0][0]

    def break_fact(c: dict[str, Any]) -> None:
        for item in c["facts"]:
            if item["id"] == fact:
                item["text"] = "TODO: draft text, to be written."

    def raise_threshold(c: dict[str, Any]) -> None:
        c["settings"]["thresholds"]["route_min_confidence"] = 0.8

    def lower_threshold(c: dict[str, Any]) -> None:
        c["settings"]["thresholds"]["route_min_confidence"] = 0.05

    def fail_action(c: dict[str, Any]) -> None:
        for action in c["actions"]:
            if action["name"] == "get_order_status":
                action["path"] = "/v2/orders/{order_id}"

    def add_rule(c: dict[str, Any]) -> None:
        c["strategy"]["rules"].append(
            {
                "id": "planted-human",
                "description": "Planted: every conversation of the busiest intent goes to a person.",
                "when": {"intent_in": [busiest]},
                "then": {"force_human": True, "queue": "general"},
            }
        )

    def break_agent(c: dict[str, Any]) -> None:
        for agent in c["agents"]:
            if agent["name"] == "refunds":
                agent["max_turns"] = 1

    return [
        Fault(f"fact {fact} broken", FaultLayer.KNOWLEDGE, (fact,), break_fact),
        Fault(
            "route_min_confidence 0.40→0.80",
            FaultLayer.ROUTING,
            ("thresholds.route_min_confidence",),
            raise_threshold,
        ),
        Fault(
            "route_min_confidence 0.40→0.05",
            FaultLayer.ROUTING,
            ("thresholds.route_min_confidence",),
            lower_threshold,
        ),
        Fault("get_order_status → missing path", FaultLayer.ACTIONS, ("get_order_status",), fail_action),
        Fault(f"rule: {busiest} → person", FaultLayer.POLICY, ("planted-human",), add_rule),
        Fault("refunds agent max_turns 1", FaultLayer.AGENTS, ("refunds",), break_agent),
    ]


def replay_into(
    store_settings: Settings,
    workspace: Workspace,
    embedder: Any,
    scripts: Sequence[Any],
    prefix: str,
    reviews: dict[str, QualityNote],
    answers: dict[str, list[tuple[str | None, tuple[str, ...]]]],
) -> float:
    """Replays `scripts` into the store. `reviews` gets a stand-in reviewer's verdict on each conversation:
    its intent against the script's expected intent, and (once `answers` holds the reference run's) each
    answer from facts against the reference run's answer to the same message."""
    started = time.perf_counter()
    engine = build_engine(workspace, embedder=embedder, llm=None)
    with (
        tempfile.TemporaryDirectory(prefix="cxstack-backoffice-") as folder,
        LocalHttpServer(create_backoffice_app(Path(folder) / "northwind.db")) as backoffice_url,
    ):
        live = engine.with_connectors(http_connectors(workspace, backoffice_url=backoffice_url))
        results = asyncio.run(
            replay_in_service(
                live, scripts, store_settings, conversation_prefix=prefix, concurrency=CONCURRENCY, at=AT
            )
        )
    reference = not answers
    for result in results:
        outcome = result.outcome()
        given = [(turn.reply, turn.facts) for turn in result.turns]
        if reference:
            answers[result.script.id] = given
        failed = []
        if outcome.expected_intent is not None and outcome.intent != outcome.expected_intent:
            failed.append("intent")
        expected = answers.get(result.script.id, [])
        if any(facts and (reply, facts) not in expected for reply, facts in given):
            failed.append("correctness")
        reviews[str(result.conversation_id)] = QualityNote(not failed, tuple(failed), "review")
    return time.perf_counter() - started


def count_baseline(store: Any, version: str) -> tuple[Counter[str], Counter[str]]:
    """Facts cited and intents automated in the original replay (to choose what to break)."""
    cited: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    for trace in store.traces_since(datetime(1970, 1, 1, tzinfo=UTC), 100_000):
        if str(trace.workspace_version) != version:
            continue
        if trace.outcome == "automated" and trace.intent and trace.mechanism not in (None, "conversational"):
            intents[trace.intent] += 1
        for step in trace.steps:
            if step.name.startswith("resolve:"):
                for fact in step.output.get("facts") or []:
                    cited[str(fact.get("id"))] += 1
    return cited, intents


def score(fault: Fault, result: Diagnosis) -> dict[str, Any]:
    layers = [c.layer.value for c in result.layers if c.delta > 0]
    changes = [c.change.name for c in result.changes]
    signals = [c.key for c in result.signals if c.delta > 0]
    return {
        "top_layers": layers[:3],
        "top_changes": changes[:3],
        "top_signal": signals[0] if signals else None,
        "layer_hit": layers[:1] == [fault.layer.value],
        "layer_top2": fault.layer.value in layers[:2],
        # A change ranked first on a tie at zero is luck, not a finding.
        "change_hit": bool(changes) and changes[0] in fault.changes and result.changes[0].contribution > 0,
        "change_top2": any(c.change.name in fault.changes and c.contribution > 0 for c in result.changes[:2]),
        "significant": bool(result.layers) and result.layers[0].significant,
        "failing": [result.failing.a_count, result.failing.b_count, result.failing.a_n],
        "raw_count_top": raw_count_top(result),
        "raw_count_hit": raw_count_top(result) == fault.layer.value,
    }


def raw_count_top(result: Any) -> str | None:
    counts = Counter(c.layer for c in result.b if c.failing and c.layer in LAYERS)
    return counts.most_common(1)[0][0].value if counts else None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--embedder", default=None, help="override the workspace's embedder (the demo's: minilm, ~3 min)"
    )
    parser.add_argument("--scripts", type=Path, default=demo_conversations_path("heldout"))
    parser.add_argument("--workspace", type=Path, default=demo_workspace_path())
    args = parser.parse_args(argv)

    started = time.perf_counter()
    original = load_workspace(args.workspace)
    scripts = load_scripts(args.scripts)
    embedder = load_embedder(args.embedder or original.settings.embedder)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cxstack-diagnose-") as home:
        settings = Settings(home=Path(home), database_url=f"sqlite:///{home}/bench.db", runtime="thread")
        store: Any = open_store(settings)  # the SQL store: it also reads traces by time
        reviews: dict[str, QualityNote] = {}
        answers: dict[str, list[tuple[str | None, tuple[str, ...]]]] = {}
        seconds = replay_into(settings, original, embedder, scripts, "orig_", reviews, answers)
        console.print(f"original {original.version}: {len(scripts)} conversations in {seconds:.0f}s")
        cited, intents = count_baseline(store, original.version)
        content = canonical_content(original)
        spare = next(f["id"] for f in content["facts"] if f["id"] not in cited)
        for index, fault in enumerate(plan_faults(content, cited, intents)):
            faulty_content = copy.deepcopy(content)
            fault.plant(faulty_content)
            add_decoys(faulty_content, spare)
            faulty = workspace_from_content(faulty_content, root=original.root)
            seconds = replay_into(settings, faulty, embedder, scripts, f"fault{index}_", reviews, answers)
            plain = score(fault, diagnose(store, original.version, faulty.version))
            reviewed = score(fault, diagnose(store, original.version, faulty.version, quality=reviews))
            rows.append(
                {
                    "fault": fault.name,
                    "planted_layer": fault.layer.value,
                    "traces_only": plain,
                    "with_reviews": reviewed,
                    "seconds": round(seconds, 1),
                }
            )
            console.print(f"  {fault.name}: replayed and diagnosed in {seconds:.0f}s")
    n = len(rows)

    def rate(mode: str, key: str) -> float:
        return sum(bool(r[mode][key]) for r in rows) / n

    summary: dict[str, Any] = {
        mode: {
            key: rate(mode, key)
            for key in ("layer_hit", "layer_top2", "change_hit", "change_top2", "raw_count_hit")
        }
        for mode in ("traces_only", "with_reviews")
    }
    summary.update(
        faults=n,
        baseline_random_layer=1 / len(LAYERS),
        embedder=embedder.name,
        conversations=len(scripts),
        seconds=round(time.perf_counter() - started, 1),
    )
    for mode, title in (
        ("traces_only", "trace signals only"),
        ("with_reviews", "with reviews (intent, answers)"),
    ):
        table = Table(
            title=f"diagnose_planted, {title}: {len(scripts)} conversations a replay, {embedder.name}"
        )
        for column in (
            "fault",
            "planted",
            "top layers",
            "top change",
            "top signal",
            "failing A→B",
            "hit",
            "raw",
        ):
            table.add_column(column, overflow="fold")
        for r in rows:
            m = r[mode]
            table.add_row(
                r["fault"],
                r["planted_layer"],
                ", ".join(m["top_layers"][:2]) or "—",
                m["top_changes"][0] if m["top_changes"] else "—",
                m["top_signal"] or "—",
                f"{m['failing'][0]}→{m['failing'][1]} of {m['failing'][2]}",
                " ".join(x for x, hit in (("layer", m["layer_hit"]), ("change", m["change_hit"])) if hit)
                or "miss",
                m["raw_count_top"] or "—",
            )
        console.print(table)
        s = summary[mode]
        console.print(
            f"{title}: layer first {s['layer_hit']:.0%} (top-2 {s['layer_top2']:.0%}), change first "
            f"{s['change_hit']:.0%} (top-2 {s['change_top2']:.0%}); baseline, raw count of failures in B: "
            f"{s['raw_count_hit']:.0%}; random: {summary['baseline_random_layer']:.0%}"
        )
    console.print(f"{summary['seconds']:.0f}s")
    payload = {"summary": summary, "faults": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    return payload


if __name__ == "__main__":
    main()
