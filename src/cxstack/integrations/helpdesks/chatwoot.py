"""Chatwoot: conversations through the Application API, agents' replies and status changes back through an
account webhook.

Outbound (header `api_access_token`): the customer as a contact of the configured API-channel inbox
(`identifier` = our conversation id, found again by `GET .../contacts/search` before creating), then
`POST /api/v1/accounts/{account_id}/conversations` with `source_id`, `inbox_id`, `contact_id` and the export
id in `custom_attributes.cxstack_export` (Chatwoot has no idempotency key: a retry first looks for the
contact's conversation carrying that export id), then the packet as a private note.

Inbound: Chatwoot signs webhooks (`X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret,
"<X-Chatwoot-Timestamp>.<raw body>")>`, the secret shown once when the webhook is created); a timestamp more
than five minutes off is refused. `message_created` with `message_type: "outgoing"` and `private: false` is a
person's reply (keyed on the message id); `conversation_status_changed` to resolved, or
`conversation_resolved`, hands the conversation back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from cxstack.domain.models import EscalationPacket
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
    render_text,
)

KIND = "chatwoot"


@dataclass(frozen=True, slots=True)
class ChatwootSecrets:
    api_token: str
    webhook_secret: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChatwootSecrets | None:
        source = os.environ if env is None else env
        values = [
            source.get(f"CXSTACK_CHATWOOT_{name}", "").strip() for name in ("API_TOKEN", "WEBHOOK_SECRET")
        ]
        return cls(*values) if all(values) else None

    def __repr__(self) -> str:
        return "ChatwootSecrets(api_token=***, webhook_secret=***)"


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class Chatwoot:
    kind = KIND

    def __init__(
        self,
        base_url: str,
        secrets: ChatwootSecrets,
        *,
        account_id: int,
        inbox_id: int,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secrets = secrets
        self.account_id = account_id
        self.inbox_id = inbox_id
        self._client = client

    def _url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/accounts/{self.account_id}{path}"

    async def export(self, packet: EscalationPacket, *, export_id: str) -> Ticket:
        client = self._client or httpx.AsyncClient(timeout=15.0)
        client.headers["api_access_token"] = self.secrets.api_token
        try:
            return await self._export(client, packet, export_id)
        finally:
            if self._client is None:
                await client.aclose()

    async def _export(self, client: httpx.AsyncClient, packet: EscalationPacket, export_id: str) -> Ticket:
        key = str(packet.conversation_id)
        found = await client.get(self._url("/contacts/search"), params={"q": key})
        classify(found, "Chatwoot")
        contacts = [c for c in _payload_list(found) if c.get("identifier") == key]
        if contacts:
            contact_id = int(contacts[0]["id"])
            listed = await client.get(self._url(f"/contacts/{contact_id}/conversations"))
            classify(listed, "Chatwoot")
            for conversation in _payload_list(listed):
                if (conversation.get("custom_attributes") or {}).get("cxstack_export") == export_id:
                    # made by an earlier try whose answer was lost: the note may be missing too
                    return await self._noted(client, int(conversation["id"]), packet, export_id)
            source_id = key
        else:
            customer = packet.customer or {}
            body: dict[str, Any] = {
                "inbox_id": self.inbox_id,
                "name": customer.get("name") or key,
                "identifier": key,
            }
            if customer.get("email"):
                body["email"] = customer["email"]
            created = await client.post(self._url("/contacts"), json=body)
            classify(created, "Chatwoot")
            contact, source_id = _contact_of(created.json(), key)
            contact_id = int(contact["id"])
        opened = await client.post(
            self._url("/conversations"),
            json={
                "source_id": source_id,
                "inbox_id": self.inbox_id,
                "contact_id": contact_id,
                "status": "open",
                "custom_attributes": {"cxstack_export": export_id, "cxstack_conversation": key},
            },
        )
        classify(opened, "Chatwoot")
        try:
            conversation_id = int(opened.json()["id"])
        except (ValueError, KeyError, TypeError):
            raise RetryLater("Chatwoot created a conversation without an id") from None
        return await self._noted(client, conversation_id, packet, export_id, fresh=True)

    async def _noted(
        self,
        client: httpx.AsyncClient,
        conversation_id: int,
        packet: EscalationPacket,
        export_id: str,
        *,
        fresh: bool = False,
    ) -> Ticket:
        """The packet as a private note on the conversation, once (its last line names the export)."""
        marker = f"cxstack export {export_id}"
        path = f"/conversations/{conversation_id}/messages"
        if not fresh:
            listed = await client.get(self._url(path))
            classify(listed, "Chatwoot")
            if any(marker in str(m.get("content") or "") for m in _payload_list(listed)):
                return self._ticket(conversation_id)
        note = await client.post(
            self._url(path),
            json={
                "content": f"{render_text(packet)}\n\n{marker}",
                "message_type": "outgoing",
                "private": True,
            },
        )
        classify(note, "Chatwoot")
        return self._ticket(conversation_id)

    def _ticket(self, conversation_id: int) -> Ticket:
        url = f"{self.base_url}/app/accounts/{self.account_id}/conversations/{conversation_id}"
        return Ticket(str(conversation_id), url)

    async def follow_up(self, ticket: Ticket, packet: EscalationPacket, lines: list[dict[str, Any]]) -> None:
        """Each message as the contact's own (incoming) message on the conversation, as the agent expects."""
        client = self._client or httpx.AsyncClient(timeout=15.0)
        client.headers["api_access_token"] = self.secrets.api_token
        try:
            for line in lines:
                response = await client.post(
                    self._url(f"/conversations/{ticket.id}/messages"),
                    json={
                        "content": str(line.get("text") or ""),
                        "message_type": "incoming",
                        "private": False,
                    },
                )
                classify(response, "Chatwoot")
        finally:
            if self._client is None:
                await client.aclose()

    async def note(self, ticket: Ticket, text: str) -> None:
        """A private note on the conversation (agents see it; its webhook is ignored as private)."""
        client = self._client or httpx.AsyncClient(timeout=15.0)
        client.headers["api_access_token"] = self.secrets.api_token
        try:
            response = await client.post(
                self._url(f"/conversations/{ticket.id}/messages"),
                json={"content": text, "message_type": "outgoing", "private": True},
            )
            classify(response, "Chatwoot")
        finally:
            if self._client is None:
                await client.aclose()

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        signature = headers.get("x-chatwoot-signature", "")
        timestamp = headers.get("x-chatwoot-timestamp", "")
        if not signature or not timestamp:
            raise SignatureError("missing X-Chatwoot-Signature or X-Chatwoot-Timestamp")
        expected = signature_of(self.secrets.webhook_secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise SignatureError("wrong X-Chatwoot-Signature")
        # ASCII digits only, and few: int() raised on "²" and on 5000 digits (tests/test_fuzz_parsers.py)
        digits = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
        if not digits or abs(now.timestamp() - int(timestamp)) > SIGNATURE_TOLERANCE_S:
            raise SignatureError("X-Chatwoot-Timestamp is too old (or not a time)")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[HelpdeskEvent]:
        payload = json_object(body)
        event = payload.get("event")
        if not isinstance(event, str):
            raise PayloadError("event", "missing")
        if event == "message_created":
            conversation = payload.get("conversation")
            if not isinstance(conversation, dict):
                raise PayloadError("conversation", "missing")
            ticket = identifier(conversation, "id", "conversation.")
            if payload.get("message_type") != "outgoing" or payload.get("private") is not False:
                return []  # the customer's own messages, private notes (our packet among them)
            text = str(payload.get("content") or "").strip()
            if not text:
                return []
            sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else {}
            return [
                HelpdeskEvent(
                    key=f"message:{identifier(payload, 'id')}",
                    kind=EventKind.REPLY,
                    ticket_id=ticket,
                    text=text,
                    author=str((sender or {}).get("name") or "Chatwoot agent"),
                )
            ]
        if event in ("conversation_status_changed", "conversation_resolved"):
            ticket = identifier(payload, "id")
            if event == "conversation_status_changed" and payload.get("status") != "resolved":
                return []
            stamp = str(payload.get("updated_at") or hashlib.sha256(body).hexdigest())
            return [HelpdeskEvent(key=f"resolved:{ticket}:{stamp}", kind=EventKind.SOLVED, ticket_id=ticket)]
        return []


def _payload_list(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        data = response.json()
    except ValueError:
        return []
    items = data.get("payload") if isinstance(data, dict) else data
    return [item for item in items or [] if isinstance(item, dict)] if isinstance(items, list) else []


def _contact_of(data: Any, fallback_source: str) -> tuple[dict[str, Any], str]:
    payload = data.get("payload", data) if isinstance(data, dict) else {}
    contact = payload.get("contact", payload) if isinstance(payload, dict) else {}
    if not isinstance(contact, dict) or "id" not in contact:
        raise RetryLater("Chatwoot created a contact without an id")
    inbox = payload.get("contact_inbox") if isinstance(payload, dict) else None
    source = (inbox or {}).get("source_id") if isinstance(inbox, dict) else None
    if not source:
        for link in contact.get("contact_inboxes") or []:
            if isinstance(link, dict) and link.get("source_id"):
                source = link["source_id"]
                break
    return contact, str(source or fallback_source)
