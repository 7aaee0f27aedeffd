"""WhatsApp Cloud API: the webhook's contract (verification, signatures, payloads) and the outbound sender.

Inbound (`/webhooks/whatsapp`, api/webhooks.py):
- GET with `hub.mode=subscribe` and the configured `hub.verify_token` answers `hub.challenge`; else 403.
- POST is verified before it is parsed: `X-Hub-Signature-256` must be `sha256=` + HMAC-SHA256(app secret, raw
  body), compared in constant time; missing or wrong → 401 and nothing stored.
- The payload's `metadata.phone_number_id` must be this deployment's number (else 404, logged): one app may
  serve several numbers, and a delivery for another is not ours to store.
- A yes/no question (a confirmation, "… (yes/no)") goes out as two reply buttons; a tap comes back as text.
- Each message is stored under its `wamid` as the idempotency key (Meta delivers at least once), so a
  redelivered webhook is a no-op; text, button and list replies become text, media a placeholder with its id.
- The sender's number is the conversation (`wa:<number>`) and its customer; WhatsApp vouches for the number,
  not for anything the message says.
- Status callbacks (sent, delivered, read, failed) update the reply they name, in order whatever order they
  arrive in (`Store.apply_delivery_status`).

Outbound (`WhatsAppChannel`, through the outbox like every channel): free text only inside the 24-hour
customer-service window, which opens with the customer's last message; outside it the send fails permanently
with an error naming the window (WhatsApp would refuse it, or accept it and never deliver it), never a silent
drop. Graph API errors: 429, 5xx and throttling codes are retried by the outbox; invalid recipients and
re-engagement refusals (131047) are permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from cxstack.channels import gate
from cxstack.domain.ports import OutboxItem, PermanentSendError
from cxstack.workspace.models import WhatsAppConfig

log = logging.getLogger(__name__)

CHANNEL = "whatsapp"
CONVERSATION_PREFIX = "wa:"
DEFAULT_API_BASE = "https://graph.facebook.com/v21.0"
# Graph API error codes that retrying the same request cannot fix.
PERMANENT_CODES = {
    131047: "outside the 24-hour customer-service window (re-engagement): only a template may be sent",
    131026: "the recipient cannot receive this message (not on WhatsApp, or an old app version)",
    131051: "message type not supported",
    100: "invalid parameter",
    190: "the access token expired or is invalid",
}
RETRYABLE_CODES = {4, 80007, 130429, 131048, 131056, 131000, 131016}


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    verify_token: str
    app_secret: str
    access_token: str
    phone_number_id: str
    api_base: str = DEFAULT_API_BASE

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WhatsAppSettings | None:
        """From CXSTACK_WHATSAPP_*; None when any of the four required variables is missing."""
        source = os.environ if env is None else env
        values = {
            name: source.get(f"CXSTACK_WHATSAPP_{name.upper()}", "").strip()
            for name in ("verify_token", "app_secret", "access_token", "phone_number_id")
        }
        if not all(values.values()):
            return None
        base = source.get("CXSTACK_WHATSAPP_API_BASE", "").strip() or DEFAULT_API_BASE
        return cls(**values, api_base=base.rstrip("/"))


def signature_of(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """`header` is `X-Hub-Signature-256`; compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(signature_of(app_secret, body), header.strip())


class PayloadError(ValueError):
    """A webhook body that does not have the shape Meta documents; `field` names where it breaks."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class InboundMessage:
    wamid: str
    sender: str  # the customer's WhatsApp number (wa_id), digits only
    text: str
    received_at: datetime
    kind: str  # text | button | interactive | image | … (what WhatsApp said it was)
    profile_name: str | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    wamid: str
    status: str  # sent | delivered | read | failed
    recipient: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    phone_number_ids: set[str] = field(default_factory=set)
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusReport] = field(default_factory=list)


def _need(container: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(container, dict) or key not in container:
        raise PayloadError(f"{where}.{key}", "missing")
    value = container[key]
    if not isinstance(value, kind):
        raise PayloadError(f"{where}.{key}", f"expected {getattr(kind, '__name__', kind)}")
    return value


def _optional_list(container: dict[str, Any], key: str, where: str) -> list[Any]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where}.{key}", "expected list")
    return value


def _profile_name(contact: dict[str, Any]) -> str | None:
    profile = contact.get("profile")
    name = profile.get("name") if isinstance(profile, dict) else None
    return name if isinstance(name, str) else None


def _text_of(message: dict[str, Any], where: str) -> str:
    kind = message.get("type")
    if kind == "text":
        return str(_need(_need(message, "text", where, dict), "body", f"{where}.text"))
    if kind == "button":  # a template's quick-reply button
        return str(_need(_need(message, "button", where, dict), "text", f"{where}.button"))
    if kind == "interactive":
        interactive = _need(message, "interactive", where, dict)
        reply = interactive.get("button_reply") or interactive.get("list_reply")
        if not isinstance(reply, dict):
            raise PayloadError(f"{where}.interactive", "expected button_reply or list_reply")
        title = str(_need(reply, "title", f"{where}.interactive"))
        # Our list rows carry the whole choice in the description when the title had to be shortened.
        description = reply.get("description")
        if title.endswith("…") and isinstance(description, str) and description:
            return description
        return title
    if kind in ("image", "audio", "video", "document", "sticker"):
        media: dict[str, Any] = message[kind] if isinstance(message.get(kind), dict) else {}
        caption = f" caption: {media['caption']}" if media.get("caption") else ""
        return f"[{kind} id={media.get('id', '?')}{caption}]"
    if kind == "location":
        place: dict[str, Any] = message["location"] if isinstance(message.get("location"), dict) else {}
        where_on_earth = f"{place.get('latitude', '?')},{place.get('longitude', '?')} {place.get('name', '')}"
        return f"[location {where_on_earth.strip()}]"
    return f"[{kind or 'unknown'} message]"


def parse(payload: Any) -> Delivery:
    """The messages and status reports of a webhook body (`object: whatsapp_business_account`)."""
    if not isinstance(payload, dict):
        raise PayloadError("body", "expected a JSON object")
    if payload.get("object") != "whatsapp_business_account":
        raise PayloadError("object", "expected 'whatsapp_business_account'")
    delivery = Delivery()
    for e, entry in enumerate(_need(payload, "entry", "body", list)):
        for c, change in enumerate(_need(entry, "changes", f"entry[{e}]", list)):
            where = f"entry[{e}].changes[{c}].value"
            value = _need(change, "value", f"entry[{e}].changes[{c}]", dict)
            metadata = _need(value, "metadata", where, dict)
            delivery.phone_number_ids.add(str(_need(metadata, "phone_number_id", f"{where}.metadata")))
            names = {
                str(contact.get("wa_id")): _profile_name(contact)
                for contact in _optional_list(value, "contacts", where)
                if isinstance(contact, dict)
            }
            for m, message in enumerate(_optional_list(value, "messages", where)):
                at = f"{where}.messages[{m}]"
                sender = str(_need(message, "from", at))
                if not (sender.isascii() and sender.isdigit()):
                    raise PayloadError(f"{at}.from", "expected a phone number in digits")
                stamp = _need(message, "timestamp", at, (str, int))
                try:
                    received = datetime.fromtimestamp(int(stamp), UTC)
                except (ValueError, OverflowError, OSError):
                    raise PayloadError(f"{at}.timestamp", "expected seconds since the epoch") from None
                delivery.messages.append(
                    InboundMessage(
                        wamid=str(_need(message, "id", at)),
                        sender=sender,
                        text=_text_of(message, at),
                        received_at=received,
                        kind=str(message.get("type")),
                        profile_name=names.get(sender),
                    )
                )
            for s, status in enumerate(_optional_list(value, "statuses", where)):
                at = f"{where}.statuses[{s}]"
                errors = status.get("errors") if isinstance(status, dict) else None
                error = None
                if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                    first = errors[0]
                    title = first.get("title") or first.get("message") or ""
                    error = f"{first.get('code', '?')}: {title}".strip()
                delivery.statuses.append(
                    StatusReport(
                        wamid=str(_need(status, "id", at)),
                        status=str(_need(status, "status", at)),
                        recipient=str(status.get("recipient_id", "")),
                        error=error,
                    )
                )
    return delivery


def conversation_for(sender: str) -> str:
    return f"{CONVERSATION_PREFIX}{sender}"


# Stores one message (idempotent on the wamid): True if new, False if already stored, None if the wamid is
# stored in another conversation.
PostMessage = Callable[[str, str, str, str], Awaitable[bool | None]]


@dataclass(frozen=True, slots=True)
class Accepted:
    stored: int
    duplicates: int
    statuses: int

    def as_dict(self) -> dict[str, int]:
        return {"stored": self.stored, "duplicates": self.duplicates, "statuses": self.statuses}


async def accept(
    delivery: Delivery,
    store: Any,
    post: PostMessage,
    on_undelivered: Callable[[OutboxItem], Awaitable[None]] | None = None,
) -> Accepted:
    """Stores a verified delivery's messages and applies its status reports; a reply WhatsApp reports failed
    goes to `on_undelivered` (a person takes the conversation)."""
    stored = duplicates = 0
    for message in delivery.messages:
        conversation = conversation_for(message.sender)
        # WhatsApp vouches for the number, and only for that: a profile the integration stored with this phone
        # is the customer when exactly one has it; otherwise the number alone (fails closed)
        profiles = await asyncio.to_thread(store.customers_with_phone, f"+{message.sender}")
        customer_id = str(profiles[0].id) if len(profiles) == 1 else conversation
        created = await post(conversation, message.text, message.wamid, customer_id)
        if created is None:
            log.warning("WhatsApp message %s is already stored in another conversation", message.wamid)
        stored += bool(created)
        duplicates += not created
    applied = 0
    for report in delivery.statuses:
        item = await asyncio.to_thread(
            store.apply_delivery_status, CHANNEL, report.wamid, report.status, report.error
        )
        applied += item is not None
        if item is not None and report.status == "failed" and item.delivery_status == "failed":
            log.warning("WhatsApp could not deliver reply %s: %s", item.id, report.error)
            if on_undelivered is not None:
                await on_undelivered(item)
    return Accepted(stored, duplicates, applied)


class WhatsAppChannel:
    """Sends replies through the Graph API messages endpoint; idempotent on the outbox item (a sent item is
    never sent again: the outbox marks it with the returned wamid)."""

    name = CHANNEL

    def __init__(
        self,
        settings: WhatsAppSettings,
        store: Any,
        *,
        client: httpx.AsyncClient | None = None,
        templates: WhatsAppConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._client = client
        self.templates = templates

    async def send(self, item: OutboxItem) -> str | None:
        if not item.conversation_id.startswith(CONVERSATION_PREFIX):
            raise PermanentSendError(f"conversation {item.conversation_id} is not a WhatsApp conversation")
        if not (item.content and "template" in item.content):
            messages = await asyncio.to_thread(self.store.list_messages, item.conversation_id)
            if not gate.window_open(messages, datetime.now(UTC)):
                raise PermanentSendError(gate.window_refusal(messages, self.templates))
        recipient = item.conversation_id.removeprefix(CONVERSATION_PREFIX)
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": recipient,
            **content(item.text, item.content),
        }
        url = f"{self.settings.api_base}/{self.settings.phone_number_id}/messages"
        headers = {"Authorization": f"Bearer {self.settings.access_token}"}
        client = self._client or httpx.AsyncClient(timeout=10.0)
        try:
            response = await client.post(url, json=body, headers=headers)
        finally:
            if self._client is None:
                await client.aclose()
        if response.status_code == 200:
            try:
                return str(response.json()["messages"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise ConnectionError("the Graph API answered 200 without a message id") from None
        code, message = _graph_error(response)
        if response.status_code == 429 or response.status_code >= 500 or code in RETRYABLE_CODES:
            raise ConnectionError(f"Graph API {response.status_code} (code {code}): {message}")
        reason = PERMANENT_CODES.get(code or -1, message)
        raise PermanentSendError(
            f"WhatsApp refused the message (HTTP {response.status_code}, code {code}): {reason}"
        )


YES_NO = "(yes/no)"
INTERACTIVE_BODY_LIMIT = 1024
BUTTON_TITLE_LIMIT = 20
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
MAX_BUTTONS = 3
MAX_ROWS = 10
# A tapped choice comes back with this id; its text is the choice in full, whatever the title had room for.
CHOICE_ID = "cx-choice:"


def content(text: str, structured: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reply as WhatsApp shows it. An approved template as a template message; a clarifying question's
    choices as reply buttons (up to three short ones) or a list; a yes/no question (the confirmations'
    "… (yes/no)") as two reply buttons, whose tap comes back as "Yes" or "No"; anything else as text."""
    if structured and "template" in structured:
        return _template(structured["template"])
    choices = [str(c) for c in (structured or {}).get("choices", [])]
    if choices and len(text) <= INTERACTIVE_BODY_LIMIT:
        interactive = _choices(text, choices)
        if interactive is not None:
            return {"type": "interactive", "interactive": interactive}
    question = text.rstrip()
    if question.endswith(YES_NO) and len(question) - len(YES_NO) <= INTERACTIVE_BODY_LIMIT:
        buttons = [
            {"type": "reply", "reply": {"id": value.lower(), "title": value}} for value in ("Yes", "No")
        ]
        return {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": question.removesuffix(YES_NO).rstrip()},
                "action": {"buttons": buttons},
            },
        }
    return {"type": "text", "text": {"body": text[:4096], "preview_url": False}}


def _template(template: dict[str, Any]) -> dict[str, Any]:
    parameters = [{"type": "text", "text": str(value)} for value in template.get("parameters", [])]
    body: dict[str, Any] = {"name": template["name"], "language": {"code": template["language"]}}
    if parameters:
        body["components"] = [{"type": "body", "parameters": parameters}]
    return {"type": "template", "template": body}


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(" ,.;:") + "…"


def _choices(text: str, choices: list[str]) -> dict[str, Any] | None:
    if len(choices) > MAX_ROWS:
        return None
    if len(choices) <= MAX_BUTTONS and all(len(c) <= BUTTON_TITLE_LIMIT for c in choices):
        buttons = [
            {"type": "reply", "reply": {"id": f"{CHOICE_ID}{i}", "title": c}} for i, c in enumerate(choices)
        ]
        return {"type": "button", "body": {"text": text}, "action": {"buttons": buttons}}
    rows = []
    for i, choice in enumerate(choices):
        row = {"id": f"{CHOICE_ID}{i}", "title": _shorten(choice, ROW_TITLE_LIMIT)}
        if row["title"] != choice:
            row["description"] = _shorten(choice, ROW_DESCRIPTION_LIMIT)
        rows.append(row)
    return {
        "type": "list",
        "body": {"text": text},
        "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]},
    }


def _graph_error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return None, response.text[:200]
    code = error.get("code")
    return (int(code) if isinstance(code, int) else None), str(error.get("message") or "")[:300]


class UnconfiguredChannel:
    """A channel the workspace lists but this deployment cannot reach: every reply fails at once, saying why,
    instead of showing "sent" and never arriving."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why

    async def send(self, item: OutboxItem) -> str | None:
        raise PermanentSendError(f"the {self.name} channel is not configured here: {self.why}")
