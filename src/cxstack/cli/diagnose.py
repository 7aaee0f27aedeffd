"""`cxstack diagnose --from A --to B`: the layer, and the workspace change, behind a change in failing
conversations (cxstack.optimization.diagnose does the work; this parses, reads the store and prints)."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cxstack.optimization.diagnose import (
    ChangeAttribution,
    DiagnoseError,
    Diagnosis,
    RateChange,
    diagnose,
)

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
WINDOW_HELP = (
    "A period, days inclusive in UTC (2026-11-01..2026-11-07, or ISO date-times), or a workspace version "
    "(its hash, or a unique prefix of it)."
)


def diagnose_command(
    from_: Annotated[
        str, typer.Option("--from", help="The window before. " + WINDOW_HELP, show_default=False)
    ],
    to: Annotated[str, typer.Option("--to", help="The window after. " + WINDOW_HELP, show_default=False)],
    home: Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON.")] = False,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Also write the diagnosis as an HTML page here.")
    ] = None,
) -> None:
    """Attribute failing (escalated, unresolved or low-quality) conversations to the layer where they went
    wrong, compare window A with window B layer by layer, and rank the workspace changes between their
    versions by the failures of their layer among the conversations they touched."""
    from cxstack.app import Settings, open_store

    store = open_store(Settings(home=home) if home is not None else Settings())
    try:
        reviews, judgements = _quality(store)
        result = diagnose(store, from_, to, reviews=reviews, judgements=judgements)  # type: ignore[arg-type]
    except DiagnoseError as exc:
        err.print(f"[bold red]{exc}[/]")
        raise typer.Exit(1) from None
    if html_path is not None:
        html_path.write_text(render_html(result), encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
        return
    print_diagnosis(console, result)
    if html_path is not None:
        console.print(f"HTML report: {html_path}")


def _quality(store: Any) -> tuple[list[Any], list[Any]]:
    """Reviews, and the latest judge version's judgements, when the store keeps them."""
    reviews = store.list_reviews(limit=100_000) if hasattr(store, "list_reviews") else []
    judgements: list[Any] = []
    if hasattr(store, "judge_versions") and hasattr(store, "conversation_intents"):
        versions = store.judge_versions()
        if versions:
            ids = list(store.conversation_intents())
            for start in range(0, len(ids), 500):  # SQLite caps the parameters of one query
                chunk = store.latest_judgements(ids[start : start + 500], versions[-1].id)
                judgements.extend(chunk.values())
    return reviews, judgements


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}" if value else "0.0"


def _rate_row(change: RateChange) -> list[str]:
    example = ""
    if change.examples:
        signal = change.examples[0]
        example = f"{change.example_conversations[0]} · {signal.step}: {signal.name}"
        if signal.detail:
            example += f" ({signal.detail[:60]})"
    verdict = "yes" if change.significant else "noise"
    return [
        change.key,
        f"{change.a_count}/{change.a_n}",
        f"{change.b_count}/{change.b_n}",
        f"{_pct(change.delta)} pp",
        f"{100 * change.low:+.1f}…{100 * change.high:+.1f}",
        f"{change.p_value:.3f}",
        verdict,
        example,
    ]


def _rate_table(title: str, changes: tuple[RateChange, ...]) -> Table:
    table = Table(title=title, caption="pp: percentage points of conversations; 95% Newcombe interval")
    for column in ("", "A", "B", "Δ rate", "95% CI", "p (Fisher)", "real?", "example"):
        table.add_column(column, overflow="fold")
    for change in changes:
        table.add_row(*_rate_row(change))
    return table


def _changes_table(changes: tuple[ChangeAttribution, ...]) -> Table:
    table = Table(
        title="workspace changes, by contribution",
        caption="contribution: rise in the share of conversations failing in the change's layer among those "
        "it touched",
    )
    for column in ("change", "layer", "touched A/B", "failing A/B", "contribution", "example"):
        table.add_column(column, overflow="fold")
    for item in changes:
        example = item.example_conversations[0] if item.example_conversations else ""
        table.add_row(
            item.change.description[:100],
            item.change.layer.value,
            f"{item.touched_a}/{item.touched_b}",
            f"{item.failing_a}/{item.failing_b}",
            f"{_pct(item.contribution)} pp",
            example,
        )
    return table


def print_diagnosis(out: Console, result: Diagnosis) -> None:
    f = result.failing
    out.print(
        f"[bold]{result.window_a} → {result.window_b}[/]: failing {f.a_count}/{f.a_n} → {f.b_count}/{f.b_n} "
        f"({_pct(f.delta)} pp, 95% CI {100 * f.low:+.1f}…{100 * f.high:+.1f}, p {f.p_value:.3f})"
    )
    out.print(_rate_table("layers, ranked", result.layers))
    rising = tuple(s for s in result.signals if s.delta != 0)
    if rising:
        out.print(_rate_table("signals that changed", rising))
    if result.changes:
        out.print(_changes_table(result.changes))
    for note in result.notes:
        out.print(f"[yellow]{note}[/]")


def render_html(result: Diagnosis) -> str:
    def table(title: str, head: list[str], rows: list[list[str]]) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<h2>{html.escape(title)}</h2><table><tr>{cells}</tr>{body}</table>"

    head = ["", "A", "B", "Δ rate", "95% CI", "p (Fisher)", "real?", "example"]
    change_rows = [
        [
            c.change.description,
            c.change.layer.value,
            f"{c.touched_a}/{c.touched_b}",
            f"{c.failing_a}/{c.failing_b}",
            f"{_pct(c.contribution)} pp",
            ", ".join(c.example_conversations),
        ]
        for c in result.changes
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cxstack diagnose</title>",
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
        "table{border-collapse:collapse}</style></head><body>",
        f"<h1>{html.escape(result.window_a)} → {html.escape(result.window_b)}</h1>",
        table("layers, ranked", head, [_rate_row(c) for c in result.layers]),
        table("signals", head, [_rate_row(c) for c in result.signals]),
        table(
            "workspace changes",
            ["change", "layer", "touched A/B", "failing A/B", "contribution", "examples"],
            change_rows,
        ),
        "".join(f"<p>{html.escape(n)}</p>" for n in result.notes),
        "</body></html>",
    ]
    return "\n".join(parts)
