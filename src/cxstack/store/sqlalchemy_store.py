"""The Store port on SQLAlchemy 2: SQLite (embedded default) and PostgreSQL (scale-out) run this same code."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from cxstack.domain.quality import (
    Judgement,
    JudgeVersion,
    Offer,
    OfferCandidate,
    OutcomeRules,
    QueueItem,
    Review,
    ReviewReason,
    Slice,
    SliceCounts,
    UnknownConversationError,
)
from cxstack.store import judgements, outcomes, reviews
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
from cxstack.store.db import BEGIN_MODE_OPTION
from cxstack.store.orm import (
    ApiKeyRow,
    Base,
    ConversationEventRow,
    ConversationRow,
    CustomerRow,
    EmailMessageRow,
    EscalationRow,
    FactVersionRow,
    MessageRow,
    OutboxRow,
    TraceRow,
    WorkspaceVersionRow,
)
from cxstack.store.outcomes import TurnFacts, record_turn
from cxstack.store.queue_figures import QueueFigures, queue_figures

OUTBOX_PENDING = OutboxStatus.PENDING.value
OUTBOX_SENT = OutboxStatus.SENT.value
ESCALATION_OPEN = "open"
ESCALATION_RESOLVED = "resolved"
_INGEST_ATTEMPTS = 4


class SqlAlchemyStore:
    """Implements `cxstack.domain.ports.Store`. Takes and returns domain dataclasses, never ORM rows.

    `send_retry` is the outbox's one retry schedule: when a failed item is tried again, and after how many
    failures it is dead (out of the send queue, still listed).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        send_retry: SendRetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self._write_engine = (
            engine.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
            if engine.dialect.name == "sqlite"
            else engine
        )
        self.send_retry = send_retry or SendRetryPolicy()
        self._rng = rng or random.Random()
        # SQLite has one writer at a time. Threads of this process queue here instead of in SQLite's busy
        # handler, which sleeps 1-100 ms between polls; other processes still meet the busy handler.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with (
            self._write_lock,
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def _begin_write(self) -> Iterator[Connection]:
        with self._write_lock, self._write_engine.begin() as connection:
            yield connection

    # ---- workspace versions ---------------------------------------------------------------------------

    def save_workspace_version(self, version: WorkspaceVersionId, name: str, content: dict[str, Any]) -> bool:
        """True if stored now; False if this content hash was already stored."""
        try:
            with self._write() as session:
                if session.get(WorkspaceVersionRow, version) is not None:
                    return False
                session.add(
                    WorkspaceVersionRow(
                        id=version, name=clean_text(name), content=json_object(content), created_at=utcnow()
                    )
                )
        except IntegrityError:
            return False  # another process stored the same version first
        return True

    def get_workspace_version(self, version: WorkspaceVersionId) -> dict[str, Any] | None:
        with self._read() as session:
            row = session.get(WorkspaceVersionRow, version)
            return None if row is None else row.content

    def list_workspace_versions(self, limit: int | None = 20) -> list[WorkspaceVersionInfo]:
        v = WorkspaceVersionRow
        statement = select(v.id, v.name, v.created_at).order_by(v.created_at.desc(), v.id).limit(limit)
        with self._engine.connect() as connection:
            return [
                WorkspaceVersionInfo(WorkspaceVersionId(r.id), r.name, as_utc(r.created_at))
                for r in connection.execute(statement)
            ]

    # ---- customers --------------------------------------------------------------------------------------

    def upsert_customers(self, customers: Sequence[Customer]) -> int:
        with self._write() as session:
            for customer in customers:
                _upsert_customer(session, customer)
        return len(customers)

    def list_customers(self, query: str | None = None, limit: int = 100) -> list[Customer]:
        """By name then id; `query` matches id, name, email or plan, ignoring case."""
        statement = select(_CUSTOMERS).order_by(_CUSTOMERS.c.name, _CUSTOMERS.c.id).limit(limit)
        needle = (query or "").strip().lower()
        if needle:
            pattern = f"%{needle}%"
            statement = statement.where(
                func.lower(_CUSTOMERS.c.id).like(pattern)
                | func.lower(_CUSTOMERS.c.name).like(pattern)
                | func.lower(_CUSTOMERS.c.email).like(pattern)
                | func.lower(_CUSTOMERS.c.plan).like(pattern)
            )
        with self._engine.connect() as connection:
            return [_customer(cast(Any, row)) for row in connection.execute(statement)]

    def get_customer(self, customer_id: CustomerId) -> Customer | None:
        with self._engine.connect() as connection:
            row = connection.execute(_GET_CUSTOMER, {"id": customer_id}).first()
            return None if row is None else _customer(cast(Any, row))

    def customers_with_phone(self, phone: str) -> list[Customer]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(_CUSTOMERS).where(_CUSTOMERS.c.attributes["phone"].as_string() == phone).limit(3)
            ).fetchall()
            return [_customer(cast(Any, row)) for row in rows]

    def customers_with_email(self, address: str) -> list[Customer]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(_CUSTOMERS).where(func.lower(_CUSTOMERS.c.email) == address.strip().lower()).limit(3)
            ).fetchall()
            return [_customer(cast(Any, row)) for row in rows]

    # ---- email threading --------------------------------------------------------------------------------

    def add_email(self, record: EmailRecord) -> bool:
        with self._begin_write() as connection:
            dialect = connection.dialect.name
            insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
            values = {
                "message_id": record.message_id,
                "conversation_id": record.conversation_id,
                "direction": record.direction,
                "address": clean_text(record.address).lower(),
                "verified": record.verified,
                "subject": clean_text(record.subject),
                "outbox_id": record.outbox_id,
                "full_text": clean_text(record.full_text),
                "created_at": record.created_at or utcnow(),
            }
            statement = insert(_EMAILS).values(**values).on_conflict_do_nothing()
            return connection.execute(statement.returning(_EMAILS.c.message_id)).first() is not None

    def email_for(self, message_ids: Sequence[str]) -> EmailRecord | None:
        wanted = [m for m in dict.fromkeys(message_ids) if m]
        if not wanted:
            return None
        with self._engine.connect() as connection:
            rows = connection.execute(select(_EMAILS).where(_EMAILS.c.message_id.in_(wanted))).fetchall()
        found = {row.message_id: _email_record(cast(Any, row)) for row in rows}
        return next((found[m] for m in wanted if m in found), None)

    def email_thread(self, conversation_id: ConversationId) -> list[EmailRecord]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(_EMAILS)
                .where(_EMAILS.c.conversation_id == conversation_id)
                .order_by(_EMAILS.c.created_at, _EMAILS.c.message_id)
            ).fetchall()
            return [_email_record(cast(Any, row)) for row in rows]

    # ---- inbound ----------------------------------------------------------------------------------------

    def ingest(self, inbound: InboundMessage) -> IngestResult:
        for attempt in range(_INGEST_ATTEMPTS):
            try:
                if inbound.customer is None:
                    with self._begin_write() as connection:
                        message = _ingest_core(connection, inbound)
                else:  # the profile it carries is upserted in the same transaction
                    with self._write() as session:
                        _upsert_customer(session, inbound.customer)
                        session.flush()
                        message = _ingest_core(session.connection(), inbound)
            except _DuplicateMessageError:
                # Found under the conversation's lock; raising rolled back the customer upsert as well.
                existing = self._message_by_external_id(inbound.channel, inbound.external_id)
                assert existing is not None
                return IngestResult(existing, created=False)
            except IntegrityError:
                # A concurrent writer stored this message, or created the same customer or conversation
                # first: in the first case the message is there now, in the second a retry succeeds.
                existing = self._message_by_external_id(inbound.channel, inbound.external_id)
                if existing is not None:
                    return IngestResult(existing, created=False)
                if attempt == _INGEST_ATTEMPTS - 1:
                    raise
                continue
            return IngestResult(message, created=True)
        raise AssertionError("unreachable")

    def ingest_many(self, inbounds: Sequence[InboundMessage]) -> list[IngestResult | Exception]:
        """`ingest` for each message, committed together: one transaction (one fsync) for the batch, each
        message in its own savepoint so that one bad message fails alone. Answers in the order given, an
        exception in place of a message that could not be stored; nothing is stored if the commit fails.
        Messages carrying a customer profile, and redeliveries, take `ingest`'s own path after the batch."""
        outcomes: list[IngestResult | Exception | None] = [None] * len(inbounds)
        alone: list[int] = []
        with self._begin_write() as connection:
            for index, inbound in enumerate(inbounds):
                if inbound.customer is not None:
                    alone.append(index)
                    continue
                savepoint = connection.begin_nested()
                try:
                    message = _ingest_core(connection, inbound)
                except (_DuplicateMessageError, IntegrityError):
                    savepoint.rollback()
                    alone.append(index)
                except Exception as error:
                    try:
                        savepoint.rollback()
                    except Exception:
                        # SQLite rolls the whole transaction back on some errors (SQLITE_FULL: the disk is
                        # full), savepoints with it: the batch fails with that error, not "no such savepoint".
                        raise error from None
                    outcomes[index] = error
                else:
                    savepoint.commit()
                    outcomes[index] = IngestResult(message, created=True)
        for index in alone:
            try:
                outcomes[index] = self.ingest(inbounds[index])
            except Exception as error:
                outcomes[index] = error
        assert all(outcome is not None for outcome in outcomes)
        return cast(list[IngestResult | Exception], outcomes)

    def _message_by_external_id(self, channel: str, external_id: str) -> Message | None:
        with self._read() as session:
            row = session.scalar(
                select(MessageRow).where(MessageRow.channel == channel, MessageRow.external_id == external_id)
            )
            return None if row is None else _message(row)

    def get_conversation(self, conversation_id: ConversationId) -> Conversation | None:
        with self._engine.connect() as connection:
            row = connection.execute(_GET_CONVERSATION, {"id": conversation_id}).first()
            return None if row is None else _conversation(cast(Any, row))

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        """Most recently updated first."""
        with self._read() as session:
            rows = session.scalars(
                select(ConversationRow)
                .order_by(ConversationRow.updated_at.desc(), ConversationRow.id.desc())
                .limit(limit)
            )
            return [_conversation(row) for row in rows]

    def conversations_started_between(
        self, since: datetime, until: datetime | None = None, limit: int | None = None
    ) -> list[Conversation]:
        c = ConversationRow
        statement = select(c).where(c.created_at >= as_utc(since))
        if until is not None:
            statement = statement.where(c.created_at < as_utc(until))
        with self._read() as session:
            rows = session.scalars(statement.order_by(c.created_at, c.id).limit(limit))
            return [_conversation(row) for row in rows]

    def list_messages(self, conversation_id: ConversationId) -> list[Message]:
        with self._engine.connect() as connection:
            rows = connection.execute(_LIST_MESSAGES, {"conversation_id": conversation_id})
            return [_message(cast(Any, row)) for row in rows]

    def conversations_with_pending(self) -> list[ConversationId]:
        """Least recently updated first: a conversation that keeps receiving messages cannot starve others.
        A conversation backing off after a failed turn is left out until its `retry_at`."""
        with self._read() as session:
            ids = session.scalars(
                select(ConversationRow.id)
                .where(
                    ConversationRow.pending_count > 0,
                    or_(ConversationRow.retry_at.is_(None), ConversationRow.retry_at <= utcnow()),
                )
                .order_by(ConversationRow.updated_at, ConversationRow.id)
            )
            return [ConversationId(i) for i in ids]

    def pending_messages(self, conversation_id: ConversationId) -> list[Message]:
        with self._engine.connect() as connection:
            rows = connection.execute(_PENDING_MESSAGES, {"conversation_id": conversation_id})
            return [_message(cast(Any, row)) for row in rows]

    # ---- leases and failures ----------------------------------------------------------------------------

    def claim_conversation(self, conversation_id: ConversationId, owner: str, ttl_seconds: float) -> bool:
        """True if `owner` now holds the conversation's lease (it was free, expired, or already its own).
        One conditional UPDATE: PostgreSQL's row lock and SQLite's write lock make it atomic."""
        now = utcnow()
        with self._begin_write() as connection:
            claimed = connection.execute(
                _CLAIM_LEASE,
                {
                    "conversation_id": conversation_id,
                    "owner": owner,
                    "now": now,
                    "until": now + timedelta(seconds=ttl_seconds),
                },
            )
            return claimed.rowcount == 1

    def release_conversation(self, conversation_id: ConversationId, owner: str) -> None:
        with self._begin_write() as connection:
            connection.execute(_RELEASE_LEASE, {"conversation_id": conversation_id, "owner": owner})

    def conversations_leased_to(self, owner: str) -> list[ConversationId]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(_CONVERSATIONS.c.id)
                .where(_CONVERSATIONS.c.lease_owner == owner)
                .order_by(_CONVERSATIONS.c.id)
            )
            return [ConversationId(row.id) for row in rows]

    def record_turn_failure(
        self, conversation_id: ConversationId, message_ids: Sequence[str], error: str, retry_at: datetime
    ) -> int:
        """Counts a failed turn on each message and backs the conversation off until `retry_at`; returns the
        highest failure count among the messages."""
        with self._write() as session:
            rows = list(
                session.scalars(
                    select(MessageRow).where(
                        MessageRow.id.in_(list(message_ids)), MessageRow.conversation_id == conversation_id
                    )
                )
            )
            for row in rows:
                row.turn_failures += 1
                row.last_error = clean_text(error)[:2000]
            conversation = session.get(ConversationRow, conversation_id)
            if conversation is not None:
                conversation.retry_at = retry_at
            return max((row.turn_failures for row in rows), default=0)

    # ---- turns ------------------------------------------------------------------------------------------

    def commit_turn(self, commit: TurnCommit) -> None:
        """Everything the turn wrote, or nothing. A second commit for the same inbound message is a no-op.

        Raises KeyError if the inbound message is not in this conversation, ValueError if an id in the
        commit (trace, reply, escalation) is already stored or a transition is illegal, StaleStateError if
        the conversation changed since the turn read it, LeaseLostError if another worker holds its lease.
        """
        try:
            with self._begin_write() as connection:
                _commit_turn_core(connection, commit)
        except IntegrityError as error:
            raise ValueError(
                f"turn for message {commit.message_id} conflicts with stored rows: {error}"
            ) from error

    def list_traces(self, conversation_id: ConversationId | None = None, limit: int = 1000) -> list[Trace]:
        """The newest `limit` traces, oldest first."""
        query = select(TraceRow)
        if conversation_id is not None:
            query = query.where(TraceRow.conversation_id == conversation_id)
        query = query.order_by(TraceRow.created_at.desc(), TraceRow.id.desc()).limit(limit)
        with self._read() as session:
            rows = list(session.scalars(query))
        rows.reverse()
        return [_trace(row) for row in rows]

    def traces_since(self, since: datetime, limit: int = 5000) -> list[Trace]:
        """Traces created at or after `since`, oldest first (an indexed range on created_at)."""
        query = (
            select(TraceRow)
            .where(TraceRow.created_at >= as_utc(since))
            .order_by(TraceRow.created_at, TraceRow.id)
            .limit(limit)
        )
        with self._read() as session:
            return [_trace(row) for row in session.scalars(query)]

    def usage_by_intent(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[IntentUsage]:
        def count_if(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        query = select(
            TraceRow.intent,
            func.count(),
            count_if(TraceRow.outcome == "automated"),
            count_if(TraceRow.outcome == "escalated"),
            func.coalesce(func.sum(TraceRow.llm_calls), 0),
            func.coalesce(func.sum(TraceRow.llm_input_tokens), 0),
            func.coalesce(func.sum(TraceRow.llm_output_tokens), 0),
            func.sum(TraceRow.llm_cost_micros),
            count_if((TraceRow.llm_calls > 0) & TraceRow.llm_cost_micros.is_(None)),
        ).group_by(TraceRow.intent)
        if since is not None:
            query = query.where(TraceRow.created_at >= as_utc(since))
        if until is not None:
            query = query.where(TraceRow.created_at < as_utc(until))
        with self._read() as session:
            rows = session.execute(query).all()
        return sorted((_usage(*row) for row in rows), key=lambda u: (-u.turns, u.intent or ""))

    # ---- monitoring: outcomes, CSAT (domain/quality.py) ---------------------------------------------------

    def slice_counts(
        self,
        by: Slice,
        *,
        rules: OutcomeRules,
        since: datetime | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
        where: dict[str, str] | None = None,
    ) -> list[SliceCounts]:
        with self._engine.connect() as connection:
            return outcomes.slice_counts(
                connection, by, rules=rules, since=since, until=until, now=now or utcnow(), where=where
            )

    def record_csat(
        self, conversation_id: str, score: int, comment: str = "", at: datetime | None = None
    ) -> None:
        """The customer's satisfaction (1 to 5) with a conversation; a later score replaces an earlier one."""
        if not 1 <= score <= 5:
            raise ValueError("score must be between 1 and 5")
        with self._begin_write() as connection:
            outcomes.record_csat(connection, conversation_id, score, clean_text(comment), at or utcnow())

    def rebuild_outcomes(self) -> int:
        with self._begin_write() as connection:
            return outcomes.rebuild_outcomes(connection)

    # ---- monitoring: review sampling, queue, reviews ------------------------------------------------------

    def unoffered(
        self, rules: OutcomeRules, now: datetime | None = None, limit: int = 500
    ) -> list[OfferCandidate]:
        with self._engine.connect() as connection:
            return reviews.unoffered(connection, rules, now or utcnow(), limit)

    def drawn_per_version(self, versions: set[str]) -> dict[str, int]:
        with self._engine.connect() as connection:
            return reviews.drawn_per_version(connection, versions)

    def record_offers(self, offers: Sequence[Offer], now: datetime | None = None) -> int:
        with self._begin_write() as connection:
            return reviews.record_offers(connection, list(offers), now or utcnow())

    def enqueue_review(
        self,
        conversation_id: str,
        reason: ReviewReason,
        *,
        stratum: str,
        priority: int = 0,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        with self._begin_write() as connection:
            if (
                connection.execute(
                    select(outcomes.OUTCOMES.c.conversation_id).where(
                        outcomes.OUTCOMES.c.conversation_id == conversation_id
                    )
                ).first()
                is None
            ):
                raise UnknownConversationError(conversation_id)
            return bool(
                reviews.enqueue(
                    connection, conversation_id, reason, stratum=stratum, priority=priority, detail=detail,
                    now=utcnow(),
                )
            )  # fmt: skip

    def next_review_item(
        self, reviewer: str, now: datetime | None = None, lease: timedelta = timedelta(minutes=15)
    ) -> QueueItem | None:
        with self._begin_write() as connection:
            return reviews.next_item(connection, reviewer, now or utcnow(), lease)

    def review_queue_sizes(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            return reviews.queue_sizes(connection)

    def add_review(self, review: Review) -> Review:
        with self._begin_write() as connection:
            return reviews.add_review(connection, review, utcnow())

    def list_reviews(
        self, *, conversation_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[Review]:
        with self._engine.connect() as connection:
            return reviews.list_reviews(connection, conversation_id=conversation_id, since=since, limit=limit)

    def review_strata(self, since: datetime | None = None) -> list[dict[str, Any]]:
        with self._engine.connect() as connection:
            return reviews.strata(connection, since)

    # ---- monitoring: judges -----------------------------------------------------------------------------

    def unjudged(
        self, judge_version: str, rules: OutcomeRules, now: datetime | None = None, limit: int = 500
    ) -> list[str]:
        with self._engine.connect() as connection:
            return judgements.unjudged(connection, judge_version, rules, now or utcnow(), limit)

    def record_judgement(self, judgement: Judgement) -> None:
        with self._begin_write() as connection:
            judgements.record(connection, judgement, utcnow())

    def latest_judgements(self, conversation_ids: Sequence[str], judge_version: str) -> dict[str, Judgement]:
        with self._engine.connect() as connection:
            return judgements.latest(connection, list(conversation_ids), judge_version)

    def add_judge_version(self, version: JudgeVersion) -> None:
        with self._begin_write() as connection:
            judgements.add_version(connection, version, utcnow())

    def judge_versions(self) -> list[JudgeVersion]:
        with self._engine.connect() as connection:
            return judgements.versions(connection)

    def conversation_intents(self) -> dict[str, str | None]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(outcomes.OUTCOMES.c.conversation_id, outcomes.OUTCOMES.c.intent))
            return {r[0]: r[1] for r in rows}

    def set_judge_agreement(self, version_id: str, agreement: dict[str, Any]) -> None:
        with self._begin_write() as connection:
            judgements.set_agreement(connection, version_id, agreement)

    # ---- outbox -----------------------------------------------------------------------------------------

    def pending_outbox(self, limit: int = 100, now: datetime | None = None) -> list[OutboxItem]:
        """Pending items due at `now`, earliest due first: an item waiting for its next retry is not
        returned, so items that keep failing can never hold back a newer reply."""
        with self._engine.connect() as connection:
            rows = connection.execute(_DUE_OUTBOX, {"limit": limit, "now": now or utcnow()})
            return [_outbox_item(cast(Any, row)) for row in rows]

    def mark_sent(self, outbox_id: str, provider_message_id: str | None = None) -> None:
        """Idempotent; the first confirmation's time (and provider message id) is kept."""
        with self._begin_write() as connection:
            marked = connection.execute(
                _MARK_SENT, {"outbox_id": outbox_id, "now": utcnow(), "provider_id": provider_message_id}
            ).first()
        if marked is None:
            raise KeyError(f"unknown outbox item {outbox_id}")

    def apply_delivery_status(
        self, channel: str, provider_message_id: str, status: str, error: str | None = None
    ) -> OutboxItem | None:
        with self._write() as session:
            row = session.scalars(
                select(OutboxRow).where(
                    OutboxRow.channel == channel, OutboxRow.provider_message_id == provider_message_id
                )
            ).first()
            if row is None:
                return None
            if delivery_moves(row.delivery_status, status):
                row.delivery_status = status
                row.delivery_error = None if error is None else clean_text(error)[:2000]
                row.delivery_at = utcnow()
                session.flush()
            return _outbox_item(row)

    def escalate_undelivered(self, outbox_id: str, *, queue: str) -> EscalationPacket | None:
        now = utcnow()
        with self._write() as session:
            item = _outbox_row(session, outbox_id)
            undelivered = item.status == OutboxStatus.DEAD.value or item.delivery_status == "failed"
            conversation = session.get(ConversationRow, item.conversation_id, with_for_update=True)
            if not undelivered or conversation is None or conversation.status != ConversationStatus.BOT.value:
                return None
            messages = session.scalars(
                select(MessageRow)
                .where(MessageRow.conversation_id == conversation.id)
                .order_by(MessageRow.seq)
            ).all()
            packet = undelivered_packet(
                ConversationId(conversation.id),
                conversation.customer_id,
                channel=item.channel,
                error=item.delivery_error or item.last_error or "unknown",
                reply=item.text,
                transcript=[
                    {"role": m.role, "text": m.text, "at": as_utc(m.created_at).isoformat()} for m in messages
                ],
                queue=queue,
                at=now,
            )
            session.add(
                EscalationRow(
                    id=packet.id,
                    conversation_id=conversation.id,
                    queue=clean_text(queue),
                    priority=int(packet.priority),
                    reason_code=packet.reason_code,
                    status=packet.status,
                    packet=packet_to_json(packet),
                    created_at=now,
                )
            )
            _transition(
                session,
                conversation,
                (Transition.ESCALATE,),
                actor=f"channel:{item.channel}",
                cause="undelivered",
                at=now,
            )
            return packet

    def mark_send_failed(
        self, outbox_id: str, error: str, now: datetime | None = None, *, permanent: bool = False
    ) -> OutboxItem:
        now = now or utcnow()
        with self._write() as session:
            row = _outbox_row(session, outbox_id)
            if row.status == OutboxStatus.PENDING:  # a late report for a sent or dead item changes nothing
                row.attempts += 1
                row.last_error = clean_text(error)
                if permanent or self.send_retry.is_exhausted(row.attempts):
                    row.status = OutboxStatus.DEAD.value
                else:
                    row.next_attempt_at = now + self.send_retry.delay_after(row.attempts, self._rng)
            session.flush()
            return _outbox_item(row)

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxItem]:
        with self._engine.connect() as connection:
            rows = connection.execute(_LIST_OUTBOX, {"status": OutboxStatus(status).value, "limit": limit})
            return [_outbox_item(cast(Any, row)) for row in rows]

    def outbox_for(self, conversation_id: ConversationId) -> list[OutboxItem]:
        with self._read() as session:
            rows = session.scalars(
                select(OutboxRow)
                .where(OutboxRow.conversation_id == conversation_id)
                .order_by(OutboxRow.created_at, OutboxRow.id)
            ).all()
            return [_outbox_item(row) for row in rows]

    def queue_figures(self) -> QueueFigures:
        """Queue sizes and ages for /metrics (see store.queue_figures)."""
        return queue_figures(self._engine)

    def count_outbox(self, status: OutboxStatus) -> int:
        with self._engine.connect() as connection:
            return int(connection.execute(_COUNT_OUTBOX, {"status": OutboxStatus(status).value}).scalar_one())

    def requeue_outbox(self, outbox_id: str, now: datetime | None = None) -> OutboxItem:
        with self._write() as session:
            row = _outbox_row(session, outbox_id)
            if row.status == OutboxStatus.SENT:
                raise ValueError(f"outbox item {outbox_id} was already sent")
            row.status = OutboxStatus.PENDING.value
            row.attempts = 0
            row.next_attempt_at = now or utcnow()
            session.flush()
            return _outbox_item(row)

    # ---- escalations and humans -------------------------------------------------------------------------

    def list_escalations(
        self, queue: str | None = None, status: str | None = "open"
    ) -> list[EscalationPacket]:
        """Most urgent first, then oldest first."""
        query = select(EscalationRow)
        if queue is not None:
            query = query.where(EscalationRow.queue == queue)
        if status is not None:
            query = query.where(EscalationRow.status == status)
        query = query.order_by(EscalationRow.priority.desc(), EscalationRow.created_at, EscalationRow.id)
        with self._read() as session:
            return [_escalation(row) for row in session.scalars(query)]

    def get_escalation(self, escalation_id: EscalationId) -> EscalationPacket | None:
        with self._read() as session:
            row = session.get(EscalationRow, escalation_id)
            return None if row is None else _escalation(row)

    def add_human_reply(
        self,
        conversation_id: ConversationId,
        text: str,
        author: str,
        hand_back: bool,
        *,
        content: dict[str, Any] | None = None,
    ) -> Message:
        """Stores the reply and queues it for sending; the person now owns the conversation. `hand_back`
        returns it to automation and resolves its open escalations. Raises KeyError for an unknown
        conversation."""
        now = utcnow()
        with self._write() as session:
            conversation = session.get(ConversationRow, conversation_id, with_for_update=True)
            if conversation is None:
                raise KeyError(f"unknown conversation {conversation_id}")
            row = _append_outbound(
                session,
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
            if conversation.status == ConversationStatus.CLOSED.value:
                transitions.append(Transition.REOPEN)
            transitions.append(Transition.PERSON_REPLIED)
            if hand_back:
                transitions.append(Transition.HAND_BACK)
            _transition(session, conversation, tuple(transitions), actor=f"agent:{author}", at=now)
            return _message(row)

    def change_status(
        self, conversation_id: ConversationId, transition: Transition, *, actor: str, cause: str = ""
    ) -> Conversation:
        """A status change outside a turn: a person closes a conversation or hands it back unanswered.
        Raises KeyError for an unknown conversation, IllegalTransitionError (a ValueError) if not allowed."""
        with self._write() as session:
            conversation = session.get(ConversationRow, conversation_id, with_for_update=True)
            if conversation is None:
                raise KeyError(f"unknown conversation {conversation_id}")
            _transition(
                session, conversation, (Transition(transition),), actor=actor, cause=cause, at=utcnow()
            )
            session.flush()
            return _conversation(conversation)

    def list_status_changes(self, conversation_id: ConversationId) -> list[StatusChange]:
        with self._read() as session:
            rows = session.scalars(
                select(ConversationEventRow)
                .where(ConversationEventRow.conversation_id == conversation_id)
                .order_by(ConversationEventRow.at, ConversationEventRow.id)
            )
            return [_status_change(row) for row in rows]

    # ---- API keys ---------------------------------------------------------------------------------------

    def add_api_key(self, key: ApiKey) -> None:
        try:
            with self._write() as session:
                session.add(
                    ApiKeyRow(
                        id=key.id,
                        name=clean_text(key.name),
                        role=ApiRole(key.role).value,
                        channel=key.channel,
                        secret_hash=key.secret_hash,
                        created_at=as_utc(key.created_at),
                        revoked_at=None if key.revoked_at is None else as_utc(key.revoked_at),
                    )
                )
        except IntegrityError as error:
            raise ValueError(f"API key id {key.id} is taken") from error

    def get_api_key(self, key_id: str) -> ApiKey | None:
        with self._read() as session:
            row = session.get(ApiKeyRow, key_id)
            return None if row is None else _api_key(row)

    def list_api_keys(self) -> list[ApiKey]:
        with self._read() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))
            return [_api_key(row) for row in rows]

    def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKey:
        """Idempotent: a key revoked twice keeps its first revoke time."""
        with self._write() as session:
            row = session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise KeyError(f"unknown API key {key_id}")
            if row.revoked_at is None:
                row.revoked_at = as_utc(revoked_at)
            return _api_key(row)

    # ---- knowledge fact versions ------------------------------------------------------------------------

    def add_fact_version(self, version: FactVersion) -> None:
        if version.number < 1:
            raise ValueError("fact version numbers start at 1")
        try:
            with self._write() as session:
                previous = session.scalar(
                    select(func.max(FactVersionRow.number)).where(FactVersionRow.fact_id == version.fact_id)
                )
                if (previous or 0) + 1 != version.number:
                    raise FactVersionConflictError(version.fact_id, None)
                session.add(
                    FactVersionRow(
                        fact_id=version.fact_id,
                        number=version.number,
                        content=version.content,
                        author=clean_text(version.author),
                        reason=clean_text(version.reason),
                        origin=version.origin,
                        created_at=as_utc(version.created_at),
                    )
                )
        except (IntegrityError, FactVersionConflictError):
            # Two writers of the same number: the primary key lets exactly one in.
            versions = self.fact_versions(version.fact_id)
            raise FactVersionConflictError(version.fact_id, versions[-1] if versions else None) from None

    def fact_versions(self, fact_id: str) -> list[FactVersion]:
        with self._read() as session:
            rows = session.scalars(
                select(FactVersionRow)
                .where(FactVersionRow.fact_id == fact_id)
                .order_by(FactVersionRow.number)
            )
            return [_fact_version(row) for row in rows]

    def latest_fact_versions(self) -> dict[str, FactVersion]:
        newest = (
            select(FactVersionRow.fact_id, func.max(FactVersionRow.number).label("number"))
            .group_by(FactVersionRow.fact_id)
            .subquery()
        )
        with self._read() as session:
            rows = session.scalars(
                select(FactVersionRow).join(
                    newest,
                    (FactVersionRow.fact_id == newest.c.fact_id) & (FactVersionRow.number == newest.c.number),
                )
            )
            return {row.fact_id: _fact_version(row) for row in rows}


# ---- transaction bodies -----------------------------------------------------------------------------------


def _upsert_customer(session: Session, customer: Customer) -> None:
    values = {
        "name": clean_text(customer.name),
        "email": clean_text(customer.email),
        "plan": clean_text(customer.plan),
        "arr": optional_float(customer.arr) or 0.0,
        "segment": clean_text(customer.segment),
        "attributes": json_object(customer.attributes),
        "updated_at": utcnow(),
    }
    row = session.get(CustomerRow, customer.id)
    if row is None:
        session.add(CustomerRow(id=customer.id, **values))
        session.flush()  # surface a concurrent insert of the same id here, inside the retry
    else:
        for key, value in values.items():
            setattr(row, key, value)


class _DuplicateMessageError(Exception):
    """Raised inside the ingest transaction so that it rolls back."""


def _table(row: type[Base]) -> Table:
    table = row.__table__
    assert isinstance(table, Table)
    return table


def _insert_ignoring_duplicates(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    dialect = connection.dialect.name
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    connection.execute(insert(table).values(**values).on_conflict_do_nothing())


_CONVERSATIONS = _table(ConversationRow)
_MESSAGES = _table(MessageRow)
# Built once: constructing a statement costs more than executing it on SQLite.
_BUMP_CONVERSATION = (
    update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"))
    .values(
        last_seq=_CONVERSATIONS.c.last_seq + 1,
        pending_count=_CONVERSATIONS.c.pending_count + 1,
        updated_at=bindparam("now", type_=_CONVERSATIONS.c.updated_at.type),
    )
    .returning(_CONVERSATIONS.c.last_seq, _CONVERSATIONS.c.customer_id)
)
_FIND_DUPLICATE = select(_MESSAGES.c.id).where(
    _MESSAGES.c.channel == bindparam("channel"), _MESSAGES.c.external_id == bindparam("external_id")
)
_INSERT_CONVERSATION = _CONVERSATIONS.insert()
_INSERT_MESSAGE = _MESSAGES.insert()


def _ingest_core(connection: Connection, inbound: InboundMessage) -> Message:
    """The message appended and the conversation marked pending, in three or four prebuilt statements.

    The UPDATE takes the conversation's write lock (PostgreSQL row lock; SQLite's
    IMMEDIATE transaction) before the duplicate check, so a racing redelivery waits and then finds the first.
    """
    now = utcnow()
    bumped = connection.execute(
        _BUMP_CONVERSATION, {"conversation_id": inbound.conversation_id, "now": now}
    ).first()
    duplicate = connection.execute(
        _FIND_DUPLICATE, {"channel": inbound.channel, "external_id": inbound.external_id}
    ).scalar()
    if duplicate is not None:
        raise _DuplicateMessageError(duplicate)
    if bumped is None:
        _insert_ignoring_duplicates(
            connection,
            _table(CustomerRow),
            {
                "id": inbound.customer_id,
                "name": "",
                "email": "",
                "plan": "",
                "arr": 0.0,
                "segment": "",
                "attributes": {},
                "updated_at": now,
            },
        )
        connection.execute(
            _INSERT_CONVERSATION,
            {
                "id": inbound.conversation_id,
                "customer_id": inbound.customer_id,
                "channel": inbound.channel,
                "status": ConversationStatus.BOT.value,
                "state": {},
                "created_at": now,
                "updated_at": now,
                "last_seq": 1,
                "pending_count": 1,
                "verified": inbound.verified,
                "version": 0,
            },
        )
        seq, author = 1, str(inbound.customer_id)
    else:
        seq, author = int(bumped.last_seq), str(bumped.customer_id)
    message = Message(
        id=MessageId(new_id("msg")),
        conversation_id=inbound.conversation_id,
        role=Role.CUSTOMER,
        text=clean_text(inbound.text),
        created_at=as_utc(inbound.received_at),
        channel=inbound.channel,
        external_id=inbound.external_id,
        author=author,
    )
    connection.execute(
        _INSERT_MESSAGE,
        {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "seq": seq,
            "role": message.role.value,
            "text": message.text,
            "channel": message.channel,
            "external_id": message.external_id,
            "author": author,
            "created_at": message.created_at,
            "processed": False,
        },
    )
    return message


_OUTBOX = _table(OutboxRow)
_CUSTOMERS = _table(CustomerRow)
_EMAILS = _table(EmailMessageRow)


def _email_record(row: Any) -> EmailRecord:
    return EmailRecord(
        message_id=row.message_id,
        conversation_id=ConversationId(row.conversation_id),
        direction=row.direction,
        address=row.address,
        verified=bool(row.verified),
        subject=row.subject,
        outbox_id=row.outbox_id,
        full_text=row.full_text,
        created_at=as_utc(row.created_at),
    )


# Reads on every turn and every reply, as prebuilt Core statements (an ORM session costs more than the query).
_GET_CUSTOMER = select(_CUSTOMERS).where(_CUSTOMERS.c.id == bindparam("id"))
_GET_CONVERSATION = select(_CONVERSATIONS).where(_CONVERSATIONS.c.id == bindparam("id"))
_LIST_MESSAGES = (
    select(_MESSAGES)
    .where(_MESSAGES.c.conversation_id == bindparam("conversation_id"))
    .order_by(_MESSAGES.c.seq)
)
_PENDING_MESSAGES = (
    select(_MESSAGES)
    .where(
        _MESSAGES.c.conversation_id == bindparam("conversation_id"),
        _MESSAGES.c.role == Role.CUSTOMER.value,
        _MESSAGES.c.processed.is_(False),
    )
    .order_by(_MESSAGES.c.seq)
)
_DUE_OUTBOX = (
    select(_OUTBOX)
    .where(
        _OUTBOX.c.status == OUTBOX_PENDING,
        _OUTBOX.c.next_attempt_at <= bindparam("now", type_=_OUTBOX.c.next_attempt_at.type),
    )
    .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
    .limit(bindparam("limit"))
)
_LIST_OUTBOX = (
    select(_OUTBOX)
    .where(_OUTBOX.c.status == bindparam("status"))
    .order_by(_OUTBOX.c.created_at, _OUTBOX.c.id)
    .limit(bindparam("limit"))
)
_COUNT_OUTBOX = select(func.count()).select_from(_OUTBOX).where(_OUTBOX.c.status == bindparam("status"))
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("outbox_id"))
    .values(
        status=OUTBOX_SENT,
        sent_at=func.coalesce(_OUTBOX.c.sent_at, bindparam("now", type_=_OUTBOX.c.sent_at.type)),
        last_error=None,
        provider_message_id=func.coalesce(_OUTBOX.c.provider_message_id, bindparam("provider_id")),
    )
    .returning(_OUTBOX.c.id)
)
_FIND_INBOUND = select(_MESSAGES.c.conversation_id).where(_MESSAGES.c.id == bindparam("message_id"))
# The guard that makes a repeated commit a no-op: on PostgreSQL a concurrent second commit waits on this row
# and then matches nothing; on SQLite the IMMEDIATE transaction serialises them.
_CLAIM_INBOUND = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"), _MESSAGES.c.processed.is_(False))
    .values(processed=True)
)
# The other messages of a burst answered by the same turn.
_CLAIM_ANSWERED = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id.in_(bindparam("message_ids", expanding=True)),
        _MESSAGES.c.conversation_id == bindparam("in_conversation"),
        _MESSAGES.c.role == Role.CUSTOMER.value,
    )
    .values(processed=True)
)
# Read under the row lock (PostgreSQL) or the IMMEDIATE transaction (SQLite) that the commit holds.
_LOCK_CONVERSATION = (
    select(
        _CONVERSATIONS.c.status,
        _CONVERSATIONS.c.version,
        _CONVERSATIONS.c.lease_owner,
        _CONVERSATIONS.c.customer_id,
        _CONVERSATIONS.c.verified,
        _CONVERSATIONS.c.channel,
    )
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"))
    .with_for_update()
)
_NEXT_SEQ = (
    update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"))
    .values(last_seq=_CONVERSATIONS.c.last_seq + 1)
    .returning(_CONVERSATIONS.c.last_seq, _CONVERSATIONS.c.channel)
)
_FINISH_CONVERSATION = (
    update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"))
    .values(
        state=bindparam("state", type_=_CONVERSATIONS.c.state.type),
        status=bindparam("status"),
        customer_id=bindparam("customer_id"),
        verified=bindparam("verified"),
        version=_CONVERSATIONS.c.version + 1,
        retry_at=None,
        updated_at=bindparam("now", type_=_CONVERSATIONS.c.updated_at.type),
        pending_count=(
            select(func.count())
            .select_from(_MESSAGES)
            .where(
                _MESSAGES.c.conversation_id == bindparam("conversation_id"),
                _MESSAGES.c.role == Role.CUSTOMER.value,
                _MESSAGES.c.processed.is_(False),
            )
            .scalar_subquery()
        ),
    )
)
_CLAIM_LEASE = (
    update(_CONVERSATIONS)
    .where(
        _CONVERSATIONS.c.id == bindparam("conversation_id"),
        or_(
            _CONVERSATIONS.c.lease_owner.is_(None),
            _CONVERSATIONS.c.lease_owner == bindparam("owner"),
            _CONVERSATIONS.c.lease_until < bindparam("now", type_=_CONVERSATIONS.c.lease_until.type),
        ),
    )
    .values(
        lease_owner=bindparam("owner"),
        lease_until=bindparam("until", type_=_CONVERSATIONS.c.lease_until.type),
    )
)
_RELEASE_LEASE = (
    update(_CONVERSATIONS)
    .where(
        _CONVERSATIONS.c.id == bindparam("conversation_id"),
        _CONVERSATIONS.c.lease_owner == bindparam("owner"),
    )
    .values(lease_owner=None, lease_until=None)
)
_INSERT_TRACE = _table(TraceRow).insert()
_ESCALATIONS = _table(EscalationRow)
_INSERT_ESCALATION = _ESCALATIONS.insert()
_INSERT_OUTBOX = _OUTBOX.insert()
_EVENTS = _table(ConversationEventRow)
_INSERT_EVENT = _EVENTS.insert()
_NEWEST_OPEN_ESCALATION = (
    select(_ESCALATIONS.c.id, _ESCALATIONS.c.packet)
    .where(
        _ESCALATIONS.c.conversation_id == bindparam("conversation_id"),
        _ESCALATIONS.c.status == ESCALATION_OPEN,
    )
    .order_by(_ESCALATIONS.c.created_at.desc(), _ESCALATIONS.c.id.desc())
    .limit(1)
)
_MESSAGE_TEXTS = select(_MESSAGES.c.id, _MESSAGES.c.text, _MESSAGES.c.created_at).where(
    _MESSAGES.c.id.in_(bindparam("message_ids", expanding=True))
)


def _commit_turn_core(connection: Connection, commit: TurnCommit) -> None:
    """Everything a turn writes, in prebuilt Core statements: this runs once per turn, on the hot path."""
    owner = connection.execute(_FIND_INBOUND, {"message_id": commit.message_id}).scalar()
    if owner is None or owner != commit.conversation_id:
        raise KeyError(f"message {commit.message_id} is not in conversation {commit.conversation_id}")
    claimed = connection.execute(_CLAIM_INBOUND, {"message_id": commit.message_id})
    if claimed.rowcount == 0:
        return
    current = connection.execute(_LOCK_CONVERSATION, {"conversation_id": commit.conversation_id}).one()
    if commit.lease_owner is not None and current.lease_owner != commit.lease_owner:
        raise LeaseLostError(
            f"conversation {commit.conversation_id} is leased to {current.lease_owner!r}, "
            f"not {commit.lease_owner!r}"
        )
    if commit.expected_version is not None and current.version != commit.expected_version:
        raise StaleStateError(
            f"conversation {commit.conversation_id} is at version {current.version}, "
            f"the turn read version {commit.expected_version}"
        )
    steps = apply_all(ConversationStatus(current.status), commit.transitions)
    others = [m for m in commit.answered if m != commit.message_id]
    if others:
        connection.execute(
            _CLAIM_ANSWERED, {"message_ids": others, "in_conversation": commit.conversation_id}
        )
    now = utcnow()
    if commit.reply is not None:
        bumped = connection.execute(_NEXT_SEQ, {"conversation_id": commit.conversation_id}).one()
        created_at = as_utc(commit.reply.created_at)
        text = clean_text(commit.reply.text)
        connection.execute(
            _INSERT_MESSAGE,
            {
                "id": commit.reply.id,
                "conversation_id": commit.conversation_id,
                "seq": int(bumped.last_seq),
                "role": Role(commit.reply.role).value,
                "text": text,
                "channel": commit.reply.channel,
                "external_id": None,
                "author": commit.reply.author,
                "created_at": created_at,
                "processed": True,
            },
        )
        connection.execute(
            _INSERT_OUTBOX,
            {
                "id": new_id("out"),
                "conversation_id": commit.conversation_id,
                "message_id": commit.reply.id,
                "channel": bumped.channel,
                "text": text,
                "status": OUTBOX_PENDING,
                "attempts": 0,
                "last_error": None,
                "created_at": created_at,
                "next_attempt_at": created_at,
                "sent_at": None,
                "content": commit.reply_content,
            },
        )
    verified_customer = commit.verified_customer
    connection.execute(
        _FINISH_CONVERSATION,
        {
            "conversation_id": commit.conversation_id,
            "state": json_object(commit.state),
            "status": (steps[-1][2] if steps else ConversationStatus(current.status)).value,
            "customer_id": verified_customer or current.customer_id,
            "verified": True if verified_customer else bool(current.verified),
            "now": now,
        },
    )
    for index, (transition, before, after) in enumerate(steps):
        connection.execute(
            _INSERT_EVENT,
            {
                "id": new_id("evt"),
                "conversation_id": commit.conversation_id,
                "transition": transition.value,
                "from_status": before.value,
                "to_status": after.value,
                "actor": "bot",
                "cause": clean_text(commit.cause),
                "trace_id": commit.trace.id,
                "at": now + timedelta(microseconds=index),
            },
        )
    if commit.attach_to_escalation:
        _attach_followups(connection, commit)
    if commit.reopen_escalation is not None:
        connection.execute(
            update(_ESCALATIONS)
            .where(
                _ESCALATIONS.c.id == commit.reopen_escalation,
                _ESCALATIONS.c.conversation_id == commit.conversation_id,
            )
            .values(status=ESCALATION_OPEN)
        )
    if commit.escalation is not None:
        packet = commit.escalation
        connection.execute(
            _INSERT_ESCALATION,
            {
                "id": packet.id,
                "conversation_id": commit.conversation_id,
                "queue": clean_text(packet.queue),
                "priority": int(packet.priority),
                "reason_code": clean_text(packet.reason_code),
                "status": packet.status,
                "packet": packet_to_json(packet),
                "created_at": as_utc(packet.created_at),
            },
        )
    connection.execute(_INSERT_TRACE, trace_fields(commit.trace))
    record_turn(connection, commit.conversation_id, TurnFacts.of(commit.trace, current.channel, commit.state))


def _attach_followups(connection: Connection, commit: TurnCommit) -> None:
    """The turn's customer messages join the newest open packet, so the person sees them with it."""
    found = connection.execute(_NEWEST_OPEN_ESCALATION, {"conversation_id": commit.conversation_id}).first()
    if found is None:
        return
    rows = connection.execute(_MESSAGE_TEXTS, {"message_ids": list(commit.answered)}).all()
    packet = dict(found.packet)
    known = {f.get("message_id") for f in packet.get("followups") or []}
    followups = list(packet.get("followups") or [])
    for row in sorted(rows, key=lambda r: (as_utc(r.created_at), r.id)):
        if row.id not in known:
            followups.append(
                {"message_id": row.id, "text": row.text, "at": as_utc(row.created_at).isoformat()}
            )
    packet["followups"] = followups
    connection.execute(
        update(_ESCALATIONS).where(_ESCALATIONS.c.id == found.id).values(packet=json_object(packet))
    )


def _transition(
    session: Session,
    conversation: ConversationRow,
    transitions: tuple[Transition, ...],
    *,
    actor: str,
    at: datetime,
    cause: str = "",
) -> None:
    """Applies `transitions` to a locked conversation row and records each; a hand-back or close also
    resolves the conversation's open escalations."""
    steps = apply_all(ConversationStatus(conversation.status), transitions)
    for index, (transition, before, after) in enumerate(steps):
        session.add(
            ConversationEventRow(
                id=new_id("evt"),
                conversation_id=conversation.id,
                transition=transition.value,
                from_status=before.value,
                to_status=after.value,
                actor=clean_text(actor),
                cause=clean_text(cause),
                trace_id=None,
                at=at + timedelta(microseconds=index),  # keeps the order of one call's transitions
            )
        )
        conversation.status = after.value
        if transition in (Transition.HAND_BACK, Transition.CLOSE):
            session.execute(
                update(EscalationRow)
                .where(
                    EscalationRow.conversation_id == conversation.id,
                    EscalationRow.status == ESCALATION_OPEN,
                )
                .values(status=ESCALATION_RESOLVED)
            )
    conversation.version += 1
    conversation.updated_at = at


def _append_outbound(
    session: Session,
    conversation: ConversationRow,
    message_id: MessageId,
    role: Role,
    text: str,
    *,
    author: str | None,
    channel: str,
    created_at: datetime,
    content: dict[str, Any] | None = None,
) -> MessageRow:
    """A reply added to the transcript and queued in the outbox on the conversation's channel."""
    conversation.last_seq += 1
    row = MessageRow(
        id=message_id,
        conversation_id=conversation.id,
        seq=conversation.last_seq,
        role=Role(role).value,
        text=clean_text(text),
        channel=channel,
        external_id=None,
        author=author,
        created_at=created_at,
        processed=True,
    )
    session.add(row)
    session.add(
        OutboxRow(
            id=new_id("out"),
            conversation_id=conversation.id,
            message_id=message_id,
            channel=conversation.channel,
            text=row.text,
            status=OUTBOX_PENDING,
            attempts=0,
            last_error=None,
            created_at=created_at,
            next_attempt_at=created_at,
            sent_at=None,
            content=content,
        )
    )
    return row


def _outbox_row(session: Session, outbox_id: str) -> OutboxRow:
    row = session.get(OutboxRow, outbox_id, with_for_update=True)
    if row is None:
        raise KeyError(f"unknown outbox item {outbox_id}")
    return row


# ---- rows to domain objects -------------------------------------------------------------------------------


def _customer(row: CustomerRow) -> Customer:
    return Customer(
        id=CustomerId(row.id),
        name=row.name,
        email=row.email,
        plan=row.plan,
        arr=row.arr,
        segment=row.segment,
        attributes=row.attributes,
    )


def _conversation(row: ConversationRow) -> Conversation:
    return Conversation(
        id=ConversationId(row.id),
        customer_id=CustomerId(row.customer_id),
        channel=row.channel,
        status=ConversationStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        state=row.state,
        verified=bool(row.verified),
        version=int(row.version),
    )


def _status_change(row: ConversationEventRow) -> StatusChange:
    return StatusChange(
        conversation_id=row.conversation_id,
        transition=Transition(row.transition),
        from_status=ConversationStatus(row.from_status),
        to_status=ConversationStatus(row.to_status),
        actor=row.actor,
        cause=row.cause,
        trace_id=row.trace_id,
        at=row.at,
    )


def _message(row: MessageRow) -> Message:
    return Message(
        id=MessageId(row.id),
        conversation_id=ConversationId(row.conversation_id),
        role=Role(row.role),
        text=row.text,
        created_at=row.created_at,
        channel=row.channel,
        external_id=row.external_id,
        author=row.author,
        turn_failures=row.turn_failures or 0,  # None on a row just added (server default)
    )


_TRACE_COLUMNS = tuple(column.key for column in TraceRow.__table__.columns)


def _trace(row: TraceRow) -> Trace:
    return trace_from_fields({column: getattr(row, column) for column in _TRACE_COLUMNS})


def _usage(intent: str | None, *sums: Any) -> IntentUsage:
    turns, automated, escalated, calls, tokens_in, tokens_out, micros, unpriced = sums
    return IntentUsage(
        intent=intent,
        turns=int(turns),
        automated=int(automated),
        escalated=int(escalated),
        llm_calls=int(calls),
        input_tokens=int(tokens_in),
        output_tokens=int(tokens_out),
        cost=None if micros is None else Decimal(int(micros)) / COST_MICROS,
        unpriced_turns=int(unpriced),
    )


def _outbox_item(row: OutboxRow) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        conversation_id=ConversationId(row.conversation_id),
        message_id=row.message_id,
        channel=row.channel,
        text=row.text,
        attempts=row.attempts,
        status=OutboxStatus(row.status),
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        provider_message_id=row.provider_message_id,
        delivery_status=row.delivery_status,
        delivery_error=row.delivery_error,
        content=row.content,
    )


def _escalation(row: EscalationRow) -> EscalationPacket:
    return packet_from_json(row.packet, status=row.status, created_at=row.created_at)


def _fact_version(row: FactVersionRow) -> FactVersion:
    return FactVersion(
        fact_id=row.fact_id,
        number=row.number,
        content=row.content,
        author=row.author,
        reason=row.reason,
        origin=row.origin,
        created_at=row.created_at,
    )


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        role=ApiRole(row.role),
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        channel=row.channel,
    )
