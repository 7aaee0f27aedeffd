"""What the routes call: one CxApp/store operation each, and the conversion of domain values to API models.

Kept out of the route handlers so that they only parse, call and format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from fastapi import HTTPException, status

from cxstack.api.keys import KEY_PREFIX, ApiKeys
from cxstack.api.schemas import (
    ActionResultOut,
    ConversationEvents,
    ConversationOut,
    ConversationSummary,
    CustomerOut,
    CustomerProfile,
    DeliveryOut,
    EscalationOut,
    FactCitationOut,
    HealthOut,
    HumanReply,
    HumanReplyOut,
    IntentOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    MessageAccepted,
    MessageOut,
    OutboxItemOut,
    PostMessage,
    PrincipalOut,
    QueueOut,
    TemplateOut,
    TraceOut,
    TraceStepOut,
    WebchatAccepted,
    WebchatEvents,
    WebchatMessageIn,
    WebchatMessageOut,
    WebchatSessionOut,
    WebchatSessionRequest,
    WorkerOut,
    WorkspaceOut,
)
from cxstack.api.security import Principal, Scope, require_scope
from cxstack.api.sessions import WebchatSession, WebchatSessions
from cxstack.app import ConversationView, CxApp
from cxstack.domain.auth import ApiKey
from cxstack.domain.handoff import ExportStatus
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    Customer,
    CustomerId,
    EscalationId,
    EscalationPacket,
    Message,
    Role,
    Trace,
    new_id,
)
from cxstack.domain.ports import OutboxItem, OutboxStatus
from cxstack.orchestration.handoff import reason_text
from cxstack.runtime.health import WorkerHealth
from cxstack.workspace.workspace import Workspace

WAIT_SECONDS = 10.0
EVENTS_MAX_SECONDS = 30.0


class UnknownChannelError(ValueError):
    def __init__(self, channel: str, known: Iterable[str]) -> None:
        self.channel = channel
        self.known = sorted(known)
        super().__init__(f"unknown channel {channel!r}; this workspace accepts: {', '.join(self.known)}")


class ChannelNotAllowedError(PermissionError):
    def __init__(self, channel: str, allowed: str) -> None:
        super().__init__(f"this key posts to channel {allowed!r} only, not {channel!r}")


class ConversationOfAnotherCustomerError(ValueError):
    def __init__(self) -> None:
        super().__init__("conversation_id is in use by another customer")


class ApiKeyNotFoundError(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id} not found")


class ConversationNotFoundError(LookupError):
    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id} not found")


class EscalationNotFoundError(LookupError):
    def __init__(self, escalation_id: str) -> None:
        self.escalation_id = escalation_id
        super().__init__(f"escalation {escalation_id} not found")


# --- domain -> API ------------------------------------------------------------------------------------------


def customer_out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        id=str(customer.id),
        name=customer.name,
        email=customer.email,
        plan=customer.plan,
        arr=customer.arr,
        segment=customer.segment,
        attributes=dict(customer.attributes),
    )


def message_out(message: Message) -> MessageOut:
    return MessageOut(
        id=str(message.id),
        role=message.role.value,
        text=message.text,
        created_at=message.created_at,
        channel=message.channel,
        external_id=message.external_id,
        author=message.author,
    )


def trace_out(trace: Trace) -> TraceOut:
    return TraceOut(
        id=str(trace.id),
        message_id=str(trace.message_id),
        workspace_version=str(trace.workspace_version),
        intent=trace.intent,
        intent_confidence=trace.intent_confidence,
        mechanism=trace.mechanism,
        decision=trace.decision.value,
        outcome=trace.outcome,
        reply=trace.reply,
        reason_code=trace.reason_code,
        reason=reason_text(trace.reason_code) if trace.reason_code else None,
        variant=trace.variant,
        created_at=trace.created_at,
        duration_ms=trace.duration_ms,
        steps=[
            TraceStepOut(
                layer=step.layer.value,
                name=step.name,
                input=jsonable(step.input),
                output=jsonable(step.output),
                confidence=step.confidence,
                duration_ms=step.duration_ms,
            )
            for step in trace.steps
        ],
    )


def escalation_out(packet: EscalationPacket) -> EscalationOut:
    return EscalationOut(
        id=str(packet.id),
        conversation_id=str(packet.conversation_id),
        queue=packet.queue,
        priority=packet.priority.name.lower(),
        priority_level=int(packet.priority),
        reason_code=packet.reason_code,
        reason=reason_text(packet.reason_code),
        summary=packet.summary,
        intent=packet.intent,
        intent_confidence=packet.intent_confidence,
        customer=jsonable(packet.customer),
        fired_rules=list(packet.fired_rules),
        facts_used=[
            FactCitationOut(fact_id=f.fact_id, score=f.score, text=f.text) for f in packet.facts_used
        ],
        actions_tried=[
            ActionResultOut(
                action=a.action,
                ok=a.ok,
                status_code=a.status_code,
                attempts=a.attempts,
                error=a.error,
                dry_run=a.dry_run,
                request=jsonable(a.request),
                response=jsonable(a.response),
            )
            for a in packet.actions_tried
        ],
        transcript=[jsonable(turn) for turn in packet.transcript],
        handoff=None if packet.handoff is None else jsonable(packet.handoff),
        created_at=packet.created_at,
        status=packet.status,
    )


def conversation_summary(conversation: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=str(conversation.id),
        customer_id=str(conversation.customer_id),
        channel=conversation.channel,
        status=conversation.status.value,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


def conversation_out(view: ConversationView, workspace: Workspace) -> ConversationOut:
    conversation = view.conversation
    return ConversationOut(
        id=str(conversation.id),
        customer_id=str(conversation.customer_id),
        channel=conversation.channel,
        status=conversation.status.value,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        state=jsonable(conversation.state),
        customer=customer_out(view.customer) if view.customer else None,
        messages=[message_out(m) for m in view.messages],
        traces=[trace_out(t) for t in view.traces],
        escalations=[escalation_out(e) for e in sorted(view.escalations, key=lambda e: e.created_at)],
        facts=cited_fact_texts(view.traces, workspace),
        deliveries=[
            DeliveryOut(
                message_id=item.message_id,
                channel=item.channel,
                status=item.status.value,
                attempts=item.attempts,
                error=item.last_error,
                provider_message_id=item.provider_message_id,
                delivery_status=item.delivery_status,
                delivery_error=item.delivery_error,
            )
            for item in view.deliveries
        ],
    )


def cited_fact_texts(traces: Iterable[Trace], workspace: Workspace) -> dict[str, str]:
    texts: dict[str, str] = {}
    for trace in traces:
        for step in trace.steps:
            for cited in step.output.get("facts") or []:
                fact_id = cited.get("id") if isinstance(cited, dict) else None
                if isinstance(fact_id, str) and fact_id not in texts:
                    fact = workspace.fact(fact_id)
                    if fact is not None:
                        texts[fact_id] = fact.text
    return texts


def jsonable(value: Any) -> Any:
    """Trace steps are free-form dicts; make whatever a layer put there (enums, dates, numpy numbers) JSON."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    for convert in ("model_dump", "tolist", "item"):  # pydantic models, numpy arrays, numpy scalars
        method = getattr(value, convert, None)
        if callable(method):
            return jsonable(method())
    return str(value)


# --- operations ---------------------------------------------------------------------------------------------


def accepted_channels(cx: CxApp) -> set[str]:
    return {"api", "webchat", *cx.workspace.settings.channels}


async def post_message(
    cx: CxApp,
    conversation_id: str,
    body: PostMessage,
    *,
    principal: Principal,
    wait: bool,
    timeout: float = WAIT_SECONDS,
) -> MessageAccepted:
    """Stores the message (idempotent on channel + external id); with `wait`, returns the turn too.

    Only integration and admin keys get here, so a customer named in the body is one the channel vouches
    for (verified) and a profile it carries may set plan, ARR and segment. The trace comes back only to a
    caller that may read traces."""
    channel = body.channel
    bound = principal.key.channel if principal.key is not None else None
    if bound is not None:
        if "channel" in body.model_fields_set and body.channel != bound:
            raise ChannelNotAllowedError(body.channel, bound)
        channel = bound
    known = accepted_channels(cx)
    if channel not in known:
        raise UnknownChannelError(channel, known)
    customer, customer_id = None, body.customer_id
    if body.customer is not None and body.customer.model_fields_set - {"id"}:
        stored = await asyncio.to_thread(cx.store.get_customer, CustomerId(body.customer.id))
        customer = body.customer.to_domain(stored)
    elif body.customer is not None:
        customer_id = body.customer.id  # just who they are: keep the stored profile as it is
    result = await cx.post_message(
        conversation_id,
        body.text,
        external_id=body.external_id,
        channel=channel,
        customer=customer,
        customer_id=customer_id,
        verified=customer is not None or customer_id is not None,
    )
    accepted = MessageAccepted(
        conversation_id=conversation_id, message_id=str(result.message.id), duplicate=not result.created
    )
    if not wait:
        return accepted
    turn = await _waited_turn(cx, conversation_id, str(result.message.id), timeout)
    if turn is None:
        return accepted.model_copy(update={"waited": True})
    trace, conversation = turn
    return accepted.model_copy(
        update={
            "waited": True,
            "completed": trace is not None,
            "reply": trace.reply if trace else None,
            "status": conversation.status.value if conversation else None,
            "trace": trace_out(trace) if trace and principal.can(Scope.CONVERSATIONS_READ) else None,
        }
    )


async def _waited_turn(
    cx: CxApp, conversation_id: str, message_id: str, timeout: float
) -> tuple[Trace | None, Conversation | None] | None:
    """The turn that answered `message_id` once the conversation is idle; None if that took over `timeout`."""
    try:
        await asyncio.wait_for(cx.wait_idle(conversation_id), timeout)
    except TimeoutError:
        return None
    return await asyncio.to_thread(_turn_of, cx, conversation_id, message_id)


def _turn_of(cx: CxApp, conversation_id: str, message_id: str) -> tuple[Trace | None, Conversation | None]:
    cid = ConversationId(conversation_id)
    trace = next((t for t in cx.store.list_traces(cid) if t.message_id == message_id), None)
    return trace, cx.store.get_conversation(cid)


def get_conversation(cx: CxApp, conversation_id: str) -> ConversationOut:
    view = cx.conversation_view(conversation_id)
    if view is None:
        raise ConversationNotFoundError(conversation_id)
    return conversation_out(view, cx.workspace)


def list_conversations(cx: CxApp, limit: int) -> list[ConversationSummary]:
    return [conversation_summary(c) for c in cx.store.list_conversations(limit=limit)]


async def conversation_events(
    cx: CxApp, conversation_id: str, *, after: int, timeout: float
) -> ConversationEvents:
    """Returns as soon as the conversation has more than `after` messages, or when `timeout` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(timeout, 0.0), EVENTS_MAX_SECONDS)
    while True:
        conversation = await asyncio.to_thread(get_conversation, cx, conversation_id)
        count = len(conversation.messages)
        remaining = deadline - loop.time()
        if count > after or remaining <= 0:
            return ConversationEvents(changed=count > after, message_count=count, conversation=conversation)
        await cx.broker.wait(ConversationId(conversation_id), remaining)


def escalation_queue(cx: CxApp, *, queue: str | None, status: str | None) -> list[EscalationOut]:
    """Most urgent first; within a priority the oldest first, so nobody waits behind newer requests."""
    packets = cx.store.list_escalations(queue=queue, status=status)
    ordered = sorted(packets, key=lambda p: (-int(p.priority), p.created_at))
    return [escalation_out(p) for p in ordered]


def get_escalation(cx: CxApp, escalation_id: str) -> EscalationOut:
    packet = cx.store.get_escalation(EscalationId(escalation_id))
    if packet is None:
        raise EscalationNotFoundError(escalation_id)
    return escalation_out(packet)


async def human_reply(cx: CxApp, conversation_id: str, body: HumanReply) -> HumanReplyOut:
    template = (
        (body.template.name, body.template.parameters, body.template.language) if body.template else None
    )
    try:
        message = await cx.human_reply(
            conversation_id, body.text or "", author=body.author, hand_back=body.hand_back, template=template
        )
    except KeyError:
        raise ConversationNotFoundError(conversation_id) from None
    conversation = await asyncio.to_thread(cx.store.get_conversation, ConversationId(conversation_id))
    return HumanReplyOut(
        conversation_id=conversation_id,
        message_id=str(message.id),
        author=body.author,
        hand_back=body.hand_back,
        status=conversation.status.value if conversation else "unknown",
    )


def intents(workspace: Workspace) -> list[IntentOut]:
    default_queue = workspace.settings.escalation.default_queue
    return [
        IntentOut(
            name=i.name,
            description=i.description,
            mechanism=i.mechanism,
            owner=i.owner,
            queue=i.queue or default_queue,
            status=i.status,
            never_automate=i.never_automate,
            action=i.action,
            fallback=i.fallback,
            examples=len(i.examples),
            builtin=i.builtin,
        )
        for i in workspace.intents
    ]


def workspace_info(cx: CxApp) -> WorkspaceOut:
    ws = cx.workspace
    settings = ws.settings
    open_by_queue: dict[str, int] = {}
    for packet in cx.store.list_escalations(status="open"):
        open_by_queue[packet.queue] = open_by_queue.get(packet.queue, 0) + 1
    queues = {q.name: q.description for q in settings.escalation.queues}
    queues.setdefault(settings.escalation.default_queue, "")
    for intent in ws.intents:
        if intent.queue:
            queues.setdefault(intent.queue, "")
    for name in open_by_queue:
        queues.setdefault(name, "")
    return WorkspaceOut(
        name=settings.name,
        version=str(ws.version),
        language=settings.language,
        description=settings.description,
        channels=sorted(accepted_channels(cx)),
        embedder=cx.settings.embedder or settings.embedder,
        counts={
            "intents": len(ws.intents),
            "active_intents": len(ws.active_intents),
            "facts": len(ws.facts),
            "actions": len(ws.actions),
            "tiers": len(ws.strategy.tiers),
            "rules": len(ws.strategy.rules),
            "queues": len(queues),
        },
        queues=[
            QueueOut(name=n, description=d, open=open_by_queue.get(n, 0)) for n, d in sorted(queues.items())
        ],
        router=_as_dict(jsonable(cx.engine.router_report)),
        load_seconds=cx.engine.load_seconds,
        whatsapp_templates=[
            TemplateOut(
                name=t.name,
                language=t.language,
                body=t.body,
                parameters=t.parameter_count,
                purpose=t.purpose,
            )
            for t in settings.whatsapp.templates
        ],
    )


def health(cx: CxApp) -> HealthOut:
    ws = cx.workspace
    reasons: list[str] = []
    try:
        pending: int | None = len(cx.store.conversations_with_pending())
        dead: int | None = cx.store.count_outbox(OutboxStatus.DEAD)
        db_ok, db_error = True, None
    except Exception as exc:  # health must answer even when the database does not
        pending, dead, db_ok, db_error = None, None, False, f"{type(exc).__name__}: {exc}"
        reasons.append(f"database unreachable: {db_error}")
    worker = cx.runtime.health()
    if not worker.ok:
        reasons.append(worker.reason or f"turn worker {worker.state}")
    return HealthOut(
        status="degraded" if reasons else "ok",
        reasons=reasons,
        workspace=ws.settings.name,
        workspace_version=str(ws.version),
        db_ok=db_ok,
        pending=pending,
        db_error=db_error,
        worker=worker_out(worker),
        outbox_dead=dead,
        handoff_dead=_handoff_dead(cx) if db_ok else None,
    )


def worker_out(worker: WorkerHealth) -> WorkerOut:
    return WorkerOut(
        state=worker.state,
        restarts=worker.restarts,
        pid=worker.pid,
        last_exit=worker.last_exit,
        reason=worker.reason,
    )


def _handoff_dead(cx: CxApp) -> int | None:
    return None if cx.handoff is None else cx.handoff.store.count(ExportStatus.DEAD)


def outbox_item_out(item: OutboxItem) -> OutboxItemOut:
    return OutboxItemOut(
        id=item.id,
        conversation_id=str(item.conversation_id),
        message_id=item.message_id,
        channel=item.channel,
        text=item.text,
        status=item.status.value,
        attempts=item.attempts,
        last_error=item.last_error,
        created_at=item.created_at,
        next_attempt_at=item.next_attempt_at,
    )


@contextmanager
def requeue_refusals() -> Iterator[None]:
    """A requeue's refusals as HTTP: an unknown id is 404, one already done (sent, ticketed) is 409."""
    try:
        yield
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


def list_outbox(cx: CxApp, status: OutboxStatus, limit: int) -> list[OutboxItemOut]:
    return [outbox_item_out(item) for item in cx.store.list_outbox(status, limit=limit)]


def upsert_customer(cx: CxApp, customer_id: str, body: CustomerProfile) -> CustomerOut:
    customer = Customer(id=CustomerId(customer_id), **body.model_dump())
    cx.store.upsert_customers([customer])
    return customer_out(customer)


def get_customer(cx: CxApp, customer_id: str) -> CustomerOut | None:
    customer = cx.store.get_customer(CustomerId(customer_id))
    return customer_out(customer) if customer is not None else None


def list_customers(cx: CxApp, query: str | None = None, limit: int = 50) -> list[CustomerOut]:
    """Stored customer profiles (imported from CSV or the API), for the chat page's picker and lookups.
    Profiles the system created itself for unknown senders (no name, no plan) are left out."""
    found = cx.store.list_customers(query, limit=limit * 2)
    return [customer_out(c) for c in found if c.name or c.plan][:limit]


# --- web chat: one conversation per signed session; the customer sees messages, never traces or state ----


def start_webchat_session(
    cx: CxApp, sessions: WebchatSessions, principal: Principal, body: WebchatSessionRequest
) -> WebchatSessionOut:
    """Anonymous (no credentials): a new conversation for a new `anon_` customer, not verified. With an
    integration or admin key: a session for the customer it names, who is then verified."""
    if body.customer_id is None and body.conversation_id is None:
        conversation_id = new_id("web")
        customer_id, verified = f"anon_{conversation_id.removeprefix('web_')}", False
    else:
        # Naming a customer or a conversation is vouching for them: only a key that may do so.
        require_scope(principal, Scope.WEBCHAT_IDENTIFY)
        assert body.customer_id is not None  # the request model requires it with a conversation_id
        customer_id, verified = body.customer_id, True
        conversation_id = body.conversation_id or new_id("web")
        existing = cx.store.get_conversation(ConversationId(conversation_id))
        if existing is not None and existing.customer_id != customer_id:
            raise ConversationOfAnotherCustomerError()
    token, session = sessions.issue(conversation_id, customer_id, verified=verified)
    return session_out(token, session)


def session_out(token: str, session: WebchatSession) -> WebchatSessionOut:
    return WebchatSessionOut(
        token=token,
        conversation_id=session.conversation_id,
        customer_id=session.customer_id,
        verified=session.verified,
        expires_at=session.expires_at,
    )


async def webchat_post(
    cx: CxApp, session: WebchatSession, body: WebchatMessageIn, *, wait: bool, timeout: float = WAIT_SECONDS
) -> WebchatAccepted:
    conversation_id = session.conversation_id
    # The page's ids are scoped to its conversation, so they can never collide with another conversation's.
    external_id = f"{conversation_id}:{body.external_id}" if body.external_id else None
    result = await cx.post_message(
        conversation_id,
        body.text,
        external_id=external_id,
        channel="webchat",
        customer_id=session.customer_id,
        verified=session.verified,
    )
    accepted = WebchatAccepted(
        conversation_id=conversation_id, message_id=str(result.message.id), duplicate=not result.created
    )
    if not wait:
        return accepted
    turn = await _waited_turn(cx, conversation_id, str(result.message.id), timeout)
    if turn is None:
        return accepted.model_copy(update={"waited": True})
    trace, _ = turn
    return accepted.model_copy(
        update={"waited": True, "completed": trace is not None, "reply": trace.reply if trace else None}
    )


def customer_facing(messages: Iterable[Message]) -> list[WebchatMessageOut]:
    return [
        WebchatMessageOut(id=str(m.id), role=m.role.value, text=m.text, created_at=m.created_at)
        for m in messages
        if m.role in (Role.CUSTOMER, Role.ASSISTANT, Role.HUMAN_AGENT)
    ]


async def webchat_events(cx: CxApp, session: WebchatSession, *, after: int, timeout: float) -> WebchatEvents:
    """The session's conversation as its customer sees it, once it has more than `after` messages (or at
    `timeout`). A conversation with no message yet reads as empty."""
    cid = ConversationId(session.conversation_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(timeout, 0.0), EVENTS_MAX_SECONDS)
    while True:
        messages = customer_facing(await asyncio.to_thread(cx.store.list_messages, cid))
        remaining = deadline - loop.time()
        if len(messages) > after or remaining <= 0:
            return WebchatEvents(
                changed=len(messages) > after, message_count=len(messages), messages=messages
            )
        await cx.broker.wait(cid, remaining)


# --- keys and callers ---------------------------------------------------------------------------------------


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        prefix=f"{KEY_PREFIX}{key.id}_",
        name=key.name,
        role=key.role.value,
        channel=key.channel,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        active=key.active,
    )


def create_key(keys: ApiKeys, body: KeyCreate) -> KeyCreated:
    created = keys.create(body.name, body.role, channel=body.channel)
    return KeyCreated(**key_out(created.key).model_dump(), key=created.secret)


def revoke_key(keys: ApiKeys, key_id: str) -> KeyOut:
    try:
        return key_out(keys.revoke(key_id))
    except KeyError:
        raise ApiKeyNotFoundError(key_id) from None


def principal_out(principal: Principal) -> PrincipalOut:
    session = principal.session
    return PrincipalOut(
        kind="session" if session is not None else "key",
        role=principal.role,
        name=principal.key.name if principal.key is not None else "web-chat customer",
        scopes=sorted(s.value for s in principal.scopes),
        conversation_id=session.conversation_id if session else None,
        customer_id=session.customer_id if session else None,
        verified=session.verified if session else None,
        expires_at=session.expires_at if session else None,
    )


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}
