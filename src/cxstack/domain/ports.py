"""The persistence port. Adapters: store/sqlalchemy_store.py (SQLite, PostgreSQL), testing/memory_store.py."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from cxstack.domain.auth import ApiKey
from cxstack.domain.conversation_state import StatusChange, Transition
from cxstack.domain.llm import IntentUsage
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    Customer,
    CustomerId,
    EscalationId,
    EscalationPacket,
    FactVersion,
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
class WorkspaceVersionInfo:
    """A stored workspace version without its content (listing many is cheap)."""

    id: WorkspaceVersionId
    name: str
    created_at: datetime


class FactVersionConflictError(Exception):
    """The version number is taken: someone else changed the fact first. `latest` is the newer version."""

    def __init__(self, fact_id: str, latest: FactVersion | None) -> None:
        self.fact_id = fact_id
        self.latest = latest
        newer = (
            f"version {latest.number} by {latest.author} at {latest.created_at:%Y-%m-%d %H:%M:%S} UTC"
            if latest is not None
            else "a newer version"
        )
        super().__init__(f"fact {fact_id} was changed meanwhile: {newer}")


# ---- outbox ----------------------------------------------------------------------------------------------


class OutboxStatus(StrEnum):
    PENDING = "pending"  # in the send queue; sent when `next_attempt_at` is due
    SENT = "sent"  # the channel confirmed it
    DEAD = "dead"  # failed `max_attempts` times: out of the queue, listed for a person to requeue


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: str
    conversation_id: ConversationId
    message_id: str
    channel: str
    text: str
    attempts: int  # failed sends so far
    status: OutboxStatus
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None = None
    # What the channel's provider says happened to it (WhatsApp: its message id, then sent → delivered → read,
    # or failed), applied in order whatever order the callbacks arrive in.
    provider_message_id: str | None = None
    delivery_status: str | None = None
    delivery_error: str | None = None
    # Structured content the channel sends where it can (`text` is what the transcript shows):
    # {"template": {"name", "language", "parameters"}} or {"choices": [...]} for a clarifying question.
    content: dict[str, Any] | None = None


DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}


def delivery_moves(current: str | None, new: str) -> bool:
    """Whether a provider's status report moves a reply on: never back (a late "sent" after "read"), and a
    failure only if the reply was not read."""
    if new not in DELIVERY_RANK:
        return False
    if current is None:
        return True
    if new == "failed":
        return current not in ("read", "failed")
    return current != "failed" and DELIVERY_RANK[new] > DELIVERY_RANK.get(current, 0)


@dataclass(frozen=True, slots=True)
class EmailRecord:
    """One mail of an email conversation, under its Message-ID (without angle brackets): the threading index
    (In-Reply-To / References name these ids) and, for inbound mail, who wrote it and the full text."""

    message_id: str
    conversation_id: ConversationId
    direction: str  # "in" (the customer's) | "out" (ours, Message-ID derived from the outbox id)
    address: str  # the customer's address, lower case
    verified: bool = False  # inbound: the provider's SPF/DKIM verdict, aligned with the From domain
    subject: str = ""
    outbox_id: str | None = None
    full_text: str = ""  # inbound: the body as it came, quoted history and signature included
    created_at: datetime | None = None  # set by the store


class PermanentSendError(Exception):
    """A send that will never succeed as it is (outside WhatsApp's 24-hour window, an invalid recipient): the
    item goes dead at once with this reason, instead of being retried."""


@dataclass(frozen=True, slots=True)
class SendRetryPolicy:
    """How a store schedules a failed send: the one place that says how often and how long a reply is tried.

    After failure n (1, 2, …) the next attempt waits `first_delay_s * 2**(n-1)`, capped at `max_delay_s`,
    of which a random part (`jitter`, 0..1) is drawn afresh, so that items failing together do not all come
    due again at the same instant. After `max_attempts` failures the item is dead. The defaults wait
    2 s, 4 s, … up to 15 minutes between attempts and give up after 12 attempts, 24 to 47 minutes after the
    first: long enough to ride out a provider's outage, short enough that a person still sees it the same day.
    """

    max_attempts: int = 12
    first_delay_s: float = 2.0
    max_delay_s: float = 900.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("need 0 <= first_delay_s <= max_delay_s")

    def delay_after(self, failures: int, rng: random.Random | None = None) -> timedelta:
        """The wait before the next attempt once an item has failed `failures` times."""
        exponent = min(max(failures, 1) - 1, 60)  # 2**60 seconds is past any cap
        ceiling = min(self.max_delay_s, self.first_delay_s * 2.0**exponent)
        draw = (rng or random).random()
        return timedelta(seconds=ceiling * (1 - self.jitter * draw))

    def is_exhausted(self, failures: int) -> bool:
        return failures >= self.max_attempts


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
    # Structured content of the reply (the choices of a clarifying question), queued with it in the outbox.
    reply_content: dict[str, Any] | None = None

    @property
    def answered(self) -> tuple[str, ...]:
        return self.message_ids or (self.message_id,)


class CustomerDirectory(Protocol):
    def get_customer(self, customer_id: CustomerId) -> Customer | None: ...


class Store(Protocol):
    send_retry: SendRetryPolicy  # the outbox's one retry schedule and attempt limit

    # workspace versions
    def save_workspace_version(
        self, version: WorkspaceVersionId, name: str, content: dict[str, Any]
    ) -> bool: ...
    def get_workspace_version(self, version: WorkspaceVersionId) -> dict[str, Any] | None: ...
    def list_workspace_versions(self, limit: int | None = 20) -> list[WorkspaceVersionInfo]:
        """Newest first (None: all of them)."""
        ...

    # customers
    def upsert_customers(self, customers: Sequence[Customer]) -> int: ...
    def get_customer(self, customer_id: CustomerId) -> Customer | None: ...
    def list_customers(self, query: str | None = None, limit: int = 100) -> list[Customer]: ...
    def customers_with_phone(self, phone: str) -> list[Customer]:
        """Profiles whose `phone` attribute is `phone` (E.164, "+" and digits), as the integration stored
        them; a channel that vouches for a number links it to a profile only when exactly one matches."""
        ...

    def customers_with_email(self, address: str) -> list[Customer]:
        """Profiles whose `email` is `address`, ignoring case (at most 3: a verified sender links to a profile
        only when exactly one matches)."""
        ...

    # inbound: append the message and mark it pending in ONE transaction; a duplicate is a no-op
    def ingest(self, inbound: InboundMessage) -> IngestResult: ...
    # several at once, in one transaction where the store can; an exception in place of each one that failed
    def ingest_many(self, inbounds: Sequence[InboundMessage]) -> list[IngestResult | Exception]: ...
    def get_conversation(self, conversation_id: ConversationId) -> Conversation | None: ...
    def list_conversations(self, limit: int = 50) -> list[Conversation]: ...
    def conversations_started_between(
        self, since: datetime, until: datetime | None = None, limit: int | None = None
    ) -> list[Conversation]:
        """Conversations created in [since, until), oldest first (recorded traffic to replay)."""
        ...

    def list_messages(self, conversation_id: ConversationId) -> list[Message]: ...
    # conversations with unprocessed messages that are due (not waiting out a failure backoff)
    def conversations_with_pending(self) -> list[ConversationId]: ...
    def pending_messages(self, conversation_id: ConversationId) -> list[Message]: ...

    # one worker at a time per conversation: a lease that expires if its holder dies
    def claim_conversation(self, conversation_id: ConversationId, owner: str, ttl_seconds: float) -> bool: ...
    def release_conversation(self, conversation_id: ConversationId, owner: str) -> None: ...
    # the conversations whose lease `owner` holds (after a worker died: the turns it was running)
    def conversations_leased_to(self, owner: str) -> list[ConversationId]: ...
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
    def usage_by_intent(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[IntentUsage]:
        """Turns, outcomes, model calls, tokens and cost per intent for traces created in [since, until),
        summed by the store (an indexed query, not a scan of every trace); most turns first."""
        ...

    # outbox: replies wait here until their channel confirms them. The store owns the retry schedule
    # (`SendRetryPolicy`): a failure moves `next_attempt_at` back, the last allowed one makes the item dead.
    def pending_outbox(self, limit: int = 100, now: datetime | None = None) -> list[OutboxItem]:
        """Pending items due at `now` (default: the current time), the earliest due first."""
        ...

    def mark_sent(self, outbox_id: str, provider_message_id: str | None = None) -> None: ...
    def mark_send_failed(
        self, outbox_id: str, error: str, now: datetime | None = None, *, permanent: bool = False
    ) -> OutboxItem:
        """Counts a failed attempt and schedules the next one, or marks the item dead (at once when
        `permanent`); returns it updated. An item already sent stays sent."""
        ...

    def apply_delivery_status(
        self, channel: str, provider_message_id: str, status: str, error: str | None = None
    ) -> OutboxItem | None:
        """A provider's report on a sent reply, applied only if it moves the reply on (`delivery_moves`);
        the item (None if no reply has that provider id)."""
        ...

    def list_outbox(self, status: OutboxStatus, limit: int = 100) -> list[OutboxItem]:
        """Items with `status`, oldest first."""
        ...

    def count_outbox(self, status: OutboxStatus) -> int: ...
    def outbox_for(self, conversation_id: ConversationId) -> list[OutboxItem]:
        """Every reply of the conversation with its send and delivery state, oldest first."""
        ...

    def escalate_undelivered(self, outbox_id: str, *, queue: str) -> EscalationPacket | None:
        """A reply that will never reach the customer (dead, or reported failed by the provider): when the bot
        owns the conversation, a packet for `queue` (reason `undelivered`) and the conversation waits for a
        person, in one transaction; None when a person already has it, it is closed, or the item arrived.
        Raises KeyError for an unknown item."""
        ...

    def requeue_outbox(self, outbox_id: str, now: datetime | None = None) -> OutboxItem:
        """A dead (or pending) item back in the queue, due now, with a fresh count of attempts.
        Raises KeyError if unknown, ValueError if already sent."""
        ...

    # email threading: Message-ID → conversation (channels/email.py)
    def add_email(self, record: EmailRecord) -> bool:
        """Stores the record; False (and nothing changed) if its Message-ID is already stored."""
        ...

    def email_for(self, message_ids: Sequence[str]) -> EmailRecord | None:
        """The stored record of the first of `message_ids` that is stored (None if none is)."""
        ...

    def email_thread(self, conversation_id: ConversationId) -> list[EmailRecord]:
        """The conversation's mails, oldest first."""
        ...

    # escalations and humans
    def list_escalations(
        self, queue: str | None = None, status: str | None = "open"
    ) -> list[EscalationPacket]: ...
    def get_escalation(self, escalation_id: EscalationId) -> EscalationPacket | None: ...
    def add_human_reply(
        self,
        conversation_id: ConversationId,
        text: str,
        author: str,
        hand_back: bool,
        *,
        content: dict[str, Any] | None = None,
    ) -> Message: ...

    # API keys: the secret is never stored, only its hash; a revoked key stays listed with its revoke time
    def add_api_key(self, key: ApiKey) -> None: ...  # ValueError if the id is taken
    def get_api_key(self, key_id: str) -> ApiKey | None: ...
    def list_api_keys(self) -> list[ApiKey]: ...  # oldest first
    def revoke_api_key(self, key_id: str, revoked_at: datetime) -> ApiKey: ...  # KeyError if unknown

    # knowledge fact versions: immutable; a version's number is the fact's previous number + 1, and a taken
    # number raises FactVersionConflictError (optimistic locking: the second of two concurrent edits loses)
    def add_fact_version(self, version: FactVersion) -> None: ...
    def fact_versions(self, fact_id: str) -> list[FactVersion]: ...  # oldest first
    def latest_fact_versions(self) -> dict[str, FactVersion]: ...  # every fact's newest version
