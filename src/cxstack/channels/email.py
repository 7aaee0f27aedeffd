"""Email: inbound from provider webhooks (Mailgun, Postmark) and IMAP polling, outbound through SMTP.

Inbound (`/webhooks/email/mailgun`, `/webhooks/email/postmark`: api/email_webhooks.py; IMAP: `ImapPoller`):
- Mailgun signs `timestamp + token` with the webhook signing key (hex HMAC-SHA256, compared in constant
  time); a timestamp older than `MAX_SIGNATURE_AGE` or a token already seen is refused. Postmark protects its
  inbound webhook with HTTP basic auth. Either way: refused → 401 and nothing stored.
- Each mail is stored under its Message-ID (the idempotency key), so a redelivery is a no-op.
- Threading: the mail's own Message-ID, then In-Reply-To, then References (newest first) are looked up in
  the store; the first known one names the conversation (a reply to our own mail finds it through our
  Message-ID, `<cx.{outbox id}@{our domain}>`). A mail with no known reference starts a conversation.
- Identity: the From address names a customer only when the provider's verdict says SPF passed for an
  envelope domain, or DKIM passed for a signing domain, aligned with the From domain; then the one profile
  whose `email` is that address is the customer (none or several: the address alone, verified). Otherwise
  the customer is `email:<address>`, unverified. A mail joins an existing conversation only when it comes
  from that conversation's address, and an unverified one never joins a verified conversation: a forged
  From with a guessed References header starts a conversation of its own.
- Quoted history and signatures are stripped before routing (`strip_reply`); the stored message is the
  stripped text, and the full body stays beside its Message-ID (`EmailRecord.full_text`).
- Bounces and automatic mail (`automatic_reason`) are never answered: a bounce that names one of our
  Message-IDs marks that reply's delivery failed (`Store.apply_delivery_status`); the rest is logged.
- Attachments are never stored: a placeholder names each one (name, type, size).

Outbound (`EmailChannel`, through the outbox like every channel): From the configured address, To the
conversation's address, `Subject: Re: <subject>`, In-Reply-To / References from the thread, a Message-ID
derived from the outbox id (a resend is the same mail) and `Auto-Submitted: auto-replied`. SMTP 5xx answers
are permanent; anything else is retried by the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.errors
import email.policy
import email.utils
import hashlib
import hmac
import imaplib
import json
import logging
import math
import os
import re
import smtplib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Any

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import EmailRecord, OutboxItem, PermanentSendError

log = logging.getLogger(__name__)

CHANNEL = "email"
CONVERSATION_PREFIX = "em:"
UNVERIFIED_PREFIX = "email:"
MAX_SIGNATURE_AGE = 300.0  # seconds: an older signed Mailgun request is a replay
# Largest inbound request the email routes read (Postmark accepts 35 MB mails; JSON base64 grows them).
MAX_EMAIL_BODY_BYTES = 50 * 1024 * 1024
MAX_TEXT_CHARS = 20_000  # of a body routed to the bot; the full text is kept apart
OUR_ID_PREFIX = "cx."


# ---- settings ---------------------------------------------------------------------------------------------


def _flag(value: str, default: bool) -> bool:
    value = value.strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class EmailSettings:
    address: str  # ours: From of every reply; its domain names our Message-IDs
    smtp_host: str
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = True
    mailgun_signing_key: str = field(default="", repr=False)
    postmark_user: str = ""
    postmark_password: str = field(default="", repr=False)
    imap_host: str = ""
    imap_port: int = 993
    imap_user: str = ""
    imap_password: str = field(default="", repr=False)
    imap_folder: str = "INBOX"
    imap_ssl: bool = True
    poll_seconds: float = 30.0
    # Authentication-Results / Received-SPF headers count only when added by one of these servers; empty:
    # only the topmost header (the one the last, receiving hop added) counts.
    trusted_authserv_ids: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmailSettings | None:
        """From CXSTACK_EMAIL_ADDRESS, CXSTACK_SMTP_*, CXSTACK_MAILGUN_SIGNING_KEY, CXSTACK_POSTMARK_WEBHOOK_*
        and CXSTACK_IMAP_*; None without an address and an SMTP host (nothing could be answered)."""
        source = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return source.get(name, "").strip() or default

        address, smtp_host = get("CXSTACK_EMAIL_ADDRESS"), get("CXSTACK_SMTP_HOST")
        if "@" not in address or not smtp_host:
            return None
        imap_ssl = _flag(get("CXSTACK_IMAP_SSL"), True)
        trusted = tuple(
            t.strip().lower() for t in get("CXSTACK_EMAIL_TRUSTED_AUTHSERV").split(",") if t.strip()
        )
        return cls(
            address=address,
            smtp_host=smtp_host,
            smtp_port=int(get("CXSTACK_SMTP_PORT", "587")),
            smtp_user=get("CXSTACK_SMTP_USER"),
            smtp_password=get("CXSTACK_SMTP_PASSWORD"),
            smtp_starttls=_flag(get("CXSTACK_SMTP_STARTTLS"), True),
            mailgun_signing_key=get("CXSTACK_MAILGUN_SIGNING_KEY"),
            postmark_user=get("CXSTACK_POSTMARK_WEBHOOK_USER"),
            postmark_password=get("CXSTACK_POSTMARK_WEBHOOK_PASSWORD"),
            imap_host=get("CXSTACK_IMAP_HOST"),
            imap_port=int(get("CXSTACK_IMAP_PORT", "993" if imap_ssl else "143")),
            imap_user=get("CXSTACK_IMAP_USER"),
            imap_password=get("CXSTACK_IMAP_PASSWORD"),
            imap_folder=get("CXSTACK_IMAP_FOLDER", "INBOX"),
            imap_ssl=imap_ssl,
            poll_seconds=float(get("CXSTACK_IMAP_POLL_SECONDS", "30")),
            trusted_authserv_ids=trusted,
        )


# ---- parsed mail ------------------------------------------------------------------------------------------


class PayloadError(ValueError):
    """A webhook body that does not have the provider's documented shape; `field` names where it breaks."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class Headers:
    """A mail's headers in order, names compared ignoring case."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.pairs = [(str(name), str(value)) for name, value in pairs]

    def get(self, name: str, default: str | None = None) -> str | None:
        return next(iter(self.get_all(name)), default)

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.pairs if key.lower() == wanted]


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    content_type: str
    size: int

    def placeholder(self) -> str:
        kind = self.content_type or "unknown type"
        return f"[attachment {self.name or 'unnamed'} ({kind}, {self.size} bytes): not stored]"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the receiving side checked: SPF for the envelope domain, DKIM for each signing domain."""

    spf_pass_domain: str | None = None
    dkim_pass_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundEmail:
    message_id: str  # without angle brackets
    sender: str  # the From address, lower case
    subject: str
    text: str  # the body as it came
    headers: Headers
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    envelope_sender: str | None = None  # MAIL FROM / Return-Path; "" for a bounce's empty <>
    attachments: tuple[Attachment, ...] = ()
    verdict: Verdict = Verdict()
    content_type: str = "text/plain"


def message_ids(value: str | None) -> list[str]:
    """The ids of a Message-ID / In-Reply-To / References value, in order, without angle brackets."""
    if not value:
        return []
    found = re.findall(r"<([^<>\s]+)>", value)
    if found:
        return found
    bare = value.strip()
    return [bare] if bare and " " not in bare else []


def _address(value: str | None) -> str:
    _, address = email.utils.parseaddr(value or "")
    return address.strip().lower() if "@" in address else ""


def _envelope(headers: Headers) -> str | None:
    """The Return-Path's address; "" for a bounce's empty `<>`; None without the header."""
    value = headers.get("Return-Path")
    return None if value is None else _address(value)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower()


def aligned(domain: str | None, from_domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    if not domain or not from_domain:
        return False
    domain, from_domain = domain.lower().strip("."), from_domain.lower().strip(".")
    return domain == from_domain or domain.endswith("." + from_domain) or from_domain.endswith("." + domain)


def sender_verified(mail: InboundEmail) -> bool:
    """SPF or DKIM passed for a domain aligned with the From address's domain (DMARC's test)."""
    from_domain = domain_of(mail.sender)
    return aligned(mail.verdict.spf_pass_domain, from_domain) or any(
        aligned(d, from_domain) for d in mail.verdict.dkim_pass_domains
    )


_RESULT = re.compile(r"\b(spf|dkim)\s*=\s*(\w+)([^;]*)", re.IGNORECASE)
_PROP = re.compile(r"\b(smtp\.mailfrom|header\.d|header\.i|header\.from)\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def verdict_from_headers(headers: Headers, trusted: Sequence[str] = ()) -> Verdict:
    """From `Authentication-Results` (RFC 8601) and `Received-SPF` (RFC 7208) headers. Anyone can write such
    headers into a mail; only the receiving server's count: those whose authserv-id is trusted, or without a
    trusted list the topmost one (added by the last hop)."""
    results = headers.get_all("Authentication-Results")
    if trusted:
        results = [r for r in results if r.split(";", 1)[0].strip().lower() in trusted]
    else:
        results = results[:1]
    spf_domain: str | None = None
    dkim: list[str] = []
    for header in results:
        for method, result, rest in _RESULT.findall(header):
            if result.lower() != "pass":
                continue
            props = {k.lower(): v for k, v in _PROP.findall(rest)}
            if method.lower() == "spf" and "smtp.mailfrom" in props:
                spf_domain = spf_domain or domain_of(props["smtp.mailfrom"])
            elif method.lower() == "dkim":
                signer = props.get("header.d") or domain_of(props.get("header.i", ""))
                if signer:
                    dkim.append(signer.lower())
    received = headers.get_all("Received-SPF")
    if spf_domain is None and received and not trusted:
        first = received[0]
        envelope = re.search(r"envelope-from=\"?<?([^\s;\">]+)", first, re.IGNORECASE)
        if first.strip().lower().startswith("pass") and envelope:
            spf_domain = domain_of(envelope.group(1))
    return Verdict(spf_domain, tuple(dkim))


# ---- provider payloads ------------------------------------------------------------------------------------


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


class TokenCache:
    """Mailgun tokens seen within the signature's lifetime: a replayed signed request is refused. Per
    process; the Message-ID deduplication stops a replay that reaches another process."""

    def __init__(self, max_age: float = MAX_SIGNATURE_AGE) -> None:
        self._max_age = max_age
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, token: str, now: float) -> bool:
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if t >= now - self._max_age}
            if token in self._seen:
                return False
            self._seen[token] = now
            return True


def mailgun_check(
    signing_key: str,
    fields: Mapping[str, str],
    tokens: TokenCache,
    now: float | None = None,
    max_age: float = MAX_SIGNATURE_AGE,
) -> str | None:
    """None if the request is Mailgun's, fresh and first; else why not (→ 401)."""
    timestamp, token, signature = (fields.get(k, "") for k in ("timestamp", "token", "signature"))
    if not (timestamp and token and signature):
        return "missing timestamp, token or signature"
    expected = mailgun_signature(signing_key, timestamp, token)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        return "wrong signature"
    now = time.time() if now is None else now
    try:
        age = now - float(timestamp)
    except ValueError:
        return "timestamp is not a number"
    # nan passed the age check and inf broke int() below (found by tests/test_fuzz_api.py)
    if not math.isfinite(age):
        return "timestamp is not a finite number"
    if abs(age) > max_age:
        return f"timestamp {int(age)} s old: a replayed request"
    if not tokens.first_use(token, now):
        return "token already used: a replayed request"
    return None


MAX_DECLARED_ATTACHMENTS = 1000


def _need_text(fields: Mapping[str, Any], key: str, where: str = "") -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{where}{key}", "missing")
    return value


def parse_mailgun(fields: Mapping[str, str], attachments: Sequence[Attachment] = ()) -> InboundEmail:
    """Mailgun's fully parsed "forward" format (form fields as their docs name them)."""
    raw_headers = fields.get("message-headers") or "[]"
    try:
        pairs = json.loads(raw_headers)
        headers = Headers((str(p[0]), str(p[1])) for p in pairs)
    except (ValueError, TypeError, IndexError, KeyError):
        raise PayloadError("message-headers", "expected a JSON list of [name, value]") from None
    sender = _address(_need_text(fields, "from"))
    if not sender:
        raise PayloadError("from", "no email address in it")
    ids = message_ids(fields.get("Message-Id") or headers.get("Message-Id"))
    if not ids:
        raise PayloadError("Message-Id", "missing")
    envelope = fields.get("sender")
    envelope_address = _address(envelope)
    spf = (fields.get("X-Mailgun-Spf") or "").strip().lower() == "pass"
    dkim_ok = (fields.get("X-Mailgun-Dkim-Check-Result") or "").strip().lower() == "pass"
    signers = [m.group(1) for s in headers.get_all("DKIM-Signature") if (m := re.search(r"\bd=([^;\s]+)", s))]
    # Mailgun's one DKIM verdict cannot say which of several signatures passed: only a single one counts.
    dkim = (signers[0].lower(),) if dkim_ok and len(signers) == 1 else ()
    declared = len(attachments)
    count = fields.get("attachment-count")
    if count:
        # ASCII digits, and few: int() raised on "²", and a count of 10**9 built as many placeholders
        # (found by tests/test_fuzz_parsers.py)
        digits = count.strip()
        if not (digits.isascii() and digits.isdigit()) or int(digits[:6]) > MAX_DECLARED_ATTACHMENTS:
            raise PayloadError("attachment-count", f"expected a number up to {MAX_DECLARED_ATTACHMENTS}")
        declared = max(declared, int(digits))
    missing = declared - len(attachments)
    return InboundEmail(
        message_id=ids[0],
        sender=sender,
        subject=fields.get("subject") or "",
        text=fields.get("body-plain") or "",
        headers=headers,
        in_reply_to=tuple(message_ids(fields.get("In-Reply-To") or headers.get("In-Reply-To"))),
        references=tuple(message_ids(fields.get("References") or headers.get("References"))),
        envelope_sender=envelope_address if envelope is not None else _envelope(headers),
        attachments=(*attachments, *(Attachment("", "", 0) for _ in range(max(0, missing)))),
        verdict=Verdict(domain_of(envelope_address) if spf and envelope_address else None, dkim),
        content_type=(headers.get("Content-Type") or "text/plain"),
    )


def parse_postmark(payload: Any, trusted: Sequence[str] = ()) -> InboundEmail:
    """Postmark's inbound webhook JSON."""
    if not isinstance(payload, dict):
        raise PayloadError("body", "expected a JSON object")
    raw_headers = payload.get("Headers", [])
    if not isinstance(raw_headers, list) or not all(
        isinstance(h, dict) and isinstance(h.get("Name"), str) for h in raw_headers
    ):
        raise PayloadError("Headers", "expected a list of {Name, Value}")
    headers = Headers((h["Name"], str(h.get("Value", ""))) for h in raw_headers)
    full = payload.get("FromFull")
    from_value = full.get("Email") if isinstance(full, dict) else payload.get("From")
    if not isinstance(from_value, str) or not from_value.strip():
        raise PayloadError("From", "missing")
    sender = _address(from_value)
    if not sender:
        raise PayloadError("From", "no email address in it")
    # Postmark's own MessageID is its id for the webhook; threading needs the mail's Message-ID header.
    ids = message_ids(headers.get("Message-ID"))
    if not ids:
        postmark_id = _need_text(payload, "MessageID")
        ids = [f"{postmark_id}@postmark.invalid"]
    files = payload.get("Attachments") or []
    if not isinstance(files, list):
        raise PayloadError("Attachments", "expected a list")
    attachments: list[Attachment] = []
    for n, item in enumerate(files):
        if not isinstance(item, dict):
            raise PayloadError(f"Attachments[{n}]", "expected an object")
        size = item.get("ContentLength")
        if not isinstance(size, int):
            content = item.get("Content")
            size = len(content) * 3 // 4 if isinstance(content, str) else 0
        attachments.append(Attachment(str(item.get("Name") or ""), str(item.get("ContentType") or ""), size))
    text = payload.get("TextBody")
    if text is not None and not isinstance(text, str):
        raise PayloadError("TextBody", "expected a string")
    return InboundEmail(
        message_id=ids[0],
        sender=sender,
        subject=str(payload.get("Subject") or ""),
        text=text or "",
        headers=headers,
        in_reply_to=tuple(message_ids(headers.get("In-Reply-To"))),
        references=tuple(message_ids(headers.get("References"))),
        envelope_sender=_envelope(headers),
        attachments=tuple(attachments),
        verdict=verdict_from_headers(headers, trusted),
        content_type=headers.get("Content-Type") or "text/plain",
    )


def _header_pairs(message: Message) -> Iterator[tuple[str, str]]:
    """Each header decoded, or as written when the standard library's parser breaks on it: it raises
    IndexError on values such as `From: "` or `Message-ID: <@x>` (found by tests/test_fuzz_parsers.py)."""
    for name, raw in message.raw_items():
        try:
            yield name, str(message.policy.header_fetch_parse(name, raw))
        except (IndexError, ValueError, TypeError, AttributeError, email.errors.MessageError):
            yield name, str(raw)


def parse_mime(raw: bytes, trusted: Sequence[str] = ()) -> InboundEmail:
    """A whole RFC 5322 message (from IMAP). A mail without a Message-ID gets one from its bytes' hash."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    headers = Headers(_header_pairs(message))
    ids = message_ids(headers.get("Message-ID")) or [f"{hashlib.sha256(raw).hexdigest()[:32]}@imap.invalid"]
    attachments: list[Attachment] = []
    text = ""
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        if disposition == "attachment" or (part.get_filename() and disposition != "inline"):
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            attachments.append(Attachment(part.get_filename() or "", part.get_content_type(), size))
        elif part.get_content_type() == "text/plain" and not text:
            with contextlib.suppress(LookupError, UnicodeDecodeError):
                text = str(part.get_content())
    return InboundEmail(
        message_id=ids[0],
        sender=_address(headers.get("From")),
        subject=str(headers.get("Subject") or ""),
        text=text,
        headers=headers,
        in_reply_to=tuple(message_ids(headers.get("In-Reply-To"))),
        references=tuple(message_ids(headers.get("References"))),
        envelope_sender=_envelope(headers),
        attachments=tuple(attachments),
        verdict=verdict_from_headers(headers, trusted),
        content_type=message.get_content_type()
        + (f"; report-type={message.get_param('report-type')}" if message.get_param("report-type") else ""),
    )


# ---- loops and bounces ------------------------------------------------------------------------------------

_ROBOT_SENDERS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply)(\+.*)?@", re.IGNORECASE)
_BOUNCE_SENDERS = re.compile(r"^(mailer-daemon|postmaster)(\+.*)?@", re.IGNORECASE)


def automatic_reason(mail: InboundEmail, our_address: str = "") -> str | None:
    """Why this mail must never be answered (a bounce, an auto-reply, a list, ourselves), or None."""
    h = mail.headers
    auto = (h.get("Auto-Submitted") or "").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = (h.get("Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "List-Id", "List-Unsubscribe"):
        if h.get(name) is not None:
            return f"{name} header"
    if (h.get("X-Auto-Response-Suppress") or "").strip().lower() in ("all", "oof", "autoreply"):
        return "X-Auto-Response-Suppress"
    return_path = h.get("Return-Path")
    if mail.envelope_sender == "" or (return_path is not None and return_path.strip() in ("<>", "")):
        return "empty Return-Path (a bounce)"
    if _ROBOT_SENDERS.match(mail.sender):
        return f"sent by {mail.sender}"
    kind = mail.content_type.lower()
    if "multipart/report" in kind or "report-type=delivery-status" in kind:
        return "a delivery status report (a bounce)"
    ours = mail.message_id.lower().startswith(OUR_ID_PREFIX) and domain_of(mail.message_id) == domain_of(
        our_address
    )
    if our_address and (mail.sender == our_address.lower() or ours):
        return "our own mail"
    return None


def is_bounce(mail: InboundEmail, reason: str) -> bool:
    return "bounce" in reason or "delivery status" in reason or _BOUNCE_SENDERS.match(mail.sender) is not None


def ours_named_in(mail: InboundEmail, our_domain: str) -> list[str]:
    """Our Message-IDs a mail names: in its threading headers, or quoted in a bounce's returned headers."""
    pattern = re.compile(rf"{re.escape(OUR_ID_PREFIX)}[A-Za-z0-9_.-]+@{re.escape(our_domain)}", re.IGNORECASE)
    found = [m for m in (*mail.in_reply_to, *mail.references) if pattern.fullmatch(m)]
    found += pattern.findall(mail.text)
    return list(dict.fromkeys(found))


# ---- quoted history and signatures ------------------------------------------------------------------------

_QUOTE_HEADER = re.compile(
    r"^\s*(On\b.{0,300}\bwrote:|Le\b.{0,300}\ba écrit\s?:|Am\b.{0,300}\bschrieb\b.{0,200}:)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message)\s*-{2,}", re.IGNORECASE)
_OUTLOOK_FROM = re.compile(r"^\s*\*?From:\*?\s", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*\*?(Sent|Date|To|Subject):\*?\s", re.IGNORECASE)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_SIGNATURE = re.compile(r"^(--|-- |__)\s*$")
_MOBILE = re.compile(
    r"^\s*(Sent from my \w+|Sent from (Outlook|Mail|Yahoo Mail)|Get Outlook for \w+)\b.*$", re.IGNORECASE
)
_SIGN_OFF = re.compile(
    r"^\s*(thanks|thank you|many thanks|thx|cheers|best|best regards|kind regards|regards|warm regards|"
    r"best wishes|sincerely|yours|yours sincerely|all the best)\s*[,.!]?\s*$",
    re.IGNORECASE,
)


def strip_reply(text: str) -> str:
    """The new part of a reply: without the quoted history ("On … wrote:", "> …", Outlook's "-----Original
    Message-----" or "From: … Sent: …") and without the signature ("-- ", "Sent from my iPhone", a sign-off
    and the few short lines after it). If nothing would be left, the text as it came."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for n, line in enumerate(lines):
        joined = line + " " + (lines[n + 1] if n + 1 < len(lines) else "")
        if _ORIGINAL.match(line) or _UNDERSCORES.match(line) or _SIGNATURE.match(line) or _MOBILE.match(line):
            break
        if line.lstrip().lower().startswith(("on ", "le ", "am ")) and (
            _QUOTE_HEADER.match(line) or _QUOTE_HEADER.match(joined)
        ):
            break
        if _OUTLOOK_FROM.match(line) and any(_OUTLOOK_NEXT.match(x) for x in lines[n + 1 : n + 5]):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    # a sign-off followed by at most a few short lines (a name, a title) ends the message
    for n, line in enumerate(kept):
        rest = [x for x in kept[n + 1 :] if x.strip()]
        if _SIGN_OFF.match(line) and len(rest) <= 3 and all(len(x.strip()) <= 40 for x in rest):
            kept = kept[:n]
            break
    stripped = "\n".join(kept).strip()
    stripped = re.sub(r"\n{3,}", "\n\n", stripped)
    return stripped or text.strip()


# ---- inbound: store one verified mail ---------------------------------------------------------------------


def conversation_for_new(message_id: str) -> ConversationId:
    """A new thread's conversation, from its first Message-ID: a redelivery lands in the same one."""
    return ConversationId(CONVERSATION_PREFIX + hashlib.sha256(message_id.encode()).hexdigest()[:24])


def routed_text(mail: InboundEmail, *, new_thread: bool) -> str:
    body = strip_reply(mail.text)[:MAX_TEXT_CHARS]
    subject = mail.subject.strip()
    reply = re.match(r"^(re|aw|fwd?|tr)\s*:", subject, re.IGNORECASE)
    if new_thread and subject and not reply and subject.lower() not in body.lower():
        body = f"{subject}\n\n{body}".strip()
    placeholders = "\n".join(a.placeholder() for a in mail.attachments)
    return f"{body}\n{placeholders}".strip() if placeholders else body


# Stores one message (idempotent on the Message-ID): True if new, False if already stored, None if the id is
# stored in another conversation. Arguments: conversation, text, Message-ID, customer id, verified.
PostMessage = Callable[[str, str, str, str, bool], Awaitable[bool | None]]


@dataclass(frozen=True, slots=True)
class Accepted:
    outcome: str  # stored | duplicate | ignored | bounce
    conversation_id: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"outcome": self.outcome, "conversation_id": self.conversation_id, "reason": self.reason}


def _thread(store: Any, mail: InboundEmail, verified: bool) -> tuple[ConversationId, bool]:
    """The conversation this mail belongs to, and whether it is a new one (see the module's docstring)."""
    own = store.email_for([mail.message_id])
    if own is not None:
        return own.conversation_id, False
    candidates = [*mail.in_reply_to, *reversed(mail.references)]
    known = store.email_for(candidates) if candidates else None
    if known is not None:
        first = next((r for r in store.email_thread(known.conversation_id) if r.direction == "in"), None)
        if first is not None and first.address == mail.sender and (verified or not first.verified):
            return known.conversation_id, False
        log.warning(
            "email %s names conversation %s but comes from another or less proven sender: a new conversation",
            mail.message_id,
            known.conversation_id,
        )
    return conversation_for_new(mail.message_id), True


async def accept(
    mail: InboundEmail,
    store: Any,
    post: PostMessage,
    settings: EmailSettings,
    on_undelivered: Callable[[OutboxItem], Awaitable[None]] | None = None,
) -> Accepted:
    """Stores a verified provider's mail (or records why it is never answered); a bounce of one of our
    replies goes to `on_undelivered` (a person takes the conversation)."""
    reason = automatic_reason(mail, settings.address)
    if reason is not None:
        if is_bounce(mail, reason):
            failed = 0
            for message_id in ours_named_in(mail, settings.domain):
                item = await asyncio.to_thread(
                    store.apply_delivery_status,
                    CHANNEL,
                    message_id,
                    "failed",
                    f"bounced: {mail.subject}"[:300],
                )
                failed += item is not None
                if item is not None and item.delivery_status == "failed" and on_undelivered is not None:
                    await on_undelivered(item)
            log.warning(
                "email bounce %s (%s): %d of our replies marked failed", mail.message_id, reason, failed
            )
            return Accepted("bounce", None, reason)
        log.info("email %s from %s not answered: %s", mail.message_id, mail.sender, reason)
        return Accepted("ignored", None, reason)
    verified = sender_verified(mail)
    conversation, new_thread = await asyncio.to_thread(_thread, store, mail, verified)
    customer_id = f"{UNVERIFIED_PREFIX}{mail.sender}"
    if verified:
        # the provider vouches for the address, and only for that: one profile with it is the customer
        profiles = await asyncio.to_thread(store.customers_with_email, mail.sender)
        if len(profiles) == 1:
            customer_id = str(profiles[0].id)
    record = EmailRecord(
        message_id=mail.message_id,
        conversation_id=conversation,
        direction="in",
        address=mail.sender,
        verified=verified,
        subject=mail.subject,
        full_text=mail.text,
    )
    # the thread is recorded first: the reply may be sent before post() returns, and must find its address
    await asyncio.to_thread(store.add_email, record)
    text = routed_text(mail, new_thread=new_thread) or "[empty email]"
    created = await post(conversation, text, mail.message_id, customer_id, verified)
    if created is None:
        log.warning("email %s is already stored in another conversation", mail.message_id)
    return Accepted("stored" if created else "duplicate", conversation, None)


def poster(cx: Any) -> PostMessage:
    """`PostMessage` through the app's `post_message` (as the webhooks and the IMAP poller store mail)."""
    from cxstack.app import ExternalIdConflictError  # the composition root imports this module

    async def post(
        conversation: str, text: str, message_id: str, customer_id: str, verified: bool
    ) -> bool | None:
        try:
            result = await cx.post_message(
                conversation,
                text,
                external_id=message_id,
                channel=CHANNEL,
                customer_id=customer_id,
                verified=verified,
            )
        except ExternalIdConflictError:
            return None
        return bool(result.created)

    return post


# ---- outbound ---------------------------------------------------------------------------------------------


def our_message_id(outbox_id: str, domain: str) -> str:
    return f"{OUR_ID_PREFIX}{outbox_id}@{domain}"


def reply_subject(subject: str) -> str:
    subject = " ".join(subject.split())[:200] or "Your message"  # one line, whatever the customer's was
    return subject if re.match(r"^re\s*:", subject, re.IGNORECASE) else f"Re: {subject}"


def compose(settings: EmailSettings, item: OutboxItem, thread: Sequence[EmailRecord]) -> EmailMessage:
    """The reply as a mail, threaded under the conversation's last inbound mail."""
    inbound = [r for r in thread if r.direction == "in"]
    if not inbound:
        raise PermanentSendError(f"conversation {item.conversation_id} has no email to answer")
    last = inbound[-1]
    message = EmailMessage()
    message["From"] = settings.address
    message["To"] = inbound[0].address
    message["Subject"] = reply_subject(last.subject or inbound[0].subject)
    message["Message-ID"] = f"<{our_message_id(item.id, settings.domain)}>"
    message["In-Reply-To"] = f"<{last.message_id}>"
    ours = our_message_id(item.id, settings.domain)
    # the thread's ids before this reply; mail clients use the last ~20 to thread
    references = [r.message_id for r in thread if r.message_id != ours][-20:]
    message["References"] = " ".join(f"<{m}>" for m in references)
    message["Date"] = email.utils.format_datetime(item.created_at)
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"  # asks Exchange not to send out-of-office replies to us
    message.set_content(item.text)
    return message


class EmailChannel:
    """Sends replies through SMTP; a resend of an outbox item is the same mail (same Message-ID)."""

    name = CHANNEL

    def __init__(self, settings: EmailSettings, store: Any, *, timeout: float = 20.0) -> None:
        self.settings = settings
        self.store = store
        self.timeout = timeout

    async def send(self, item: OutboxItem) -> str | None:
        if not item.conversation_id.startswith(CONVERSATION_PREFIX):
            raise PermanentSendError(f"conversation {item.conversation_id} is not an email conversation")
        return await asyncio.to_thread(self._send, item)

    def _send(self, item: OutboxItem) -> str:
        thread = self.store.email_thread(item.conversation_id)
        message = compose(self.settings, item, thread)
        ours = our_message_id(item.id, self.settings.domain)
        self.store.add_email(
            EmailRecord(ours, item.conversation_id, "out", str(message["To"]), outbox_id=item.id)
        )
        s = self.settings
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=self.timeout) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_user:
                    smtp.login(s.smtp_user, s.smtp_password)
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise PermanentSendError(f"SMTP refused the recipient: {exc.recipients}") from None
            raise ConnectionError(f"SMTP refused the recipient for now: {exc.recipients}") from None
        except smtplib.SMTPResponseException as exc:
            answer = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else exc.smtp_error
            )
            if exc.smtp_code >= 500:
                raise PermanentSendError(f"SMTP {exc.smtp_code}: {answer}") from None
            raise ConnectionError(f"SMTP {exc.smtp_code}: {answer}") from None
        return ours


# ---- IMAP polling -----------------------------------------------------------------------------------------

MAX_IMAP_MESSAGE_BYTES = 25 * 1024 * 1024


class ImapPoller:
    """Polls a mailbox: every unseen mail is stored (idempotent on its Message-ID, so a poller restarted
    before it marked a mail stores nothing twice), then flagged \\Seen. Bigger mails than
    `MAX_IMAP_MESSAGE_BYTES` are read by their headers only; their body becomes a placeholder."""

    def __init__(
        self,
        settings: EmailSettings,
        store: Any,
        post: PostMessage,
        on_undelivered: Callable[[OutboxItem], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.post = post
        self.on_undelivered = on_undelivered
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cxstack-imap")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("IMAP poll of %s failed; trying again", self.settings.imap_host)
            await asyncio.sleep(self.settings.poll_seconds)

    def _connect(self) -> imaplib.IMAP4:
        s = self.settings
        imap = (imaplib.IMAP4_SSL if s.imap_ssl else imaplib.IMAP4)(s.imap_host, s.imap_port, timeout=30)
        imap.login(s.imap_user, s.imap_password)
        status, _ = imap.select(s.imap_folder)
        if status != "OK":
            imap.logout()
            raise ConnectionError(f"IMAP folder {s.imap_folder!r} cannot be selected")
        return imap

    def _fetch_unseen(self) -> list[tuple[bytes, bytes]]:
        imap = self._connect()
        try:
            status, data = imap.uid("SEARCH", "UNSEEN")
            if status != "OK":
                raise ConnectionError(f"IMAP SEARCH failed: {data!r}")
            fetched: list[tuple[bytes, bytes]] = []
            for uid in (data[0] or b"").split():
                fetched.append((uid, self._fetch(imap, uid)))
            return fetched
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    @staticmethod
    def _body(data: list[Any]) -> bytes:
        return b"".join(part[1] for part in data if isinstance(part, tuple) and len(part) > 1)

    def _fetch(self, imap: imaplib.IMAP4, uid: bytes) -> bytes:
        uid_text = uid.decode()
        status, data = imap.uid("FETCH", uid_text, "(RFC822.SIZE)")
        size_match = re.search(rb"RFC822\.SIZE (\d+)", b" ".join(d for d in data if isinstance(d, bytes)))
        size = int(size_match.group(1)) if size_match else 0
        if size > MAX_IMAP_MESSAGE_BYTES:
            _, data = imap.uid("FETCH", uid_text, "(BODY.PEEK[HEADER])")
            headers_only = email.message_from_bytes(self._body(data), policy=email.policy.default)
            assert isinstance(headers_only, EmailMessage)
            for name in ("Content-Type", "Content-Transfer-Encoding", "MIME-Version"):
                del headers_only[name]
            headers_only.set_content(f"[message of {size} bytes: only its headers were read]")
            return headers_only.as_bytes()
        status, data = imap.uid("FETCH", uid_text, "(BODY.PEEK[])")
        if status != "OK":
            raise ConnectionError(f"IMAP FETCH {uid_text} failed")
        return self._body(data)

    def _mark_seen(self, uids: Sequence[bytes]) -> None:
        if not uids:
            return
        imap = self._connect()
        try:
            imap.uid("STORE", b",".join(uids).decode(), "+FLAGS", "(\\Seen)")
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    async def poll_once(self) -> list[Accepted]:
        fetched = await asyncio.to_thread(self._fetch_unseen)
        results: list[Accepted] = []
        done: list[bytes] = []
        for uid, raw in fetched:
            mail = parse_mime(raw, self.settings.trusted_authserv_ids)
            if not mail.sender:
                log.warning("IMAP mail %s has no From address: not stored", mail.message_id)
                done.append(uid)
                continue
            try:
                results.append(await accept(mail, self.store, self.post, self.settings, self.on_undelivered))
            except Exception:
                # left unseen, so the next poll tries it again; the others are not held back by it
                log.exception("IMAP mail %s could not be stored; trying again next poll", mail.message_id)
                continue
            done.append(uid)
        await asyncio.to_thread(self._mark_seen, done)
        return results


# ---- wiring (called by the composition root) --------------------------------------------------------------


def email_channel(settings: EmailSettings | None, store: Any) -> Any:
    """The channel the outbox sends email replies through: SMTP, or one that says why it cannot."""
    from cxstack.channels.whatsapp import UnconfiguredChannel

    if settings is None:
        log.warning(
            "the workspace lists email but CXSTACK_EMAIL_ADDRESS / CXSTACK_SMTP_HOST are not set: it is off"
        )
        return UnconfiguredChannel(CHANNEL, "CXSTACK_EMAIL_ADDRESS and CXSTACK_SMTP_HOST are not set")
    return EmailChannel(settings, store)


def start_imap(cx: Any) -> ImapPoller | None:
    """Polls the configured mailbox when the workspace lists email and CXSTACK_IMAP_HOST is set."""
    settings: EmailSettings | None = cx.email
    if settings is None or not settings.imap_host or CHANNEL not in cx.workspace.settings.channels:
        return None
    poller = ImapPoller(settings, cx.store, poster(cx), cx.undelivered)
    poller.start()
    return poller
