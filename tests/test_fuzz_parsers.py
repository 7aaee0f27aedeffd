"""Hypothesis on the parsers at the edges: the workspace loader, the amount parser and the webhook parsers.

Each takes text someone else wrote; each must answer with its own result or its own error (naming the field),
never with another exception, and never hang. Examples per property stay modest: the file runs in well under
a minute on two cores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import string
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.conftest import SHOP, write_workspace

from cxstack.channels import email, whatsapp
from cxstack.domain.money import Money, find_money, format_money, parse_money_answer
from cxstack.integrations.helpdesks import webhook
from cxstack.integrations.helpdesks.base import HelpdeskEvent, PayloadError, SignatureError
from cxstack.integrations.helpdesks.chatwoot import Chatwoot, ChatwootSecrets
from cxstack.integrations.helpdesks.chatwoot import signature_of as chatwoot_signature
from cxstack.integrations.helpdesks.webhook import SignedWebhook
from cxstack.integrations.helpdesks.zendesk import Zendesk, ZendeskSecrets
from cxstack.integrations.helpdesks.zendesk import signature_of as zendesk_signature
from cxstack.workspace.loader import WorkspaceInvalid, load_workspace
from cxstack.workspace.validate import Problem, validate_workspace
from cxstack.workspace.workspace import Workspace

FUZZ = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fails the example instead of hanging the run (the loader reads untrusted YAML)."""

    def expired(*_: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a mutation can replace (the root included)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = deepcopy(document)
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return copy


# A value of the wrong kind more often than arbitrary JSON would give one: parsers trip on those.
WRONG = st.sampled_from([None, 0, 5, -1, True, "", "x", "²", [], [1], {}, {"a": 1}, 1e300]) | JSON


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one to three values replaced: nearly valid, wrong somewhere."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(document)))
        document = replaced(document, path, draw(WRONG))
    return document


# --- the workspace loader -----------------------------------------------------------------------------------

YAML_FILES = sorted(name for name in SHOP if name.endswith(".yaml"))


@st.composite
def broken_yaml(draw: st.DrawFn, text: str) -> str:
    """A valid workspace file spoiled: a value replaced, lines dropped or swapped, the text cut short."""
    how = draw(st.sampled_from(["value", "drop", "cut", "random", "token"]))
    if how == "value":
        return yaml.safe_dump(
            draw(mutated(yaml.safe_load(text))), allow_unicode=True, default_flow_style=False
        )
    lines = text.splitlines()
    if how == "drop" and lines:
        del lines[draw(st.integers(0, len(lines) - 1))]
        return "\n".join(lines)
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if how == "token":
        token = draw(
            st.sampled_from([":", "- ", "{", "[", "'", '"', "&a", "*a", "!!python/object", "\t", "%"])
        )
        at = draw(st.integers(0, len(text)))
        return text[:at] + token + text[at:]
    return draw(st.text(alphabet=string.printable, max_size=200))


def check_folder(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as folder, within(20):
        root = write_workspace(Path(folder), files)
        problems = validate_workspace(root)
        assert all(isinstance(p, Problem) and p.message for p in problems)
        try:
            workspace = load_workspace(root)
        except WorkspaceInvalid as exc:
            assert exc.problems, "refused without saying why"
            assert any(p.is_error for p in problems), "validate found no error where load refused"
        else:
            assert isinstance(workspace, Workspace) and workspace.version
            assert not any(p.is_error for p in problems), "loaded what validate calls invalid"


@pytest.mark.parametrize("name", YAML_FILES)
@pytest.mark.parametrize("text", ["", "null", "[1, 2]", "version: 1\n- a"])
def test_loader_answers_problems_for_a_file_that_is_not_a_mapping(name: str, text: str) -> None:
    # found by the fuzzer: an empty strategy.yaml raised AttributeError in the validator
    check_folder({**SHOP, name: text})


@FUZZ
@given(st.sampled_from(YAML_FILES), st.data())
def test_loader_answers_problems_or_a_workspace_for_a_spoiled_file(name: str, data: st.DataObject) -> None:
    check_folder({**SHOP, name: data.draw(broken_yaml(SHOP[name]))})


@FUZZ
@given(st.sampled_from(YAML_FILES), JSON)
def test_loader_answers_problems_or_a_workspace_for_any_yaml_value(name: str, value: Any) -> None:
    check_folder({**SHOP, name: yaml.safe_dump(value, allow_unicode=True)})


# --- money --------------------------------------------------------------------------------------------------

CURRENCIES = [("USD", "en_US"), ("EUR", "de_DE"), ("GBP", "en_GB"), ("JPY", "ja_JP"), ("EUR", "fr_FR")]
MONEY_TOKENS = [*"0123456789 .,'$€£¥-–~kKmM\u00a0", "USD", "EUR", "dollars", "euros", " to ", " and ", "half"]
MONEY_TEXT = st.lists(st.sampled_from(MONEY_TOKENS) | st.characters(), max_size=30).map("".join)


@FUZZ
@given(MONEY_TEXT, st.sampled_from(CURRENCIES))
@example("$1,5OO", ("USD", "en_US"))
def test_find_money_never_raises(text: str, market: tuple[str, str]) -> None:
    currency, locale = market
    for mention in find_money(text, currency=currency, locale=locale):
        assert 0 <= mention.span[0] <= mention.span[1] <= len(text)
        assert mention.ok != (mention.refusal is not None)
        if mention.money is not None:
            assert mention.money.currency == currency and mention.money.amount >= 0
    parse_money_answer(text, currency=currency, locale=locale)


@FUZZ
@given(st.text(alphabet=st.characters(exclude_categories=["Nd"]), max_size=60), st.sampled_from(CURRENCIES))
@example("fifty dollars", ("USD", "en_US"))
def test_no_amount_is_read_from_text_without_digits(text: str, market: tuple[str, str]) -> None:
    currency, locale = market
    assert not [m for m in find_money(text, currency=currency, locale=locale) if m.ok]
    answer = parse_money_answer(text, currency=currency, locale=locale)
    assert answer is None or not answer.ok


@FUZZ
@given(
    st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from(CURRENCIES),
)
def test_formatted_amounts_read_back_exactly(amount: Decimal, market: tuple[str, str]) -> None:
    currency, locale = market
    if currency == "JPY":
        amount = amount.to_integral_value()
    written = format_money(Money(amount, currency), locale)
    (mention,) = find_money(f"I paid {written} for it", currency=currency, locale=locale)
    assert mention.money == Money(amount, currency), (written, mention)


# --- webhook parsers ----------------------------------------------------------------------------------------

WHATSAPP_VALID: dict[str, Any] = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": "106540352242922",
                        },
                        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                        "messages": [
                            {
                                "from": "16505551234",
                                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                                "timestamp": "1749416383",
                                "type": "text",
                                "text": {"body": "Does it come in another color?"},
                            }
                        ],
                        "statuses": [
                            {
                                "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MDgwQjc1QUM1OTVBRkQ3RjMA",
                                "status": "delivered",
                                "timestamp": "1750263773",
                                "recipient_id": "16505551234",
                            }
                        ],
                    },
                }
            ],
        }
    ],
}


def whatsapp_with(key: str, new: Any) -> Any:
    """The documented example with one field of its `value` replaced."""
    return replaced(WHATSAPP_VALID, ("entry", 0, "changes", 0, "value", key), new)


def whatsapp_answer(payload: Any) -> whatsapp.Delivery | None:
    try:
        return whatsapp.parse(payload)
    except whatsapp.PayloadError as exc:
        assert exc.field, exc
        return None


def test_whatsapp_senders_are_ascii_digits() -> None:
    message = {**WHATSAPP_VALID["entry"][0]["changes"][0]["value"]["messages"][0], "from": "²³"}
    with pytest.raises(whatsapp.PayloadError, match=r"messages\[0\]\.from"):
        whatsapp.parse(whatsapp_with("messages", [message]))


def test_the_whatsapp_example_parses() -> None:
    delivery = whatsapp.parse(WHATSAPP_VALID)
    assert [m.text for m in delivery.messages] == ["Does it come in another color?"]
    assert [s.status for s in delivery.statuses] == ["delivered"]


@FUZZ
@given(JSON)
def test_whatsapp_parse_of_any_json_is_a_delivery_or_a_payload_error(payload: Any) -> None:
    whatsapp_answer(payload)


@FUZZ
@given(mutated(WHATSAPP_VALID))
# found by the fuzzer: AttributeError / TypeError instead of a PayloadError naming the field
@example(replaced(WHATSAPP_VALID, ("entry", 0, "changes", 0, "value", "contacts", 0, "profile"), "x"))
@example(whatsapp_with("contacts", 5))
@example(whatsapp_with("messages", 5))
@example(whatsapp_with("statuses", True))
def test_whatsapp_parse_of_a_spoiled_payload_is_a_delivery_or_a_payload_error(payload: Any) -> None:
    whatsapp_answer(payload)


POSTMARK_VALID: dict[str, Any] = {
    "FromName": "Postmarkapp Support",
    "MessageStream": "inbound",
    "From": "support@postmarkapp.com",
    "FromFull": {"Email": "support@postmarkapp.com", "Name": "Postmarkapp Support", "MailboxHash": ""},
    "To": '"Firstname Lastname" <yourhash+SampleHash@inbound.postmarkapp.com>',
    "Subject": "Test subject",
    "MessageID": "73e6d360-66eb-11e1-8e72-a8904824019b",
    "TextBody": "This is a test text body.\n\nOn Mon, someone wrote:\n> earlier",
    "Headers": [
        {"Name": "X-Spam-Status", "Value": "No"},
        {"Name": "Message-ID", "Value": "<CAPoGMm6@mail.gmail.com>"},
        {
            "Name": "Authentication-Results",
            "Value": "mx.postmarkapp.com; spf=pass smtp.mailfrom=postmarkapp.com",
        },
    ],
    "Attachments": [
        {
            "Name": "test.txt",
            "Content": "VGhpcyBpcyBhdHRhY2htZW50IGNvbnRlbnRzLCBiYXNlLTY0IGVuY29kZWQu",
            "ContentType": "text/plain",
            "ContentLength": 45,
        }
    ],
}

MAILGUN_VALID = {
    "from": "Bob <bob@example.com>",
    "sender": "bob@example.com",
    "subject": "Re: your order",
    "body-plain": "Thanks!\n\nOn Tue, support wrote:\n> Your order shipped",
    "Message-Id": "<20240101.1@example.com>",
    "In-Reply-To": "<abc@shop.test>",
    "message-headers": json.dumps(
        [["Message-Id", "<20240101.1@example.com>"], ["Subject", "Re: your order"]]
    ),
    "attachment-count": "0",
}


def check_email(parse: Callable[[], email.InboundEmail]) -> None:
    try:
        mail = parse()
    except email.PayloadError as exc:
        assert exc.field, exc
        return
    email.automatic_reason(mail, "support@shop.test")
    email.strip_reply(mail.text)


@FUZZ
@given(JSON | mutated(POSTMARK_VALID))
def test_postmark_parse_is_an_email_or_a_payload_error(payload: Any) -> None:
    check_email(lambda: email.parse_postmark(payload, trusted=("mx.postmarkapp.com",)))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([*MAILGUN_VALID, "X-Mailgun-Spf", "References", "attachment-count"]),
        st.text(max_size=40) | st.sampled_from([*MAILGUN_VALID.values(), "²", "1000", "1001", "9" * 30]),
    ),
    st.booleans(),
)
# found by the fuzzer: ValueError from int("²"); a count of 10**9 built a billion placeholders
@example({"attachment-count": "²"}, True)
@example({"attachment-count": "999999999999"}, True)
def test_mailgun_parse_is_an_email_or_a_payload_error(fields: dict[str, str], over_valid: bool) -> None:
    check_email(lambda: email.parse_mailgun({**MAILGUN_VALID, **fields} if over_valid else fields))


MIME_VALID = (
    b"From: Bob <bob@example.com>\r\nTo: support@shop.test\r\nSubject: Hello\r\n"
    b"Message-ID: <m1@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWhere is my order?\r\n"
)


MIME_HEADERS = [
    "From",
    "To",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "Return-Path",
    "Authentication-Results",
    "List-Id",
]
HEADER_VALUE = st.lists(
    st.sampled_from(
        ['"', "<", ">", "@", ";", "=", "(", ")", ",", ":", "\\", "=?utf-8?q?", "?=", " ", "a", "x.y"]
    )
    | st.text(max_size=5),
    max_size=12,
).map("".join)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(MIME_HEADERS), HEADER_VALUE), max_size=6), st.binary(max_size=60))
def test_parse_mime_of_odd_headers_is_an_email(headers: list[tuple[str, str]], body: bytes) -> None:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8", "surrogateescape")
    mail = email.parse_mime(head + b"\r\n" + body)
    assert mail.message_id
    email.automatic_reason(mail, "support@shop.test")


@FUZZ
@given(
    st.binary(max_size=300)
    | st.builds(lambda cut, junk: MIME_VALID[:cut] + junk, st.integers(0, 200), st.binary(max_size=40))
)
# found by the fuzzer: the standard library's header parser raised IndexError on these
@example(b'From: "\r\nMessage-ID: <@x>\r\nTo: <\r\n\r\nhi')
@example(b"Message-ID: <a@\r\n\r\n")
def test_parse_mime_of_any_bytes_is_an_email(raw: bytes) -> None:
    mail = email.parse_mime(raw)
    assert mail.message_id
    email.automatic_reason(mail, "support@shop.test")
    email.strip_reply(mail.text)


@FUZZ
@given(st.text(max_size=300))
def test_strip_reply_never_raises_and_never_grows(text: str) -> None:
    assert len(email.strip_reply(text)) <= len(text)


HELPDESKS = {
    "zendesk": Zendesk("http://127.0.0.1:9", ZendeskSecrets("a@shop.test", "token", "secret")),
    "chatwoot": Chatwoot("http://127.0.0.1:9", ChatwootSecrets("token", "secret"), account_id=1, inbox_id=1),
    "generic": SignedWebhook("http://127.0.0.1:9", "secret"),
}
HELPDESK_VALID: dict[str, dict[str, Any]] = {
    "zendesk": {
        "ticket_id": "35436",
        "status": "solved",
        "external_id": "c1",
        "comment": {
            "id": "9001",
            "body": "Your refund is on its way.",
            "public": True,
            "author_email": "ann@shop.test",
        },
    },
    "chatwoot": {
        "event": "message_created",
        "message_type": "outgoing",
        "private": False,
        "id": 77,
        "content": "Your refund is on its way.",
        "conversation": {"id": 12, "status": "open"},
        "sender": {"name": "Ann", "type": "user"},
    },
    "generic": {
        "type": "reply",
        "conversation_id": "c1",
        "ticket": "T-1",
        "text": "Done.",
        "id": "ev-1",
        "author": "ann",
    },
}


def test_a_generic_event_type_that_is_not_a_string_is_a_payload_error() -> None:
    # found by the fuzzer: TypeError (unhashable list) instead of a PayloadError naming the field
    body = json.dumps({**HELPDESK_VALID["generic"], "type": []}).encode()
    with pytest.raises(PayloadError, match=r"^type:"):
        HELPDESKS["generic"].parse(body, {})


@FUZZ
@given(st.sampled_from(sorted(HELPDESKS)), st.data())
def test_helpdesk_parse_is_events_or_a_payload_error(kind: str, data: st.DataObject) -> None:
    body = data.draw(
        st.binary(max_size=60)
        | JSON.map(lambda v: json.dumps(v).encode())
        | mutated(HELPDESK_VALID[kind]).map(lambda v: json.dumps(v).encode())
    )
    try:
        events = HELPDESKS[kind].parse(body, {})
    except PayloadError as exc:
        assert exc.field, exc
        return
    assert all(isinstance(event, HelpdeskEvent) for event in events)


@pytest.mark.parametrize("kind", sorted(HELPDESKS))
def test_the_helpdesk_examples_parse(kind: str) -> None:
    assert HELPDESKS[kind].parse(json.dumps(HELPDESK_VALID[kind]).encode(), {})


STAMPS = st.text(max_size=12) | st.sampled_from(["²", "١٢٣", "9" * 5000, "-1", "1e9", "2026-11-30T08:00:00"])


def signed_headers(kind: str, stamp: str, body: bytes) -> dict[str, str]:
    """Headers signed with the right secret over `stamp`: only the timestamp's reading is left to test."""
    if kind == "zendesk":
        return {
            "x-zendesk-webhook-signature": zendesk_signature("secret", stamp, body),
            "x-zendesk-webhook-signature-timestamp": stamp,
        }
    if kind == "chatwoot":
        return {
            "x-chatwoot-signature": chatwoot_signature("secret", stamp, body),
            "x-chatwoot-timestamp": stamp,
        }
    digest = hmac.new(b"secret", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {webhook.HEADER.lower(): f"t={stamp},v1={digest}"}


@FUZZ
@given(st.sampled_from(sorted(HELPDESKS)), STAMPS)
# found by the fuzzer: ValueError from int() on a signed timestamp of non-ASCII or too many digits
@example("generic", "²")
@example("chatwoot", "9" * 5000)
def test_a_signed_timestamp_is_accepted_or_a_signature_error(kind: str, stamp: str) -> None:
    body = b'{"type": "reply"}'
    headers = signed_headers(kind, stamp, body)
    try:
        HELPDESKS[kind].verify(body, headers, datetime.now(UTC))
    except SignatureError:
        return


@pytest.mark.parametrize("kind", sorted(HELPDESKS))
def test_a_fresh_signed_timestamp_verifies(kind: str) -> None:
    now = datetime.now(UTC)
    stamp = now.isoformat() if kind == "zendesk" else str(int(now.timestamp()))
    body = b'{"type": "reply"}'
    HELPDESKS[kind].verify(body, signed_headers(kind, stamp, body), now)
