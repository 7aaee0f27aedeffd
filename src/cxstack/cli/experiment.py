"""`cxstack experiment list|plan|analyze`: the experiments of a workspace, the sample one needs, and what
one showed, with a decision (the statistics are in optimization/statistics.py, the data in
optimization/experiment_data.py)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

experiment_app = typer.Typer(
    help="Experiments: list them, plan their sample, analyse what they showed.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

WorkspaceArg = Annotated[Path, typer.Argument(help="Workspace folder.", show_default=False)]
IdArg = Annotated[str, typer.Argument(help="The experiment's id (experiments.yaml).", show_default=False)]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")]
MdeOpt = Annotated[
    float | None,
    typer.Option(
        help="The smallest change of the primary metric worth detecting: absolute (0.02 = two points), or a "
        "fraction of the baseline with --relative. Default: 5 % of the baseline (relative)."
    ),
]
RelativeOpt = Annotated[bool, typer.Option("--relative", help="--mde is a fraction of the baseline.")]
RECENT = timedelta(days=28)
# Rates whose fall is the good direction.
LOWER_IS_BETTER = ("escalation_rate", "reopen_rate", "abandon_rate")


def _open(workspace: Path, home: Path | None) -> tuple[Any, Any, Any]:
    from cxstack.app import Settings, open_store
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        ws = load_workspace(workspace)
    except (WorkspaceInvalid, FileNotFoundError) as exc:
        err.print(f"[bold red]workspace {workspace}: {exc}[/]")
        raise typer.Exit(1) from None
    settings = Settings(home=home) if home is not None else Settings()
    return ws, open_store(settings), settings


def _experiment(ws: Any, experiment_id: str) -> Any:
    found = next((e for e in ws.experiments.experiments if e.id == experiment_id), None)
    if found is None:
        known = ", ".join(e.id for e in ws.experiments.experiments) or "none"
        err.print(f"[bold red]no experiment `{experiment_id}` in experiments.yaml[/] (known: {known})")
        raise typer.Exit(1)
    return found


def _control_first(experiment: Any) -> list[str]:
    return [experiment.control, *(v for v in experiment.variants if v != experiment.control)]


@experiment_app.command("list")
def list_experiments(workspace: WorkspaceArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every experiment with its status, unit, variants and allocation, and the units each arm has so far."""
    from cxstack.optimization.experiment_data import arms_of

    ws, store, _ = _open(workspace, home)
    rows = []
    for experiment in ws.experiments.experiments:
        arms = arms_of(store, experiment, ws.settings.monitoring) if experiment.status != "draft" else {}
        rows.append(
            {
                "id": experiment.id,
                "status": experiment.status,
                "unit": experiment.unit,
                "primary_metric": experiment.primary_metric,
                "variants": {
                    name: {
                        "share": experiment.allocation.get(name, 0.0),
                        "overrides": overrides,
                        "units": len(arms[name].units) if name in arms else 0,
                    }
                    for name, overrides in experiment.variants.items()
                },
            }
        )
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    table = Table(title=f"{ws.settings.name}: experiments")
    for column in ("id", "status", "unit", "primary", "variant", "share", "units so far", "overrides"):
        table.add_column(column)
    for row in rows:
        for index, (name, variant) in enumerate(row["variants"].items()):
            first = index == 0
            table.add_row(
                row["id"] if first else "",
                row["status"] if first else "",
                row["unit"] if first else "",
                row["primary_metric"] if first else "",
                name,
                f"{variant['share']:.0%}",
                str(variant["units"]),
                ", ".join(f"{k}: {v}" for k, v in variant["overrides"].items()) or "(as the workspace)",
            )
    console.print(table)


def _recent_baseline(store: Any, ws: Any, metric: str) -> tuple[float | None, float | None]:
    """The metric's rate over the last four weeks of this workspace's traffic, and the units a day."""
    from cxstack.monitoring.quality import metrics

    now = datetime.now(UTC)
    report = metrics(store, ws.settings.monitoring, "all", since=now - RECENT, now=now)
    row = report.overall
    settled = row.settled
    value = {
        "automation_rate": row.automation,
        "escalation_rate": row.escalation,
        "quality_rate": row.quality.value,
        "csat": row.csat_satisfied,
    }.get(metric)
    rate = value.estimate if value is not None else None
    if metric in ("reopen_rate", "abandon_rate") and settled:
        counted = row.counts.reopened if metric == "reopen_rate" else row.counts.abandoned
        rate = counted / settled
    daily = row.counts.conversations / RECENT.days if row.counts.conversations else None
    return rate, daily


@experiment_app.command("plan")
def plan(
    workspace: WorkspaceArg,
    experiment_id: IdArg,
    baseline: Annotated[
        float | None,
        typer.Option(help="The primary metric's current rate (default: the last four weeks in the store)."),
    ] = None,
    mde: MdeOpt = None,
    relative: RelativeOpt = False,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5)] = 0.05,
    power: Annotated[float, typer.Option(min=0.5, max=0.999)] = 0.8,
    daily: Annotated[
        float | None, typer.Option(help="Units entering a day (default: the last four weeks in the store).")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    html: HtmlOpt = None,
) -> None:
    """How many units each arm needs to detect the MDE on the primary metric, and how long that takes."""
    from cxstack.optimization.report import power_curve_svg
    from cxstack.optimization.statistics import plan_experiment

    ws, store, _ = _open(workspace, home)
    experiment = _experiment(ws, experiment_id)
    stored_rate, stored_daily = _recent_baseline(store, ws, experiment.primary_metric)
    rate = baseline if baseline is not None else stored_rate
    if rate is None:
        err.print(
            f"[bold red]no baseline for {experiment.primary_metric}:[/] the store has no settled "
            "conversations in the last four weeks; pass --baseline"
        )
        raise typer.Exit(1)
    if mde is None:
        mde, relative = 0.05, True
    order = _control_first(experiment)
    shares = [experiment.allocation.get(name, 0.0) for name in order]
    units_a_day = daily if daily is not None else stored_daily
    try:
        result = plan_experiment(
            rate,
            mde,
            relative_mde=relative,
            alpha=alpha,
            power=power,
            allocation=shares,
            daily_units=units_a_day,
        )
    except ValueError as exc:
        err.print(f"[bold red]cannot plan:[/] {exc}")
        raise typer.Exit(1) from None
    target = rate + (mde * rate if relative else mde)
    payload = {
        "experiment": experiment.id,
        "metric": experiment.primary_metric,
        "baseline": rate,
        "target": target,
        "alpha": alpha,
        "power": power,
        "units_per_arm": dict(zip(order, result.n_per_arm, strict=True)),
        "total": result.total,
        "units_a_day": units_a_day,
        "days": result.days,
        "power_curve": [{"n_per_arm": p.n_per_arm, "power": p.power} for p in result.curve],
    }
    if html is not None:
        svg = power_curve_svg(result.curve, required=result.n_per_arm[0])
        html.write_text(
            f"<!doctype html><meta charset=utf-8><title>{experiment.id}: plan</title>"
            f"<h1>{experiment.id}: power against units per arm</h1>{svg}",
            encoding="utf-8",
        )
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    console.print(
        f"[bold]{experiment.id}[/]: {experiment.primary_metric} {rate:.3f} → {target:.3f} "
        f"(α {alpha}, power {power:.0%})"
    )
    table = Table()
    for column in ("variant", "share", "units needed"):
        table.add_column(column)
    for name, share, n in zip(order, shares, result.n_per_arm, strict=True):
        table.add_row(name, f"{share:.0%}", f"{n:,}")
    console.print(table)
    if result.days is not None:
        console.print(f"about {result.days:.0f} days at {units_a_day:.0f} units a day")
    else:
        console.print("days: unknown (no recent traffic in the store; pass --daily)")
    console.print(
        "power: "
        + ", ".join(
            f"{p.power:.0%} at {p.n_per_arm:,}" for p in result.curve[:: max(1, len(result.curve) // 6)]
        )
    )
    if html is not None:
        console.print(f"power curve: {html}")


def _arm_data(arms: dict[str, Any], experiment: Any, settings: Any, metrics: list[str]) -> list[Any]:
    from cxstack.optimization.statistics import ArmData, MetricSums

    built = []
    for name in _control_first(experiment):
        arm = arms[name]
        sums: dict[str, MetricSums] = {}
        for metric in metrics:
            if metric == "quality_rate":
                estimate = arm.row(settings).quality.value
                if estimate is None:  # too few reviews: the comparison will say it is insufficient
                    sums[metric] = MetricSums(0, 0.0, 0.0)
                    continue
                # the design-based estimate as a proportion of its effective sample size: the same mean and
                # standard error, which is all the two-sample comparison reads
                se = max((estimate.high - estimate.low) / (2 * 1.959964), 1e-9)
                p = min(max(estimate.estimate, 1e-6), 1 - 1e-6)
                n_eff = max(round(p * (1 - p) / se**2), 1)
                sums[metric] = MetricSums(n_eff, p * n_eff, p * n_eff)
                continue
            successes, trials = arm.rate(metric)
            sums[metric] = MetricSums(trials, float(successes), float(successes))
        built.append(
            ArmData(
                name=name, units=len(arm.units), metrics=sums, weight=experiment.allocation.get(name, 0.0)
            )
        )
    return built


def _history(store: Any, experiment: Any, settings: Any, arms: dict[str, Any]) -> list[Any]:
    """Cumulative per-arm rates at the end of each day: the always-valid interval's path over time."""
    from cxstack.domain.quality import SliceCounts
    from cxstack.optimization.experiment_data import RATES, daily_counts
    from cxstack.optimization.statistics import ArmData, MetricSums, Snapshot

    if experiment.primary_metric not in RATES:
        return []
    running: dict[str, SliceCounts] = {name: SliceCounts(key=name) for name in experiment.variants}
    units: dict[str, set[str]] = {name: set() for name in experiment.variants}
    snapshots = []
    for day, by_variant in daily_counts(store, experiment, settings, until=experiment.stop).items():
        for name in experiment.variants:
            if name in by_variant:
                running[name] = running[name] + by_variant[name]
            units[name] |= arms[name].daily_units.get(day, set())
        arms_today = []
        for name in _control_first(experiment):
            successes, trials = RATES[experiment.primary_metric](running[name])
            sums = {experiment.primary_metric: MetricSums(int(trials), float(successes), float(successes))}
            share = experiment.allocation.get(name, 0.0)
            arms_today.append(ArmData(name=name, units=len(units[name]), metrics=sums, weight=share))
        snapshots.append(Snapshot(day, arms_today))
    return snapshots


@experiment_app.command("analyze")
def analyze(
    experiment_id: IdArg,
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")],
    mde: MdeOpt = None,
    relative: RelativeOpt = False,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5)] = 0.05,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    html: HtmlOpt = None,
) -> None:
    """Per-arm counts and metrics, differences and lifts with always-valid intervals, chance to beat control,
    sample-ratio mismatch, guardrails and the decision: ship, keep running (and for how long) or stop."""
    from cxstack.optimization.experiment_data import arms_of
    from cxstack.optimization.report import render_analysis_html
    from cxstack.optimization.statistics import Guardrail, analyze

    ws, store, _ = _open(workspace, home)
    experiment = _experiment(ws, experiment_id)
    monitoring = ws.settings.monitoring
    arms = arms_of(store, experiment, monitoring, until=experiment.stop)
    metrics = list(
        dict.fromkeys(
            [experiment.primary_metric, *experiment.metrics, *(g.metric for g in experiment.guardrails)]
        )
    )
    data = _arm_data(arms, experiment, monitoring, metrics)
    history = _history(store, experiment, monitoring, arms)
    _, daily = _recent_baseline(store, ws, experiment.primary_metric)
    if mde is None:
        mde, relative = 0.05, True
    result = analyze(
        data,
        control=experiment.control,
        primary=experiment.primary_metric,
        guardrails=[
            Guardrail(g.metric, g.max_drop, lower_is_better=g.metric in LOWER_IS_BETTER)
            for g in experiment.guardrails
        ],
        metrics=[m for m in metrics if m != experiment.primary_metric],
        alpha=alpha,
        mde=mde,
        relative_mde=relative,
        daily_units=daily,
        kinds={m: "proportion" for m in metrics},
        lower_is_better=LOWER_IS_BETTER,
        history=history,
    )
    if html is not None:
        html.write_text(render_analysis_html(result, title=f"Experiment {experiment.id}"), encoding="utf-8")
    if as_json:
        payload = {"experiment": experiment.id, **result.as_dict()}
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    table = Table(title=f"{experiment.id}: {experiment.description or experiment.primary_metric}")
    table.add_column("variant")
    table.add_column("units")
    for metric in metrics:
        table.add_column(metric)
    for arm in data:
        cells = []
        for metric in metrics:
            sums = arm.metrics.get(metric)
            cells.append(
                "insufficient" if sums is None or sums.n == 0 else f"{sums.sum / sums.n:.1%} (n {sums.n})"
            )
        table.add_row(arm.name, str(arm.units), *cells)
    console.print(table)
    for line in result.summary():
        console.print(line, soft_wrap=True)
    if html is not None:
        console.print(f"report: {html}")
