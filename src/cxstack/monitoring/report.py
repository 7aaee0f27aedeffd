"""The quality report: automation and quality over time on one chart with their intervals, the per-intent
table (automation never without quality), judge agreement, drift checks and the review queue. One
self-contained HTML page (inline SVG and CSS, no script, nothing fetched), written by `cxstack report` and
served to staff by the web app; a short text summary for the terminal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cxstack.domain.models import utcnow
from cxstack.domain.quality import Slice
from cxstack.monitoring.drift import DriftReport, drift_between_periods
from cxstack.monitoring.quality import Interval, MetricRow, MetricsReport, metrics
from cxstack.workspace.workspace import Workspace

WIDTH, HEIGHT, LEFT, TOP, BOTTOM = 760, 260, 44, 14, 30


@dataclass(frozen=True, slots=True)
class QualityReport:
    workspace: str
    version: str
    generated: datetime
    days: float
    overall: MetricsReport
    over_time: MetricsReport
    by_intent: MetricsReport
    by_mechanism: MetricsReport
    agreement: dict[str, Any] | None
    judge_version: str | None
    drift: DriftReport
    queue: dict[str, int]

    def summary(self) -> list[str]:
        row = self.overall.overall
        a, q = row.automation, row.quality
        lines = [
            f"{self.workspace}: {row.counts.conversations} conversations in the last {self.days:g} days, "
            f"{row.settled} settled",
            "automation "
            + (f"{a.estimate:.0%} ({a.low:.0%}–{a.high:.0%})" if a else "—")
            + " · quality "
            + (
                f"{q.value.estimate:.0%} ({q.value.low:.0%}–{q.value.high:.0%}, {q.method})"
                if q.value
                else q.note
            ),
        ]
        if self.agreement is not None:
            overall = self.agreement["overall"]
            if "insufficient" in overall:
                shown = f"insufficient ({overall['insufficient']})"
            else:
                kappa = overall.get("kappa")
                shown = f"{overall['raw']:.0%} agree, κ {'—' if kappa is None else f'{kappa:.2f}'}"
                shown += f" on {overall['pairs']} reviews"
            lines.append(f"judge {self.judge_version} vs people: {shown}")
        alerts = self.drift.alerts
        lines.append(
            "drift: " + (", ".join(f"{c.metric} (p={c.p:.3g})" for c in alerts) if alerts else "no alert")
        )
        lines.append(
            "review queue: " + (", ".join(f"{k} {v}" for k, v in sorted(self.queue.items())) or "empty")
        )
        return lines


def build_report(
    store: Any, workspace: Workspace, *, days: float = 30, now: datetime | None = None
) -> QualityReport:
    from cxstack.monitoring.judging import agreement_report, as_judging_store, current_judge

    now = now or utcnow()
    settings = workspace.settings.monitoring
    since = now - timedelta(days=days)
    bucket: Slice = "week" if days > 60 else "day"
    agreement = judge_version = None
    if hasattr(store, "judge_versions"):
        judging = as_judging_store(store)
        judge_version = current_judge(judging, workspace).version
        agreement = agreement_report(
            judging, workspace, judge_version, intents=judging.conversation_intents()
        )
    queue = store.review_queue_sizes() if hasattr(store, "review_queue_sizes") else {}
    return QualityReport(
        workspace=workspace.settings.name,
        version=str(workspace.version),
        generated=now,
        days=days,
        overall=metrics(store, settings, "all", since=since, now=now),
        over_time=metrics(store, settings, bucket, since=since, now=now),
        by_intent=metrics(store, settings, "intent", since=since, now=now),
        by_mechanism=metrics(store, settings, "mechanism", since=since, now=now),
        agreement=agreement,
        judge_version=judge_version,
        drift=drift_between_periods(store, settings, days=min(days / 2, 7), now=now),
        queue=queue,
    )


# ---- the chart ---------------------------------------------------------------------------------------------


def _x(index: int, count: int) -> float:
    inner = WIDTH - LEFT - 10
    return LEFT + (inner / 2 if count == 1 else inner * index / (count - 1))


def _y(value: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value)


def _series(rows: list[MetricRow], pick: Any) -> dict[str, Any]:
    """A line and its interval band, split where a bucket has no figure (a gap, not a made-up point)."""
    segments: list[list[tuple[float, Interval]]] = [[]]
    for index, row in enumerate(rows):
        interval = pick(row)
        if interval is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((_x(index, len(rows)), interval))
    lines, bands, dots = [], [], []
    for segment in (s for s in segments if s):
        lines.append(" ".join(f"{x:.1f},{_y(i.estimate):.1f}" for x, i in segment))
        upper = [f"{x:.1f},{_y(i.high):.1f}" for x, i in segment]
        lower = [f"{x:.1f},{_y(i.low):.1f}" for x, i in reversed(segment)]
        bands.append(" ".join(upper + lower))
        dots += [(x, _y(i.estimate)) for x, i in segment]
    return {"lines": lines, "bands": bands, "dots": dots}


def chart(report: MetricsReport) -> dict[str, Any]:
    rows = report.rows
    step = max(1, len(rows) // 8)
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "automation": _series(rows, lambda r: r.automation),
        "quality": _series(rows, lambda r: r.quality.value),
        "grid": [(v, _y(v)) for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        "ticks": [(_x(i, len(rows)), r.key[5:] if len(r.key) == 10 else r.key) for i, r in enumerate(rows)][
            ::step
        ],
        "bottom": HEIGHT - BOTTOM,
    }


def report_html(report: QualityReport) -> str:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cxstack.monitoring", "templates"), autoescape=True
    )
    return environment.get_template("report.html").render(
        r=report,
        chart=chart(report.over_time),
        overall=report.overall.overall,
        bucket=report.over_time.by,
        pct=lambda v: "—" if v is None else f"{v:.0%}",
        interval=lambda i: "—" if i is None else f"{i.estimate:.0%} ({i.low:.0%}–{i.high:.0%})",
    )
