"""A generic signed webhook: the packet as JSON to a URL of yours, and your events back.

Both directions carry `X-Cxstack-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`
with the secret from CXSTACK_HANDOFF_WEBHOOK_SECRET; a signature more than five minutes off is refused.

Outbound: `POST <base_url>` with `{"id": <export id>, "type": "escalation", "packet": {...}}` and the header
`Idempotency-Key: <export id>`; a 2xx answer may name the ticket (`{"ticket": "T-1"}` or `{"id": ...}`),
else the export id is the ticket. Inbound (`POST /webhooks/handoff/generic`):
`{"id": "<event id>", "conversation_id" or "ticket": "...", "type": "reply"|"solved"|"closed",
"text", "author"}`;
without an id the body's hash is the event's key, so a redelivery is applied once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

import httpx

from cxstack.domain.models import EscalationPacket
from cxstack.integrations.helpdesks.base import (
    SIGNATURE_TOLERANCE_S,
    EventKind,
    HelpdeskEvent,
    PayloadError,
    SignatureError,
    Ticket,
    classify,
    json_object,
    render_followups,
    render_text,
)

KIND = "webhook"
HEADER = "X-Cxstack-Signature"


def secret_from_env(env: Mapping[str, str] | None = None) -> str | None:
    source = os.environ if env is None else env
    return source.get("CXSTACK_HANDOFF_WEBHOOK_SECRET", "").strip() or None


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def check(secret: str, body: bytes, header: str | None, now: datetime) -> None:
    if not header:
        raise SignatureError(f"missing {HEADER}")
    parts = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    # ASCII digits only, and few: int() raised on "²" and on 5000 digits (found by tests/test_fuzz_parsers.py)
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not given:
        raise SignatureError(f"{HEADER} must be t=<unix seconds>,v1=<hex>")
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureError(f"wrong {HEADER}")
    if abs(now.timestamp() - int(stamp)) > SIGNATURE_TOLERANCE_S:
        raise SignatureError(f"{HEADER} is too old")


class SignedWebhook:
    kind = KIND

    def __init__(self, url: str, secret: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.secret = secret
        self._client = client

    async def export(self, packet: EscalationPacket, *, export_id: str) -> Ticket:
        document: dict[str, Any] = {
            "id": export_id,
            "type": "escalation",
            "packet": {**asdict(packet), "priority": packet.priority.name.lower()},
            "text": render_text(packet),
        }
        response = await self._post(document, export_id)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            named = answer.get("ticket") or answer.get("id")
            if isinstance(named, (str, int)) and str(named).strip():
                return Ticket(str(named), answer.get("url") if isinstance(answer.get("url"), str) else None)
        return Ticket(export_id)

    async def follow_up(self, ticket: Ticket, packet: EscalationPacket, lines: list[dict[str, Any]]) -> None:
        key = f"{ticket.id}:followups:{lines[0].get('message_id', '')}" if lines else ticket.id
        document = {
            "id": key,
            "type": "followup",
            "ticket": ticket.id,
            "conversation_id": str(packet.conversation_id),
            "messages": lines,
            "text": render_followups(lines),
        }
        await self._post(document, key)

    async def note(self, ticket: Ticket, text: str) -> None:
        key = f"{ticket.id}:note:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        await self._post({"id": key, "type": "note", "ticket": ticket.id, "text": text}, key)

    async def _post(self, document: dict[str, Any], key: str) -> httpx.Response:
        body = json.dumps(document, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            HEADER: sign(self.secret, body),
        }
        client = self._client or httpx.AsyncClient(timeout=15.0)
        try:
            response = await client.post(self.url, content=body, headers=headers)
        finally:
            if self._client is None:
                await client.aclose()
        classify(response, "The handoff webhook")
        return response

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        check(self.secret, body, headers.get(HEADER.lower()), now)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[HelpdeskEvent]:
        payload = json_object(body)
        kind = payload.get("type")
        if not isinstance(kind, str) or kind not in {k.value for k in EventKind}:
            raise PayloadError("type", "expected reply, solved or closed")
        conversation = payload.get("conversation_id")
        ticket = payload.get("ticket")
        if not isinstance(conversation, str | None) or not isinstance(ticket, str | int | None):
            raise PayloadError("conversation_id", "expected a string")
        if not conversation and ticket in (None, ""):
            raise PayloadError("conversation_id", "missing (or give ticket)")
        text = payload.get("text") or ""
        if not isinstance(text, str):
            raise PayloadError("text", "expected a string")
        if kind == EventKind.REPLY and not text.strip():
            raise PayloadError("text", "missing: a reply needs text")
        author = payload.get("author") or "help desk"
        if not isinstance(author, str):
            raise PayloadError("author", "expected a string")
        given = payload.get("id")
        key = str(given) if isinstance(given, (str, int)) and str(given) else hashlib.sha256(body).hexdigest()
        return [
            HelpdeskEvent(
                key=f"event:{key}",
                kind=EventKind(kind),
                ticket_id=None if ticket in (None, "") else str(ticket),
                conversation_id=conversation or None,
                text=text.strip(),
                author=author.strip(),
            )
        ]
