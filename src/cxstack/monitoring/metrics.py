"""Replay rates: automation and escalation of scripted conversations, and agreement with what they expect."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ConversationOutcome:
    """One conversation as monitoring sees it: its main intent, mechanism, and how it ended."""

    conversation_id: str
    intent: str | None
    mechanism: str | None
    outcome: str  # "automated" | "escalated" | "unresolved" (ended waiting on the customer)
    reason_code: str | None = None
    expected_intent: str | None = None
    expected_outcome: str | None = None
    turns: int = 1


@dataclass(frozen=True, slots=True)
class RateRow:
    key: str
    conversations: int
    automated: int
    escalated: int

    @property
    def unresolved(self) -> int:
        return self.conversations - self.automated - self.escalated

    @property
    def automation_rate(self) -> float:
        return self.automated / self.conversations if self.conversations else 0.0

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.conversations if self.conversations else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "conversations": self.conversations,
            "automated": self.automated,
            "escalated": self.escalated,
            "unresolved": self.unresolved,
            "automation_rate": round(self.automation_rate, 4),
            # replayed conversations have no reviews: their quality is not known, and says so
            "quality": {"rate": None, "method": "insufficient", "reviewed": 0},
            "escalation_rate": round(self.escalation_rate, 4),
        }


def rates_by(outcomes: Iterable[ConversationOutcome], key: str) -> list[RateRow]:
    """Rows by `intent` or `mechanism`, largest volume first; a missing key shows as "(none)"."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        value = getattr(o, key) or "(none)"
        counts[value][o.outcome] += 1
    rows = [RateRow(k, sum(c.values()), c["automated"], c["escalated"]) for k, c in counts.items()]
    return sorted(rows, key=lambda r: (-r.conversations, r.key))


def overall(outcomes: Sequence[ConversationOutcome]) -> RateRow:
    return RateRow(
        "all",
        len(outcomes),
        sum(o.outcome == "automated" for o in outcomes),
        sum(o.outcome == "escalated" for o in outcomes),
    )


@dataclass(frozen=True, slots=True)
class Agreement:
    """How a run compares with labelled expectations: routing accuracy and outcome agreement."""

    labelled_intents: int
    routing_accuracy: float | None
    labelled_outcomes: int
    outcome_agreement: float | None
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # expected, predicted, count
    worst_intents: list[tuple[str, int, float]] = field(default_factory=list)  # intent, support, recall


def agreement(outcomes: Sequence[ConversationOutcome], *, worst: int = 8) -> Agreement:
    with_intent = [o for o in outcomes if o.expected_intent]
    with_outcome = [o for o in outcomes if o.expected_outcome]
    correct = sum(o.intent == o.expected_intent for o in with_intent)
    confusion: Counter[tuple[str, str]] = Counter(
        (str(o.expected_intent), o.intent or "(out of scope)")
        for o in with_intent
        if o.intent != o.expected_intent
    )
    support: Counter[str] = Counter(str(o.expected_intent) for o in with_intent)
    hits: Counter[str] = Counter(str(o.expected_intent) for o in with_intent if o.intent == o.expected_intent)
    recalls = sorted(((i, n, hits[i] / n) for i, n in support.items()), key=lambda r: (r[2], -r[1]))
    return Agreement(
        labelled_intents=len(with_intent),
        routing_accuracy=correct / len(with_intent) if with_intent else None,
        labelled_outcomes=len(with_outcome),
        outcome_agreement=(
            sum(o.outcome == o.expected_outcome for o in with_outcome) / len(with_outcome)
            if with_outcome
            else None
        ),
        confusions=[(e, p, n) for (e, p), n in confusion.most_common(worst)],
        worst_intents=[r for r in recalls if r[2] < 1.0][:worst],
    )
