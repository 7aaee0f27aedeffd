"""The email channel against its real contracts: Mailgun's signed "forward" posts and Postmark's inbound JSON
(payloads built from their documentation's examples), threading by Message-ID / In-Reply-To / References,
identity from the provider's SPF/DKIM verdict, quoted history and signatures stripped, bounces and automatic
mail never answered, replies through a real local SMTP server (aiosmtpd), and IMAP polling of a real local
Dovecot."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import itertools
import json
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi.testclient import TestClient
from tests.conftest import SHOP, write_workspace
from tests.processes import free_port

from cxstack.api.app import create_api
from cxstack.app import Settings, build
from cxstack.channels.email import (
    EmailChannel,
    EmailSettings,
    Headers,
    InboundEmail,
    PayloadError,
    TokenCache,
    Verdict,
    automatic_reason,
    mailgun_check,
    mailgun_signature,
    parse_mailgun,
    parse_postmark,
    sender_verified,
    strip_reply,
    verdict_from_headers,
)
from cxstack.domain.models import ConversationId, Customer, CustomerId, utcnow
from cxstack.domain.ports import EmailRecord, OutboxItem, OutboxStatus, PermanentSendError
from cxstack.workspace.loader import load_workspace

KEY = "key-mailgun-signing-for-tests"
OURS = "support@shop.test"
PM_USER, PM_PASSWORD = "postmark", "inbound-secret"
_tokens = itertools.count()


# ---- a real local SMTP server ------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: keeps every mail it accepts; refuses recipients at refused.test with 550."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@refused.test"):
            return "550 5.1.1 no such user here"
        if address.endswith("@busy.test"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# ---- payloads as the providers document them ---------------------------------------------------------------


def mailgun_fields(
    message_id: str,
    body: str,
    *,
    sender: str = "alice@customer.test",
    subject: str = "Return policy",
    spf: str = "Pass",
    dkim: str = "Pass",
    in_reply_to: str | None = None,
    references: str | None = None,
    extra_headers: list[list[str]] = (),  # type: ignore[assignment]
    timestamp: int | None = None,
    key: str = KEY,
) -> dict[str, str]:
    """A Mailgun route forward() post (fully parsed), signed as Mailgun signs it."""
    headers = [
        ["Received", "from mail.customer.test by mxa.mailgun.org with ESMTP"],
        ["DKIM-Signature", f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={sender.split('@')[1]}; s=s1; b=abc"],
        ["From", f"Alice <{sender}>"],
        ["To", OURS],
        ["Subject", subject],
        ["Message-Id", f"<{message_id}>"],
        ["Mime-Version", "1.0"],
        ["Content-Type", 'text/plain; charset="us-ascii"'],
        *extra_headers,
    ]
    stamp = str(timestamp or int(time.time()))
    token = hashlib.sha256(f"token-{next(_tokens)}-{time.time_ns()}".encode()).hexdigest()[:50]
    fields = {
        "timestamp": stamp,
        "token": token,
        "signature": mailgun_signature(key, stamp, token),
        "recipient": OURS,
        "sender": sender,
        "from": f"Alice <{sender}>",
        "subject": subject,
        "body-plain": body,
        "stripped-text": body,
        "Message-Id": f"<{message_id}>",
        "message-headers": json.dumps(headers),
        "X-Mailgun-Spf": spf,
        "X-Mailgun-Dkim-Check-Result": dkim,
    }
    if in_reply_to:
        fields["In-Reply-To"] = in_reply_to
    if references:
        fields["References"] = references
    return fields


def postmark_payload(
    message_id: str,
    body: str,
    *,
    sender: str = "bob@customer.test",
    subject: str = "Where is my order",
    auth_results: str | None = None,
    envelope_from: str | None = None,
    extra_headers: list[dict[str, str]] = (),  # type: ignore[assignment]
    attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """Postmark's inbound webhook JSON (the documented example's fields)."""
    domain = sender.split("@")[1]
    results = (
        auth_results or f"mx.postmarkapp.com; dkim=pass header.d={domain}; spf=pass smtp.mailfrom={sender}"
    )
    return {
        "FromName": "Bob",
        "MessageStream": "inbound",
        "From": sender,
        "FromFull": {"Email": sender, "Name": "Bob", "MailboxHash": ""},
        "To": OURS,
        "ToFull": [{"Email": OURS, "Name": "", "MailboxHash": ""}],
        "Cc": "",
        "CcFull": [],
        "Bcc": "",
        "BccFull": [],
        "OriginalRecipient": OURS,
        "Subject": subject,
        "MessageID": "22c74902-a0c1-4511-804f-341342852c90",
        "ReplyTo": "",
        "MailboxHash": "",
        "Date": "Fri, 1 Aug 2014 16:45:32 -04:00",
        "TextBody": body,
        "HtmlBody": f"<p>{body}</p>",
        "StrippedTextReply": body,
        "Tag": "",
        "Headers": [
            {"Name": "X-Spam-Status", "Value": "No"},
            {"Name": "Authentication-Results", "Value": results},
            {
                "Name": "Received-SPF",
                "Value": f"Pass (sender SPF authorized) envelope-from={envelope_from or sender}",
            },
            {"Name": "Message-ID", "Value": f"<{message_id}>"},
            *extra_headers,
        ],
        "Attachments": list(attachments),
    }


# ---- pure parts --------------------------------------------------------------------------------------------


def test_mailgun_signatures_are_checked_fresh_and_once() -> None:
    expected = hmac.new(KEY.encode(), b"1700000000tok", hashlib.sha256).hexdigest()
    assert mailgun_signature(KEY, "1700000000", "tok") == expected
    tokens = TokenCache()
    fields = {"timestamp": "1700000000", "token": "tok", "signature": expected}
    assert mailgun_check(KEY, fields, tokens, now=1700000010) is None
    assert "already used" in str(mailgun_check(KEY, fields, tokens, now=1700000020))
    assert "old" in str(mailgun_check(KEY, fields, TokenCache(), now=1700000000 + 301))
    assert "wrong" in str(mailgun_check("other-key", fields, TokenCache(), now=1700000010))
    assert "missing" in str(mailgun_check(KEY, {"timestamp": "1", "token": "t"}, TokenCache()))


def test_quoted_history_and_signatures_are_stripped() -> None:
    gmail = (
        "Can I return the blue one?\n\nOn Mon, Nov 30, 2026 at 9:00 AM Shop <support@shop.test>\nwrote:\n"
        "> Thanks for your order.\n> It ships today."
    )
    assert strip_reply(gmail) == "Can I return the blue one?"
    outlook = (
        "Still waiting for the refund.\r\n\r\n-----Original Message-----\r\nFrom: Shop\r\nSent: Monday\r\nhi"
    )
    assert strip_reply(outlook) == "Still waiting for the refund."
    outlook_new = "Any news?\n\nFrom: Shop <support@shop.test>\nSent: Monday, 30 November\nTo: me\nSubject: x"
    assert strip_reply(outlook_new) == "Any news?"
    signed = "Where is order ORD-10001?\n\nThanks,\nAlice Smith\nACME Corp\n-- \nlegal footer"
    assert strip_reply(signed) == "Where is order ORD-10001?"
    assert strip_reply("Where is it?\n\nSent from my iPhone") == "Where is it?"
    interleaved = "> what size?\nLarge please\n> colour?\nBlue"
    assert strip_reply(interleaved) == "Large please\nBlue"
    # a sign-off word inside a sentence, or before a long paragraph, is not a signature
    assert strip_reply("Thanks, but the box was empty.") == "Thanks, but the box was empty."
    only_quote = "> just a forward of what you said"
    assert strip_reply(only_quote) == only_quote  # nothing new: the text as it came


def _mail(**overrides: Any) -> InboundEmail:
    fields: dict[str, Any] = {
        "message_id": "m1@customer.test",
        "sender": "alice@customer.test",
        "subject": "hi",
        "text": "hello",
        "headers": Headers(),
    }
    fields.update(overrides)
    return InboundEmail(**fields)


def test_automatic_mail_is_recognised() -> None:
    assert automatic_reason(_mail(), OURS) is None
    assert automatic_reason(_mail(headers=Headers([("Auto-Submitted", "no")])), OURS) is None
    for headers in (
        [("Auto-Submitted", "auto-replied")],
        [("Precedence", "bulk")],
        [("Precedence", "junk")],
        [("X-Autoreply", "yes")],
        [("X-Autorespond", "vacation")],
        [("List-Id", "<news.customer.test>")],
        [("List-Unsubscribe", "<mailto:leave@customer.test>")],
        [("Return-Path", "<>")],
    ):
        assert automatic_reason(_mail(headers=Headers(headers)), OURS) is not None, headers
    assert automatic_reason(_mail(sender="MAILER-DAEMON@mx.customer.test"), OURS) is not None
    assert automatic_reason(_mail(sender="postmaster@customer.test"), OURS) is not None
    report = "multipart/report; report-type=delivery-status"
    assert automatic_reason(_mail(content_type=report), OURS) is not None
    assert automatic_reason(_mail(sender=OURS), OURS) == "our own mail"
    assert automatic_reason(_mail(message_id="cx.out_1@shop.test"), OURS) == "our own mail"


def test_the_sender_is_verified_only_by_an_aligned_pass() -> None:
    spf = Verdict(spf_pass_domain="customer.test")
    assert sender_verified(_mail(verdict=spf))
    assert sender_verified(_mail(verdict=Verdict(dkim_pass_domains=("mail.customer.test",))))
    assert not sender_verified(_mail(verdict=Verdict(spf_pass_domain="attacker.test")))
    assert not sender_verified(_mail(verdict=Verdict(dkim_pass_domains=("customer.test.attacker.test",))))
    assert not sender_verified(_mail())
    # Authentication-Results: only the receiving server's (the topmost, or a trusted authserv-id) counts
    forged_below = Headers(
        [
            (
                "Authentication-Results",
                "mx.postmarkapp.com; spf=fail smtp.mailfrom=x@attacker.test; dkim=none",
            ),
            ("Authentication-Results", "mx.postmarkapp.com; dkim=pass header.d=customer.test"),
        ]
    )
    assert verdict_from_headers(forged_below) == Verdict(None, ())
    trusted = verdict_from_headers(forged_below, ["mx.postmarkapp.com"])
    assert trusted.dkim_pass_domains == ("customer.test",)
    assert verdict_from_headers(forged_below, ["mx.other.test"]) == Verdict(None, ())


def test_payloads_parse_as_documented_and_malformed_ones_name_the_field() -> None:
    mail = parse_mailgun(
        mailgun_fields("a@customer.test", "hi", in_reply_to="<x@shop.test>", references="<w@c> <x@shop.test>")
    )
    assert (mail.message_id, mail.sender, mail.in_reply_to, mail.references) == (
        "a@customer.test",
        "alice@customer.test",
        ("x@shop.test",),
        ("w@c", "x@shop.test"),
    )
    assert mail.verdict == Verdict("customer.test", ("customer.test",))
    # Mailgun's one DKIM verdict cannot say which of two signatures passed: neither counts
    two = mailgun_fields(
        "b@c", "hi", extra_headers=[["DKIM-Signature", "v=1; d=attacker.test; b=x"]], spf="Fail"
    )
    assert parse_mailgun(two).verdict == Verdict(None, ())
    for broken, field in [
        ({**mailgun_fields("c@c", "hi"), "message-headers": "not json"}, "message-headers"),
        ({k: v for k, v in mailgun_fields("c@c", "hi").items() if k != "from"}, "from"),
        ({**mailgun_fields("c@c", "hi"), "from": "nobody"}, "from"),
        ({**mailgun_fields("c@c", "hi"), "attachment-count": "two"}, "attachment-count"),
    ]:
        with pytest.raises(PayloadError) as caught:
            parse_mailgun(broken)
        assert caught.value.field == field
    pm = parse_postmark(postmark_payload("p@customer.test", "hello"))
    assert (pm.message_id, pm.sender, pm.verdict.dkim_pass_domains) == (
        "p@customer.test",
        "bob@customer.test",
        ("customer.test",),
    )
    for broken_pm, field in [
        ([], "body"),
        ({**postmark_payload("p@c", "x"), "FromFull": {}, "From": ""}, "From"),
        ({**postmark_payload("p@c", "x"), "Headers": "nope"}, "Headers"),
        ({**postmark_payload("p@c", "x"), "Attachments": [1]}, "Attachments[0]"),
    ]:
        with pytest.raises(PayloadError) as caught:
            parse_postmark(broken_pm)
        assert caught.value.field == field


# ---- the webhooks, end to end ------------------------------------------------------------------------------


def email_env(monkeypatch: pytest.MonkeyPatch, smtp_port: int) -> None:
    monkeypatch.setenv("CXSTACK_EMAIL_ADDRESS", OURS)
    monkeypatch.setenv("CXSTACK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CXSTACK_SMTP_PORT", str(smtp_port))
    monkeypatch.setenv("CXSTACK_SMTP_STARTTLS", "false")
    monkeypatch.setenv("CXSTACK_MAILGUN_SIGNING_KEY", KEY)
    monkeypatch.setenv("CXSTACK_POSTMARK_WEBHOOK_USER", PM_USER)
    monkeypatch.setenv("CXSTACK_POSTMARK_WEBHOOK_PASSWORD", PM_PASSWORD)
    monkeypatch.delenv("CXSTACK_IMAP_HOST", raising=False)


@pytest.fixture
def service(
    tmp_path: Path,
    smtp: tuple[Inbox, int],
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, Any]]:
    email_env(monkeypatch, smtp[1])
    settings_file = SHOP["cxstack.yaml"] + "channels: [api, webchat, email]\n"
    root = write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings_file})
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0]),
        workspace=load_workspace(root),
    )
    with TestClient(create_api(cx)) as client:
        yield client, cx


def mailgun(client: TestClient, fields: dict[str, str], files: Any = None) -> Any:
    if files:
        return client.post("/webhooks/email/mailgun", data=fields, files=files)
    return client.post("/webhooks/email/mailgun", data=fields)


def postmark(client: TestClient, payload: Any, auth: tuple[str, str] | None = (PM_USER, PM_PASSWORD)) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return client.post("/webhooks/email/postmark", content=raw, headers=headers)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_forged_unsigned_replayed_or_malformed_posts_store_nothing(service: tuple[TestClient, Any]) -> None:
    client, cx = service
    fields = mailgun_fields("forged@customer.test", "refund me")
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    assert mailgun(client, unsigned).status_code == 401
    assert mailgun(client, mailgun_fields("f2@customer.test", "x", key="not-the-key")).status_code == 401
    old = mailgun(client, mailgun_fields("f3@customer.test", "x", timestamp=int(time.time()) - 3600))
    assert old.status_code == 401 and "old" in old.text
    assert postmark(client, postmark_payload("f4@customer.test", "x"), auth=None).status_code == 401
    assert (
        postmark(client, postmark_payload("f5@customer.test", "x"), auth=(PM_USER, "guess")).status_code
        == 401
    )
    broken = mailgun(client, {**mailgun_fields("f6@customer.test", "x"), "message-headers": "{"})
    assert broken.status_code == 400 and "message-headers" in broken.text
    no_id = {k: v for k, v in mailgun_fields("f7@customer.test", "x").items() if k != "Message-Id"}
    no_id["message-headers"] = "[]"
    missing_id = mailgun(client, no_id)
    assert missing_id.status_code == 400 and "Message-Id" in missing_id.text
    assert postmark(client, b"{not json").status_code == 400
    no_from = postmark(client, {**postmark_payload("f8@c", "x"), "FromFull": None, "From": None})
    assert no_from.status_code == 400 and "From" in no_from.text
    assert cx.store.list_conversations() == []
    assert cx.store.email_for(["forged@customer.test", "f6@customer.test", "f8@c"]) is None
    # a signed request replayed (the same token) is refused, even before it is old
    first = mailgun(client, fields)
    assert first.status_code == 200 and first.json()["outcome"] == "stored"
    replay = mailgun(client, fields)
    assert replay.status_code == 401 and "already used" in replay.text


def test_the_channel_is_off_without_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("CXSTACK_EMAIL_ADDRESS", "CXSTACK_SMTP_HOST", "CXSTACK_IMAP_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert EmailSettings.from_env() is None
    settings_file = SHOP["cxstack.yaml"] + "channels: [api, webchat, email]\n"
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing"),
        workspace=load_workspace(write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings_file})),
    )
    with TestClient(create_api(cx)) as client:
        assert mailgun(client, mailgun_fields("off@c", "hi")).status_code == 404
        assert postmark(client, postmark_payload("off2@c", "hi")).status_code == 404
    assert "refused an email webhook from mailgun" in caplog.text
    assert "refused an email webhook from postmark" in caplog.text
    assert cx.store.list_conversations() == []


def test_a_mail_is_answered_in_its_thread_and_a_reply_to_ours_threads_back(
    service: tuple[TestClient, Any], smtp: tuple[Inbox, int]
) -> None:
    client, cx = service
    inbox, _ = smtp
    body = "What is your return policy?\n\nThanks,\nAlice\n\nOn Sun, Nov 29 Shop wrote:\n> old stuff"
    fields = mailgun_fields("first@customer.test", body, subject="Returns")
    answer = mailgun(client, fields)
    assert answer.status_code == 200 and answer.json()["outcome"] == "stored"
    conversation = answer.json()["conversation_id"]
    for _ in range(3):  # Mailgun retries: a new token each time, the same Message-ID
        again = mailgun(client, mailgun_fields("first@customer.test", body, subject="Returns"))
        assert again.json() == {"outcome": "duplicate", "conversation_id": conversation, "reason": None}
    wait_for(lambda: len(inbox.mails) == 1)
    reply = inbox.mails[0]

    def sent() -> list[Any]:  # the SMTP server has the mail a moment before the outbox row says so
        return [i for i in cx.store.list_outbox(OutboxStatus.SENT) if i.conversation_id == conversation]

    wait_for(lambda: len(sent()) == 1)
    item = sent()[0]
    assert (
        reply["Message-ID"] == f"<cx.{item.id}@shop.test>"
        and item.provider_message_id == f"cx.{item.id}@shop.test"
    )
    assert reply["In-Reply-To"] == "<first@customer.test>" and reply["References"] == "<first@customer.test>"
    assert (
        reply["Subject"] == "Re: Returns" and reply["From"] == OURS and reply["To"] == "alice@customer.test"
    )
    assert reply["Auto-Submitted"] == "auto-replied"
    assert "30 days" in reply.get_content()
    assert inbox.envelopes[0][1] == ["alice@customer.test"]
    messages = cx.store.list_messages(ConversationId(conversation))
    assert messages[0].text == "Returns\n\nWhat is your return policy?"  # stripped; the full text is kept:
    assert cx.store.email_for(["first@customer.test"]).full_text.endswith("> old stuff")
    # the customer answers our mail: In-Reply-To names our Message-ID
    ours = reply["Message-ID"]
    follow_up = mailgun_fields(
        "second@customer.test",
        "How many days do I have to return something?\n\n> quoted answer",
        subject="Re: Returns",
        in_reply_to=ours,
        references=f"<first@customer.test> {ours}",
    )
    threaded = mailgun(client, follow_up)
    assert threaded.json()["conversation_id"] == conversation
    wait_for(lambda: len(inbox.mails) == 2)
    second = inbox.mails[1]
    assert second["In-Reply-To"] == "<second@customer.test>" and second["Subject"] == "Re: Returns"
    assert second["References"] == f"<first@customer.test> {ours} <second@customer.test>"
    assert [m.role.value for m in cx.store.list_messages(ConversationId(conversation))] == [
        "customer",
        "assistant",
        "customer",
        "assistant",
    ]
    assert len(cx.store.list_conversations()) == 1


def test_identity_comes_from_the_verdict_never_from_the_text(service: tuple[TestClient, Any]) -> None:
    client, cx = service
    cx.store.upsert_customers(
        [
            Customer(id=CustomerId("cus_vip"), name="Vee", email="vee@customer.test", plan="enterprise"),
            Customer(id=CustomerId("cus_bob"), name="Bob", email="bob@customer.test"),
        ]
    )
    verified = mailgun(client, mailgun_fields("v1@customer.test", "hello", sender="vee@customer.test"))
    spoofed = mailgun(
        client,
        mailgun_fields(
            "v2@attacker.test", "I am cus_vip, refund me", sender="vee@customer.test", spf="Fail", dkim="Fail"
        ),
    )
    postmark_ok = postmark(client, postmark_payload("v3@customer.test", "where is my order"))
    postmark_spoofed = postmark(
        client,
        postmark_payload(
            "v4@attacker.test",
            "hi",
            auth_results="mx.postmarkapp.com; dkim=pass header.d=attacker.test",
            envelope_from="bounces@attacker.test",  # SPF passed, for the attacker's own domain
        ),
    )
    conversations = {c.id: c for c in cx.store.list_conversations()}
    vip = conversations[verified.json()["conversation_id"]]
    assert (vip.customer_id, vip.verified) == ("cus_vip", True)
    fake = conversations[spoofed.json()["conversation_id"]]
    assert (fake.customer_id, fake.verified) == ("email:vee@customer.test", False)
    assert conversations[postmark_ok.json()["conversation_id"]].customer_id == "cus_bob"
    pm_fake = conversations[postmark_spoofed.json()["conversation_id"]]
    assert (pm_fake.customer_id, pm_fake.verified) == ("email:bob@customer.test", False)
    # a forged mail naming the verified thread in its headers does not join it
    intruder = mailgun(
        client,
        mailgun_fields(
            "v5@attacker.test",
            "refund me",
            sender="vee@customer.test",
            spf="Fail",
            dkim="Fail",
            in_reply_to="<v1@customer.test>",
        ),
    )
    assert intruder.json()["conversation_id"] not in (vip.id, fake.id)
    other_sender = mailgun(
        client,
        mailgun_fields(
            "v6@customer.test", "me too", sender="eve@customer.test", in_reply_to="<v1@customer.test>"
        ),
    )
    assert other_sender.json()["conversation_id"] != vip.id


def test_bounces_and_auto_replies_are_never_answered(
    service: tuple[TestClient, Any], smtp: tuple[Inbox, int]
) -> None:
    client, cx = service
    inbox, _ = smtp
    first = mailgun(client, mailgun_fields("loop1@customer.test", "what is your return policy"))
    wait_for(lambda: len(inbox.mails) == 1)
    ours = inbox.mails[0]["Message-ID"].strip("<>")
    wait_for(lambda: bool(cx.store.list_outbox(OutboxStatus.SENT)))  # a real bounce comes minutes later
    out_of_office = mailgun_fields(
        "ooo@customer.test",
        "I am away until Monday.",
        subject="Automatic reply: Re: Return policy",
        in_reply_to=f"<{ours}>",
        extra_headers=[["Auto-Submitted", "auto-replied"], ["X-Autoreply", "yes"]],
    )
    ignored = mailgun(client, out_of_office)
    assert ignored.json()["outcome"] == "ignored" and "Auto-Submitted" in ignored.json()["reason"]
    bounce_text = (
        "This is the mail system at host mx.customer.test.\n\nI'm sorry to have to inform you that your"
        " message could not be delivered.\n\n--- original message headers ---\n"
        f"Message-ID: <{ours}>\nFrom: {OURS}\n"
    )
    bounce = mailgun_fields(
        "bounce1@mx.customer.test",
        bounce_text,
        sender="MAILER-DAEMON@mx.customer.test",
        subject="Undelivered Mail Returned to Sender",
        extra_headers=[["Content-Type", "multipart/report; report-type=delivery-status"]],
    )
    bounced = mailgun(client, bounce)
    assert bounced.json()["outcome"] == "bounce"
    item = next(
        i
        for i in cx.store.list_outbox(OutboxStatus.SENT)
        if i.conversation_id == first.json()["conversation_id"]
    )
    assert item.delivery_status == "failed" and "Undelivered" in (item.delivery_error or "")
    # the customer never got the answer: a person takes the conversation
    [packet] = cx.store.list_escalations()
    assert packet.reason_code == "undelivered" and packet.conversation_id == first.json()["conversation_id"]
    list_mail = mailgun_fields(
        "news@customer.test", "Our newsletter", extra_headers=[["List-Id", "<news.customer.test>"]]
    )
    assert mailgun(client, list_mail).json()["outcome"] == "ignored"
    time.sleep(0.3)  # nothing should be on its way; the outbox wakes at once on a commit
    cx_messages = sum(len(cx.store.list_messages(c.id)) for c in cx.store.list_conversations())
    assert cx_messages == 2 and len(inbox.mails) == 1
    assert cx.store.email_for(["ooo@customer.test", "bounce1@mx.customer.test", "news@customer.test"]) is None


def test_a_20_mb_attachment_is_a_placeholder(
    service: tuple[TestClient, Any], smtp: tuple[Inbox, int]
) -> None:
    client, cx = service
    inbox, _ = smtp
    big = b"%PDF-1.4\n" + b"0" * (20 * 1024 * 1024)
    fields = {**mailgun_fields("big@customer.test", "Here is the invoice, what is your return policy?")}
    fields["attachment-count"] = "1"
    answer = mailgun(client, fields, files={"attachment-1": ("invoice.pdf", big, "application/pdf")})
    assert answer.status_code == 200 and answer.json()["outcome"] == "stored"
    text = cx.store.list_messages(ConversationId(answer.json()["conversation_id"]))[0].text
    assert f"[attachment invoice.pdf (application/pdf, {len(big)} bytes): not stored]" in text
    assert len(text) < 1000
    wait_for(lambda: len(inbox.mails) == 1)  # answered once, like any mail
    listed = postmark_payload(
        "big2@customer.test",
        "see attached",
        attachments=[
            {"Name": "photo.jpg", "Content": "", "ContentType": "image/jpeg", "ContentLength": 20971520}
        ],
    )
    stored = postmark(client, listed)
    text = cx.store.list_messages(ConversationId(stored.json()["conversation_id"]))[0].text
    assert "[attachment photo.jpg (image/jpeg, 20971520 bytes): not stored]" in text


def test_a_refused_recipient_is_dead_at_once_with_the_reason_on_the_conversation(
    service: tuple[TestClient, Any],
) -> None:
    from cxstack.testing.authz import make_role_keys

    client, cx = service
    answer = mailgun(
        client, mailgun_fields("dead1@refused.test", "what is your return policy", sender="x@refused.test")
    )
    conversation = answer.json()["conversation_id"]
    wait_for(lambda: cx.store.list_outbox(OutboxStatus.DEAD))
    dead = cx.store.list_outbox(OutboxStatus.DEAD)[0]
    assert dead.attempts == 1 and "550" in (dead.last_error or "")
    keys = make_role_keys(cx.store)
    shown = client.get(
        f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {keys['agent']}"}
    )
    delivery = shown.json()["deliveries"][0]
    assert delivery["status"] == "dead" and "no such user" in delivery["error"]


# ---- SMTP out ----------------------------------------------------------------------------------------------


def _outbound(tmp_path: Path, port: int, recipient: str) -> tuple[EmailChannel, OutboxItem, Any]:
    from cxstack.testing.memory_store import InMemoryStore

    store = InMemoryStore()
    conversation = ConversationId("em:abc")
    store.add_email(EmailRecord("in1@customer.test", conversation, "in", recipient, subject="Order"))
    settings = EmailSettings(address=OURS, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    item = OutboxItem(
        "out_x1", conversation, "msg", "email", "On its way.", 0, OutboxStatus.PENDING, utcnow(), utcnow()
    )
    return EmailChannel(settings, store, timeout=5), item, store


def test_smtp_refusals_are_permanent_or_retried_by_their_code(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    channel, item, store = _outbound(tmp_path, port, "alice@customer.test")
    assert asyncio.run(channel.send(item)) == "cx.out_x1@shop.test"
    assert asyncio.run(channel.send(item)) == "cx.out_x1@shop.test"  # a resend is the same mail
    assert [m["Message-ID"] for m in inbox.mails] == ["<cx.out_x1@shop.test>"] * 2
    assert store.email_for(["cx.out_x1@shop.test"]).outbox_id == "out_x1"
    refused, item, _ = _outbound(tmp_path, port, "gone@refused.test")
    with pytest.raises(PermanentSendError, match="550"):
        asyncio.run(refused.send(item))
    busy, item, _ = _outbound(tmp_path, port, "later@busy.test")
    with pytest.raises(ConnectionError, match="451"):
        asyncio.run(busy.send(item))
    nowhere, item, _ = _outbound(tmp_path, free_port(), "alice@customer.test")
    with pytest.raises(OSError):
        asyncio.run(nowhere.send(item))


# ---- IMAP: a real local Dovecot ---------------------------------------------------------------------------

DOVECOT = Path("/usr/sbin/dovecot")
IMAP_USER, IMAP_PASSWORD = "support", "imap-secret"

DOVECOT_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = cxstack-test-{port}
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={root}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot() -> Iterator[int]:
    """Dovecot on a free loopback port, a passwd-file user and a Maildir in a fresh directory; plain
    authentication without TLS, which is only acceptable because it listens on 127.0.0.1."""
    import grp
    import os
    import pwd
    import shutil
    import subprocess
    import tempfile

    if not DOVECOT.exists():
        pytest.skip("dovecot-imapd is not installed (apt-get install dovecot-imapd; .ci/run does)")
    # the mail processes run as the mail user, who must reach the directory: not pytest's 0700 tmp_path
    root = Path(tempfile.mkdtemp(prefix="cxstack-dovecot-"))
    root.chmod(0o755)
    port = free_port()
    if os.geteuid() == 0:  # Dovecot refuses to run its login and mail processes as root
        internal, internal_group, login = "dovecot", "dovecot", "dovenull"
        user, group = "dovecot", "dovecot"
    else:
        user = internal = login = pwd.getpwuid(os.getuid()).pw_name
        group = internal_group = grp.getgrgid(os.getgid()).gr_name
    (root / "mail").mkdir()
    (root / "passwd").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n")
    (root / "passwd").chmod(0o644)
    if os.geteuid() == 0:
        shutil.chown(root / "mail", user, group)
    config = root / "dovecot.conf"
    config.write_text(
        DOVECOT_CONF.format(
            root=root,
            port=port,
            internal=internal,
            internal_group=internal_group,
            login=login,
            user=user,
            group=group,
        )
    )
    process = subprocess.Popen([str(DOVECOT), "-F", "-c", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    if probe.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                raise AssertionError(f"dovecot did not start: {log_text[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def raw_mail(
    message_id: str,
    body: str,
    *,
    sender: str = "carol@customer.test",
    subject: str = "Return policy",
    headers: dict[str, str] | None = None,
    attachment: bytes | None = None,
    auth: str
    | None = "mx.shop.test; spf=pass smtp.mailfrom=carol@customer.test; dkim=pass header.d=customer.test",
) -> bytes:
    mail = EmailMessage()
    if auth:
        mail["Authentication-Results"] = auth
    mail["From"] = f"Carol <{sender}>"
    mail["To"] = OURS
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{message_id}>"
    for name, value in (headers or {}).items():
        mail[name] = value
    mail.set_content(body)
    if attachment is not None:
        mail.add_attachment(attachment, maintype="application", subtype="pdf", filename="scan.pdf")
    return mail.as_bytes()


def append(port: int, *mails: bytes) -> None:
    import imaplib

    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(IMAP_USER, IMAP_PASSWORD)
        for raw in mails:
            status, _ = imap.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
            assert status == "OK"
    finally:
        imap.logout()


def unseen(port: int) -> list[bytes]:
    import imaplib

    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(IMAP_USER, IMAP_PASSWORD)
        imap.select("INBOX")
        _, data = imap.uid("SEARCH", "UNSEEN")
        return list((data[0] or b"").split())
    finally:
        imap.logout()


def mark_unseen(port: int) -> None:
    """What a poller that died after storing and before marking leaves behind."""
    import imaplib

    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(IMAP_USER, IMAP_PASSWORD)
        imap.select("INBOX")
        imap.uid("STORE", "1:*", "-FLAGS", "(\\Seen)")
    finally:
        imap.logout()


def imap_settings(port: int, smtp_port: int) -> EmailSettings:
    return EmailSettings(
        address=OURS,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_starttls=False,
        imap_host="127.0.0.1",
        imap_port=port,
        imap_user=IMAP_USER,
        imap_password=IMAP_PASSWORD,
        imap_ssl=False,
        poll_seconds=0.2,
        trusted_authserv_ids=("mx.shop.test",),
    )


def test_a_whole_mime_mail_parses_with_its_attachment_as_a_placeholder() -> None:
    from cxstack.channels.email import Attachment, parse_mime

    mail = parse_mime(
        raw_mail("m@customer.test", "the scan, please", attachment=b"%PDF" * 25), ["mx.shop.test"]
    )
    assert (mail.message_id, mail.sender, mail.text.strip()) == (
        "m@customer.test",
        "carol@customer.test",
        "the scan, please",
    )
    assert mail.attachments == (Attachment("scan.pdf", "application/pdf", 100),)
    assert sender_verified(mail)
    no_id = parse_mime(b"From: x@customer.test\r\nSubject: hi\r\n\r\nbody\r\n")
    assert no_id.message_id.endswith("@imap.invalid") and not sender_verified(no_id)


def test_the_imap_poller_ingests_each_mail_once(
    dovecot: int, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxstack.channels import email as email_module
    from cxstack.channels.email import ImapPoller
    from cxstack.testing.memory_store import InMemoryStore

    store = InMemoryStore()
    posted: list[tuple[str, str, str, str, bool]] = []
    seen_ids: set[str] = set()

    async def post(conversation: str, text: str, message_id: str, customer_id: str, verified: bool) -> bool:
        posted.append((conversation, text, message_id, customer_id, verified))
        new = message_id not in seen_ids
        seen_ids.add(message_id)
        return new

    monkeypatch.setattr(email_module, "MAX_IMAP_MESSAGE_BYTES", 1_000_000)
    append(
        dovecot,
        raw_mail("i1@customer.test", "What is your return policy?\n\nSent from my iPhone"),
        raw_mail("i2@customer.test", "I am away", headers={"Auto-Submitted": "auto-replied"}),
        raw_mail(
            "i3@customer.test", "spoofed", auth="mx.attacker.test; spf=pass smtp.mailfrom=carol@customer.test"
        ),
        raw_mail("i4@customer.test", "see the scan", subject="A huge one", attachment=b"%PDF" * 400_000),
    )
    poller = ImapPoller(imap_settings(dovecot, smtp[1]), store, post)
    first = asyncio.run(poller.poll_once())
    assert [a.outcome for a in first] == ["stored", "ignored", "stored", "stored"]
    assert unseen(dovecot) == []  # all marked seen
    texts = {p[2]: p for p in posted}
    assert texts["i1@customer.test"][1] == "What is your return policy?"
    assert texts["i1@customer.test"][4] is True  # the trusted server's verdict
    assert texts["i3@customer.test"][4] is False  # another server's header proves nothing
    assert texts["i4@customer.test"][1].startswith("A huge one\n\n[message of ")
    assert "only its headers were read" in texts["i4@customer.test"][1]
    assert asyncio.run(poller.poll_once()) == []  # nothing new
    # a poller that died after storing and before marking: the same mails again, each a duplicate
    mark_unseen(dovecot)
    again = ImapPoller(imap_settings(dovecot, smtp[1]), store, post)
    assert [a.outcome for a in asyncio.run(again.poll_once())] == [
        "duplicate",
        "ignored",
        "duplicate",
        "duplicate",
    ]
    assert len({p[2] for p in posted}) == 3 and len(store.email_thread(ConversationId(posted[0][0]))) == 1


def test_a_mail_polled_from_imap_is_answered_in_its_thread(
    dovecot: int,
    smtp: tuple[Inbox, int],
    tmp_path: Path,
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, smtp_port = smtp
    email_env(monkeypatch, smtp_port)
    monkeypatch.setenv("CXSTACK_IMAP_HOST", "127.0.0.1")
    monkeypatch.setenv("CXSTACK_IMAP_PORT", str(dovecot))
    monkeypatch.setenv("CXSTACK_IMAP_SSL", "false")
    monkeypatch.setenv("CXSTACK_IMAP_USER", IMAP_USER)
    monkeypatch.setenv("CXSTACK_IMAP_PASSWORD", IMAP_PASSWORD)
    monkeypatch.setenv("CXSTACK_IMAP_POLL_SECONDS", "0.2")
    monkeypatch.setenv("CXSTACK_EMAIL_TRUSTED_AUTHSERV", "mx.shop.test")
    settings_file = SHOP["cxstack.yaml"] + "channels: [api, webchat, email]\n"
    root = write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings_file})
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0]),
        workspace=load_workspace(root),
    )
    cx.store.upsert_customers(
        [Customer(id=CustomerId("cus_carol"), name="Carol", email="carol@customer.test")]
    )
    with TestClient(create_api(cx)):
        append(dovecot, raw_mail("imap1@customer.test", "How many days do I have to return something?"))
        wait_for(lambda: len(inbox.mails) == 1)
        reply = inbox.mails[0]
        assert reply["In-Reply-To"] == "<imap1@customer.test>" and reply["To"] == "carol@customer.test"
        assert reply["Subject"] == "Re: Return policy" and "30 days" in reply.get_content()
        conversation = cx.store.list_conversations()[0]
        assert (conversation.customer_id, conversation.verified) == ("cus_carol", True)
        # her answer to our reply comes back through IMAP into the same conversation
        ours = reply["Message-ID"]
        append(
            dovecot,
            raw_mail(
                "imap2@customer.test",
                "Can I return an item I bought?\n\nOn Mon, Shop wrote:\n> 30 days",
                subject="Re: Return policy",
                headers={"In-Reply-To": ours, "References": f"<imap1@customer.test> {ours}"},
            ),
        )
        wait_for(lambda: len(inbox.mails) == 2)
        assert inbox.mails[1]["In-Reply-To"] == "<imap2@customer.test>"
        assert len(cx.store.list_conversations()) == 1
        assert unseen(dovecot) == []
