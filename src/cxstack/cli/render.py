"""How the CLI shows traces, packets and rate tables. Formatting only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cxstack.domain.llm import IntentUsage
from cxstack.domain.models import EscalationPacket, Trace, TraceStep
from cxstack.monitoring.metrics import Agreement, RateRow
from cxstack.orchestration.calibration import ReliabilityBin
from cxstack.workspace.models import WorkspaceSettings

LAYER_STYLE = {
    "strategy": "magenta",
    "orchestration": "cyan",
    "resolution": "green",
    "knowledge": "yellow",
    "channel": "blue",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if v not in (None, [], {}, False))
    return "—" if value is None else str(value)


def step_line(step: TraceStep) -> Text:
    out = step.output
    if step.name == "route":
        body = f"intent={out.get('intent')} p={out.get('confidence')} by {out.get('decided_by')}"
        alts = out.get("alternatives") or []
        if alts:
            body += "  alt: " + ", ".join(f"{i} {p:.2f}" for i, p in alts[:3])
    elif step.name == "assess":
        rules = out.get("fired_rules") or []
        body = f"tier={out.get('tier')} priority={out.get('priority')} rules={', '.join(rules) or '—'}"
        extra = {
            k: out.get(k) for k in ("force_human", "require_confirmation", "cap_amount", "queue", "tone")
        }
        body += ("  " + _fmt(extra)) if _fmt(extra) else ""
    elif step.name.startswith("resolve:"):
        facts = ", ".join(f"{f['id']} ({f['score']:.2f})" for f in out.get("facts", []))
        acts = ", ".join(
            f"{a['action']} {'ok' if a['ok'] else 'FAILED'} {a.get('status') or ''}".strip()
            for a in out.get("actions", [])
        )
        body = f"{out.get('kind')} confidence={out.get('confidence')}"
        body += f"  facts: {facts}" if facts else ""
        body += f"  actions: {acts}" if acts else ""
        body += f"  handoff: {out.get('handoff_reason')}" if out.get("handoff_reason") else ""
    else:
        body = _fmt(out)
    style = LAYER_STYLE.get(step.layer.value, "white")
    line = Text()
    line.append(f"{step.layer.value:<14}", style=f"bold {style}")
    line.append(f"{step.name:<18}", style=style)
    line.append(body)
    line.append(f"  {step.duration_ms:.1f} ms", style="dim")
    return line


def trace_panel(trace: Trace, *, title: str | None = None) -> Panel:
    header = Text(
        f"decision={trace.decision.value} outcome={trace.outcome}"
        + (f" reason={trace.reason_code}" if trace.reason_code else "")
        + f"  workspace {trace.workspace_version}  {trace.duration_ms:.1f} ms",
        style="bold",
    )
    return Panel(
        Group(header, *[step_line(s) for s in trace.steps]), title=title or trace.id, border_style="dim"
    )


def packet_panel(packet: EscalationPacket) -> Panel:
    table = Table.grid(padding=(0, 1))
    table.add_row(
        "queue", f"{packet.queue}  priority {packet.priority.name.lower()}  reason {packet.reason_code}"
    )
    table.add_row("summary", packet.summary)
    conf = f" ({packet.intent_confidence:.2f})" if packet.intent_confidence is not None else ""
    table.add_row("intent", f"{packet.intent}{conf}")
    table.add_row("customer", _fmt(packet.customer))
    table.add_row("rules", ", ".join(packet.fired_rules) or "—")
    table.add_row("facts", ", ".join(f.fact_id for f in packet.facts_used) or "—")
    table.add_row(
        "actions",
        ", ".join(f"{a.action}: {'ok' if a.ok else a.error or a.status_code}" for a in packet.actions_tried)
        or "—",
    )
    table.add_row("transcript", f"{len(packet.transcript)} messages")
    return Panel(table, title=f"escalation {packet.id}", border_style="red")


def _bar(row: RateRow, width: int = 20) -> Text:
    """Automated (green), escalated (red) and unresolved (grey) as one stacked bar: the two rates together."""
    if not row.conversations:
        return Text("")
    auto = round(width * row.automated / row.conversations)
    esc = round(width * row.escalated / row.conversations)
    bar = Text()
    bar.append("█" * auto, style="green")
    bar.append("█" * esc, style="red")
    bar.append("░" * max(0, width - auto - esc), style="dim")
    return bar


def rate_table(title: str, rows: Sequence[RateRow], quality: Mapping[str, str] | None = None) -> Table:
    """Replay rates. Each row's quality (from `quality`, by key) sits beside its automation rate: a replay's
    conversations have no reviews, so without a judge's figure it reads "— 0 rev." as in `cxstack metrics`."""
    table = Table(title=title, caption="bar: automated (green) · escalated (red) · unresolved (grey)")
    table.add_column("", no_wrap=True)
    for column in ("convs", "automated", "rate", "quality", "escalated", "rate", "unresolved"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for r in rows:
        table.add_row(
            r.key,
            str(r.conversations),
            str(r.automated),
            f"{r.automation_rate:.0%}",
            (quality or {}).get(r.key, "— 0 rev."),
            str(r.escalated),
            f"{r.escalation_rate:.0%}",
            str(r.unresolved),
            _bar(r),
        )
    return table


def reliability_table(bins: Sequence[ReliabilityBin], *, width: int = 30) -> Table:
    """A reliability diagram as a table: a calibrated router's accuracy bar ends at its confidence (│)."""
    table = Table(title="reliability diagram (cross-validated held-out predictions)")
    for column in ("confidence", "n", "mean conf", "accuracy", ""):
        table.add_column(
            column, justify="right" if column not in ("", "confidence") else "left", no_wrap=True
        )
    for b in bins:
        if not b.count:
            continue
        filled = round(width * b.accuracy)
        mark = min(width - 1, round(width * b.mean_confidence))
        bar = Text()
        for i in range(width):
            if i == mark:
                bar.append("│", style="bold yellow")
            else:
                bar.append("█" if i < filled else "·", style="green" if i < filled else "dim")
        table.add_row(
            f"{b.lower:.2f}–{b.upper:.2f}", str(b.count), f"{b.mean_confidence:.3f}", f"{b.accuracy:.3f}", bar
        )
    return table


def agreement_report(console: Console, result: Agreement) -> None:
    if result.routing_accuracy is not None:
        console.print(
            f"routing accuracy: {result.routing_accuracy:.1%} on {result.labelled_intents} labelled"
        )
    if result.outcome_agreement is not None:
        console.print(
            f"outcome agreement: {result.outcome_agreement:.1%} on {result.labelled_outcomes} labelled"
        )
    if result.worst_intents:
        table = Table(title="worst intents (recall)")
        table.add_column("expected intent")
        table.add_column("support", justify="right")
        table.add_column("recall", justify="right")
        table.add_column("confused with")
        confused: dict[str, list[str]] = {}
        for expected, predicted, n in result.confusions:
            confused.setdefault(expected, []).append(f"{predicted} ×{n}")
        for intent, support, recall in result.worst_intents:
            table.add_row(intent, str(support), f"{recall:.0%}", ", ".join(confused.get(intent, [])) or "—")
        console.print(table)


def router_summary(report: Any) -> str:
    """One line on the trained router; honest when an intent has too few examples to measure it."""
    head = f"router on {report.n_examples} examples / {report.n_intents} intents"
    if report.cv_accuracy is None or report.expected_calibration_error is None:
        return f"{head}, not measured (an intent has fewer than 2 examples; add examples to measure it)"
    return f"{head}, cv accuracy {report.cv_accuracy:.1%}, ECE {report.expected_calibration_error:.3f}"


def _money(amount: Decimal | None, settings: WorkspaceSettings) -> str:
    if amount is None:
        return "—"
    # Model costs are fractions of a cent: four decimals say more than the locale's two.
    return f"{amount.quantize(Decimal('0.0001'))} {settings.currency}"


def usage_table(
    usages: Sequence[IntentUsage], settings: WorkspaceSettings, human: Decimal | None, days: float
) -> Table:
    table = Table(title=f"Model usage and cost per intent, last {days:g} days")
    table.add_column("intent", no_wrap=True)
    for column in ("turns", "escalated", "calls", "tokens in / out", "cost", "per automated"):
        table.add_column(column, justify="right")
    if human is not None:
        table.add_column("person per handoff", justify="right")
    for u in usages:
        row = [
            u.intent or "(no intent)",
            str(u.turns),
            str(u.escalated),
            str(u.llm_calls),
            f"{u.input_tokens} / {u.output_tokens}",
            _money(u.cost, settings) + (f" ({u.unpriced_turns} unpriced)" if u.unpriced_turns else ""),
            _money(u.cost_per_automated, settings),
        ]
        table.add_row(*row, *([_money(human, settings)] if human is not None else []))
    if not usages:
        table.caption = "No turns in this period."
    return table


def usage_json(
    usages: Sequence[IntentUsage], currency: str, human: Decimal | None, since: datetime
) -> dict[str, Any]:
    def text(amount: Decimal | None) -> str | None:
        return None if amount is None else str(amount)

    return {
        "since": since.isoformat(),
        "currency": currency,
        "cost_per_handoff": text(human),
        "intents": [
            {
                "intent": u.intent,
                "turns": u.turns,
                "automated": u.automated,
                "escalated": u.escalated,
                "llm_calls": u.llm_calls,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cost": text(u.cost),
                "cost_per_automated": text(u.cost_per_automated),
                "unpriced_turns": u.unpriced_turns,
            }
            for u in usages
        ],
    }
