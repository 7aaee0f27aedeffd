"""Help-desk exports and events on the SQL store (SQLite and PostgreSQL run this same code).

Exports are a queue like the outbox: an escalation that should go to the help desk gets one row (unique on the
escalation, so two processes enqueueing at once make one), handed out when due, rescheduled with backoff (or
after the Retry-After the help desk asked for), dead after `max_attempts` failures or at once when retrying
cannot help. Each change is also written onto the escalation's packet (`handoff`: kind, status, ticket, the
last error), so the conversation and the escalation show where the ticket is, and why it is not there.

A help desk's event is applied in the same transaction that records its key: a redelivered comment finds the
key and changes nothing, and a crash between the two cannot leave a reply applied but not recorded (or the
reverse).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, cast, exists, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cxstack.domain.conversation_state import Transition
from cxstack.domain.handoff import Applied, Export, ExportStatus
from cxstack.domain.models import (
    ConversationStatus,
    EscalationId,
    EscalationPacket,
    MessageId,
    Role,
    new_id,
    utcnow,
)
from cxstack.domain.ports import SendRetryPolicy
from cxstack.store.codec import clean_text, json_object, packet_from_json
from cxstack.store.db import BEGIN_MODE_OPTION
from cxstack.store.orm import ConversationRow, EscalationRow, HandoffEventRow, HandoffExportRow
from cxstack.store.sqlalchemy_store import (
    SqlAlchemyStore,
    _append_outbound,
    _transition,
)

EXPORTS: Table = HandoffExportRow.__table__  # type: ignore[assignment]
EVENTS: Table = HandoffEventRow.__table__  # type: ignore[assignment]
ESCALATIONS: Table = EscalationRow.__table__  # type: ignore[assignment]


# How long a claimed export is left alone by other processes: longer than one export's calls can take.
CLAIM_LEASE_S = 120.0


def _export(row: Any) -> Export:
    return Export(
        id=row.id,
        escalation_id=row.escalation_id,
        conversation_id=row.conversation_id,
        kind=row.kind,
        status=ExportStatus(row.status),
        attempts=row.attempts,
        last_error=row.last_error,
        ticket_id=row.ticket_id,
        ticket_url=row.ticket_url,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at,
        followups_sent=row.followups_sent,
    )


class HandoffStore:
    """The exports queue and the applied events, on the same database as `store`."""

    def __init__(
        self, store: SqlAlchemyStore, retry: SendRetryPolicy | None = None, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.retry = retry or SendRetryPolicy(max_attempts=10)
        self._rng = rng or random.Random()
        engine = store.engine
        self._engine = engine
        self._write_engine = (
            engine.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
            if engine.dialect.name == "sqlite"
            else engine
        )

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._write_engine.begin() as connection:
            yield connection

    # ---- the export queue ------------------------------------------------------------------------------

    def enqueue(self, kind: str, queues: Sequence[str] | None, now: datetime | None = None) -> int:
        """One pending export for each open escalation (to one of `queues`, or any) without one yet."""
        now = now or utcnow()
        query = (
            select(ESCALATIONS.c.id, ESCALATIONS.c.conversation_id)
            .outerjoin(EXPORTS, EXPORTS.c.escalation_id == ESCALATIONS.c.id)
            .where(EXPORTS.c.id.is_(None), ESCALATIONS.c.status == "open")
            .order_by(ESCALATIONS.c.created_at, ESCALATIONS.c.id)
            .limit(500)
        )
        if queues is not None:
            query = query.where(ESCALATIONS.c.queue.in_(list(queues)))
        with self._engine.connect() as reader:  # most polls find nothing: no write lock for that
            if not reader.execute(select(exists(query.subquery()))).scalar():
                return 0
        added = 0
        with self._begin() as connection:
            for escalation_id, conversation_id in connection.execute(query).all():
                export_id = new_id("hx")
                inserted = connection.execute(
                    _insert_for(connection, EXPORTS)
                    .values(
                        id=export_id,
                        escalation_id=escalation_id,
                        conversation_id=conversation_id,
                        kind=kind,
                        status=ExportStatus.PENDING.value,
                        attempts=0,
                        created_at=now,
                        next_attempt_at=now,
                    )
                    .on_conflict_do_nothing()  # another process enqueued it first
                    .returning(EXPORTS.c.id)
                ).first()
                if inserted is None:
                    continue
                _note(connection, escalation_id, {"kind": kind, "status": "pending", "export_id": export_id})
                added += 1
        return added

    def claim(
        self, limit: int = 50, now: datetime | None = None, lease_s: float = CLAIM_LEASE_S
    ) -> list[Export]:
        """Pending exports due at `now`, earliest first, each claimed for `lease_s` (its next attempt moved
        past the lease), so another process's flush skips it while this one talks to the help desk; a
        process that dies holding a claim only delays its exports by the lease."""
        now = now or utcnow()
        query = (
            select(EXPORTS)
            .where(EXPORTS.c.status == ExportStatus.PENDING.value, EXPORTS.c.next_attempt_at <= now)
            .order_by(EXPORTS.c.next_attempt_at, EXPORTS.c.id)
            .limit(limit)
        )
        with self._engine.connect() as reader:  # most polls find nothing due: no write lock for that
            if not reader.execute(select(exists(query.subquery()))).scalar():
                return []
        with self._begin() as connection:
            if connection.dialect.name != "sqlite":  # SQLite's IMMEDIATE transaction already serialises this
                query = query.with_for_update(skip_locked=True)
            rows = connection.execute(query).all()
            if rows:
                connection.execute(
                    update(EXPORTS)
                    .where(EXPORTS.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=lease_s))
                )
            return [_export(row) for row in rows]

    def get(self, export_id: str) -> Export | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(EXPORTS).where(EXPORTS.c.id == export_id)).first()
            return None if row is None else _export(row)

    def escalation(self, escalation_id: str) -> EscalationPacket | None:
        return self.store.get_escalation(EscalationId(escalation_id))

    def mark_exported(
        self, export_id: str, ticket_id: str, ticket_url: str | None, now: datetime | None = None
    ) -> Export:
        now = now or utcnow()
        with self._begin() as connection:
            row = _locked(connection, export_id)
            if row.status != ExportStatus.SENT.value:  # the first confirmation's ticket is kept
                connection.execute(
                    update(EXPORTS)
                    .where(EXPORTS.c.id == export_id)
                    .values(
                        status=ExportStatus.SENT.value,
                        ticket_id=clean_text(ticket_id),
                        ticket_url=ticket_url,
                        sent_at=now,
                        last_error=None,
                    )
                )
                _note(
                    connection,
                    row.escalation_id,
                    {
                        "kind": row.kind,
                        "status": "sent",
                        "export_id": export_id,
                        "ticket_id": ticket_id,
                        "ticket_url": ticket_url,
                        "attempts": row.attempts + 1,
                    },
                )
            return _export(_locked(connection, export_id))

    def mark_failed(
        self,
        export_id: str,
        error: str,
        *,
        permanent: bool = False,
        retry_after_s: float | None = None,
        now: datetime | None = None,
    ) -> Export:
        """Counts a failed try: due again after `retry_after_s` (the help desk's word) or the backoff, or
        dead (permanent, or the last allowed try) with `error` on the escalation."""
        now = now or utcnow()
        with self._begin() as connection:
            row = _locked(connection, export_id)
            if row.status != ExportStatus.PENDING.value:
                return _export(row)
            attempts = row.attempts + 1
            dead = permanent or self.retry.is_exhausted(attempts)
            wait = (
                timedelta(seconds=retry_after_s)
                if retry_after_s is not None
                else self.retry.delay_after(attempts, self._rng)
            )
            message = clean_text(error)[:2000]
            connection.execute(
                update(EXPORTS)
                .where(EXPORTS.c.id == export_id)
                .values(
                    attempts=attempts,
                    last_error=message,
                    status=ExportStatus.DEAD.value if dead else ExportStatus.PENDING.value,
                    next_attempt_at=row.next_attempt_at if dead else now + wait,
                )
            )
            _note(
                connection,
                row.escalation_id,
                {
                    "kind": row.kind,
                    "status": "dead" if dead else "retrying",
                    "export_id": export_id,
                    "error": message,
                    "attempts": attempts,
                },
            )
            return _export(_locked(connection, export_id))

    def requeue(self, export_id: str, now: datetime | None = None) -> Export:
        with self._begin() as connection:
            row = _locked(connection, export_id)
            if row.status == ExportStatus.SENT.value:
                raise ValueError(f"export {export_id} already made ticket {row.ticket_id}")
            connection.execute(
                update(EXPORTS)
                .where(EXPORTS.c.id == export_id)
                .values(status=ExportStatus.PENDING.value, attempts=0, next_attempt_at=now or utcnow())
            )
            pending = {"kind": row.kind, "status": "pending", "export_id": export_id}
            _note(connection, row.escalation_id, pending)
            return _export(_locked(connection, export_id))

    def exports(self, status: ExportStatus | None = None, limit: int = 100) -> list[Export]:
        query = select(EXPORTS).order_by(EXPORTS.c.created_at, EXPORTS.c.id).limit(limit)
        if status is not None:
            query = query.where(EXPORTS.c.status == ExportStatus(status).value)
        with self._engine.connect() as connection:
            return [_export(row) for row in connection.execute(query)]

    def count(self, status: ExportStatus) -> int:
        with self._engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(EXPORTS).where(EXPORTS.c.status == status.value)
                ).scalar_one()
            )

    def open_tickets(self, limit: int = 100) -> list[tuple[Export, EscalationPacket]]:
        """Exports that made a ticket whose escalation is still open, with the packet (and its follow-ups)."""
        query = (
            select(EXPORTS, ESCALATIONS.c.packet, ESCALATIONS.c.status.label("escalation_status"))
            .join(ESCALATIONS, ESCALATIONS.c.id == EXPORTS.c.escalation_id)
            .where(EXPORTS.c.status == ExportStatus.SENT.value, ESCALATIONS.c.status == "open")
            .order_by(EXPORTS.c.created_at, EXPORTS.c.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [
                (
                    _export(row),
                    packet_from_json(row.packet, status=row.escalation_status, created_at=row.created_at),
                )
                for row in connection.execute(query)
            ]

    def mark_followups(self, export_id: str, sent: int) -> None:
        """`sent` follow-ups are on the ticket now (never lowered: a slower writer cannot undo a faster)."""
        with self._begin() as connection:
            connection.execute(
                update(EXPORTS)
                .where(EXPORTS.c.id == export_id, EXPORTS.c.followups_sent < sent)
                .values(followups_sent=sent)
            )

    def conversation_for_ticket(self, kind: str, ticket_id: str) -> str | None:
        """The conversation whose export made this ticket; None for a ticket we did not make."""
        with self._engine.connect() as connection:
            found = connection.execute(
                select(EXPORTS.c.conversation_id)
                .where(EXPORTS.c.kind == kind, EXPORTS.c.ticket_id == ticket_id)
                .order_by(EXPORTS.c.created_at.desc())
            ).first()
            return None if found is None else str(found[0])

    def exported(self, kind: str, conversation_id: str) -> bool:
        """Whether this conversation was handed to this help desk (its events may name it directly)."""
        with self._engine.connect() as connection:
            found = connection.execute(
                select(EXPORTS.c.id).where(
                    EXPORTS.c.kind == kind,
                    EXPORTS.c.conversation_id == conversation_id,
                    EXPORTS.c.status == ExportStatus.SENT.value,
                )
            ).first()
            return found is not None

    # ---- the help desk's events ------------------------------------------------------------------------

    def apply(
        self,
        kind: str,
        key: str,
        conversation_id: str,
        *,
        reply: str | None = None,
        author: str = "",
        hand_back: bool = False,
    ) -> Applied:
        """Once per (kind, key): a person's `reply` queued to the customer on the conversation's channel
        (the person then owns the conversation), and/or the conversation handed back to the bot (its open
        escalations resolved). Raises KeyError for an unknown conversation."""
        now = utcnow()
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            conversation = session.get(ConversationRow, conversation_id, with_for_update=True)
            if conversation is None:
                raise KeyError(f"unknown conversation {conversation_id}")
            recorded = (
                session.connection()
                .execute(
                    _insert_for(session.connection(), EVENTS)
                    .values(kind=kind, event_key=key[:500], conversation_id=conversation_id, received_at=now)
                    .on_conflict_do_nothing()
                    .returning(EVENTS.c.event_key)  # rowcount is not reliable here on every driver
                )
                .first()
            )
            if recorded is None:
                return Applied.DUPLICATE
            transitions: list[Transition] = []
            if reply:
                _append_outbound(
                    session,
                    conversation,
                    MessageId(new_id("msg")),
                    Role.HUMAN_AGENT,
                    reply,
                    author=author or kind,
                    channel=conversation.channel,
                    created_at=now,
                )
                if conversation.status == ConversationStatus.CLOSED.value:
                    transitions.append(Transition.REOPEN)
                transitions.append(Transition.PERSON_REPLIED)
            if hand_back and (
                transitions or conversation.status in (ConversationStatus.WAITING, ConversationStatus.PERSON)
            ):
                transitions.append(Transition.HAND_BACK)
            if not transitions:
                return Applied.NOTHING
            _transition(
                session,
                conversation,
                tuple(transitions),
                actor=f"agent:{author or kind}",
                cause=f"{kind} {key}",
                at=now,
            )
            return Applied.APPLIED


def _insert_for(connection: Connection, table: Table) -> Any:
    """An INSERT that can skip a duplicate (ON CONFLICT DO NOTHING) in this database's dialect."""
    insert = sqlite_insert if connection.dialect.name == "sqlite" else postgresql_insert
    return insert(table)


def _locked(connection: Connection, export_id: str) -> Any:
    query = select(EXPORTS).where(EXPORTS.c.id == export_id)
    if connection.dialect.name != "sqlite":
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None:
        raise KeyError(f"unknown export {export_id}")
    return row


def _note(connection: Connection, escalation_id: str, handoff: dict[str, Any]) -> None:
    """The export's state on the escalation's packet, where the conversation and the desk show it."""
    query = select(ESCALATIONS.c.packet).where(ESCALATIONS.c.id == escalation_id)
    if connection.dialect.name != "sqlite":
        query = query.with_for_update()
    packet = connection.execute(query).scalar()
    if packet is None:
        return
    previous = dict(packet.get("handoff") or {})
    merged = {**previous, **handoff}
    if handoff.get("status") in ("sent", "pending"):
        merged.pop("error", None)
    if connection.dialect.name == "postgresql":
        # only the handoff key is replaced, on the row's latest version: a turn adding follow-ups to the
        # packet meanwhile keeps them (SQLite's one writer at a time makes the whole-document write safe)
        value: Any = ESCALATIONS.c.packet.op("||")(cast(json_object({"handoff": merged}), JSONB))
    else:
        value = json_object({**packet, "handoff": merged})
    connection.execute(update(ESCALATIONS).where(ESCALATIONS.c.id == escalation_id).values(packet=value))
