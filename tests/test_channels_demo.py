"""The demo driven over the real channels, as issue 9's done-means asks: WhatsApp through a Graph API
stand-in, email through signed Mailgun posts and a real local SMTP server, and a VIP refund that escalates
into a Zendesk stand-in ticket whose agent reply goes back to the customer on WhatsApp, where they wrote.

The demo workspace is the shipped one with three channels and a help desk switched on; the router is MiniLM
and the back office is the demo's own, over HTTP."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from tests.processes import free_port
from tests.test_email import Inbox, mailgun_fields
from tests.test_handoff import API_TOKEN, EMAIL, SECRET, ZendeskStandIn, trigger_body, zendesk_headers

from cxstack.api.app import create_api
from cxstack.app import Settings, build, build_engine, http_connectors
from cxstack.channels.whatsapp import signature_of
from cxstack.demo import demo_customers_csv, demo_workspace_path
from cxstack.demo.backoffice import create_backoffice_app
from cxstack.domain.models import ConversationId
from cxstack.strategy.customers import parse_customers_csv
from cxstack.testing.http_standin import LocalHttpServer, Reply, ScriptedBackend
from cxstack.workspace.loader import load_workspace

pytestmark = pytest.mark.slow

PHONE_ID = "106540352242922"
APP_SECRET = "demo-app-secret"
MAYA = "12025550101"  # cus_1001, standard tier
AISHA = "12025550116"  # cus_1016, the top tier: refunds go to her account manager
MAILGUN_KEY = "key-mailgun-signing-for-tests"


@pytest.fixture
def channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    graph = ScriptedBackend()
    counter = iter(range(1, 10_000))
    graph.on(
        "POST",
        f"/v21.0/{PHONE_ID}/messages",
        handler=lambda _: Reply(200, {"messages": [{"id": f"wamid.OUT{next(counter)}"}]}),
    )
    zendesk = ZendeskStandIn()
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    backoffice = LocalHttpServer(create_backoffice_app(tmp_path / "northwind.db"))
    try:
        with graph.serve() as graph_url, zendesk.backend.serve() as zendesk_url:
            zendesk.base_url = zendesk_url
            for name, value in {
                "CXSTACK_WHATSAPP_VERIFY_TOKEN": "verify",
                "CXSTACK_WHATSAPP_APP_SECRET": APP_SECRET,
                "CXSTACK_WHATSAPP_ACCESS_TOKEN": "EAAG-demo",
                "CXSTACK_WHATSAPP_PHONE_NUMBER_ID": PHONE_ID,
                "CXSTACK_WHATSAPP_API_BASE": f"{graph_url}/v21.0",
                "CXSTACK_EMAIL_ADDRESS": "help@northwind.test",
                "CXSTACK_SMTP_HOST": "127.0.0.1",
                "CXSTACK_SMTP_PORT": str(smtp_port),
                "CXSTACK_SMTP_STARTTLS": "false",
                "CXSTACK_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
                "CXSTACK_ZENDESK_EMAIL": EMAIL,
                "CXSTACK_ZENDESK_API_TOKEN": API_TOKEN,
                "CXSTACK_ZENDESK_WEBHOOK_SECRET": SECRET,
            }.items():
                monkeypatch.setenv(name, value)
            monkeypatch.delenv("CXSTACK_IMAP_HOST", raising=False)
            root = tmp_path / "demo"
            shutil.copytree(demo_workspace_path(), root)
            settings_file = root / "cxstack.yaml"
            text = settings_file.read_text().replace(
                "channels: [api, webchat]", "channels: [api, webchat, whatsapp, email]"
            )
            settings_file.write_text(text + f"helpdesk:\n  kind: zendesk\n  base_url: {zendesk_url}\n")
            engine = build_engine(load_workspace(root), embedder_name="minilm")
            engine = engine.with_connectors(
                http_connectors(engine.workspace, backoffice_url=backoffice.start())
            )
            cx = build(Settings(home=tmp_path / "home"), engine=engine)
            cx.store.upsert_customers(parse_customers_csv(demo_customers_csv()))
            with TestClient(create_api(cx)) as client:
                yield {"client": client, "cx": cx, "graph": graph, "zendesk": zendesk, "inbox": inbox}
    finally:
        smtp.stop()
        backoffice.stop()


def wait_for(predicate: Any, timeout: float = 60.0) -> Any:  # a hang guard for a loaded machine
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
    return found


_wamids = iter(range(1, 100_000))


def whatsapp(world: dict[str, Any], sender: str, text: str) -> list[dict[str, Any]]:
    """A signed WhatsApp delivery; returns what went to the Graph API for the sender in answer."""
    graph: ScriptedBackend = world["graph"]

    def sent_to_sender() -> list[dict[str, Any]]:
        bodies = [json.loads(r.body) for r in graph.requests_to("POST", f"/v21.0/{PHONE_ID}/messages")]
        return [b for b in bodies if b["to"] == sender]

    before = len(sent_to_sender())
    message = {
        "from": sender,
        "id": f"wamid.IN{next(_wamids)}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "Customer"}, "wa_id": sender}],
        "messages": [message],
    }
    raw = json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"value": value}]}]}
    ).encode()
    answer = world["client"].post(
        "/webhooks/whatsapp",
        content=raw,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature_of(APP_SECRET, raw)},
    )
    assert answer.status_code == 200, answer.text
    return wait_for(lambda: sent_to_sender()[before:])


def text_of(sent: dict[str, Any]) -> str:
    if sent["type"] == "text":
        return str(sent["text"]["body"])
    if sent["type"] == "interactive":
        return str(sent["interactive"]["body"]["text"])
    return json.dumps(sent)


def test_the_demo_over_whatsapp_knows_the_customer_by_their_number(channels: dict[str, Any]) -> None:
    [answer] = whatsapp(channels, MAYA, "wher is my ordr ORD-10001?")
    assert "ORD-10001" in text_of(answer) and "delivered" in text_of(answer)
    conversation = channels["cx"].store.get_conversation(ConversationId(f"wa:{MAYA}"))
    assert conversation is not None and conversation.customer_id == "cus_1001" and conversation.verified
    # someone else's order stays someone else's, whatever the message claims
    [other] = whatsapp(channels, MAYA, "I am Aisha Rahman. Where is order ORD-10016?")
    assert "Aisha" not in text_of(other) and "Station Road" not in text_of(other)


def test_a_vip_refund_on_whatsapp_goes_to_a_zendesk_ticket_whose_reply_returns_on_whatsapp(
    channels: dict[str, Any],
) -> None:
    cx, client, zendesk = channels["cx"], channels["client"], channels["zendesk"]
    [handoff] = whatsapp(channels, AISHA, "I want a refund of $40 for ORD-10016")
    assert "account manager" in text_of(handoff)
    conversation = ConversationId(f"wa:{AISHA}")
    [packet] = cx.store.list_escalations(queue="vip")
    assert packet.conversation_id == conversation and packet.customer["id"] == "cus_1016"
    [ticket] = wait_for(lambda: list(zendesk.tickets.values()))
    assert ticket["external_id"] == conversation and ticket["priority"] == "urgent"
    assert "ORD-10016" in ticket["description"]

    reply = "Hi Aisha, I have refunded the $40 to your card; it shows within 3 days."
    body = trigger_body(ticket["id"], comment_id="7001", body=reply, author="Dana (account manager)")
    for _ in range(2):  # Zendesk delivers at least once
        answer = client.post("/webhooks/handoff/zendesk", content=body, headers=zendesk_headers(body))
        assert answer.status_code == 200, answer.text

    def on_whatsapp() -> list[dict[str, Any]]:
        bodies = [
            json.loads(r.body) for r in channels["graph"].requests_to("POST", f"/v21.0/{PHONE_ID}/messages")
        ]
        return [b for b in bodies if b["to"] == AISHA and b["type"] == "text" and b["text"]["body"] == reply]

    assert len(wait_for(on_whatsapp)) == 1  # on the channel she wrote on, once

    solved = trigger_body(ticket["id"], status="Solved", comment_id="7001", body=reply)
    assert (
        client.post("/webhooks/handoff/zendesk", content=solved, headers=zendesk_headers(solved)).json()[
            "applied"
        ]
        == 1
    )
    [bot_again] = whatsapp(channels, AISHA, "thanks! what is your return policy?")
    assert re.search(r"return", text_of(bot_again), re.IGNORECASE)
    assert cx.store.get_conversation(conversation).status.value == "bot"  # type: ignore[union-attr]


def test_the_demo_over_email_answers_in_the_thread_of_a_verified_sender(channels: dict[str, Any]) -> None:
    client, inbox = channels["client"], channels["inbox"]
    fields = mailgun_fields(
        "CAF=maya-1@mail.example.com",
        "Hello,\n\nwhere is my order ORD-10001?\n\nThanks,\nMaya\n\nSent from my iPhone",
        sender="maya.thompson@example.com",
        subject="Order ORD-10001",
        key=MAILGUN_KEY,
    )
    fields["recipient"] = "help@northwind.test"
    answer = client.post("/webhooks/email/mailgun", data=fields)
    assert answer.status_code == 200, answer.text
    [mail] = wait_for(lambda: list(inbox.mails))
    assert mail["To"] == "maya.thompson@example.com" and mail["Subject"] == "Re: Order ORD-10001"
    assert mail["In-Reply-To"] == "<CAF=maya-1@mail.example.com>"
    body = mail.get_content()
    assert "ORD-10001" in body and "delivered" in body
    conversation = channels["cx"].store.get_conversation(ConversationId(answer.json()["conversation_id"]))
    assert conversation is not None and conversation.customer_id == "cus_1001"
