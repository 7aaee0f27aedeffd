"""`cxstack replay --baseline` and `--from-store`: which version to compare with, which conversations to
replay, both runs, and how the comparison is shown (table, JSON, HTML). The comparison itself is
optimization/replay_diff.py."""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cxstack.domain.ports import Store, WorkspaceVersionInfo
from cxstack.optimization.replay import ReplayedConversation, ScriptedConversation
from cxstack.optimization.replay_diff import Change, ReplayDiff
from cxstack.workspace.workspace import Workspace

if TYPE_CHECKING:
    from cxstack.app import Engine

RECENT_VERSIONS = 10


class BaselineError(Exception):
    """A baseline that cannot be used; the message says why and what exists."""


@dataclass(frozen=True)
class Baseline:
    workspace: Workspace
    source: str  # the folder, or "stored version" for one read from the store


def load_baseline(spec: str, open_store: Callable[[], Store], where: str) -> Baseline:
    """`spec` is a workspace folder, or a version hash (or a unique prefix of one, with or without `ws_`)
    stored in the store `open_store` opens (`where` names it in messages). A folder that fails validation
    raises `WorkspaceInvalid` with its problems."""
    from cxstack.workspace.loader import load_workspace

    path = Path(spec).expanduser()
    if path.is_dir():
        return Baseline(load_workspace(path), str(path))
    if path.exists():
        raise BaselineError(f"baseline {spec} is a file: give a workspace folder or a version hash")
    if "/" in spec or spec.startswith((".", "~")):
        raise BaselineError(f"baseline {spec}: no such workspace folder")
    store = open_store()
    versions = store.list_workspace_versions(limit=None)
    wanted = spec if spec.startswith("ws_") else f"ws_{spec}"
    exact = [v for v in versions if v.id == wanted]
    matches = exact or [v for v in versions if v.id.startswith(wanted)]
    if len(matches) != 1:
        problem = "matches several versions" if matches else "is not a workspace folder nor a stored version"
        raise BaselineError(
            f"baseline {spec} {problem} in {where}\n" + _version_list(matches or versions[:RECENT_VERSIONS])
        )
    content = store.get_workspace_version(matches[0].id)
    assert content is not None  # just listed
    return Baseline(_stored_workspace(matches[0], content), "stored version")


def _version_list(versions: Sequence[WorkspaceVersionInfo]) -> str:
    if not versions:
        return "no workspace versions are stored there (`serve` and `replay --store` store theirs)"
    lines = ["recent versions:"]
    lines += [f"  {v.id}  {v.created_at:%Y-%m-%d %H:%M} UTC  {v.name}" for v in versions]
    return "\n".join(lines)


def _stored_workspace(info: WorkspaceVersionInfo, content: dict[str, Any]) -> Workspace:
    from cxstack.workspace.loader import workspace_from_content
    from cxstack.workspace.models import SCHEMA_VERSION

    if content.get("schema") != SCHEMA_VERSION:
        raise BaselineError(
            f"baseline {info.id} was stored with workspace schema {content.get('schema')!r}; this cxstack "
            f"reads schema {SCHEMA_VERSION}: compare with the folder of that version instead"
        )
    try:
        workspace = workspace_from_content(content)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise BaselineError(f"baseline {info.id} fails validation:\n{problems}") from None
    return workspace


def recorded_scripts(
    store: Store, since: datetime, until: datetime | None, limit: int | None
) -> list[ScriptedConversation]:
    """The store's conversations started in [since, until), oldest first, as scripts: their customer
    messages in order, with the conversation's customer, verified flag and channel; nothing expected."""
    from cxstack.cli.services import stored_scripts

    conversations = store.conversations_started_between(since, until, limit)
    return stored_scripts(store, [str(c.id) for c in conversations])


def replay_both(
    baseline: Workspace,
    candidate: Workspace,
    scripts: Sequence[ScriptedConversation],
    *,
    embedder_name: str | None,
    dry_run_actions: bool,
    cache_dir: Path | None,
    concurrency: int,
    at: datetime,
    on_done: Callable[[ReplayedConversation], None] | None = None,
) -> tuple[list[ReplayedConversation], list[ReplayedConversation]]:
    """The scripts through each version, one after the other, each in a throwaway store and on its own
    engine, at the same moment. When both versions train the router on the same examples with the same
    embedder, the candidate gets the baseline's trained router (the same model: a routing change is then
    never training noise); otherwise the two share one embedding cache, so the candidate's training embeds
    only examples the baseline did not have. `cache_dir` keeps trained routers by version for next time."""
    from cxstack.cli.services import replay_in_service

    runs: list[list[ReplayedConversation]] = []
    engine: Engine | None = None
    embedders: dict[str, Any] = {}
    for version in (baseline, candidate):
        engine = _engine_for(version, engine, embedders, embedder_name, dry_run_actions, cache_dir)
        try:
            runs.append(
                asyncio.run(
                    replay_in_service(engine, scripts, None, concurrency=concurrency, on_done=on_done, at=at)
                )
            )
        finally:
            asyncio.run(engine.aclose())
    return runs[0], runs[1]


def _router_examples(workspace: Workspace) -> list[tuple[str, str]]:
    """What a router is trained on (app.build_engine): every active intent's examples, in order."""
    return [(example, intent.name) for intent in workspace.active_intents for example in intent.examples]


def _engine_for(
    workspace: Workspace,
    previous: Engine | None,
    embedders: dict[str, Any],
    embedder_name: str | None,
    dry_run_actions: bool,
    cache_dir: Path | None,
) -> Engine:
    from dataclasses import replace

    from cxstack.app import build_engine, http_connectors
    from cxstack.integrations.embedders.registry import CachedEmbedder, load_embedder
    from cxstack.integrations.llm.registry import llm_client
    from cxstack.knowledge.retrieval import KnowledgeIndex

    name = embedder_name or workspace.settings.embedder
    if name not in embedders:
        embedders[name] = CachedEmbedder(load_embedder(name))
    embedder = embedders[name]
    if (
        previous is not None
        and previous.embedder is embedder
        and _router_examples(previous.workspace) == _router_examples(workspace)
    ):
        # The previous engine's connectors and model client are closed: this one gets its own.
        config = workspace.settings.llm
        same_router = replace(
            previous,
            workspace=workspace,
            knowledge=KnowledgeIndex(workspace.facts, embedder),
            llm=llm_client(config) if config is not None else None,
        )
        return same_router.with_connectors(http_connectors(workspace, dry_run=dry_run_actions))
    return build_engine(
        workspace, embedder=embedder, embedder_name=name, dry_run_actions=dry_run_actions, cache_dir=cache_dir
    )


# ---- showing a comparison ----------------------------------------------------------------------------------


def _value(value: Any, limit: int = 70) -> str:
    if value is None:
        text = "—"
    elif isinstance(value, list):
        text = ", ".join(_value(v, limit) for v in value) if value else "(none)"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={_value(v, limit)}" for k, v in value.items()) if value else "(none)"
    else:
        text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _texts(before: str | None, after: str | None, limit: int = 70) -> tuple[str, str]:
    """Two replies from a little before where they first differ, so the change itself is visible."""
    if before is None or after is None:
        return _value(before, limit), _value(after, limit)
    a, b = " ".join(before.split()), " ".join(after.split())
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, same - 20)
    if start:
        a, b = "…" + a[start:], "…" + b[start:]
    return _value(a, limit), _value(b, limit)


def example_line(change: Change) -> str:
    if change.kind == "fact_content":
        before, after = f"{_value(change.before)} as the baseline says it", "as the candidate says it"
    elif change.kind == "reply":
        before, after = _texts(change.before, change.after)
    else:
        before, after = _value(change.before), _value(change.after)
    return f"{change.conversation} #{change.turn} “{_value(change.text, 50)}”: {before} → {after}"


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def render_diff(console: Console, diff: ReplayDiff, *, baseline_source: str, candidate_source: str) -> None:
    console.print(
        f"[bold]baseline[/] {diff.baseline_version} ({baseline_source}) → [bold]candidate[/] "
        f"{diff.candidate_version} ({candidate_source})"
    )
    if diff.workspace is not None:
        console.print("[bold]what changed in the workspace[/]")
        console.print(diff.workspace.summary(), markup=False, highlight=False)
    console.print(
        f"{diff.conversations} conversations, {diff.turns} turns: {diff.changed_turns} turns changed in "
        f"{diff.changed_conversations} conversations"
    )
    rates = Table(title="headline rates")
    for column in ("", "baseline", "candidate", "difference", "n"):
        rates.add_column(column, justify="left" if not column else "right", no_wrap=True)
    for rate in diff.rates:
        rates.add_row(
            rate.name,
            _percent(rate.baseline),
            _percent(rate.candidate),
            _percent(rate.difference, signed=True),
            str(rate.sample),
        )
    console.print(rates)
    if diff.outcomes:
        console.print(
            "conversation outcomes that moved: "
            + ", ".join(f"{before} → {after} {n}" for (before, after), n in diff.outcomes.items())
        )
    if diff.empty:
        console.print(
            "[green]no turn changed: the candidate behaves as the baseline on these conversations[/]"
        )
        return
    console.print(
        "changed turns by where they first differ: " + ", ".join(f"{k} {n}" for k, n in diff.origins.items())
    )
    table = Table(title="changes by layer", show_lines=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("change", no_wrap=True)
    table.add_column("turns", justify="right", no_wrap=True)
    table.add_column("by intent")
    table.add_column("examples (conversation #turn “message”: before → after)")
    for summary in diff.kinds:
        intents = ", ".join(f"{i} {n}" for i, n in list(summary.by_intent.items())[:4])
        table.add_row(
            summary.layer,
            summary.kind,
            str(summary.count),
            intents,
            "\n".join(example_line(e) for e in summary.examples),
        )
    console.print(table)


def diff_payload(
    diff: ReplayDiff,
    baseline: Sequence[ReplayedConversation],
    candidate: Sequence[ReplayedConversation],
    *,
    baseline_source: str,
    candidate_source: str,
) -> dict[str, Any]:
    return {
        **diff.as_dict(),
        "baseline_source": baseline_source,
        "candidate_source": candidate_source,
        "results": {
            "baseline": [r.as_dict() for r in baseline],
            "candidate": [r.as_dict() for r in candidate],
        },
    }


def html_report(diff: ReplayDiff, *, baseline_source: str, candidate_source: str) -> str:
    """One self-contained page (no scripts, no outside files) with what `render_diff` prints."""
    e = html.escape

    def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    rates = table(
        ["", "baseline", "candidate", "difference", "n"],
        [
            [
                e(r.name),
                _percent(r.baseline),
                _percent(r.candidate),
                _percent(r.difference, True),
                str(r.sample),
            ]
            for r in diff.rates
        ],
    )
    changes = table(
        ["layer", "change", "turns", "by intent", "examples"],
        [
            [
                e(s.layer),
                e(s.kind),
                str(s.count),
                e(", ".join(f"{i} {n}" for i, n in s.by_intent.items())),
                "<br>".join(e(example_line(x)) for x in s.examples),
            ]
            for s in diff.kinds
        ],
    )
    moved = ", ".join(f"{b} → {a} {n}" for (b, a), n in diff.outcomes.items()) or "none"
    workspace = e(diff.workspace.summary()) if diff.workspace is not None else "(not compared)"
    title = f"replay: {diff.baseline_version} → {diff.candidate_version}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }}
pre {{ background: #f6f6f6; padding: .8rem; }}
</style></head><body>
<h1>{e(title)}</h1>
<p>baseline: {e(baseline_source)} · candidate: {e(candidate_source)}</p>
<h2>What changed in the workspace</h2><pre>{workspace}</pre>
<p>{diff.conversations} conversations, {diff.turns} turns: {diff.changed_turns} turns changed in
{diff.changed_conversations} conversations. Outcomes that moved: {e(moved)}.</p>
<h2>Headline rates</h2>{rates}
<h2>Changes by layer</h2>{changes if diff.kinds else "<p>No turn changed.</p>"}
</body></html>
"""


def write_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n"
