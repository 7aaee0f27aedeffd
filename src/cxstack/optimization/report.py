"""The experiment report: one self-contained HTML page (inline SVG and CSS, no script, nothing fetched) for
an `Analysis` — the decision and its reasons, per-arm figures, each comparison's effect with its
fixed-horizon and always-valid intervals, the always-valid interval over time when daily snapshots were
given, the SRM check — and the power-curve chart of a plan. The style is the quality report's
(`monitoring/templates/report.html`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from cxstack.optimization.statistics import Analysis, Estimate, PowerPoint

WIDTH, LEFT, RIGHT, TOP, BOTTOM = 760, 170, 20, 14, 30
ROW = 26


@dataclass(frozen=True, slots=True)
class _Bar:
    label: str
    y: float
    fixed: tuple[float, float]  # x pixels
    sequential: tuple[float, float]
    point: float
    text: str


def _scale(values: Sequence[float], left: float, right: float) -> tuple[Any, float, float]:
    low, high = min([*values, 0.0]), max([*values, 0.0])
    pad = (high - low) * 0.08 or 0.01
    low, high = low - pad, high + pad

    def x(value: float) -> float:
        return left + (right - left) * (value - low) / (high - low)

    return x, low, high


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def effects_chart(analysis: Analysis) -> dict[str, Any] | None:
    """Relative lift of every arm on every metric: the fixed-horizon interval (dark) inside the always-valid
    one (light), which is the one the decision uses."""
    rows: list[tuple[str, Estimate, Estimate]] = []
    for c in analysis.comparisons:
        if c.result and c.result.relative and c.result.sequential_relative:
            rows.append((f"{c.metric} · {c.arm}", c.result.relative, c.result.sequential_relative))
    if not rows:
        return None
    values = [v for _, f, s in rows for v in (*f.ci, *s.ci)]
    x, low, high = _scale(values, LEFT, WIDTH - RIGHT)
    bars = [
        _Bar(
            label,
            TOP + ROW * i + ROW / 2,
            (x(fixed.ci[0]), x(fixed.ci[1])),
            (x(seq.ci[0]), x(seq.ci[1])),
            x(fixed.effect),
            f"{fixed.effect:+.1%}",
        )
        for i, (label, fixed, seq) in enumerate(rows)
    ]
    height = TOP + ROW * len(rows) + BOTTOM
    return {
        "width": WIDTH,
        "height": height,
        "bars": bars,
        "zero": x(0.0),
        "ticks": [(x(v), f"{v:+.0%}" if high - low > 0.1 else f"{v:+.1%}") for v in _ticks(low, high)],
        "top": TOP,
        "bottom": height - BOTTOM,
    }


def history_chart(analysis: Analysis) -> dict[str, Any] | None:
    """The primary metric's difference and its always-valid interval day by day, one colour per arm."""
    if not analysis.history:
        return None
    days = list(dict.fromkeys(p.day for p in analysis.history))
    values = [v for p in analysis.history for v in p.ci]
    height = 240
    low, high = min([*values, 0.0]), max([*values, 0.0])
    pad = (high - low) * 0.08 or 0.01
    low, high = low - pad, high + pad

    def y(value: float) -> float:
        return TOP + (height - TOP - BOTTOM) * (high - value) / (high - low)

    def x(day: str) -> float:
        inner = WIDTH - 60 - RIGHT
        index = days.index(day)
        return 60 + (inner / 2 if len(days) == 1 else inner * index / (len(days) - 1))

    colours = ["#175cd3", "#c4320a", "#067647", "#6938ef"]
    series = []
    for i, arm in enumerate(dict.fromkeys(p.arm for p in analysis.history)):
        points = [p for p in analysis.history if p.arm == arm]
        upper = [f"{x(p.day):.1f},{y(p.ci[1]):.1f}" for p in points]
        lower = [f"{x(p.day):.1f},{y(p.ci[0]):.1f}" for p in reversed(points)]
        series.append(
            {
                "arm": arm,
                "colour": colours[i % len(colours)],
                "line": " ".join(f"{x(p.day):.1f},{y(p.effect):.1f}" for p in points),
                "band": " ".join(upper + lower),
            }
        )
    step = max(1, len(days) // 8)
    return {
        "width": WIDTH,
        "height": height,
        "series": series,
        "zero": y(0.0),
        "grid": [(y(v), f"{v:+.3g}") for v in _ticks(low, high)],
        "ticks": [(x(d), d[5:] if len(d) == 10 else d) for d in days][::step],
        "bottom": height - BOTTOM,
    }


def power_curve_svg(
    points: Sequence[PowerPoint], *, required: int | None = None, target: float = 0.8
) -> Markup:
    """An inline SVG of power against units per arm; the target power and the required n marked."""
    if not points:
        return Markup("")
    width, height, left, bottom = 640, 240, 48, 30
    top_n = max(p.n_per_arm for p in points)

    def x(n: float) -> float:
        return left + (width - left - RIGHT) * n / top_n

    def y(power: float) -> float:
        return TOP + (height - TOP - bottom) * (1 - power)

    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-label="power against units per arm">',
        "<style>text{font:11px system-ui,sans-serif;fill:#5b6576}</style>",
    ]
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{width - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'stroke="#e3e7ee"/>'
            f'<text x="4" y="{y(value) + 4:.1f}">{value:.0%}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - RIGHT}" y1="{y(target):.1f}" y2="{y(target):.1f}" stroke="#b42318" '
        f'stroke-dasharray="4 3"/><text x="{width - RIGHT - 70}" y="{y(target) - 4:.1f}">'
        f"target {target:.0%}</text>"
    )
    if required is not None and required <= top_n:
        parts.append(
            f'<line x1="{x(required):.1f}" x2="{x(required):.1f}" y1="{TOP}" y2="{height - bottom}" '
            f'stroke="#067647" stroke-dasharray="4 3"/>'
            f'<text x="{x(required) + 4:.1f}" y="{TOP + 12}">n = {required:,}</text>'
        )
    line = " ".join(f"{x(p.n_per_arm):.1f},{y(p.power):.1f}" for p in points)
    parts.append(f'<polyline fill="none" stroke="#175cd3" stroke-width="2" points="{line}"/>')
    for n in (top_n * f for f in (0.0, 0.25, 0.5, 0.75, 1.0)):
        anchor = "end" if n == top_n else "middle"
        parts.append(
            f'<text x="{x(n):.1f}" y="{height - bottom + 18}" text-anchor="{anchor}">{round(n):,}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def render_analysis_html(
    analysis: Analysis, *, title: str = "Experiment", plan: Sequence[PowerPoint] = ()
) -> str:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cxstack.optimization", "templates"), autoescape=True
    )
    return environment.get_template("analysis.html").render(
        a=analysis,
        title=title,
        effects=effects_chart(analysis),
        history=history_chart(analysis),
        power=power_curve_svg(plan, required=analysis.required_per_arm) if plan else None,
        num=lambda v, f=".4g": "—" if v is None else format(v, f),
        ci=lambda c, f="+.4g": "—" if c is None else f"{format(c[0], f)} to {format(c[1], f)}",
        pct=lambda v: "—" if v is None else f"{v:.1%}",
    )
