"""Zendesk Support: tickets through the Ticketing API, agents' comments and status changes back through a
trigger's webhook.

Outbound: `POST {base}/api/v2/tickets.json`, basic auth `{email}/token:{api_token}`, the export id as the
`Idempotency-Key` header (Zendesk answers a replay with the ticket it made the first time, so a retry after a
lost answer never makes a second ticket). The packet goes in as a private comment (`public: false`: the
customer never sees it), the conversation id as the ticket's `external_id`.

Inbound: a webhook connected to a trigger, signed by Zendesk: `X-Zendesk-Webhook-Signature` is
base64(HMAC-SHA256(signing secret, timestamp + raw body)) with the timestamp from
`X-Zendesk-Webhook-Signature-Timestamp` (ISO 8601, refused when more than five minutes off). The body is the
trigger's JSON (README: "Help-desk handoff" has the body to paste):

    {"ticket_id": "{{ticket.id}}", "external_id": "{{ticket.external_id}}", "status": "{{ticket.status}}",
     "updated_at": "{{ticket.updated_at_with_timestamp}}", "requester_id": "{{ticket.requester.id}}",
     "comment": {"id": "{{ticket.latest_public_comment.id}}",
                 "body": "{{ticket.latest_public_comment.value}}",
                 "author_id": "{{ticket.latest_public_comment.author.id}}",
                 "author": "{{ticket.latest_public_comment.author.name}}"}}

A public comment whose author is not the requester is an agent's reply (keyed on the comment id, so it goes to
the customer once however often the trigger fires); status solved or closed hands the conversation back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from cxstack.domain.models import EscalationPacket, Priority
from cxstack.integrations.helpdesks.base import (
    SIGNATURE_TOLERANCE_S,
    EventKind,
    HelpdeskEvent,
    PayloadError,
    RetryLater,
    SignatureError,
    Ticket,
    classify,
    identifier,
    json_object,
    render_followups,
    render_text,
)

KIND = "zendesk"
PRIORITIES = {p: p.name.lower() for p in Priority}  # low, normal, high, urgent: Zendesk's four
SUBJECT_LIMIT = 150


@dataclass(frozen=True, slots=True)
class ZendeskSecrets:
    email: str
    api_token: str
    webhook_secret: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ZendeskSecrets | None:
        source = os.environ if env is None else env
        values = [
            source.get(f"CXSTACK_ZENDESK_{name}", "").strip()
            for name in ("EMAIL", "API_TOKEN", "WEBHOOK_SECRET")
        ]
        return cls(*values) if all(values) else None

    def __repr__(self) -> str:  # never print the token or the secret
        return f"ZendeskSecrets(email={self.email!r}, api_token=***, webhook_secret=***)"


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _parse_time(value: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def ticket_body(packet: EscalationPacket, tags: list[str]) -> dict[str, Any]:
    customer = packet.customer or {}
    subject = f"[{packet.queue}] {packet.summary}".strip()
    ticket: dict[str, Any] = {
        "subject": subject[: SUBJECT_LIMIT - 1] + "…" if len(subject) > SUBJECT_LIMIT else subject,
        "comment": {"body": render_text(packet), "public": False},
        "priority": PRIORITIES[packet.priority],
        # `cxstack` always: the README's trigger conditions tell exported tickets apart by it
        "tags": sorted({"cxstack", *tags, f"queue_{packet.queue}", f"reason_{packet.reason_code}".lower()}),
        "external_id": str(packet.conversation_id),
    }
    if customer.get("email"):
        ticket["requester"] = {"name": customer.get("name") or customer["email"], "email": customer["email"]}
    return {"ticket": ticket}


class Zendesk:
    kind = KIND

    def __init__(
        self,
        base_url: str,
        secrets: ZendeskSecrets,
        *,
        tags: list[str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secrets = secrets
        self.tags = list(tags or [])
        self._client = client

    async def export(self, packet: EscalationPacket, *, export_id: str) -> Ticket:
        auth = httpx.BasicAuth(f"{self.secrets.email}/token", self.secrets.api_token)
        client = self._client or httpx.AsyncClient(timeout=15.0)
        try:
            response = await client.post(
                f"{self.base_url}/api/v2/tickets.json",
                json=ticket_body(packet, self.tags),
                headers={"Idempotency-Key": export_id},
                auth=auth,
            )
        finally:
            if self._client is None:
                await client.aclose()
        classify(response, "Zendesk")
        try:
            ticket = response.json()["ticket"]
            return Ticket(str(ticket["id"]), ticket.get("url"))
        except (ValueError, KeyError, TypeError):
            raise RetryLater(f"Zendesk answered {response.status_code} without a ticket id") from None

    async def follow_up(self, ticket: Ticket, packet: EscalationPacket, lines: list[dict[str, Any]]) -> None:
        """`PUT /api/v2/tickets/{id}.json` with the messages as a private comment."""
        await self.note(ticket, render_followups(lines))

    async def note(self, ticket: Ticket, text: str) -> None:
        """`PUT /api/v2/tickets/{id}.json` with a private comment."""
        auth = httpx.BasicAuth(f"{self.secrets.email}/token", self.secrets.api_token)
        body = {"ticket": {"comment": {"body": text, "public": False}}}
        client = self._client or httpx.AsyncClient(timeout=15.0)
        try:
            response = await client.put(
                f"{self.base_url}/api/v2/tickets/{ticket.id}.json", json=body, auth=auth
            )
        finally:
            if self._client is None:
                await client.aclose()
        classify(response, "Zendesk")

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        signature = headers.get("x-zendesk-webhook-signature", "")
        timestamp = headers.get("x-zendesk-webhook-signature-timestamp", "")
        if not signature or not timestamp:
            raise SignatureError("missing X-Zendesk-Webhook-Signature or its timestamp")
        expected = signature_of(self.secrets.webhook_secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise SignatureError("wrong X-Zendesk-Webhook-Signature")
        signed_at = _parse_time(timestamp)
        if signed_at is None or abs((now - signed_at).total_seconds()) > SIGNATURE_TOLERANCE_S:
            raise SignatureError("X-Zendesk-Webhook-Signature-Timestamp is too old (or not a time)")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[HelpdeskEvent]:
        payload = json_object(body)
        ticket_id = identifier(payload, "ticket_id")
        status = str(payload.get("status") or "").strip().lower()
        # the ticket's external_id is the conversation we exported it for: one that disagrees is refused
        external_id = str(payload.get("external_id") or "").strip() or None
        events: list[HelpdeskEvent] = []
        comment = payload.get("comment")
        if comment is not None and not isinstance(comment, dict):
            raise PayloadError("comment", "expected an object")
        if comment and str(comment.get("id") or "").strip():
            comment_id = identifier(comment, "id", "comment.")
            text = str(comment.get("body") or "").strip()
            author_id = str(comment.get("author_id") or "").strip()
            requester = str(payload.get("requester_id") or "").strip()
            public = str(comment.get("public", "true")).strip().lower() not in ("false", "0")
            # the customer's own comments and private notes (our packet among them) are not replies
            if text and public and (not author_id or author_id != requester):
                events.append(
                    HelpdeskEvent(
                        key=f"comment:{comment_id}",
                        kind=EventKind.REPLY,
                        ticket_id=ticket_id,
                        conversation_id=external_id,
                        text=text,
                        author=str(comment.get("author") or "Zendesk agent").strip(),
                    )
                )
        if status in (EventKind.SOLVED, EventKind.CLOSED):
            # the same status reached again later (reopened, solved again) is a new event
            when = str(payload.get("updated_at") or hashlib.sha256(body).hexdigest())
            key = f"status:{ticket_id}:{status}:{when}"
            events.append(
                HelpdeskEvent(
                    key=key, kind=EventKind(status), ticket_id=ticket_id, conversation_id=external_id
                )
            )
        return events
