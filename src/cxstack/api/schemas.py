"""Request and response models of the REST API: pydantic at the edge; the layers use dataclasses."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cxstack.domain.models import Customer, CustomerId

MessageText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ChannelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$")]


# --- requests -----------------------------------------------------------------------------------------------


class CustomerIn(BaseModel):
    """The customer as the calling system knows them; stored (upserted) with the message."""

    id: Identifier
    name: str = ""
    email: str = ""
    plan: str = ""
    arr: float = Field(0.0, ge=0)
    segment: str = ""
    attributes: dict[str, Any] = Field(default_factory=dict)

    def to_domain(self, existing: Customer | None = None) -> Customer:
        """This profile; over an `existing` one only the fields the caller actually sent are changed, so a
        message carrying just `{"id": ...}` never wipes the plan and ARR imported from the CRM."""
        if existing is not None:
            sent = {name: getattr(self, name) for name in self.model_fields_set if name != "id"}
            return replace(existing, **sent)
        return Customer(
            id=CustomerId(self.id),
            name=self.name,
            email=self.email,
            plan=self.plan,
            arr=self.arr,
            segment=self.segment,
            attributes=dict(self.attributes),
        )


class PostMessage(BaseModel):
    text: MessageText
    # The sender's id for this message: a resend with the same (channel, external_id) is a no-op.
    external_id: Identifier | None = None
    channel: ChannelName = "api"
    customer: CustomerIn | None = None
    # Shorthand when the customer is already known to the store; ignored when `customer` is given.
    customer_id: Identifier | None = None


class HumanReply(BaseModel):
    text: MessageText
    author: Identifier
    # True: the person answered and automation takes the next customer message again.
    hand_back: bool = True


# --- responses ----------------------------------------------------------------------------------------------


class CustomerProfile(BaseModel):
    """A customer profile as a CRM or billing system exports it; the id comes from the URL."""

    name: str = ""
    email: str = ""
    plan: str = ""
    arr: float = Field(0.0, ge=0)
    segment: str = ""
    attributes: dict[str, Any] = Field(default_factory=dict)


class CustomerOut(BaseModel):
    id: str
    name: str
    email: str
    plan: str
    arr: float
    segment: str
    attributes: dict[str, Any]


class MessageOut(BaseModel):
    id: str
    role: str
    text: str
    created_at: datetime
    channel: str
    external_id: str | None
    author: str | None


class TraceStepOut(BaseModel):
    layer: str
    name: str
    input: dict[str, Any]
    output: dict[str, Any]
    confidence: float | None
    duration_ms: float


class TraceOut(BaseModel):
    id: str
    message_id: str
    workspace_version: str
    intent: str | None
    intent_confidence: float | None
    mechanism: str | None
    decision: str
    outcome: str
    reply: str | None
    reason_code: str | None
    reason: str | None = Field(description="reason_code in words")
    variant: str | None
    created_at: datetime
    duration_ms: float
    steps: list[TraceStepOut]


class FactCitationOut(BaseModel):
    fact_id: str
    score: float
    text: str


class ActionResultOut(BaseModel):
    action: str
    ok: bool
    status_code: int | None
    attempts: int
    error: str | None
    dry_run: bool
    request: dict[str, Any]
    response: dict[str, Any]


class EscalationOut(BaseModel):
    id: str
    conversation_id: str
    queue: str
    priority: str
    priority_level: int
    reason_code: str
    reason: str
    summary: str
    intent: str | None
    intent_confidence: float | None
    customer: dict[str, Any]
    fired_rules: list[str]
    facts_used: list[FactCitationOut]
    actions_tried: list[ActionResultOut]
    transcript: list[dict[str, Any]]
    created_at: datetime
    status: str


class ConversationSummary(BaseModel):
    id: str
    customer_id: str
    channel: str
    status: str
    created_at: datetime
    updated_at: datetime


class ConversationOut(ConversationSummary):
    state: dict[str, Any]
    customer: CustomerOut | None
    messages: list[MessageOut]
    traces: list[TraceOut]
    escalations: list[EscalationOut]
    # Text of every fact cited in a trace, so a reader sees what the answer rested on.
    facts: dict[str, str]


class MessageAccepted(BaseModel):
    conversation_id: str
    message_id: str
    duplicate: bool
    # Filled when the request asked to wait (?wait=true) and the turn finished in time.
    waited: bool = False
    completed: bool = False
    reply: str | None = None
    status: str | None = None
    trace: TraceOut | None = None


class ConversationEvents(BaseModel):
    """Long-poll answer: the conversation once it has more than `after` messages, or unchanged at timeout."""

    changed: bool
    message_count: int
    conversation: ConversationOut


class HumanReplyOut(BaseModel):
    conversation_id: str
    message_id: str
    author: str
    hand_back: bool
    status: str


class IntentOut(BaseModel):
    name: str
    description: str
    mechanism: str
    owner: str
    queue: str | None
    status: str
    never_automate: bool
    action: str | None
    fallback: str | None
    examples: int
    builtin: bool = False


class QueueOut(BaseModel):
    name: str
    description: str
    open: int


class WorkspaceOut(BaseModel):
    name: str
    version: str
    language: str
    description: str
    channels: list[str]
    embedder: str
    counts: dict[str, int]
    queues: list[QueueOut]
    router: dict[str, Any]
    load_seconds: float


class WorkerOut(BaseModel):
    """The turn worker: `running`, or `starting` / `restarting` / `stopped` with the reason."""

    state: Literal["starting", "running", "restarting", "stopped"]
    restarts: int
    pid: int | None
    last_exit: int | None = Field(description="last exit code of the worker process; negative: the signal")
    reason: str | None


class HealthOut(BaseModel):
    """`degraded` names its reasons. HTTP 503 only when the database is unreachable (nothing can be stored);
    with the worker down the service still stores and acknowledges every message and answers them once the
    worker is back, so it stays 200 and in a load balancer's rotation, with `status: degraded`."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "status": "degraded",
                "reasons": ["turn worker restarting after exit -9/SIGKILL (3 restarts)"],
                "db_ok": True,
                "pending": 4,
                "outbox_dead": 0,
            }
        }
    )

    status: Literal["ok", "degraded"]
    reasons: list[str] = Field(default_factory=list)
    workspace: str
    workspace_version: str
    db_ok: bool
    pending: int | None
    db_error: str | None = None
    worker: WorkerOut | None = None
    outbox_dead: int | None = Field(
        None, description="replies that failed every send attempt: GET /v1/outbox?status=dead lists them"
    )


class OutboxItemOut(BaseModel):
    id: str
    conversation_id: str
    message_id: str
    channel: str
    text: str
    status: Literal["pending", "sent", "dead"]
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
