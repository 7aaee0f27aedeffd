"""Request and response models of the REST API: pydantic at the edge; the layers use dataclasses."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cxstack.domain.auth import ApiRole
from cxstack.domain.models import Customer, CustomerId

MessageText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ChannelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$")]
# The caller chooses conversation ids (its own ticket or chat id); keep them URL- and log-safe.
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
ConversationIdText = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=CONVERSATION_ID_PATTERN)
]


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
    # The sender's id for this message: a resend with the same (channel, external_id) is a no-op; the same
    # external id in another conversation is refused (409).
    external_id: Identifier | None = None
    channel: ChannelName = "api"
    # The customer's profile, or just their id as a string ("cus_b"): who they are, keeping their profile.
    customer: CustomerIn | None = None
    # Shorthand when the customer is already known to the store; ignored when `customer` is given.
    customer_id: Identifier | None = None

    @field_validator("customer", mode="before")
    @classmethod
    def _bare_customer_id(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class TemplateUse(BaseModel):
    """An approved WhatsApp template (declared in the workspace's `whatsapp.templates`) and its parameters:
    what may be sent once the 24-hour customer-service window has shut."""

    model_config = ConfigDict(extra="forbid")

    name: Identifier
    parameters: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=20
    )
    language: Identifier | None = None


class HumanReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: MessageText | None = Field(None, description="Free text; or send `template` instead.")
    template: TemplateUse | None = None
    author: Identifier
    # True: the person answered and automation takes the next customer message again.
    hand_back: bool = True

    @model_validator(mode="after")
    def _text_or_template(self) -> HumanReply:
        if (self.text is None) == (self.template is None):
            raise ValueError("give either text or template")
        return self


class RequeueRequest(BaseModel):
    """What to send again from its first attempt, now: the items named, or with no `ids` every dead one."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Identifier] | None = Field(
        None,
        max_length=500,
        description="Items to requeue; omitted: every dead one (after the cause was fixed: a channel's "
        "credentials, a help desk's token).",
    )


class WebchatSessionRequest(BaseModel):
    """Without credentials: an anonymous session for a new conversation. With an integration or admin key:
    a session for `customer_id` (verified), in `conversation_id` if given (theirs, or new)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier | None = None
    conversation_id: ConversationIdText | None = None

    @model_validator(mode="after")
    def _conversation_needs_its_customer(self) -> WebchatSessionRequest:
        if self.conversation_id is not None and self.customer_id is None:
            raise ValueError("customer_id is required to open a session for a given conversation_id")
        return self


class WebchatMessageIn(BaseModel):
    """A message from the web-chat customer. Nothing else: a session never changes a profile."""

    model_config = ConfigDict(extra="forbid")

    text: MessageText
    external_id: Identifier | None = None  # the page's id for a resend; scoped to this conversation


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Identifier
    role: ApiRole
    channel: ChannelName | None = Field(
        None, description="integration keys only: the one channel it posts to"
    )

    @field_validator("channel")
    @classmethod
    def _integration_only(cls, channel: str | None, info: ValidationInfo) -> str | None:
        # a 422 naming the field, not the store's ValueError as a 500 (found by tests/test_fuzz_api.py)
        if channel is not None and info.data.get("role") not in (None, ApiRole.INTEGRATION):
            raise ValueError("only integration keys are bound to a channel")
        return channel


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
    # Its export to a help desk: kind, status (pending, retrying, sent, dead), ticket id and url, last error.
    handoff: dict[str, Any] | None = None


class ConversationSummary(BaseModel):
    id: str
    customer_id: str
    channel: str
    status: str
    created_at: datetime
    updated_at: datetime


class DeliveryOut(BaseModel):
    """A reply's way to the customer: queued, sent, or dead (with why), and what the provider reported."""

    message_id: str
    channel: str
    status: str  # pending | sent | dead
    attempts: int
    error: str | None
    provider_message_id: str | None
    delivery_status: str | None  # sent | delivered | read | failed, where the channel reports it
    delivery_error: str | None


class ConversationOut(ConversationSummary):
    state: dict[str, Any]
    customer: CustomerOut | None
    messages: list[MessageOut]
    traces: list[TraceOut]
    escalations: list[EscalationOut]
    # Text of every fact cited in a trace, so a reader sees what the answer rested on.
    facts: dict[str, str]
    deliveries: list[DeliveryOut] = []


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


class TemplateOut(BaseModel):
    """An approved WhatsApp template a person may send once the 24-hour window has shut."""

    name: str
    language: str
    body: str
    parameters: int
    purpose: str


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
    whatsapp_templates: list[TemplateOut] = []


class WorkerOut(BaseModel):
    """The turn worker: `running`, or `starting` / `restarting` / `stopped` with the reason."""

    state: Literal["starting", "running", "restarting", "stopped"]
    restarts: int
    pid: int | None
    last_exit: int | None = Field(description="last exit code of the worker process; negative: the signal")
    reason: str | None


class HealthOut(BaseModel):
    """Liveness: always HTTP 200 while the process answers; `degraded` names its reasons. A database that
    blinked is no reason to restart the process, so it never fails this probe: `/ready` answers 503 for it.
    With the worker down the service still stores and acknowledges every message and answers them once the
    worker is back, with `status: degraded`."""

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
    handoff_dead: int | None = Field(
        None,
        description="escalations the help desk never took: GET /v1/handoff/exports?status=dead lists them",
    )


class WebchatSessionOut(BaseModel):
    token: str = Field(description="send as 'Authorization: Bearer <token>' to the /v1/webchat routes")
    conversation_id: str
    customer_id: str
    verified: bool
    expires_at: datetime


class WebchatMessageOut(BaseModel):
    """What the customer sees of a message: no trace, no state, no internal ids or names."""

    id: str
    role: Literal["customer", "assistant", "human_agent"]
    text: str
    created_at: datetime


class WebchatAccepted(BaseModel):
    conversation_id: str
    message_id: str
    duplicate: bool
    waited: bool = False
    completed: bool = False
    reply: str | None = None


class WebchatEvents(BaseModel):
    changed: bool
    message_count: int
    messages: list[WebchatMessageOut]


class KeyOut(BaseModel):
    id: str
    prefix: str = Field(description="how the key starts (cxk_<id>_): not secret")
    name: str
    role: str
    channel: str | None
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class KeyCreated(KeyOut):
    key: str = Field(description="the whole key: shown once, stored nowhere")


class PrincipalOut(BaseModel):
    kind: Literal["key", "session"]
    role: str
    name: str
    scopes: list[str]
    conversation_id: str | None = None
    customer_id: str | None = None
    verified: bool | None = None
    expires_at: datetime | None = None


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


# ---- knowledge facts and their versions ----------------------------------------------------------------


class FactVersionOut(BaseModel):
    fact_id: str
    version: int
    author: str
    reason: str
    origin: Literal["files", "api", "rollback"] | str
    at: datetime
    content: dict[str, Any] | None = Field(description="The fact as JSON; null when it was removed.")


class FactChangeOut(BaseModel):
    field: str
    before: Any
    after: Any


class FactDiffOut(BaseModel):
    fact_id: str
    from_version: int | None
    to_version: int
    changes: list[FactChangeOut]


class FactEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: dict[str, Any] = Field(
        description="The fields to change (text, owner, status, review_by, tags, audience, …); not the id."
    )
    expected_version: int = Field(
        ge=1,
        description="The version this edit is based on; if the fact has a newer one, the answer is 409 and "
        "nothing changes (re-read, merge, retry).",
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class FactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fact: dict[str, Any] = Field(description="The new fact: id, text, owner and any optional field.")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    file: Annotated[str, StringConstraints(pattern=r"^knowledge/[A-Za-z0-9_./-]+\.ya?ml$")] = Field(
        "knowledge/api.yaml", description="The knowledge file to append it to (created when missing)."
    )


class FactRollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int = Field(ge=1, description="The version whose content comes back, as a new version.")
    expected_version: int = Field(ge=1, description="The newest version you saw (409 if there is a newer).")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
