"""The handoff service: exports escalations to the configured help desk through a durable queue, and applies
the help desk's verified events (a person's reply goes to the customer on their channel through the outbox;
solved or closed hands the conversation back to the bot, which answers the customer's next message).

While a ticket is open the conversation stays with a person (waiting_for_person, then person), so the bot
stays quiet: the customer's messages join the escalation packet as follow-ups, as on the escalation desk.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cxstack.domain.handoff import Applied, Export, ExportQueue, ExportStatus
from cxstack.domain.models import ConversationId, utcnow
from cxstack.domain.ports import SendRetryPolicy
from cxstack.integrations.helpdesks.base import (
    EventKind,
    ExportRefused,
    HelpDesk,
    HelpdeskEvent,
    RetryLater,
    Ticket,
)
from cxstack.integrations.helpdesks.chatwoot import Chatwoot, ChatwootSecrets
from cxstack.integrations.helpdesks.webhook import SignedWebhook, secret_from_env
from cxstack.integrations.helpdesks.zendesk import Zendesk, ZendeskSecrets
from cxstack.runtime.poll import poll_until_stopped
from cxstack.workspace.models import HelpdeskSettings

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
BATCH = 50


class UnknownTicketError(LookupError):
    """An event for a ticket (or conversation) this service never handed to that help desk."""


def build_helpdesk(settings: HelpdeskSettings, env: Mapping[str, str] | None = None) -> HelpDesk | None:
    """The configured help desk with its secrets from the environment; None when off or when a secret is
    missing (logged: the handoff is then off, and its webhooks answer 404)."""
    source = os.environ if env is None else env
    if settings.kind == "none" or not settings.base_url:
        return None
    if settings.kind == "zendesk":
        zendesk = ZendeskSecrets.from_env(source)
        if zendesk is None:
            log.warning("helpdesk.kind is zendesk but CXSTACK_ZENDESK_* are not all set: handoff is off")
            return None
        return Zendesk(settings.base_url, zendesk, tags=settings.zendesk.tags)
    if settings.kind == "chatwoot":
        chatwoot = ChatwootSecrets.from_env(source)
        if chatwoot is None or settings.chatwoot.account_id is None or settings.chatwoot.inbox_id is None:
            log.warning("helpdesk.kind is chatwoot but CXSTACK_CHATWOOT_* are not all set: handoff is off")
            return None
        return Chatwoot(
            settings.base_url,
            chatwoot,
            account_id=settings.chatwoot.account_id,
            inbox_id=settings.chatwoot.inbox_id,
        )
    secret = secret_from_env(source)
    if secret is None:
        log.warning("helpdesk.kind is webhook but CXSTACK_HANDOFF_WEBHOOK_SECRET is not set: handoff is off")
        return None
    return SignedWebhook(settings.base_url, secret)


@dataclass
class Received:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    # Replies the customer's channel would not deliver (WhatsApp's window): not sent, noted on the ticket.
    refused: int = 0
    conversations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "refused": self.refused,
        }


class HandoffService:
    def __init__(
        self,
        desk: HelpDesk,
        store: ExportQueue,
        settings: HelpdeskSettings,
        *,
        on_change: Callable[[ConversationId], None] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        outbound_check: Callable[[str], str | None] | None = None,
    ) -> None:
        self.desk = desk
        self.store = store
        self.settings = settings
        self.on_change = on_change
        # The outbound gate every sender passes: why the conversation's channel would not deliver a reply now.
        self.outbound_check = outbound_check
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Follow-ups that failed: export id -> (failures, not before); kept in memory, the counts are durable.
        self._followup_retry: dict[str, tuple[int, datetime]] = {}

    @classmethod
    def for_store(
        cls,
        desk: HelpDesk,
        store: object,
        settings: HelpdeskSettings,
        on_change: Callable[[ConversationId], None] | None = None,
        outbound_check: Callable[[str], str | None] | None = None,
    ) -> HandoffService:
        from cxstack.store.handoff import HandoffStore
        from cxstack.store.sqlalchemy_store import SqlAlchemyStore

        if not isinstance(store, SqlAlchemyStore):
            raise TypeError(f"{type(store).__name__} keeps no handoff exports: use the SQL store")
        retry = SendRetryPolicy(max_attempts=settings.max_attempts)
        return cls(
            desk, HandoffStore(store, retry), settings, on_change=on_change, outbound_check=outbound_check
        )

    # ---- exports -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cxstack-handoff")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def flush(self, now: datetime | None = None) -> int:
        """Queues the escalations not exported yet, then tries every export due at `now`; returns how many
        tickets the help desk confirmed."""
        await asyncio.to_thread(self.store.enqueue, self.desk.kind, self.settings.queues, now)
        made = 0
        for export in await asyncio.to_thread(self.store.claim, BATCH, now):
            made += await self._export(export, now)
        await self._follow_ups(now or utcnow())
        return made

    async def _follow_ups(self, now: datetime) -> None:
        """What the customer wrote while the ticket is open goes onto the ticket, in order. At least once: a
        try whose answer is lost is tried again (a help desk without idempotent updates may show it twice)."""
        for export, packet in await asyncio.to_thread(self.store.open_tickets, BATCH):
            new = packet.followups[export.followups_sent :]
            waiting = self._followup_retry.get(export.id)
            if not new or export.ticket_id is None or (waiting is not None and waiting[1] > now):
                continue
            try:
                await self.desk.follow_up(Ticket(export.ticket_id, export.ticket_url), packet, new)
            except Exception as exc:
                failures = (waiting[0] if waiting else 0) + 1
                delay = self.store.retry.delay_after(failures)
                self._followup_retry[export.id] = (failures, now + delay)
                log.warning(
                    "could not add follow-ups to ticket %s (%s); again in %s", export.ticket_id, exc, delay
                )
                continue
            self._followup_retry.pop(export.id, None)
            await asyncio.to_thread(self.store.mark_followups, export.id, export.followups_sent + len(new))

    async def _export(self, export: Export, now: datetime | None) -> int:
        packet = await asyncio.to_thread(self.store.escalation, export.escalation_id)
        if packet is None:
            await self._failed(export, "the escalation is gone", permanent=True, now=now)
            return 0
        if packet.status != "open":  # a person here answered and handed it back before the help desk had it
            await self._failed(
                export, f"the escalation was {packet.status} before it was exported", permanent=True, now=now
            )
            return 0
        try:
            ticket = await self.desk.export(packet, export_id=export.id)
        except RetryLater as exc:
            await self._failed(export, str(exc), retry_after_s=exc.retry_after_s, now=now)
            return 0
        except ExportRefused as exc:
            await self._failed(export, str(exc), permanent=True, now=now)
            return 0
        except Exception as exc:  # the network, a timeout: try again later
            await self._failed(export, f"{type(exc).__name__}: {exc}", now=now)
            return 0
        await asyncio.to_thread(self.store.mark_exported, export.id, ticket.id, ticket.url, now)
        log.info("escalation %s exported to %s as ticket %s", export.escalation_id, self.desk.kind, ticket.id)
        return 1

    async def _failed(
        self,
        export: Export,
        error: str,
        *,
        permanent: bool = False,
        retry_after_s: float | None = None,
        now: datetime | None = None,
    ) -> None:
        marked = await asyncio.to_thread(
            self.store.mark_failed,
            export.id,
            error,
            permanent=permanent,
            retry_after_s=retry_after_s,
            now=now,
        )
        if marked.status == ExportStatus.DEAD:
            log.error(
                "handoff export %s of escalation %s is dead after %d tries: %s",
                export.id,
                export.escalation_id,
                marked.attempts,
                error,
            )
        else:
            log.warning(
                "handoff export %s failed (%s); next try at %s", export.id, error, marked.next_attempt_at
            )

    async def _run(self) -> None:
        await poll_until_stopped(
            self.flush, self._wake, self._poll_interval_s, lambda: self._stopping, "handoff flush"
        )

    # ---- the help desk's webhooks --------------------------------------------------------------------------

    async def _refused(self, event: HelpdeskEvent, conversation: str, refusal: str) -> None:
        log.warning("a %s reply for %s was not sent: %s", self.desk.kind, conversation, refusal)
        if event.ticket_id is None:
            return
        note = f"Not sent to the customer: {refusal}. Send it from cxstack's escalation desk instead."
        try:
            await self.desk.note(Ticket(event.ticket_id), note)
        except Exception as exc:
            log.warning("could not note the refusal on ticket %s: %s", event.ticket_id, exc)

    async def receive(self, body: bytes, headers: Mapping[str, str], now: datetime | None = None) -> Received:
        """Verifies (SignatureError), parses (PayloadError) and applies a webhook's events, each once.
        Raises UnknownTicketError for a ticket or conversation never handed to this help desk, or a ticket
        that names another conversation than the one it was made for (fails closed: nothing in the body
        chooses a conversation on its own)."""
        self.desk.verify(body, headers, now or utcnow())
        events = self.desk.parse(body, headers)
        targets: list[str] = []
        for event in events:
            if event.ticket_id is not None:
                found = await asyncio.to_thread(
                    self.store.conversation_for_ticket, self.desk.kind, event.ticket_id
                )
                if found is None or (event.conversation_id and event.conversation_id != found):
                    raise UnknownTicketError(f"unknown ticket {event.ticket_id}")
            else:
                found = event.conversation_id
                if not found or not await asyncio.to_thread(self.store.exported, self.desk.kind, found):
                    raise UnknownTicketError(f"no ticket for conversation {found}")
            targets.append(found)
        received = Received()
        for event, conversation in zip(events, targets, strict=True):
            reply = event.text if event.kind == EventKind.REPLY else None
            refusal = None
            if reply and self.outbound_check is not None:
                refusal = await asyncio.to_thread(self.outbound_check, conversation)
            outcome = await asyncio.to_thread(
                self.store.apply,
                self.desk.kind,
                event.key,
                conversation,
                reply=None if refusal else reply,
                author=event.author,
                hand_back=event.kind in (EventKind.SOLVED, EventKind.CLOSED),
            )
            if refusal and outcome != Applied.DUPLICATE:
                received.refused += 1
                await self._refused(event, conversation, refusal)
                continue
            if outcome == Applied.DUPLICATE:
                received.duplicates += 1
            elif outcome == Applied.NOTHING:
                received.ignored += 1
            else:
                received.applied += 1
                received.conversations.append(conversation)
                if self.on_change is not None:
                    self.on_change(ConversationId(conversation))
        return received
