"""`cxstack kb history|diff|rollback`: a fact's versions, what changed between two, undoing a change."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cxstack.domain.models import FactVersion

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

WorkspaceArg = Annotated[Path, typer.Argument(help="Workspace folder.", show_default=False)]
FactArg = Annotated[str, typer.Argument(help="The fact's id.", show_default=False)]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State folder (its database keeps the versions); as for `cxstack serve`."),
]


def _editor(workspace: Path, home: Path | None) -> Any:
    from cxstack.app import Settings, open_store
    from cxstack.knowledge.versions import KnowledgeEditor

    overrides: dict[str, Any] = {"home": home} if home is not None else {}
    settings = Settings(**overrides)
    return KnowledgeEditor(workspace, open_store(settings))


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/]")
    return typer.Exit(code)


def _version_json(version: FactVersion) -> dict[str, Any]:
    return {
        "fact_id": version.fact_id,
        "version": version.number,
        "author": version.author,
        "reason": version.reason,
        "origin": version.origin,
        "at": version.created_at.isoformat(),
        "content": version.content,
    }


def _history(workspace: Path, fact_id: str, home: Path | None) -> tuple[Any, list[FactVersion]]:
    from cxstack.knowledge.versions import FactEditError
    from cxstack.workspace.loader import WorkspaceInvalid

    editor = _editor(workspace, home)
    try:
        return editor, editor.history(fact_id)
    except WorkspaceInvalid as exc:
        raise _fail(f"{workspace} is not a valid workspace: {exc}") from None
    except FactEditError as exc:
        raise _fail(str(exc)) from None


def history(
    workspace: WorkspaceArg,
    fact_id: FactArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per version, oldest first.")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Every version of a fact: number, time, author, origin (files, api, rollback), reason and what changed.
    Changes made in the files since the last look are recorded first."""
    from cxstack.knowledge.versions import diff_versions

    _, versions = _history(workspace, fact_id, home)
    if as_json:
        for version in versions:
            sys.stdout.write(json.dumps(_version_json(version), ensure_ascii=False) + "\n")
        return
    table = Table("v", "when (UTC)", "author", "origin", "reason", "changed")
    previous: FactVersion | None = None
    for version in versions:
        fields = [c.field for c in diff_versions(previous, version)]
        changed = "removed" if version.content is None else ("all" if previous is None else ", ".join(fields))
        table.add_row(
            str(version.number),
            f"{version.created_at:%Y-%m-%d %H:%M}",
            escape(version.author),
            version.origin,
            escape(version.reason),
            changed,
        )
        previous = version
    console.print(f"fact {fact_id}: {len(versions)} version(s)")
    console.print(table)


def diff(
    workspace: WorkspaceArg,
    fact_id: FactArg,
    before: Annotated[
        int | None, typer.Option("--from", help="Older version (default: the one before --to).")
    ] = None,
    after: Annotated[int | None, typer.Option("--to", help="Newer version (default: the newest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The changed fields as JSON.")] = False,
    home: HomeOpt = None,
) -> None:
    """What changed in a fact between two versions: each changed field, and the text word by word."""
    from cxstack.knowledge.versions import diff_versions, word_changes

    _, versions = _history(workspace, fact_id, home)
    by_number = {v.number: v for v in versions}
    newest = versions[-1].number
    to_number = after if after is not None else newest
    from_number = before if before is not None else to_number - 1
    for number in (from_number, to_number):
        if number not in by_number and not (number == 0 and before is None):
            raise _fail(f"fact {fact_id} has no version {number} (versions 1–{newest})")
    old, new = by_number.get(from_number), by_number[to_number]
    changes = diff_versions(old, new)
    if as_json:
        payload = {
            "fact_id": fact_id,
            "from": from_number if old else None,
            "to": to_number,
            "changes": [{"field": c.field, "before": c.before, "after": c.after} for c in changes],
        }
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    title = f"v{from_number} → v{to_number}" if old else f"v{to_number} (first version)"
    when = f"{new.created_at:%Y-%m-%d %H:%M} UTC"
    console.print(f"fact {fact_id}, {title}: {escape(new.reason)} — {escape(new.author)}, {when}")
    if not changes:
        console.print("no change")
    for change in changes:
        if change.field == "text" and isinstance(change.before, str) and isinstance(change.after, str):
            line = Text("  text: ")
            for kind, words in word_changes(change.before, change.after):
                style = {"removed": "red strike", "added": "green"}.get(kind, "")
                mark = {"removed": ("[-", "-]"), "added": ("{+", "+}")}.get(kind, ("", ""))
                line.append(mark[0] + words + mark[1] + " ", style=style)
            console.print(line)
        else:
            console.print(f"  {change.field}: {escape(repr(change.before))} → {escape(repr(change.after))}")


def rollback(
    workspace: WorkspaceArg,
    fact_id: FactArg,
    to_version: Annotated[int, typer.Option("--to", help="The version whose content comes back.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    author: Annotated[str | None, typer.Option("--author", help="Who (default: the logged-in user).")] = None,
    expect: Annotated[
        int | None,
        typer.Option("--expect", help="Refuse if the newest version is not this one (someone changed it)."),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Bring back an earlier version of a fact as a new version (its file is rewritten, that fact only);
    also restores a retired or removed fact."""
    from cxstack.domain.ports import FactVersionConflictError
    from cxstack.knowledge.versions import FactEditError
    from cxstack.workspace.validate import WorkspaceInvalid

    editor = _editor(workspace, home)
    who = author or f"{getpass.getuser()} (cli)"
    try:
        version = editor.rollback(fact_id, to_version, author=who, reason=reason, expected_version=expect)
    except FactVersionConflictError as exc:
        raise _fail(f"conflict: {exc}; look at `cxstack kb history` and try again") from None
    except (FactEditError, WorkspaceInvalid) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"fact {fact_id} is now version {version.number} (the content of version {to_version}); a running "
        "service answers with it from its next turn"
    )


def _set_status(
    workspace: Path, fact_ids: list[str], status: str, reason: str, author: str | None, home: Path | None
) -> None:
    from cxstack.domain.ports import FactVersionConflictError
    from cxstack.knowledge.versions import FactEditError
    from cxstack.workspace.validate import WorkspaceInvalid

    editor = _editor(workspace, home)
    who = author or f"{getpass.getuser()} (cli)"
    failed = False
    for fact_id in fact_ids:
        try:
            latest = editor.history(fact_id)[-1]
            if latest.content is not None and latest.content.get("status") == status:
                console.print(f"{fact_id}: already {status}")
                continue
            version = editor.edit(
                fact_id,
                {"status": status},
                expected_version=latest.number,
                author=who,
                reason=reason,
                origin="cli",
            )
        except (FactEditError, FactVersionConflictError, WorkspaceInvalid) as exc:
            err.print(f"[red]{escape(fact_id)}: {escape(str(exc))}[/]")
            failed = True
            continue
        console.print(f"{fact_id}: {status} (version {version.number})")
    if failed:
        raise typer.Exit(1)


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the history).")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="Who (default: the logged-in user).")]
FactsArg = Annotated[list[str], typer.Argument(help="Fact ids.", show_default=False)]


def publish(
    workspace: WorkspaceArg,
    fact_ids: FactsArg,
    reason: ReasonOpt = "approved by its owner",
    author: AuthorOpt = None,
    home: HomeOpt = None,
) -> None:
    """Approve draft facts (from `kb ingest` or `kb import --draft`): a running service answers with them from
    its next turn. Each is a new version, written into its file."""
    _set_status(workspace, fact_ids, "published", reason, author, home)


def retire(
    workspace: WorkspaceArg,
    fact_ids: FactsArg,
    reason: ReasonOpt,
    author: AuthorOpt = None,
    home: HomeOpt = None,
) -> None:
    """Stop using facts in answers, keeping them for the record (`kb rollback` brings one back)."""
    _set_status(workspace, fact_ids, "retired", reason, author, home)
