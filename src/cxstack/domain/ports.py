"""The persistence port. Adapters: store/sqlalchemy_store.py (SQLite, PostgreSQL), testing/memory_store.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cxstack.domain.auth import ApiKey
from cxstack.domain.conversation_state import StatusChange, Transition
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    Customer,
    CustomerId,
    EscalationId,
    EscalationPacket,
    InboundMessage,
    Message,
    Trace,
    WorkspaceVersionId,
)


@dataclass(frozen=True, slots=True)
class IngestResult:
    message: Message
    created: bool  # False: a duplicate (channel, external_id); nothing was written


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: str
    conversation_id: ConversationId
    message_id: str
    channel: str
    text: str
    attempts: int


class StaleStateError(RuntimeError):
    """The conversation's state changed after the turn read it (e.g. a person handed it back meanwhile)."""


class LeaseLostError(RuntimeError):
    """Another worker holds the conversation's lease: this one must not write its turn."""


@dataclass(frozen=True, slots=True)
class TurnCommit:
    """Everything one turn writes, committed in one transaction."""

    conversation_id: ConversationId
    message_id: str  # the inbound message whose turn this is (the last one when a burst is answered as one)
    trace: Trace
    reply: Message | None
    state: dict[str, Any]
    # Status changes, applied in order through the state machine (an illegal one fails the commit).
    transitions: tuple[Transition, ...] = ()
    escalation: EscalationPacket | None = None
    # Every inbound message this turn answered; empty means just `message_id`.
    message_ids: tuple[str, ...] = ()
    # Optimistic concurrency: the conversation version the turn read; None skips the check.
    expected_version: int | None = None
    # Fencing: when set, the commit is refused unless this worker still holds the conversation's lease.
    lease_owner: str | None = None
    # The turn's customer messages are added to the open escalation's follow-ups.
    attach_to_escalation: bool = False
    # Instead of a new packet, reopen this one (the bot escalates again soon after a hand-back).
    reopen_escalation: EscalationId | None = None
    # A verification step in this turn proved the customer is this (existing) customer.
    verified_customer: CustomerId | None = None
    cause: str = ""  # recorded with the transitions: the reason code of an escalation, say

    @property
    def answered(self) -> tuple[str, ...]:
        return self.message_ids or (self.message_id,)


class CustomerDirectory(Protocol):
    def get_customer(self, customer_id: CustomerId) -> Customer | None: ...


class Store(Protocol):
    # workspace versions
    def save_workspace_version(
        self, version: WorkspaceVersionId, name: str, content: dict[str, Any]
    ) -> bool: ...
    def get_workspace_version(self, version: WorkspaceVersionId) -> dict[str, Any] | None: ...

    # customers
    def upsert_customers(self, customers: Sequence[Customer]) -> int: ...
    def get_customer(self, customer_id: CustomerId) -> Customer | None: ...
    def list_customers(self, query: str | None = None, limit: int = 100) -> list[Customer]: ...

    # inbound: append the message and mark it pending in ONE transaction; a duplicate is a no-op
    def ingest(self, inbound: InboundMessage) -> IngestResult: ...
    def get_conversation(self, conversation_id: ConversationId) -> Conversation | None: ...
    def list_conversations(self, limit: int = 50) -> list[Conversation]: ...
    def list_messages(self, conversation_id: ConversationId) -> list[Message]: ...
    # conversations with unprocessed messages that are due (not waiting out a failure backoff)
    def conversations_with_pending(self) -> list[ConversationId]: ...
    def pending_messages(self, conversation_id: ConversationId) -> list[Message]: ...

    # one worker at a time per conversation: a lease that expires if its holder dies
    def claim_conversation(self, conversation_id: ConversationId, owner: str, ttl_seconds: float) -> bool: ...
    def release_conversation(self, conversation_id: ConversationId, owner: str) -> None: ...
    # a turn that could not be processed: count it on its messages and back off until `retry_at`
    def record_turn_failure(
        self, conversation_id: ConversationId, message_ids: Sequence[str], error: str, retry_at: datetime
    ) -> int: ...

    # a turn's trace, reply (into the outbox), state and escalation in ONE transaction; clears "pending"
    def commit_turn(self, commit: TurnCommit) -> None: ...
    # a status change outside a turn (a person closes or hands back without replying)
    def change_status(
        self, conversation_id: ConversationId, transition: Transition, *, actor: str, cause: str = ""
    ) -> Conversation: ...
    def list_status_changes(self, conversation_id: ConversationId) -> list[StatusChange]: ...
    def list_traces(
        self, conversation_id: ConversationId | None = None, limit: int = 1000
    ) -> list[Trace]: ...

    # outbox
    def pending_outbox(self, limit: int = 100) -> list[OutboxItem]: ...
    def mark_sent(self, outbox_id: str) -> None: ...
    def mark_send_failed(self, outbox_id: str, error: str) -> None: ...

    # escalations and humans
    def list_escalations(
        self, queue: str | None = None, status: str | None = "open"
    ) -> list[EscalationPacket]: ...
    def get_escalation(self, escalation_id: EscalationId) -> EscalationPacket | None: ...
    def add_human_reply(
        self, conversation_id: ConversationId, text: str, author: str, hand_back: bool
    ) -> Message: ...

    # API keys: the secret is never stored, only its hash; a revoked key stays listed with its revoke time
    def add_api_key(self, key: ApiKey) -> None: ...  # ValueError if the id is taken
    def get_api_key(self, key_id: str) -> ApiKey | None: ...
    def list_api_keys(self) -> list[ApiKey]: ...  # oldest first
    def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKey: ...  # KeyError if unknown
