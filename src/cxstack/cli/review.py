"""`cxstack review …`: draw conversations for review, review the next one in the terminal, plan how many
reviews each stratum needs, list reviews. The reviewer is the holder of the API key given (`--key` or
CXSTACK_API_KEY), as on the API: nobody reviews under a name they typed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

review_app = typer.Typer(
    help="Human review against rubric.yaml: sample, next, plan, list.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

WorkspaceArg = Annotated[Path, typer.Argument(help="Workspace folder.", show_default=False)]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")]


def _open(workspace: Path, home: Path | None) -> tuple[Any, Any]:
    from cxstack.app import Settings, open_store
    from cxstack.monitoring.review import as_review_store
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        ws = load_workspace(workspace)
    except (WorkspaceInvalid, FileNotFoundError) as exc:
        err.print(f"[bold red]workspace {workspace}: {exc}[/]")
        raise typer.Exit(1) from None
    settings = Settings(home=home) if home is not None else Settings()
    return ws, as_review_store(open_store(settings))


@review_app.command("sample")
def review_sample(workspace: WorkspaceArg, home: HomeOpt = None) -> None:
    """Offer every settled conversation not yet seen to the sampler (the service does it every 5 minutes)."""
    from cxstack.monitoring.review import sample

    ws, store = _open(workspace, home)
    drawn = sample(store, ws)
    queue = store.review_queue_sizes()
    waiting = ", ".join(f"{reason} {n}" for reason, n in sorted(queue.items())) or "empty"
    console.print(f"drew {drawn} conversations for review; queue: {waiting}")


def _reviewer(store: Any, key: str | None) -> str:
    from cxstack.api.keys import ApiKeys
    from cxstack.domain.auth import ApiRole

    if not key:
        err.print("[bold red]give your API key: --key cxk_… or CXSTACK_API_KEY (cxstack keys create)[/]")
        raise typer.Exit(2)
    found = ApiKeys(store).verify(key.strip())
    if found is None:
        err.print("[bold red]that API key is invalid or revoked[/]")
        raise typer.Exit(2)
    if found.role not in (ApiRole.ADMIN, ApiRole.AGENT):
        err.print(f"[bold red]a {found.role.value} key may not review: use an agent or admin key[/]")
        raise typer.Exit(2)
    return f"{found.name} ({found.id})"


def _show(packet: Any) -> None:
    item = packet.item
    why = f" — {item.reason.value}, stratum {item.stratum}" if item is not None else ""
    console.rule(f"conversation {packet.conversation_id}{why}")
    for message in packet.transcript:
        who = {"customer": "[bold]customer[/]", "assistant": "[cyan]assistant[/]"}.get(
            message["role"], f"[magenta]{message['role']}[/]"
        )
        console.print(f"{who}: {message['text']}", soft_wrap=True)
    for index, turn in enumerate(packet.turns, 1):
        facts = ", ".join(turn["facts"]) or "none"
        actions = ", ".join(f"{a['action']} ({'ok' if a['ok'] else 'failed'})" for a in turn["actions"])
        console.print(
            f"[dim]turn {index}: {turn['intent'] or 'no intent'} via {turn['mechanism'] or '—'}, "
            f"{turn['outcome']}{' (' + turn['reason'] + ')' if turn['reason'] else ''}; facts: {facts}"
            f"{'; actions: ' + actions if actions else ''}[/]",
            soft_wrap=True,
        )


def _ask_scores(packet: Any, given: dict[str, int]) -> dict[str, int]:
    scores = dict(given)
    for criterion in packet.rubric["criteria"]:
        if criterion["id"] in scores:
            continue
        low, high = criterion["scale"]
        label = "1 pass / 0 fail" if criterion["kind"] == "pass_fail" else f"{low}-{high}"
        console.print(f"[bold]{criterion['id']}[/] — {criterion['description']}", soft_wrap=True)
        while True:
            value = typer.prompt(f"  {criterion['id']} ({label})", type=int)
            if low <= value <= high:
                scores[criterion["id"]] = value
                break
            err.print(f"  between {low} and {high}, please")
    return scores


def _parse_scores(items: list[str] | None) -> dict[str, int]:
    scores: dict[str, int] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            err.print(f"[bold red]--score {item}: write it as criterion=number, e.g. correctness=4[/]")
            raise typer.Exit(2)
        scores[name.strip()] = int(value)
    return scores


@review_app.command("next")
def review_next(
    workspace: WorkspaceArg,
    key: Annotated[
        str | None, typer.Option("--key", envvar="CXSTACK_API_KEY", help="Your API key (agent or admin).")
    ] = None,
    score: Annotated[
        list[str] | None,
        typer.Option("--score", help="criterion=value, instead of being asked (repeat for each)."),
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="A note for the team.")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="How many conversations to review.")] = 1,
    home: HomeOpt = None,
) -> None:
    """Review the next conversation in the queue: read it, score each criterion of the rubric."""
    from cxstack.domain.quality import DuplicateReviewError, ReviewReason
    from cxstack.monitoring.review import next_packet, submit
    from cxstack.monitoring.rubric import ScoresInvalidError

    ws, store = _open(workspace, home)
    reviewer = _reviewer(store, key)
    given = _parse_scores(score)
    for _ in range(count):
        packet = next_packet(store, ws, reviewer)
        if packet is None:
            console.print("nothing to review: the queue is empty for you (cxstack review sample draws more)")
            return
        _show(packet)
        scores = _ask_scores(packet, given)
        note = (
            comment if comment is not None else (typer.prompt("  comment", default="") if not given else "")
        )
        try:
            stored = submit(
                store,
                ws,
                conversation_id=packet.conversation_id,
                reviewer=reviewer,
                scores=scores,
                comment=note,
                reason=packet.item.reason if packet.item is not None else ReviewReason.MANUAL,
            )
        except ScoresInvalidError as exc:
            err.print(f"[bold red]{exc}[/]")
            raise typer.Exit(2) from None
        except DuplicateReviewError as exc:
            err.print(f"[bold red]{exc}[/]")
            raise typer.Exit(1) from None
        verdict = "[green]passes[/]" if stored.passed else "[red]fails[/]"
        console.print(f"review {stored.id} saved: {verdict} (rubric {stored.rubric_version})")


@review_app.command("plan")
def review_plan(
    workspace: WorkspaceArg,
    margin: Annotated[
        float | None, typer.Option("--margin", help="± margin per stratum (default review_sampling.margin).")
    ] = None,
    agreement: Annotated[
        float | None,
        typer.Option("--agreement", help="The judge's agreement with people (0-1), if one is trusted."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: HomeOpt = None,
) -> None:
    """Reviews each stratum needs for its quality rate within ±margin, from reviews alone and with a judge."""
    from cxstack.monitoring.sampling import plan

    ws, store = _open(workspace, home)
    chosen = margin if margin is not None else ws.settings.review_sampling.margin
    rows = plan(
        store.review_strata(),
        margin=chosen,
        confidence=ws.settings.monitoring.confidence,
        judge_agreement=agreement,
    )
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    table = Table(
        title=f"reviews needed for ±{chosen:.0%} at {ws.settings.monitoring.confidence:.0%} per stratum",
        caption="stratum: intent|mechanism|escalated, low_confidence or normal; need: reviews for the "
        "margin from reviews alone; w/judge: where a judge of --agreement is trusted (--json: what is left)",
    )
    table.add_column("stratum", min_width=28, overflow="fold")
    for column in ("convs", "drawn", "rev.", "qual.", "need", "w/judge"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.stratum, str(row.population), str(row.drawn), str(row.reviewed),
            "—" if row.quality is None else f"{row.quality:.0%}",
            str(row.needed_human_only), "—" if row.needed_with_judge is None else str(row.needed_with_judge),
        )  # fmt: skip
    console.print(table)


@review_app.command("list")
def review_list(
    workspace: WorkspaceArg,
    conversation: Annotated[str | None, typer.Option("--conversation", help="One conversation's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: HomeOpt = None,
) -> None:
    """Reviews, oldest first, each with the rubric version it was made against."""
    _, store = _open(workspace, home)
    found = store.list_reviews(conversation_id=conversation)
    if as_json:
        rows = [
            {**{k: getattr(r, k) for k in r.__dataclass_fields__}, "reason": r.reason.value,
             "created_at": r.created_at.isoformat() if r.created_at else None}
            for r in found
        ]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(found)} reviews")
    for column in ("conversation", "reviewer", "reason", "passed", "scores", "rubric"):
        table.add_column(column)
    for r in found:
        scores = " ".join(f"{k}={v}" for k, v in r.scores.items())
        table.add_row(r.conversation_id, r.reviewer, r.reason.value, "yes" if r.passed else "no", scores,
                      r.rubric_version)  # fmt: skip
    console.print(table)
