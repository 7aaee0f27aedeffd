"""`cxstack metrics`: automation beside quality (each with its interval) by slice, from the store.

The table has no automation column without a quality column next to it; `paired_cells` is the one place that
formats the pair, used by every CLI table that shows an automation rate."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cxstack.domain.quality import SLICES
from cxstack.monitoring.quality import Interval, MetricRow, MetricsReport, QualityEstimate

console = Console()
err = Console(stderr=True)


def interval_text(interval: Interval | None) -> str:
    if interval is None:
        return "—"
    return f"{interval.estimate:.0%} {100 * interval.low:.0f}–{100 * interval.high:.0f}"


def quality_text(quality: QualityEstimate) -> str:
    if quality.value is None:
        return f"— {quality.reviewed} rev."
    how = "J" if quality.method == "ppi++" else "H"
    return f"{interval_text(quality.value)} {how}"


def paired_cells(row: MetricRow) -> tuple[str, str]:
    """Automation and quality of one slice, always as a pair."""
    return interval_text(row.automation), quality_text(row.quality)


def metrics_table(report: MetricsReport, title: str) -> Table:
    table = Table(
        title=title,
        caption="automation: automated resolutions ÷ settled conversations; quality: rubric pass rate from "
        "reviews (H) or a trusted judge corrected by them (J), — below the reviews needed; x% low–high: "
        "estimate and 95% interval",
    )
    table.add_column(report.by, no_wrap=False, overflow="fold")
    rows = [*report.rows, report.overall] if report.by != "all" else [report.overall]
    # CSAT and cost only when some slice has them: the pair must fit a terminal
    with_csat = any(r.csat is not None for r in rows)
    with_cost = any(r.cost_per_resolution is not None for r in rows)
    columns = ["convs", "settled", "automation", "quality", "escalated"]
    columns += ["CSAT"] * with_csat + ["cost/res."] * with_cost
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        automation, quality = paired_cells(row)
        cells = [
            "all" if row is report.overall else row.key,
            str(row.counts.conversations),
            str(row.settled),
            automation,
            quality,
            interval_text(row.escalation),
        ]
        if with_csat:
            cells.append("—" if row.csat is None else f"{row.csat:.1f} n={row.counts.csat_count}")
        if with_cost:
            cells.append("—" if row.cost_per_resolution is None else f"{row.cost_per_resolution:.4f}")
        table.add_row(*cells, end_section=bool(report.rows) and row is report.rows[-1])
    return table


def metrics_command(
    workspace: Annotated[
        Path, typer.Argument(help="Workspace folder (its monitoring settings decide outcomes and intervals).")
    ] = Path("."),
    by: Annotated[str, typer.Option("--by", help=f"Slice: {', '.join(SLICES)}.")] = "intent",
    days: Annotated[
        float, typer.Option("--days", min=0, help="Conversations started in the last N days.")
    ] = 30,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Only conversations with this value, e.g. --where tier=enterprise."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")] = None,
) -> None:
    """Automation, quality, escalation, CSAT and cost per resolution by slice — automation never alone."""
    import json

    from cxstack.app import Settings, open_store
    from cxstack.domain.models import utcnow
    from cxstack.monitoring.quality import metrics
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    if by not in SLICES:  # typer has no Literal choices
        err.print(f"[bold red]--by {by}: use one of {', '.join(SLICES)}[/]")
        raise typer.Exit(2)
    filters: dict[str, str] = {}
    for item in where or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            err.print(f"[bold red]--where {item}: write it as name=value, e.g. tier=enterprise[/]")
            raise typer.Exit(2)
        filters[name.strip()] = value.strip()
    try:
        ws = load_workspace(workspace)
    except (WorkspaceInvalid, FileNotFoundError) as exc:
        err.print(f"[bold red]workspace {workspace}: {exc}[/]")
        raise typer.Exit(1) from None
    settings = Settings(home=home) if home is not None else Settings()
    since = utcnow() - timedelta(days=days)
    try:
        store = open_store(settings)
        report = metrics(store, ws.settings.monitoring, by, since=since, where=filters)
    except ValueError as exc:
        err.print(f"[bold red]{exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    console.print(metrics_table(report, f"{ws.settings.name}: the last {days:g} days by {by}"))


def report_command(
    ctx: typer.Context,
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", envvar="CXSTACK_WORKSPACE", help="Workspace folder.")
    ] = Path("."),
    html: Annotated[
        Path, typer.Option("--html", help="Where to write the report (self-contained HTML, with charts).")
    ] = Path("cxstack-report.html"),
    days: Annotated[
        float, typer.Option("--days", min=1, help="Conversations started in the last N days.")
    ] = 30,
    home: Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")] = None,
) -> None:
    """The quality report: automation and quality over time with intervals, per intent, judge agreement,
    drift; written as one HTML file, with a summary here. `report costs` is the model cost per intent."""
    if ctx.invoked_subcommand is not None:
        return
    from cxstack.app import Settings, open_store
    from cxstack.monitoring.report import build_report, report_html
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        ws = load_workspace(workspace)
    except (WorkspaceInvalid, FileNotFoundError) as exc:
        err.print(f"[bold red]workspace {workspace}: {exc}[/]")
        raise typer.Exit(1) from None
    store = open_store(Settings(home=home) if home is not None else Settings())
    report = build_report(store, ws, days=days)
    html.write_text(report_html(report), encoding="utf-8")
    for line in report.summary():
        console.print(line, soft_wrap=True)
    console.print(f"report written to {html}", soft_wrap=True)


def drift_command(
    workspace: Annotated[Path, typer.Argument(help="Workspace folder.")] = Path("."),
    days: Annotated[
        float, typer.Option("--days", min=1, help="Compare the last N days with the N days before.")
    ] = 7,
    versions: Annotated[
        tuple[str, str] | None,
        typer.Option("--versions", help="Compare two workspace versions instead: BEFORE AFTER."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")] = None,
) -> None:
    """Drift of quality, judge agreement, escalation rate and intent mix, each with its test and p-value.
    Exits 1 when a check alerts (for a cron job or CI)."""
    import json

    from cxstack.app import Settings, open_store
    from cxstack.monitoring.drift import drift_between_periods, drift_between_versions
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        ws = load_workspace(workspace)
    except (WorkspaceInvalid, FileNotFoundError) as exc:
        err.print(f"[bold red]workspace {workspace}: {exc}[/]")
        raise typer.Exit(2) from None
    store = open_store(Settings(home=home) if home is not None else Settings())
    settings = ws.settings.monitoring
    if versions:
        report = drift_between_versions(store, settings, versions[0], versions[1])
    else:
        report = drift_between_periods(store, settings, days=days)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        table = Table(title=f"drift: {report.before} → {report.after}")
        for column in ("metric", "before", "after", "change", "test", "p", ""):
            table.add_column(
                column, justify="right" if column in ("before", "after", "change", "p") else "left"
            )
        for c in report.checks:
            table.add_row(
                c.metric,
                "—" if c.before is None else f"{c.before:.1%}",
                "—" if c.after is None else f"{c.after:.1%}",
                "—" if c.change is None else f"{c.change:+.3f}",
                c.test,
                "—" if c.p is None else f"{c.p:.3g}",
                "[bold red]ALERT[/]" if c.alert else c.note,
            )
        console.print(table)
    if report.alerts:
        raise typer.Exit(1)
