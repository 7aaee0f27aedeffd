"""What monitoring knows about a conversation and how well it went: outcomes, slices, reviews, judgements.

A conversation's *outcome* is decided when it is read, from timestamps the store keeps per conversation, so
the workspace's rules (how long a silence makes a conversation abandoned, how many days a return counts as a
reopening) apply to old conversations too, without rewriting them:

- escalated: a person was asked to take it (or stepped in);
- reopened: the bot resolved it, and the customer came back with a request (not a thank-you) at least
  `RETURN_GAP` later and within `reopen_days`;
- automated_resolved: the bot's last answer resolved it (nothing left waiting on the customer);
- abandoned: the customer went silent for `settle_hours` with the bot waiting on them or nothing resolved;
- in_progress: none of these yet.

Quality is a pass/fail label per conversation: a person's (the mean of their passes when several reviewed
it) and a judge's. The store keeps both on its per-conversation row, with the probability the conversation had
of being drawn for review, so a quality rate for any slice is one grouped query (see `QualitySums`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from cxstack.domain.models import Trace

# A customer message this long after the bot's resolution is a return, not the same exchange going on.
RETURN_GAP = timedelta(hours=1)
# The mechanism of the built-in greeting, thanks and small-talk intents: never a conversation's main intent.
COURTESY_MECHANISM = "conversational"
# Conversation-state keys under which the bot waits on the customer (a slot, a confirmation, a choice).
WAITING_STATE_KEYS = ("pending_action", "clarify", "multi_agent", "agent")
TRACE_WAITS = "clarified"  # a trace outcome that leaves the bot waiting on the customer
TRACE_ESCALATED = ("escalated", "handled_by_human")

Slice = Literal[
    "all", "intent", "mechanism", "tier", "channel", "language", "workspace_version", "variant", "day", "week"
]
SLICES: tuple[Slice, ...] = (
    "all",
    "intent",
    "mechanism",
    "tier",
    "channel",
    "language",
    "workspace_version",
    "variant",
    "day",
    "week",
)


class ResolutionOutcome(enum.StrEnum):
    AUTOMATED_RESOLVED = "automated_resolved"
    ESCALATED = "escalated"
    ABANDONED = "abandoned"
    REOPENED = "reopened"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True, slots=True)
class OutcomeRules:
    settle_hours: float = 24.0
    reopen_days: float = 7.0


@dataclass(frozen=True, slots=True)
class QualitySums:
    """Sufficient statistics of the quality labels of one slice, summed by the store.

    Units are the conversations offered to the review sampler (each with its inclusion probability π),
    except those drawn and not yet reviewed, which are counted in `pending`. h is the human label (0 to 1), j
    the judge's (0 or 1); ξ = 1 for a reviewed unit. `c`, `a`, `v…` are sums of ξ·x/π, `u…` of ξ·x/π²: the
    estimator combines them with the share of draws reviewed so far (see monitoring/quality.py). Sums prefixed
    `judged_` are over units that also have a judge label.
    """

    units: int = 0
    reviewed: int = 0  # Σ ξ
    pending: int = 0  # drawn, not reviewed yet (left out of the units)
    c: float = 0.0  # Σ ξ / π
    a: float = 0.0  # Σ ξ h / π
    vhh: float = 0.0  # Σ ξ h² / π
    u: float = 0.0  # Σ ξ / π²
    uh: float = 0.0  # Σ ξ h / π²
    uhh: float = 0.0  # Σ ξ h² / π²
    judged_units: int = 0
    judged_pass: float = 0.0  # Σ j
    judged_reviewed: int = 0  # pairs: reviewed units with a judge label
    judged_agree: float = 0.0  # Σ ξ (1 - |h - j|): agreement of judge and humans on the pairs
    judged_c: float = 0.0
    judged_a: float = 0.0
    judged_b: float = 0.0  # Σ ξ j / π
    judged_vhh: float = 0.0
    judged_vhj: float = 0.0
    judged_vjj: float = 0.0
    judged_u: float = 0.0
    judged_uh: float = 0.0
    judged_uj: float = 0.0
    judged_uhh: float = 0.0
    judged_uhj: float = 0.0
    judged_ujj: float = 0.0

    def __add__(self, other: QualitySums) -> QualitySums:
        return QualitySums(
            **{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__}
        )


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """One slice's conversations by outcome, with CSAT, cost and the quality sums (all from one query)."""

    key: str
    conversations: int = 0
    automated_resolved: int = 0
    escalated: int = 0
    abandoned: int = 0
    reopened: int = 0
    in_progress: int = 0
    unjudged: int = 0  # settled conversations without a judge label (not yet judged, or the judge failed)
    csat_count: int = 0
    csat_sum: float = 0.0
    csat_satisfied: int = 0  # 4 or 5 of 5
    cost_micros: int = 0
    priced_conversations: int = 0
    quality: QualitySums = field(default_factory=QualitySums)

    def __add__(self, other: SliceCounts) -> SliceCounts:
        numbers = {
            name: getattr(self, name) + getattr(other, name)
            for name in self.__dataclass_fields__
            if name not in ("key", "quality")
        }
        return SliceCounts(key=self.key, quality=self.quality + other.quality, **numbers)


# ---- reviews, judgements ----------------------------------------------------------------------------------


class ReviewReason(enum.StrEnum):
    """Why a conversation is in the review queue. Only `sample` draws feed the quality estimate."""

    SAMPLE = "sample"  # the random (stratified, oversampled) draw, with its inclusion probability
    DOUBLE = "double"  # a second person reviews a sampled conversation: human–human agreement
    DISAGREEMENT = "disagreement"  # a person and the judge disagreed: decide who is right
    MANUAL = "manual"  # someone asked for it


@dataclass(frozen=True, slots=True)
class Review:
    id: str
    conversation_id: str
    reviewer: str  # the API key's name or the CLI user
    rubric_version: str
    scores: dict[str, int]
    passed: bool
    reason: ReviewReason
    comment: str = ""
    created_at: datetime | None = None
    judge_version: str | None = None  # for a disagreement decision: the judge version it corrects


@dataclass(frozen=True, slots=True)
class Judgement:
    conversation_id: str
    judge_version: str
    rubric_version: str
    scores: dict[str, float]
    overall: float | None  # 0 to 1; None when the judge failed
    passed: bool | None
    error: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JudgeVersion:
    id: str  # "offline-1", "offline-2", "llm-1" …
    kind: str  # "offline" | "llm"
    rubric_version: str
    params: dict[str, Any]
    parent: str | None = None
    fit_fold: int | None = None  # reviews of conversations in this fold trained it; agreement uses the other
    created_at: datetime | None = None
    agreement: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: str
    conversation_id: str
    reason: ReviewReason
    stratum: str
    priority: int
    wanted: int  # reviews wanted (2 for a double review)
    done: int
    created_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OfferCandidate:
    """A settled conversation the review sampler has not seen yet."""

    conversation_id: str
    intent: str | None
    mechanism: str | None
    min_confidence: float | None
    escalated: bool
    workspace_version: str


@dataclass(frozen=True, slots=True)
class Offer:
    """The sampler's decision on one conversation: its chance of being drawn and whether it was."""

    conversation_id: str
    pi: float
    sampled: bool
    stratum: str
    wanted: int = 1  # 2: reviewed by two people
    priority: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class UnknownConversationError(KeyError):
    pass


class DuplicateReviewError(ValueError):
    """This reviewer already reviewed this conversation for this reason."""


class MonitoringStore(Protocol):
    """What the monitoring layer reads and writes (implemented by the SQL store)."""

    def slice_counts(
        self,
        by: Slice,
        *,
        rules: OutcomeRules,
        since: datetime | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
        where: dict[str, str] | None = None,
    ) -> list[SliceCounts]: ...
    def record_csat(
        self, conversation_id: str, score: int, comment: str = "", at: datetime | None = None
    ) -> None: ...
    def rebuild_outcomes(self) -> int: ...
    def traces_since(self, since: datetime, limit: int = 5000) -> list[Trace]: ...
