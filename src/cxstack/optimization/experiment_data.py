"""What an experiment's arms did, read from the store: the units exposed (from the traces' exposure steps)
and, per arm, the conversations' outcomes and the monitoring layer's quality estimate (outcome projection)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cxstack.domain.quality import SliceCounts
from cxstack.monitoring.quality import MetricRow, as_monitoring_store, metric_row, policy_of, rules_of
from cxstack.workspace.models import ExperimentConfig, MonitoringSettings

# Proportions read off the outcome counts: the successes and the trials of each.
RATES = {
    "automation_rate": lambda c: (c.automated_resolved, c.conversations - c.in_progress),
    "escalation_rate": lambda c: (c.escalated, c.conversations - c.in_progress),
    "reopen_rate": lambda c: (c.reopened, c.conversations - c.in_progress),
    "abandon_rate": lambda c: (c.abandoned, c.conversations - c.in_progress),
    "csat": lambda c: (c.csat_satisfied, c.csat_count),
}
# For these a rise is the wrong way.
LOWER_IS_BETTER = {"escalation_rate", "reopen_rate", "abandon_rate"}


@dataclass
class ArmRecord:
    variant: str
    units: set[str] = field(default_factory=set)
    conversations: set[str] = field(default_factory=set)
    counts: SliceCounts | None = None
    daily_units: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def row(self, settings: MonitoringSettings) -> MetricRow:
        return metric_row(self.counts or SliceCounts(key=self.variant), policy_of(settings))

    def rate(self, metric: str) -> tuple[int, int]:
        counts = self.counts or SliceCounts(key=self.variant)
        successes, trials = RATES[metric](counts)
        return int(successes), int(trials)


def arms_of(
    store: Any,
    experiment: ExperimentConfig,
    settings: MonitoringSettings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    trace_limit: int = 200_000,
) -> dict[str, ArmRecord]:
    """Each variant of `experiment` (in the file's order) with what its arm saw; a variant nobody was
    assigned to yet is there, empty."""
    arms = {name: ArmRecord(name) for name in experiment.variants}
    start = since or experiment.start or datetime(1970, 1, 1)
    monitoring = as_monitoring_store(store)
    for trace in monitoring.traces_since(start, limit=trace_limit):
        if until is not None and trace.turn_at is not None and trace.turn_at >= until:
            continue
        for step in trace.steps:
            if step.name != "experiment":
                continue
            for assigned in step.output.get("assignments") or []:
                if assigned.get("experiment") != experiment.id or assigned.get("variant") not in arms:
                    continue
                arm = arms[assigned["variant"]]
                arm.units.add(str(assigned.get("unit")))
                arm.conversations.add(str(trace.conversation_id))
                day = (trace.turn_at or start).date().isoformat()
                arm.daily_units[day].add(str(assigned.get("unit")))
    rows = monitoring.slice_counts("variant", rules=rules_of(settings), since=since, until=until, now=now)
    for row in rows:
        for label in (row.key or "").split(";"):
            name, _, variant = label.partition(":")
            if name == experiment.id and variant in arms:
                arm = arms[variant]
                counts = SliceCounts(key=variant) + row
                arm.counts = counts if arm.counts is None else arm.counts + counts
    return arms


def daily_counts(
    store: Any,
    experiment: ExperimentConfig,
    settings: MonitoringSettings,
    *,
    until: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, dict[str, SliceCounts]]:
    """Day → variant → the outcome counts of the conversations that started that day (for the chart of the
    always-valid interval over time; conversations in several experiments at once are left out of it)."""
    monitoring = as_monitoring_store(store)
    days: dict[str, dict[str, SliceCounts]] = defaultdict(dict)
    for variant in experiment.variants:
        rows = monitoring.slice_counts(
            "day",
            rules=rules_of(settings),
            since=experiment.start,
            until=until,
            now=now,
            where={"variant": f"{experiment.id}:{variant}"},
        )
        for row in rows:
            days[str(row.key)][variant] = row
    return dict(sorted(days.items()))
