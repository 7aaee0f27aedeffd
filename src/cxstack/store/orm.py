"""SQLAlchemy 2 table models. Migrations in store/migrations/versions must produce exactly this schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from cxstack.store.codec import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Always tz-aware UTC in Python. SQLite keeps no offset, so it stores naive UTC and gets UTC back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkspaceVersionRow(Base):
    __tablename__ = "workspace_versions"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # content hash
    name: Mapped[str] = mapped_column(String, nullable=False)
    content: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class CustomerRow(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    email: Mapped[str] = mapped_column(Text, nullable=False)
    plan: Mapped[str] = mapped_column(String, nullable=False)
    arr: Mapped[float] = mapped_column(Float, nullable=False)
    segment: Mapped[str] = mapped_column(String, nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ConversationRow(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index(None, "updated_at"),
        Index(None, "pending_count"),
        Index(None, "retry_at"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), nullable=False, index=True)
    channel: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Messages are numbered per conversation; bumping this counter also serialises its writers.
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False)
    # Customer messages stored but not yet processed by a committed turn.
    pending_count: Mapped[int] = mapped_column(Integer, nullable=False)
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    # Bumped by every change of state or status (optimistic concurrency).
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # After a failed turn, the conversation is not picked up again before this time.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # The idempotency key of an inbound message. NULL external ids (our own replies) never collide.
        UniqueConstraint("channel", "external_id"),
        UniqueConstraint("conversation_id", "seq"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    channel: Mapped[str] = mapped_column(String, nullable=False)
    external_id: Mapped[str | None] = mapped_column(String, nullable=True)
    author: Mapped[str | None] = mapped_column(String, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    processed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    turn_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TraceRow(Base):
    __tablename__ = "traces"
    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "intent"),
        Index(None, "conversation_id"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), nullable=False)
    workspace_version: Mapped[str] = mapped_column(String, nullable=False)
    intent: Mapped[str | None] = mapped_column(String, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    mechanism: Mapped[str | None] = mapped_column(String, nullable=True)
    decision: Mapped[str] = mapped_column(String, nullable=False)
    outcome: Mapped[str] = mapped_column(String, nullable=False)
    reason_code: Mapped[str | None] = mapped_column(String, nullable=True)
    variant: Mapped[str | None] = mapped_column(String, nullable=True)
    reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    duration_ms: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    turn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The turn's model usage (from its `llm` step), summed per intent without reading the steps.
    llm_calls: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    llm_input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    llm_output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    llm_cost_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class OutboxRow(Base):
    __tablename__ = "outbox"
    # The send queue is read as "pending and due, earliest first": one index range scan, however many items
    # wait for a later retry or lie dead.
    __table_args__ = (Index(None, "status", "next_attempt_at"), Index(None, "provider_message_id"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), nullable=False)
    channel: Mapped[str] = mapped_column(String, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)  # ports.OutboxStatus: pending|sent|dead
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)  # failed sends so far
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String, nullable=True)
    delivery_status: Mapped[str | None] = mapped_column(String, nullable=True)
    delivery_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What the channel may send instead of plain text: {"template": {...}} or {"choices": [...]}.
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class EmailMessageRow(Base):
    """Email threading: each mail's Message-ID and its conversation (ports.EmailRecord)."""

    __tablename__ = "email_messages"
    __table_args__ = (Index(None, "conversation_id", "created_at"),)

    message_id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String, nullable=False)
    direction: Mapped[str] = mapped_column(String, nullable=False)
    address: Mapped[str] = mapped_column(String, nullable=False)
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    outbox_id: Mapped[str | None] = mapped_column(String, nullable=True)
    full_text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class EscalationRow(Base):
    __tablename__ = "escalations"
    __table_args__ = (
        Index(None, "queue", "status"),
        Index(None, "conversation_id"),
    )

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    queue: Mapped[str] = mapped_column(String, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    reason_code: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)  # open | resolved
    packet: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ConversationEventRow(Base):
    """A status transition of a conversation (see domain/conversation_state.py)."""

    __tablename__ = "conversation_events"
    __table_args__ = (Index(None, "conversation_id"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    transition: Mapped[str] = mapped_column(String, nullable=False)
    from_status: Mapped[str] = mapped_column(String, nullable=False)
    to_status: Mapped[str] = mapped_column(String, nullable=False)
    actor: Mapped[str] = mapped_column(String, nullable=False)
    cause: Mapped[str] = mapped_column(Text, nullable=False)
    trace_id: Mapped[str | None] = mapped_column(String, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # the key's public prefix
    name: Mapped[str] = mapped_column(String, nullable=False)
    role: Mapped[str] = mapped_column(String, nullable=False)
    channel: Mapped[str | None] = mapped_column(String, nullable=True)
    secret_hash: Mapped[str] = mapped_column(String, nullable=False)  # argon2id, with its parameters
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FactVersionRow(Base):
    __tablename__ = "fact_versions"

    # The primary key is the optimistic lock: two writers of the same next number cannot both succeed.
    fact_id: Mapped[str] = mapped_column(String, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # None: removed
    author: Mapped[str] = mapped_column(String, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    origin: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ConversationOutcomeRow(Base):
    """One row per conversation, kept by every turn's commit: what monitoring groups and counts (see
    domain/quality.py). Outcomes are derived from these timestamps when read, under the workspace's rules."""

    __tablename__ = "conversation_outcomes"
    __table_args__ = (
        Index(None, "started_at"),
        Index(None, "intent"),
        Index(None, "offered_at"),
    )

    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String, nullable=False)
    tier: Mapped[str | None] = mapped_column(String, nullable=True)
    language: Mapped[str | None] = mapped_column(String, nullable=True)
    intent: Mapped[str | None] = mapped_column(String, nullable=True)
    mechanism: Mapped[str | None] = mapped_column(String, nullable=True)
    workspace_version: Mapped[str] = mapped_column(String, nullable=False)
    variant: Mapped[str | None] = mapped_column(String, nullable=True)
    turns: Mapped[int] = mapped_column(Integer, nullable=False)
    min_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_turn_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalation_reason: Mapped[str | None] = mapped_column(String, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    waiting: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # The shortest gap (seconds, at least RETURN_GAP) between a resolution and the customer coming back.
    return_gap_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    priced: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    csat: Mapped[int | None] = mapped_column(Integer, nullable=True)
    csat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    csat_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Review sampling: when the sampler saw it, the chance it had of being drawn, whether it was.
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sample_pi: Mapped[float | None] = mapped_column(Float, nullable=True)
    sample_stratum: Mapped[str | None] = mapped_column(String, nullable=True)
    sampled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    reviews: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    human_quality: Mapped[float | None] = mapped_column(Float, nullable=True)  # mean of the reviewers' passes
    judge_version: Mapped[str | None] = mapped_column(String, nullable=True)
    judge_passed: Mapped[float | None] = mapped_column(Float, nullable=True)  # 0 or 1
    judge_overall: Mapped[float | None] = mapped_column(Float, nullable=True)
    judge_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReviewRow(Base):
    __tablename__ = "reviews"
    __table_args__ = (Index(None, "conversation_id"), Index(None, "created_at"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    reviewer: Mapped[str] = mapped_column(String, nullable=False)
    rubric_version: Mapped[str] = mapped_column(String, nullable=False)
    scores: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    passed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str] = mapped_column(String, nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False)
    judge_version: Mapped[str | None] = mapped_column(String, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class JudgementRow(Base):
    __tablename__ = "judgements"
    __table_args__ = (Index(None, "conversation_id"), Index(None, "judge_version"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    judge_version: Mapped[str] = mapped_column(String, nullable=False)
    rubric_version: Mapped[str] = mapped_column(String, nullable=False)
    scores: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    overall: Mapped[float | None] = mapped_column(Float, nullable=True)
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class JudgeVersionRow(Base):
    __tablename__ = "judge_versions"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String, nullable=False)
    rubric_version: Mapped[str] = mapped_column(String, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    parent: Mapped[str | None] = mapped_column(String, nullable=True)
    fit_fold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agreement: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ReviewQueueRow(Base):
    __tablename__ = "review_queue"
    __table_args__ = (UniqueConstraint("conversation_id", "reason"), Index(None, "status", "priority"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    reason: Mapped[str] = mapped_column(String, nullable=False)
    stratum: Mapped[str] = mapped_column(String, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    wanted: Mapped[int] = mapped_column(Integer, nullable=False)
    done: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)  # open | done
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String, nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


# ---- help-desk handoff: each escalation's export as a ticket, and the help desk's events applied ----------


class HandoffExportRow(Base):
    """One escalation exported to the help desk, queued like the outbox: pending until the help desk
    confirms a ticket, retried on its own clock, dead after too many tries (with the reason)."""

    __tablename__ = "handoff_exports"
    __table_args__ = (Index(None, "status", "next_attempt_at"), Index(None, "kind", "ticket_id"))

    id: Mapped[str] = mapped_column(String, primary_key=True)  # the help desk's idempotency key
    escalation_id: Mapped[str] = mapped_column(ForeignKey("escalations.id"), nullable=False, unique=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String, nullable=False)  # zendesk | chatwoot | webhook
    status: Mapped[str] = mapped_column(String, nullable=False)  # pending | sent | dead
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)  # failed tries so far
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    ticket_id: Mapped[str | None] = mapped_column(String, nullable=True)
    ticket_url: Mapped[str | None] = mapped_column(String, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The packet's follow-ups (customer messages after the escalation) already added to the ticket.
    followups_sent: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")


class HandoffEventRow(Base):
    """A help-desk event (an agent's comment, a status change) applied once: redeliveries find its key."""

    __tablename__ = "handoff_events"

    kind: Mapped[str] = mapped_column(String, primary_key=True)
    event_key: Mapped[str] = mapped_column(String, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class SchemaCompatRow(Base):
    """One row: the revision the database is at and the oldest revision whose code may run on it, written by
    every migration run (store/db.py, record_compatibility) and read by code that does not know the
    revision."""

    __tablename__ = "schema_compat"

    revision: Mapped[str] = mapped_column(String, primary_key=True)
    oldest_compatible: Mapped[str] = mapped_column(String, nullable=False)
