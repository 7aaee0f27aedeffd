"""Help-desk handoff value types, and the export queue's port (the SQL store implements it in
store/handoff.py; the handoff service in integrations/helpdesks/service.py uses it)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cxstack.domain.models import EscalationPacket
from cxstack.domain.ports import SendRetryPolicy


class ExportStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class Applied(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the key was applied before: nothing changed
    NOTHING = "nothing"  # recorded, but there was nothing to change (solved while the bot has it)


@dataclass(frozen=True, slots=True)
class Export:
    """One escalation's export to the help desk; its id is the help desk's idempotency key."""

    id: str
    escalation_id: str
    conversation_id: str
    kind: str
    status: ExportStatus
    attempts: int
    last_error: str | None
    ticket_id: str | None
    ticket_url: str | None
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    followups_sent: int = 0


class ExportQueue(Protocol):
    retry: SendRetryPolicy

    def enqueue(self, kind: str, queues: Sequence[str] | None, now: datetime | None = None) -> int: ...

    def claim(self, limit: int = 50, now: datetime | None = None, lease_s: float = ...) -> list[Export]: ...

    def escalation(self, escalation_id: str) -> EscalationPacket | None: ...

    def mark_exported(
        self, export_id: str, ticket_id: str, ticket_url: str | None, now: datetime | None = None
    ) -> Export: ...

    def mark_failed(
        self,
        export_id: str,
        error: str,
        *,
        permanent: bool = False,
        retry_after_s: float | None = None,
        now: datetime | None = None,
    ) -> Export: ...

    def exports(self, status: ExportStatus | None = None, limit: int = 100) -> list[Export]: ...

    def requeue(self, export_id: str, now: datetime | None = None) -> Export:
        """Pending again from attempt 1 (KeyError: unknown; ValueError: it already made its ticket)."""
        ...

    def count(self, status: ExportStatus) -> int: ...

    def open_tickets(self, limit: int = 100) -> list[tuple[Export, EscalationPacket]]: ...

    def mark_followups(self, export_id: str, sent: int) -> None: ...

    def conversation_for_ticket(self, kind: str, ticket_id: str) -> str | None: ...

    def exported(self, kind: str, conversation_id: str) -> bool: ...

    def apply(
        self,
        kind: str,
        key: str,
        conversation_id: str,
        *,
        reply: str | None = None,
        author: str = "",
        hand_back: bool = False,
    ) -> Applied: ...
