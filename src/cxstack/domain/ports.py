"""The persistence port. Adapters: store/sqlalchemy_store.py (SQLite, PostgreSQL), testing/memory_store.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cxstack.domain.auth import ApiKey
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    ConversationStatus,
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


@dataclass(frozen=True, slots=True)
class TurnCommit:
    """Everything one turn writes, committed in one transaction."""

    conversation_id: ConversationId
    message_id: str  # the inbound message this turn processed
    trace: Trace
    reply: Message | None
    state: dict[str, Any]
    status: ConversationStatus
    escalation: EscalationPacket | None = None


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
    def conversations_with_pending(self) -> list[ConversationId]: ...
    def pending_messages(self, conversation_id: ConversationId) -> list[Message]: ...

    # a turn's trace, reply (into the outbox), state and escalation in ONE transaction; clears "pending"
    def commit_turn(self, commit: TurnCommit) -> None: ...
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
