"""The help-desk port: export an escalation packet as a ticket; verify and read the help desk's webhooks.

Each implementation (zendesk.py, chatwoot.py, webhook.py) speaks one provider's wire format. What they share:
- `export` is idempotent on `export_id` (the help desk's idempotency key, or a check before creating), so a
  retry after a lost answer never makes a second ticket;
- a transient failure (429, 5xx, the network) raises `RetryLater`, with the wait the provider asked for;
  a refusal that retrying cannot fix raises `ExportRefused`; the queue (service.py) schedules and
  dead-letters;
- inbound, `verify` checks the signature on the raw body before anything is parsed (`SignatureError`), and
  `parse` turns the body into events (`PayloadError` names the field), each with a key that makes a
  redelivery a no-op.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from cxstack.domain.models import EscalationPacket


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    url: str | None = None


class EventKind(enum.StrEnum):
    REPLY = "reply"  # a person answered the customer (goes out on the conversation's channel)
    SOLVED = "solved"  # the help desk is done: the conversation goes back to the bot
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HelpdeskEvent:
    key: str  # unique per event for this help desk: a redelivery carries the same key
    kind: EventKind
    ticket_id: str | None = None  # the help desk's ticket (or conversation) the event is about
    conversation_id: str | None = None  # only the generic webhook names our conversation directly
    text: str = ""
    author: str = ""


class RetryLater(Exception):
    """A transient failure; `retry_after_s` is the wait the help desk asked for (429's Retry-After)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ExportRefused(Exception):
    """The help desk refused the export for a reason retrying cannot fix (a 4xx other than 409/429)."""


class SignatureError(Exception):
    """A webhook without a valid signature, or signed too long ago."""


class PayloadError(ValueError):
    """A webhook body that does not have the documented shape; `field` names where it breaks."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class HelpDesk(Protocol):
    kind: str

    async def export(self, packet: EscalationPacket, *, export_id: str) -> Ticket: ...

    async def follow_up(self, ticket: Ticket, packet: EscalationPacket, lines: list[dict[str, Any]]) -> None:
        """Adds the customer's messages written since the export (`lines`, the packet's follow-ups) to the
        ticket; raises as `export` does."""
        ...

    async def note(self, ticket: Ticket, text: str) -> None:
        """A private note on the ticket for the agents (never shown to the customer): what cxstack could not
        do with their last event, say; raises as `export` does."""
        ...

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None: ...

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[HelpdeskEvent]: ...


# A signature older (or further ahead) than this is refused: a captured request cannot be replayed later.
SIGNATURE_TOLERANCE_S = 300.0


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is rare on these APIs and read as unknown)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def classify(response: httpx.Response, provider: str) -> None:
    """Raises for a response that is not a success: RetryLater for 409/429/5xx, ExportRefused otherwise."""
    if response.is_success:
        return
    detail = response.text[:300]
    if response.status_code == 429:
        wait = retry_after(response)
        raise RetryLater(f"{provider} rate limit (429), retry after {wait}s: {detail}", wait)
    if response.status_code == 409 or response.status_code >= 500:
        raise RetryLater(f"{provider} answered {response.status_code}: {detail}")
    raise ExportRefused(f"{provider} refused the export (HTTP {response.status_code}): {detail}")


def json_object(body: bytes) -> dict[str, Any]:
    """A webhook body that must be one JSON object; PayloadError("body", …) otherwise."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PayloadError("body", "not JSON") from None
    if not isinstance(payload, dict):
        raise PayloadError("body", "expected a JSON object")
    return payload


def need(container: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(container, dict) or key not in container or container[key] is None:
        raise PayloadError(f"{where}{key}", "missing")
    value = container[key]
    if not isinstance(value, kind):
        raise PayloadError(f"{where}{key}", f"expected {getattr(kind, '__name__', 'a value')}")
    return value


def identifier(container: Any, key: str, where: str = "") -> str:
    """An id that a help desk sends as a number or a string (Zendesk placeholders render as strings)."""
    value = need(container, key, where, (str, int))
    text = str(value).strip()
    if not text or isinstance(value, bool):
        raise PayloadError(f"{where}{key}", "empty")
    return text


def render_followups(lines: list[dict[str, Any]]) -> str:
    said = "\n".join(f"> {line.get('text', '')}" for line in lines)
    return f"The customer wrote again while waiting:\n{said}"


def render_text(packet: EscalationPacket) -> str:
    """The packet as a person reads it in a ticket: summary, customer, facts, actions, transcript."""
    lines = [
        packet.summary,
        "",
        f"Queue: {packet.queue} · priority: {packet.priority.name.lower()} · reason: {packet.reason_code}",
        f"Conversation: {packet.conversation_id}",
    ]
    if packet.intent:
        confidence = f" ({packet.intent_confidence:.2f})" if packet.intent_confidence is not None else ""
        lines.append(f"Intent: {packet.intent}{confidence}")
    if packet.fired_rules:
        lines.append(f"Rules: {', '.join(packet.fired_rules)}")
    if packet.customer:
        lines += ["", "Customer:"]
        lines += [f"- {key}: {value}" for key, value in packet.customer.items() if value not in ("", None)]
    if packet.facts_used:
        lines += ["", "Facts used:"]
        lines += [f"- {fact.fact_id}: {fact.text}" for fact in packet.facts_used]
    if packet.actions_tried:
        lines += ["", "Actions tried:"]
        for action in packet.actions_tried:
            outcome = "ok" if action.ok else f"failed ({action.error or action.status_code})"
            lines.append(f"- {action.action}: {outcome}")
    if packet.draft_reply:
        lines += ["", f"Draft reply (not sent): {packet.draft_reply}"]
    lines += ["", "Transcript:"]
    for line in [*packet.transcript, *packet.followups]:
        lines.append(f"{line.get('role', 'customer')}: {line.get('text', '')}")
    return "\n".join(lines)
