"""An in-memory Store with the same semantics as the SQL adapter (it passes the same contract suite).

Values pass through the same normalisation as the SQL adapter (cxstack.store.codec), so an object read back
is a fresh copy, equal to what SQLite or PostgreSQL would return.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cxstack.domain.auth import ApiKey, ApiRole
from cxstack.domain.conversation_state import StatusChange, Transition, apply_all
from cxstack.domain.llm import COST_MICROS, IntentUsage
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    ConversationStatus,
    Customer,
    CustomerId,
    EscalationId,
    EscalationPacket,
    FactVersion,
    InboundMessage,
    Message,
    MessageId,
    Role,
    Trace,
    WorkspaceVersionId,
    new_id,
    undelivered_packet,
    utcnow,
)
from cxstack.domain.ports import (
    EmailRecord,
    FactVersionConflictError,
    IngestResult,
    LeaseLostError,
    OutboxItem,
    OutboxStatus,
    SendRetryPolicy,
    StaleStateError,
    TurnCommit,
    WorkspaceVersionInfo,
    delivery_moves,
)
from cxstack.store.codec import (
    as_utc,
    clean_text,
    json_object,
    optional_float,
    packet_from_json,
    packet_to_json,
    trace_fields,
    trace_from_fields,
)

ESCALATION_OPEN = "open"
ESCALATION_RESOLVED = "resolved"


@dataclass(slots=True)
class _ConversationRecord:
    id: ConversationId
    customer_id: CustomerId
    channel: str
    status: ConversationStatus
    state: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    message_ids: list[MessageId]
    pending_count: int = 0
    verified: bool = False
    version: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None
    retry_at: datetime | None = None
    events: list[StatusChange] = field(default_factory=list)

    def to_domain(self) -> Conversation:
        return Conversation(
            id=self.id,
            customer_id=self.customer_id,
            channel=self.channel,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            state=json_object(self.state),
            verified=self.verified,
            version=self.version,
        )


@dataclass(slots=True)
class _MessageRecord:
    message: Message
    processed: bool
    turn_failures: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _OutboxRecord:
    id: str
    conversation_id: ConversationId
    message_id: str
    channel: str
    text: str
    created_at: datetime
    next_attempt_at: datetime
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    last_error: str | None = None
    sent_at: datetime | None = None
    provider_message_id: str | None = None
    delivery_status: str | None = None
    delivery_error: str | None = None
    content: dict[str, Any] | None = None

    def to_domain(self) -> OutboxItem:
        return OutboxItem(
            id=self.id,
            conversation_id=self.conversation_id,
            message_id=self.message_id,
            channel=self.channel,
            text=self.text,
            attempts=self.attempts,
            status=self.status,
            created_at=self.created_at,
            next_attempt_at=self.next_attempt_at,
            last_error=self.last_error,
            provider_message_id=self.provider_message_id,
            delivery_status=self.delivery_status,
            delivery_error=self.delivery_error,
            content=self.content,
        )


@dataclass(slots=True)
class _EscalationRecord:
    id: EscalationId
    packet: dict[str, Any]
    conversation_id: ConversationId
    queue: str
    priority: int
    status: str
    created_at: datetime

    def to_domain(self) -> EscalationPacket:
        return packet_from_json(json_object(self.packet), status=self.status, created_at=self.created_at)


class InMemoryStore:
    """Implements `cxstack.domain.ports.Store` in process memory; thread-safe, lost on exit."""

    def __init__(
        self, *, send_retry: SendRetryPolicy | None = None, rng: random.Random | None = None
    ) -> None:
        self._lock = threading.RLock()
        self.send_retry = send_retry or SendRetryPolicy()
        self._rng = rng or random.Random()
        self._workspace_versions: dict[str, tuple[str, dict[str, Any], datetime]] = {}
        self._customers: dict[str, Customer] = {}
        self._conversations: dict[str, _ConversationRecord] = {}
        self._messages: dict[str, _MessageRecord] = {}
        self._by_external_id: dict[tuple[str, str], MessageId] = {}
        self._traces: dict[str, dict[str, Any]] = {}
        self._outbox: dict[str, _OutboxRecord] = {}
        self._escalations: dict[str, _EscalationRecord] = {}
        self._api_keys: dict[str, ApiKey] = {}
        self._fact_versions: dict[str, list[FactVersion]] = {}
        self._emails: dict[str, EmailRecord] = {}
        self._last_time = utcnow()

    def _now(self) -> datetime:
        # Strictly increasing, so that orderings by time never tie within this process.
        self._last_time = max(utcnow(), self._last_time + timedelta(microseconds=1))
        return self._last_time

    # ---- workspace versions ---------------------------------------------------------------------------

    def save_workspace_version(self, version: WorkspaceVersionId, name: str, content: dict[str, Any]) -> bool:
        with self._lock:
            if version in self._workspace_versions:
                return False
            self._workspace_versions[version] = (clean_text(name), json_object(content), self._now())
            return True

    def get_workspace_version(self, version: WorkspaceVersionId) -> dict[str, Any] | None:
        with self._lock:
            stored = self._workspace_versions.get(version)
            return None if stored is None else json_object(stored[1])

    def list_workspace_versions(self, limit: int | None = 20) -> list[WorkspaceVersionInfo]:
        with self._lock:
            infos = [
                WorkspaceVersionInfo(WorkspaceVersionId(v), name, at)
                for v, (name, _, at) in self._workspace_versions.items()
            ]
        infos.sort(key=lambda i: (-i.created_at.timestamp(), i.id))
        return infos[:limit]

    # ---- customers --------------------------------------------------------------------------------------

    def upsert_customers(self, customers: Sequence[Customer]) -> int:
        with self._lock:
            for customer in customers:
                self._customers[customer.id] = _normalized_customer(customer)
            return len(customers)

    def list_customers(self, query: str | None = None, limit: int = 100) -> list[Customer]:
        """By name then id; `query` matches id, name, email or plan, ignoring case."""
        needle = (query or "").strip().lower()
        with self._lock:
            found = [
                replace(c, attributes=json_object(c.attributes))
                for c in self._customers.values()
                if not needle or any(needle in field.lower() for field in (c.id, c.name, c.email, c.plan))
            ]
        return sorted(found, key=lambda c: (c.name, c.id))[:limit]

    def get_customer(self, customer_id: CustomerId) -> Customer | None:
        with self._lock:
            customer = self._customers.get(customer_id)
            return (
                None if customer is None else replace(customer, attributes=json_object(customer.attributes))
            )

    def customers_with_phone(self, phone: str) -> list[Customer]:
        with self._lock:
            found = [c for c in self._customers.values() if c.attributes.get("phone") == phone]
            return [replace(c, attributes=json_object(c.attributes)) for c in found[:3]]

    def customers_with_email(self, address: str) -> list[Customer]:
        wanted = address.strip().lower()
        with self._lock:
            found = [c for c in self._customers.values() if c.email.lower() == wanted]
            return [replace(c, attributes=json_object(c.attributes)) for c in found[:3]]

    # ---- email threading --------------------------------------------------------------------------------

    def add_email(self, record: EmailRecord) -> bool:
        with self._lock:
            if record.message_id in self._emails:
                return False
            self._emails[record.message_id] = replace(
                record,
                address=clean_text(record.address).lower(),
                subject=clean_text(record.subject),
                full_text=clean_text(record.full_text),
                created_at=as_utc(record.created_at) if record.created_at else self._now(),
            )
            return True

    def email_for(self, message_ids: Sequence[str]) -> EmailRecord | None:
        with self._lock:
            return next((self._emails[m] for m in message_ids if m in self._emails), None)

    def email_thread(self, conversation_id: ConversationId) -> list[EmailRecord]:
        with self._lock:
            found = [r for r in self._emails.values() if r.conversation_id == conversation_id]
        return sorted(found, key=lambda r: (r.created_at or utcnow(), r.message_id))

    # ---- inbound ----------------------------------------------------------------------------------------

    def ingest(self, inbound: InboundMessage) -> IngestResult:
        with self._lock:
            existing_id = self._by_external_id.get((inbound.channel, inbound.external_id))
            if existing_id is not None:
                return IngestResult(self._messages[existing_id].message, created=False)
            now = self._now()
            if inbound.customer is not None:
                self._customers[inbound.customer.id] = _normalized_customer(inbound.customer)
            if inbound.customer_id not in self._customers:
                self._customers[inbound.customer_id] = _normalized_customer(Customer(id=inbound.customer_id))
            conversation = self._conversations.get(inbound.conversation_id)
            if conversation is None:
                conversation = _ConversationRecord(
                    id=inbound.conversation_id,
                    customer_id=inbound.customer_id,
                    channel=inbound.channel,
                    status=ConversationStatus.BOT,
                    state={},
                    created_at=now,
                    updated_at=now,
                    message_ids=[],
                    verified=inbound.verified,
                )
                self._conversations[conversation.id] = conversation
            conversation.pending_count += 1
            conversation.updated_at = now
            message = Message(
                id=MessageId(new_id("msg")),
                conversation_id=inbound.conversation_id,
                role=Role.CUSTOMER,
                text=clean_text(inbound.text),
                created_at=as_utc(inbound.received_at),
                channel=inbound.channel,
                external_id=inbound.external_id,
                author=inbound.customer_id,
            )
            self._messages[message.id] = _MessageRecord(message, processed=False)
            self._by_external_id[(inbound.channel, inbound.external_id)] = message.id
            conversation.message_ids.append(message.id)
            return IngestResult(message, created=True)

    def ingest_many(self, inbounds: Sequence[InboundMessage]) -> list[IngestResult | Exception]:
        outcomes: list[IngestResult | Exception] = []
        for inbound in inbounds:
            try:
                outcomes.append(self.ingest(inbound))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def get_conversation(self, conversation_id: ConversationId) -> Conversation | None:
        with self._lock:
            record = self._conversations.get(conversation_id)
            return None if record is None else record.to_domain()

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        with self._lock:
            records = sorted(self._conversations.values(), key=lambda c: (c.updated_at, c.id), reverse=True)
            return [record.to_domain() for record in records[:limit]]

    def conversations_started_between(
        self, since: datetime, until: datetime | None = None, limit: int | None = None
    ) -> list[Conversation]:
        start, end = as_utc(since), as_utc(until) if until is not None else None
        with self._lock:
            records = sorted(
                (
                    r
                    for r in self._conversations.values()
                    if r.created_at >= start and (end is None or r.created_at < end)
                ),
                key=lambda r: (r.created_at, r.id),
            )
            return [record.to_domain() for record in records[:limit]]

    def list_messages(self, conversation_id: ConversationId) -> list[Message]:
        with self._lock:
            record = self._conversations.get(conversation_id)
            if record is None:
                return []
            return [self._message(message_id) for message_id in record.message_ids]

    def _message(self, message_id: MessageId) -> Message:
        record = self._messages[message_id]
        return replace(record.message, turn_failures=record.turn_failures)

    def conversations_with_pending(self) -> list[ConversationId]:
        with self._lock:
            now = utcnow()
            records = sorted(
                (
                    c
                    for c in self._conversations.values()
                    if c.pending_count > 0 and (c.retry_at is None or c.retry_at <= now)
                ),
                key=lambda c: (c.updated_at, c.id),
            )
            return [record.id for record in records]

    def pending_messages(self, conversation_id: ConversationId) -> list[Message]:
        with self._lock:
            record = self._conversations.get(conversation_id)
            if record is None:
                return []
            return [
                self._message(message_id)
                for message_id in record.message_ids
                if self._messages[message_id].message.role == Role.CUSTOMER
                and not self._messages[message_id].processed
            ]

    # ---- turns ------------------------------------------------------------------------------------------

    # ---- leases and failures ----------------------------------------------------------------------------

    def claim_conversation(self, conversation_id: ConversationId, owner: str, ttl_seconds: float) -> bool:
        with self._lock:
            record = self._conversations.get(conversation_id)
            if record is None:
                return False
            now = utcnow()
            free = record.lease_owner is None or record.lease_until is None or record.lease_until < now
            if not free and record.lease_owner != owner:
                return False
            record.lease_owner, record.lease_until = owner, now + timedelta(seconds=ttl_seconds)
            return True

    def release_conversation(self, conversation_id: ConversationId, owner: str) -> None:
        with self._lock:
            record = self._conversations.get(conversation_id)
            if record is not None and record.lease_owner == owner:
                record.lease_owner, record.lease_until = None, None

    def conversations_leased_to(self, owner: str) -> list[ConversationId]:
        with self._lock:
            return sorted(c.id for c in self._conversations.values() if c.lease_owner == owner)

    def record_turn_failure(
        self, conversation_id: ConversationId, message_ids: Sequence[str], error: str, retry_at: datetime
    ) -> int:
        with self._lock:
            counts = []
            for message_id in message_ids:
                record = self._messages.get(MessageId(message_id))
                if record is None or record.message.conversation_id != conversation_id:
                    continue
                record.turn_failures += 1
                record.last_error = clean_text(error)[:2000]
                counts.append(record.turn_failures)
            conversation = self._conversations.get(conversation_id)
            if conversation is not None:
                conversation.retry_at = as_utc(retry_at)
            return max(counts, default=0)

    # ---- turns ------------------------------------------------------------------------------------------

    def commit_turn(self, commit: TurnCommit) -> None:
        with self._lock:
            inbound = self._messages.get(MessageId(commit.message_id))
            if inbound is None or inbound.message.conversation_id != commit.conversation_id:
                raise KeyError(f"message {commit.message_id} is not in conversation {commit.conversation_id}")
            if inbound.processed:
                return
            conversation = self._conversations[commit.conversation_id]
            # Everything is validated before anything changes, which is this adapter's transaction.
            if commit.lease_owner is not None and conversation.lease_owner != commit.lease_owner:
                raise LeaseLostError(
                    f"conversation {commit.conversation_id} is leased to {conversation.lease_owner!r}"
                )
            if commit.expected_version is not None and conversation.version != commit.expected_version:
                raise StaleStateError(
                    f"conversation {commit.conversation_id} is at version {conversation.version}, "
                    f"the turn read version {commit.expected_version}"
                )
            steps = apply_all(conversation.status, commit.transitions)
            if commit.trace.id in self._traces:
                raise ValueError(f"turn for message {commit.message_id}: trace {commit.trace.id} exists")
            if commit.reply is not None and commit.reply.id in self._messages:
                raise ValueError(f"turn for message {commit.message_id}: message {commit.reply.id} exists")
            if commit.escalation is not None and commit.escalation.id in self._escalations:
                raise ValueError(f"turn for message {commit.message_id}: escalation exists")
            trace = trace_fields(commit.trace)
            state = json_object(commit.state)
            escalation = None
            if commit.escalation is not None:
                packet = commit.escalation
                escalation = _EscalationRecord(
                    id=packet.id,
                    packet=packet_to_json(packet),
                    conversation_id=commit.conversation_id,
                    queue=clean_text(packet.queue),
                    priority=int(packet.priority),
                    status=packet.status,
                    created_at=as_utc(packet.created_at),
                )

            for message_id in commit.answered:
                record = self._messages.get(MessageId(message_id))
                if (
                    record is not None
                    and record.message.conversation_id == commit.conversation_id
                    and record.message.role == Role.CUSTOMER
                ):
                    record.processed = True
            if commit.reply is not None:
                self._append_outbound(
                    conversation,
                    commit.reply.id,
                    commit.reply.role,
                    commit.reply.text,
                    author=commit.reply.author,
                    channel=commit.reply.channel,
                    created_at=as_utc(commit.reply.created_at),
                    content=commit.reply_content,
                )
            now = self._now()
            conversation.state = state
            for transition, before, after in steps:
                conversation.events.append(
                    StatusChange(
                        conversation_id=conversation.id,
                        transition=transition,
                        from_status=before,
                        to_status=after,
                        actor="bot",
                        cause=clean_text(commit.cause),
                        trace_id=commit.trace.id,
                        at=now,
                    )
                )
                conversation.status = after
            if commit.verified_customer is not None:
                conversation.customer_id = commit.verified_customer
                conversation.verified = True
            conversation.version += 1
            conversation.retry_at = None
            conversation.updated_at = now
            conversation.pending_count = sum(
                1
                for message_id in conversation.message_ids
                if self._messages[message_id].message.role == Role.CUSTOMER
                and not self._messages[message_id].processed
            )
            if commit.attach_to_escalation:
                self._attach_followups(conversation, commit.answered)
            if commit.reopen_escalation is not None:
                reopened = self._escalations.get(commit.reopen_escalation)
                if reopened is not None and reopened.conversation_id == conversation.id:
                    reopened.status = ESCALATION_OPEN
            if escalation is not None:
                self._escalations[escalation.id] = escalation
            self._traces[commit.trace.id] = trace

    def _attach_followups(self, conversation: _ConversationRecord, message_ids: Sequence[str]) -> None:
        open_records = [
            r
            for r in self._escalations.values()
            if r.conversation_id == conversation.id and r.status == ESCALATION_OPEN
        ]
        if not open_records:
            return
        newest = max(open_records, key=lambda r: (r.created_at, r.id))
        followups = list(newest.packet.get("followups") or [])
        known = {f.get("message_id") for f in followups}
        messages = sorted(
            (self._messages[MessageId(m)].message for m in message_ids if MessageId(m) in self._messages),
            key=lambda m: (m.created_at, m.id),
        )
        for message in messages:
            if message.id not in known:
                followups.append(
                    {"message_id": message.id, "text": message.text, "at": message.created_at.isoformat()}
                )
        newest.packet = {**newest.packet, "followups": followups}

    def change_status(
        self, conversation_id: ConversationId, transition: Transition, *, actor: str, cause: str = ""
    ) -> Conversation:
        with self._lock:
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                raise KeyError(f"unknown conversation {conversation_id}")
            self._transition(conversation, (Transition(transition),), actor=actor, cause=cause)
            return conversation.to_domain()

    def list_status_changes(self, conversation_id: ConversationId) -> list[StatusChange]:
        with self._lock:
            conversation = self._conversations.get(conversation_id)
            return [] if conversation is None else list(conversation.events)

    def _transition(
        self,
        conversation: _ConversationRecord,
        transitions: tuple[Transition, ...],
        *,
        actor: str,
        cause: str = "",
    ) -> None:
        now = self._now()
        steps = apply_all(conversation.status, transitions)  # raises before anything changes
        for transition, before, after in steps:
            conversation.events.append(
                StatusChange(
                    conversation_id=conversation.id,
                    transition=transition,
                    from_status=before,
                    to_status=after,
                    actor=clean_text(actor),
                    cause=clean_text(cause),
                    at=now,
                )
            )
            conversation.status = after
            if transition in (Transition.HAND_BACK, Transition.CLOSE):
                for record in self._escalations.values():
                    if record.conversation_id == conversation.id and record.status == ESCALATION_OPEN:
                        record.status = ESCALATION_RESOLVED
        conversation.version += 1
        conversation.updated_at = now

    def list_traces(self, conversation_id: ConversationId | None = None, limit: int = 1000) -> list[Trace]:
        with self._lock:
            rows = [
                row
                for row in self._traces.values()
                if conversation_id is None or row["conversation_id"] == conversation_id
            ]
            rows.sort(key=lambda row: (row["created_at"], row["id"]))
            newest = rows[-limit:] if limit > 0 else []
            return [trace_from_fields(row) for row in newest]

    def usage_by_intent(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[IntentUsage]:
        groups: dict[str | None, list[dict[str, Any]]] = {}
        with self._lock:
            for row in self._traces.values():
                if since is not None and row["created_at"] < as_utc(since):
                    continue
                if until is not None and row["created_at"] >= as_utc(until):
                    continue
                groups.setdefault(row["intent"], []).append(row)
        usages = []
        for intent, rows in groups.items():
            priced = [r["llm_cost_micros"] for r in rows if r["llm_cost_micros"] is not None]
            usages.append(
                IntentUsage(
                    intent=intent,
                    turns=len(rows),
                    automated=sum(r["outcome"] == "automated" for r in rows),
                    escalated=sum(r["outcome"] == "escalated" for r in rows),
                    llm_calls=sum(r["llm_calls"] for r in rows),
                    input_tokens=sum(r["llm_input_tokens"] for r in rows),
                    output_tokens=sum(r["llm_output_tokens"] for r in rows),
                    cost=Decimal(sum(priced)) / COST_MICROS if priced else None,
                    unpriced_turns=sum(r["llm_calls"] > 0 and r["llm_cost_micros"] is None for r in rows),
                )
            )
        return sorted(usages, key=lambda u: (-u.turns, u.intent or ""))

    # ---- outbox -----------------------------------------------------------------------------------------

    def pending_outbox(self, limit: int = 100, now: datetime | None = None) -> list[OutboxItem]:
        due_at = as_utc(now or utcnow())
        with self._lock:
            records = sorted(
                (
                    item
                    for item in self._outbox.values()
                    if item.status == OutboxStatus.PENDING and item.next_attempt_at <= due_at
                ),
                key=lambda item: (item.next_attempt_at, item.id),
            )
            return [item.to_domain() for item in records[:limit]]

    def mark_sent(self, outbox_id: str, provider_message_id: str | None = None) -> None:
        with self._lock:
            item = self._outbox_item(outbox_id)
            if item.status != OutboxStatus.SENT:
                item.status = OutboxStatus.SENT
                item.sent_at = self._now()
                item.last_error = None
            item.provider_message_id = item.provider_message_id or provider_message_id

    def apply_delivery_status(
        self, channel: str, provider_message_id: str, status: str, error: str | None = None
    ) -> OutboxItem | None:
        with self._lock:
            for item in self._outbox.values():
                if item.channel == channel and item.provider_message_id == provider_message_id:
                    if delivery_moves(item.delivery_status, status):
                        item.delivery_status = status
                        item.delivery_error = None if error is None else clean_text(error)[:2000]
                    return item.to_domain()
        return None

    def mark_send_failed(
        self, outbox_id: str, error: str, now: datetime | None = None, *, permanent: bool = False
    ) -> OutboxItem:
        with self._lock:
            item = self._outbox_item(outbox_id)
            if item.status == OutboxStatus.PENDING:
                item.attempts += 1
                item.last_error = clean_text(error)
                if permanent or self.send_retry.is_exhausted(item.attempts):
                    item.status = OutboxStatus.DEAD
                else:
                    failed_at = as_utc(now or utcnow())
                    item.next_attempt_at = failed_at + self.send_retry.delay_after(item.attempts, self._rng)
            return item.to_domain()

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            records = sorted(
                (item for item in self._outbox.values() if item.status == status),
                key=lambda item: (item.created_at, item.id),
            )
            return [item.to_domain() for item in records[:limit]]

    def outbox_for(self, conversation_id: ConversationId) -> list[OutboxItem]:
        with self._lock:
            records = sorted(
                (item for item in self._outbox.values() if item.conversation_id == conversation_id),
                key=lambda item: (item.created_at, item.id),
            )
            return [item.to_domain() for item in records]

    def count_outbox(self, status: OutboxStatus) -> int:
        with self._lock:
            return sum(1 for item in self._outbox.values() if item.status == status)

    def escalate_undelivered(self, outbox_id: str, *, queue: str) -> EscalationPacket | None:
        with self._lock:
            item = self._outbox_item(outbox_id)
            undelivered = item.status == OutboxStatus.DEAD or item.delivery_status == "failed"
            conversation = self._conversations.get(item.conversation_id)
            if not undelivered or conversation is None or conversation.status != ConversationStatus.BOT:
                return None
            now = self._now()
            messages = [self._messages[m].message for m in conversation.message_ids]
            packet = undelivered_packet(
                conversation.id,
                conversation.customer_id,
                channel=item.channel,
                error=item.delivery_error or item.last_error or "unknown",
                reply=item.text,
                transcript=[
                    {"role": m.role.value, "text": m.text, "at": as_utc(m.created_at).isoformat()}
                    for m in messages
                ],
                queue=queue,
                at=now,
            )
            self._escalations[packet.id] = _EscalationRecord(
                id=packet.id,
                packet=packet_to_json(packet),
                conversation_id=conversation.id,
                queue=clean_text(queue),
                priority=int(packet.priority),
                status=packet.status,
                created_at=now,
            )
            self._transition(
                conversation, (Transition.ESCALATE,), actor=f"channel:{item.channel}", cause="undelivered"
            )
            return packet

    def requeue_outbox(self, outbox_id: str, now: datetime | None = None) -> OutboxItem:
        with self._lock:
            item = self._outbox_item(outbox_id)
            if item.status == OutboxStatus.SENT:
                raise ValueError(f"outbox item {outbox_id} was already sent")
            item.status = OutboxStatus.PENDING
            item.attempts = 0
            item.next_attempt_at = as_utc(now or utcnow())
            return item.to_domain()

    def _outbox_item(self, outbox_id: str) -> _OutboxRecord:
        item = self._outbox.get(outbox_id)
        if item is None:
            raise KeyError(f"unknown outbox item {outbox_id}")
        return item

    # ---- escalations and humans -------------------------------------------------------------------------

    def list_escalations(
        self, queue: str | None = None, status: str | None = "open"
    ) -> list[EscalationPacket]:
        with self._lock:
            records = [
                record
                for record in self._escalations.values()
                if (queue is None or record.queue == queue) and (status is None or record.status == status)
            ]
            records.sort(key=lambda record: (-record.priority, record.created_at, record.id))
            return [record.to_domain() for record in records]

    def get_escalation(self, escalation_id: EscalationId) -> EscalationPacket | None:
        with self._lock:
            record = self._escalations.get(escalation_id)
            return None if record is None else record.to_domain()

    def add_human_reply(
        self,
        conversation_id: ConversationId,
        text: str,
        author: str,
        hand_back: bool,
        *,
        content: dict[str, Any] | None = None,
    ) -> Message:
        with self._lock:
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                raise KeyError(f"unknown conversation {conversation_id}")
            now = self._now()
            message = self._append_outbound(
                conversation,
                MessageId(new_id("msg")),
                Role.HUMAN_AGENT,
                text,
                author=author,
                channel=conversation.channel,
                created_at=now,
                content=content,
            )
            transitions: list[Transition] = []
            if conversation.status == ConversationStatus.CLOSED:
                transitions.append(Transition.REOPEN)
            transitions.append(Transition.PERSON_REPLIED)
            if hand_back:
                transitions.append(Transition.HAND_BACK)
            self._transition(conversation, tuple(transitions), actor=f"agent:{author}")
            return message

    # ---- API keys ---------------------------------------------------------------------------------------

    def add_api_key(self, key: ApiKey) -> None:
        with self._lock:
            if key.id in self._api_keys:
                raise ValueError(f"API key id {key.id} is taken")
            self._api_keys[key.id] = replace(
                key,
                name=clean_text(key.name),
                role=ApiRole(key.role),
                created_at=as_utc(key.created_at),
                revoked_at=None if key.revoked_at is None else as_utc(key.revoked_at),
            )

    def get_api_key(self, key_id: str) -> ApiKey | None:
        with self._lock:
            return self._api_keys.get(key_id)

    def list_api_keys(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._api_keys.values(), key=lambda k: (k.created_at, k.id))

    def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKey:
        with self._lock:
            key = self._api_keys.get(key_id)
            if key is None:
                raise KeyError(f"unknown API key {key_id}")
            if key.revoked_at is None:
                key = self._api_keys[key_id] = replace(key, revoked_at=as_utc(revoked_at))
            return key

    def add_fact_version(self, version: FactVersion) -> None:
        if version.number < 1:
            raise ValueError("fact version numbers start at 1")
        with self._lock:
            versions = self._fact_versions.setdefault(version.fact_id, [])
            if len(versions) + 1 != version.number:
                raise FactVersionConflictError(version.fact_id, versions[-1] if versions else None)
            versions.append(replace(version, created_at=as_utc(version.created_at)))

    def fact_versions(self, fact_id: str) -> list[FactVersion]:
        with self._lock:
            return list(self._fact_versions.get(fact_id, []))

    def latest_fact_versions(self) -> dict[str, FactVersion]:
        with self._lock:
            return {fact_id: versions[-1] for fact_id, versions in self._fact_versions.items() if versions}

    def _append_outbound(
        self,
        conversation: _ConversationRecord,
        message_id: MessageId,
        role: Role,
        text: str,
        *,
        author: str | None,
        channel: str,
        created_at: datetime,
        content: dict[str, Any] | None = None,
    ) -> Message:
        message = Message(
            id=message_id,
            conversation_id=conversation.id,
            role=Role(role),
            text=clean_text(text),
            created_at=created_at,
            channel=channel,
            external_id=None,
            author=author,
        )
        self._messages[message.id] = _MessageRecord(message, processed=True)
        conversation.message_ids.append(message.id)
        outbox_id = new_id("out")
        self._outbox[outbox_id] = _OutboxRecord(
            id=outbox_id,
            conversation_id=conversation.id,
            message_id=message.id,
            channel=conversation.channel,
            text=message.text,
            created_at=created_at,
            next_attempt_at=created_at,
            content=content,
        )
        return message


def _normalized_customer(customer: Customer) -> Customer:
    return Customer(
        id=customer.id,
        name=clean_text(customer.name),
        email=clean_text(customer.email),
        plan=clean_text(customer.plan),
        arr=optional_float(customer.arr) or 0.0,
        segment=clean_text(customer.segment),
        attributes=json_object(customer.attributes),
    )
