"""Value types shared by every layer. No I/O here."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NewType

ConversationId = NewType("ConversationId", str)
MessageId = NewType("MessageId", str)
CustomerId = NewType("CustomerId", str)
TraceId = NewType("TraceId", str)
EscalationId = NewType("EscalationId", str)
WorkspaceVersionId = NewType("WorkspaceVersionId", str)

JSON = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    ASSISTANT = "assistant"
    HUMAN_AGENT = "human_agent"
    SYSTEM = "system"


class ConversationStatus(enum.StrEnum):
    """Who owns the conversation. Changed only through `cxstack.domain.conversation_state` transitions."""

    BOT = "bot"
    WAITING = "waiting_for_person"  # escalated; no person has answered yet
    PERSON = "person"  # a person answered and has the conversation
    CLOSED = "closed"


class Priority(enum.IntEnum):
    LOW = 1
    NORMAL = 2
    HIGH = 3
    URGENT = 4

    @classmethod
    def parse(cls, value: str | int) -> Priority:
        if isinstance(value, int):
            return cls(value)
        return cls[value.upper()]


class Layer(enum.StrEnum):
    CHANNEL = "channel"
    STRATEGY = "strategy"
    RESOLUTION = "resolution"
    KNOWLEDGE = "knowledge"
    ORCHESTRATION = "orchestration"
    MONITORING = "monitoring"
    OPTIMIZATION = "optimization"


class Decision(enum.StrEnum):
    """What the confidence policy decided for a turn."""

    CONTINUE = "continue"
    CLARIFY = "clarify"
    RETRY = "retry"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class Customer:
    id: CustomerId
    name: str = ""
    email: str = ""
    plan: str = ""
    arr: float = 0.0
    segment: str = ""
    attributes: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A customer message as a channel delivered it; (channel, external_id) is its idempotency key."""

    channel: str
    external_id: str
    conversation_id: ConversationId
    customer_id: CustomerId
    text: str
    received_at: datetime = field(default_factory=utcnow)
    customer: Customer | None = None
    verified: bool = False  # the channel vouched for customer_id (integration key, signed session)


@dataclass(frozen=True, slots=True)
class Message:
    id: MessageId
    conversation_id: ConversationId
    role: Role
    text: str
    created_at: datetime
    channel: str = "api"
    external_id: str | None = None
    author: str | None = None
    turn_failures: int = 0  # turns on this message that failed or were cut short by a dying worker


@dataclass(slots=True)
class Conversation:
    id: ConversationId
    customer_id: CustomerId
    channel: str
    status: ConversationStatus = ConversationStatus.BOT
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    # Carried between turns: last intent, pending action and its filled slots, entities seen so far.
    state: JSON = field(default_factory=dict)
    # True when the channel (or a verification step) proved who the customer is; anonymous otherwise.
    verified: bool = False
    # Bumped by every write of state or status; a writer that read an older version is refused.
    version: int = 0


@dataclass(frozen=True, slots=True)
class TraceStep:
    layer: Layer
    name: str
    input: JSON
    output: JSON
    confidence: float | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class FactVersion:
    """One immutable version of a knowledge fact. `content` is the fact as JSON (every field), or None when
    this version records the fact's removal from the workspace files."""

    fact_id: str
    number: int  # 1, 2, 3 … per fact, with no gaps
    content: dict[str, Any] | None
    author: str
    reason: str
    origin: str  # "files" (seen in the workspace files), "api" or "cli" (an edit), "rollback"
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FactCitation:
    fact_id: str
    score: float
    text: str = ""


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: str
    ok: bool
    status_code: int | None
    request: JSON
    response: JSON
    attempts: int = 1
    error: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class EscalationPacket:
    """Everything a human needs to pick a conversation up without asking the customer again."""

    id: EscalationId
    conversation_id: ConversationId
    queue: str
    priority: Priority
    reason_code: str
    summary: str
    intent: str | None
    intent_confidence: float | None
    customer: JSON
    fired_rules: list[str]
    facts_used: list[FactCitation]
    actions_tried: list[ActionResult]
    transcript: list[JSON]
    created_at: datetime = field(default_factory=utcnow)
    status: str = "open"
    # The reply the assistant drafted but did not send because it was not confident enough.
    draft_reply: str | None = None
    # Customer messages received after the escalation, while a person was on the way.
    followups: list[JSON] = field(default_factory=list)
    # Its export to a help desk, when one is configured: kind, status, ticket id and url, the last error.
    handoff: JSON | None = None


def undelivered_packet(
    conversation_id: ConversationId,
    customer_id: str,
    *,
    channel: str,
    error: str,
    reply: str,
    transcript: list[JSON],
    queue: str,
    at: datetime,
) -> EscalationPacket:
    """The packet for a reply that never reached the customer: they are waiting for an answer."""
    return EscalationPacket(
        id=EscalationId(new_id("esc")),
        conversation_id=conversation_id,
        queue=queue,
        priority=Priority.HIGH,
        reason_code="undelivered",
        summary=f"A reply on {channel} never reached the customer ({error}); they are waiting for it.",
        intent=None,
        intent_confidence=None,
        customer={"id": customer_id},
        fired_rules=[],
        facts_used=[],
        actions_tried=[],
        transcript=transcript,
        created_at=at,
        draft_reply=reply,
    )


@dataclass(frozen=True, slots=True)
class Trace:
    """The record of one turn: every step, by layer, on one workspace version."""

    id: TraceId
    conversation_id: ConversationId
    message_id: MessageId
    workspace_version: WorkspaceVersionId
    steps: list[TraceStep]
    intent: str | None
    intent_confidence: float | None
    mechanism: str | None
    decision: Decision
    outcome: str  # "automated" | "clarified" | "escalated" | "handled_by_human"
    reply: str | None
    reason_code: str | None = None
    variant: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    duration_ms: float = 0.0
    # The turn's clock: the moment rules, hours and fact validity were evaluated at.
    turn_at: datetime | None = None
