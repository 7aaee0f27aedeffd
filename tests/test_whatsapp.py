"""The WhatsApp Cloud API channel against its real contract: webhook verification, signatures on the raw
body, payloads as Meta documents them (text, interactive replies, media, statuses), deduplication on the
wamid, replies through a local stand-in of the Graph API messages endpoint, the 24-hour window, and delivery
reports applied in order whatever order they arrive in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import SHOP, write_workspace

from cxstack.api.app import create_api
from cxstack.app import Settings, build
from cxstack.channels.whatsapp import (
    PayloadError,
    WhatsAppChannel,
    WhatsAppSettings,
    parse,
    signature_of,
    signature_valid,
)
from cxstack.domain.models import ConversationId, CustomerId, InboundMessage, utcnow
from cxstack.domain.ports import OutboxItem, OutboxStatus, PermanentSendError
from cxstack.testing.authz import make_role_keys
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.loader import load_workspace

PHONE_ID = "106540352242922"
SECRET = "app-secret-for-tests"
TOKEN = "verify-me"


def test_the_signature_matches_the_published_vector() -> None:
    expected = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    assert signature_of("secret", b"test") == expected
    assert signature_valid("secret", b"test", expected)
    assert not signature_valid("secret", b"test ", expected)
    assert not signature_valid("secret", b"test", None)
    assert not signature_valid("secret", b"test", expected.upper())


def text_message(wamid: str, text: str, sender: str = "15551234567", at: int | None = None) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid,
        "timestamp": str(at or int(time.time())),
        "type": "text",
        "text": {"body": text},
    }


def envelope(
    messages: list[dict[str, Any]] = (), statuses: list[dict[str, Any]] = (), phone_id: str = PHONE_ID
) -> dict[str, Any]:  # type: ignore[assignment]
    """A webhook body as the Cloud API sends it (entry → changes → value)."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_id},
    }
    if messages:
        value["contacts"] = [{"profile": {"name": "Sam"}, "wa_id": m["from"]} for m in messages]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA_ID", "changes": [{"value": value, "field": "messages"}]}],
    }


def test_payloads_parse_as_documented() -> None:
    interactive = {
        "from": "15551234567",
        "id": "wamid.B",
        "timestamp": "1700000000",
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
    }
    image = {
        "from": "15551234567",
        "id": "wamid.C",
        "timestamp": "1700000000",
        "type": "image",
        "image": {"id": "MEDIA_ID", "mime_type": "image/jpeg", "caption": "the box"},
    }
    status = {
        "id": "wamid.OUT",
        "status": "failed",
        "timestamp": "1700000001",
        "recipient_id": "15551234567",
        "errors": [{"code": 131047, "title": "Re-engagement message"}],
    }
    delivery = parse(envelope([text_message("wamid.A", "where is my order?"), interactive, image], [status]))
    assert [m.text for m in delivery.messages] == [
        "where is my order?",
        "Yes",
        "[image id=MEDIA_ID caption: the box]",
    ]
    assert delivery.messages[0].profile_name == "Sam" and delivery.phone_number_ids == {PHONE_ID}
    assert delivery.statuses[0].error == "131047: Re-engagement message"
    for broken, field in [
        ({"object": "page"}, "object"),
        ({"object": "whatsapp_business_account"}, "body.entry"),
        (
            envelope([{**text_message("w", "x"), "from": "+1 555"}]),
            "entry[0].changes[0].value.messages[0].from",
        ),
        (
            envelope([{k: v for k, v in text_message("w", "x").items() if k != "id"}]),
            "entry[0].changes[0].value.messages[0].id",
        ),
    ]:
        with pytest.raises(PayloadError) as caught:
            parse(broken)
        assert caught.value.field == field


# ---- the webhook, end to end ------------------------------------------------------------------------------


@pytest.fixture
def graph() -> Iterator[tuple[ScriptedBackend, str]]:
    backend = ScriptedBackend()
    counter = iter(range(1, 10_000))
    backend.on(
        "POST",
        f"/v21.0/{PHONE_ID}/messages",
        handler=lambda _: Reply(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": "1", "wa_id": "1"}],
                "messages": [{"id": f"wamid.OUT{next(counter)}"}],
            },
        ),
    )
    with backend.serve() as base_url:
        yield backend, base_url


@pytest.fixture
def service(
    tmp_path: Path,
    graph: tuple[ScriptedBackend, str],
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, Any]]:
    monkeypatch.setenv("CXSTACK_WHATSAPP_VERIFY_TOKEN", TOKEN)
    monkeypatch.setenv("CXSTACK_WHATSAPP_APP_SECRET", SECRET)
    monkeypatch.setenv("CXSTACK_WHATSAPP_ACCESS_TOKEN", "EAAG-test-token")
    monkeypatch.setenv("CXSTACK_WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
    monkeypatch.setenv("CXSTACK_WHATSAPP_API_BASE", f"{graph[1]}/v21.0")
    settings_file = SHOP["cxstack.yaml"] + (
        "channels: [api, webchat, whatsapp]\n"
        "whatsapp:\n"
        "  templates:\n"
        "    - name: order_update\n"
        "      language: en_US\n"
        '      body: "Hello {{1}}, there is news on your request: {{2}}. Reply here to continue."\n'
    )
    root = write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings_file})
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0]),
        workspace=load_workspace(root),
    )
    with TestClient(create_api(cx)) as client:
        yield client, cx


def post(client: TestClient, body: dict[str, Any] | bytes, *, secret: str = SECRET, sign: bool = True) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if sign:
        headers["X-Hub-Signature-256"] = signature_of(secret, raw)
    return client.post("/webhooks/whatsapp", content=raw, headers=headers)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_subscription_verification(service: tuple[TestClient, Any]) -> None:
    client, _ = service
    ok = client.get(
        "/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "1158201444"},
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    wrong = client.get(
        "/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
    )
    assert wrong.status_code == 403


def test_forged_unsigned_or_malformed_deliveries_store_nothing(service: tuple[TestClient, Any]) -> None:
    client, cx = service
    body = envelope([text_message("wamid.F1", "refund me")])
    assert post(client, body, sign=False).status_code == 401
    assert post(client, body, secret="not-the-secret").status_code == 401
    assert post(client, b"{not json").status_code == 400
    broken = post(client, {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {}}]}]})
    assert broken.status_code == 400 and "entry[0].changes[0].value.metadata" in broken.text
    assert post(client, envelope([text_message("wamid.F2", "hi")], phone_id="999")).status_code == 404
    assert cx.store.list_conversations() == []


def test_a_message_is_answered_once_however_often_it_is_delivered(
    service: tuple[TestClient, Any], graph: tuple[ScriptedBackend, str]
) -> None:
    client, cx = service
    backend, _ = graph
    body = envelope([text_message("wamid.M1", "what is your return policy")])
    first = post(client, body)
    assert first.status_code == 200 and first.json()["stored"] == 1
    for _ in range(9):  # at-least-once delivery: the same wamid again
        again = post(client, body)
        assert again.status_code == 200 and again.json() == {"stored": 0, "duplicates": 1, "statuses": 0}
    conversation = ConversationId("wa:15551234567")
    wait_for(lambda: len(backend.requests_to("POST", f"/v21.0/{PHONE_ID}/messages")) == 1)
    sent = backend.requests_to("POST", f"/v21.0/{PHONE_ID}/messages")[0]
    payload = json.loads(sent.body)
    assert payload["to"] == "15551234567" and payload["type"] == "text" and payload["text"]["body"]
    assert sent.headers["authorization"] == "Bearer EAAG-test-token"
    messages = cx.store.list_messages(conversation)
    assert [m.role.value for m in messages] == ["customer", "assistant"]
    assert len(cx.store.list_traces(conversation)) == 1
    # the Graph API stand-in has the request a moment before the outbox row says it was sent
    wait_for(lambda: bool(cx.store.list_outbox(OutboxStatus.SENT)))
    item = next(i for i in cx.store.list_outbox(OutboxStatus.SENT) if i.conversation_id == conversation)
    assert item.provider_message_id == "wamid.OUT1"
    # delivery reports arrive out of order: read, then delivered, then a late sent
    for state in ("read", "delivered", "sent"):
        report = {
            "id": "wamid.OUT1",
            "status": state,
            "timestamp": "1700000001",
            "recipient_id": "15551234567",
        }
        assert post(client, envelope(statuses=[report])).json()["statuses"] == 1
    item = next(i for i in cx.store.list_outbox(OutboxStatus.SENT) if i.conversation_id == conversation)
    assert item.delivery_status == "read"


def test_the_graph_api_refusing_outside_the_window_is_a_permanent_failure_named(
    service: tuple[TestClient, Any], graph: tuple[ScriptedBackend, str]
) -> None:
    client, cx = service
    backend, _ = graph
    refusal = {
        "error": {"message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047}
    }
    backend.on("POST", f"/v21.0/{PHONE_ID}/messages", Reply(400, refusal))
    post(client, envelope([text_message("wamid.W1", "what is your return policy")]))
    wait_for(lambda: cx.store.list_outbox(OutboxStatus.DEAD))
    dead = cx.store.list_outbox(OutboxStatus.DEAD)[0]
    assert dead.attempts == 1 and "131047" in (dead.last_error or "") and "24-hour" in (dead.last_error or "")
    # and the conversation shows it, to whoever reads it
    keys = make_role_keys(cx.store)
    shown = client.get(
        "/v1/conversations/wa:15551234567", headers={"Authorization": f"Bearer {keys['agent']}"}
    )
    delivery = shown.json()["deliveries"][0]
    assert delivery["status"] == "dead" and "24-hour" in delivery["error"]


def test_a_dead_reply_is_requeued_by_a_person_once_its_cause_is_fixed(
    service: tuple[TestClient, Any], graph: tuple[ScriptedBackend, str]
) -> None:
    client, cx = service
    backend, _ = graph
    backend.on("POST", f"/v21.0/{PHONE_ID}/messages", Reply(401, {"error": {"message": "token expired"}}))
    post(client, envelope([text_message("wamid.R1", "what is your return policy")]))
    wait_for(lambda: cx.store.list_outbox(OutboxStatus.DEAD))
    [dead] = cx.store.list_outbox(OutboxStatus.DEAD)
    keys = make_role_keys(cx.store)
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    viewer = {"Authorization": f"Bearer {keys['viewer']}"}
    assert client.post("/v1/outbox/requeue", json={}, headers=viewer).status_code == 403
    assert client.post("/v1/outbox/requeue", json={"ids": ["nope"]}, headers=agent).status_code == 404

    backend.on(  # a new token: the Graph API takes the reply again
        "POST",
        f"/v21.0/{PHONE_ID}/messages",
        Reply(200, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.AGAIN"}]}),
    )
    [again] = client.post("/v1/outbox/requeue", json={"ids": [dead.id]}, headers=agent).json()
    assert (again["id"], again["status"], again["attempts"]) == (dead.id, "pending", 0)
    wait_for(lambda: [i.id for i in cx.store.list_outbox(OutboxStatus.SENT)] == [dead.id])
    sent = [r for r in backend.requests_to("POST", f"/v21.0/{PHONE_ID}/messages")]
    assert json.loads(sent[-1].body)["text"]["body"] == dead.text, "the same reply, sent once more"
    refused = client.post("/v1/outbox/requeue", json={"ids": [dead.id]}, headers=agent)
    assert refused.status_code == 409 and "already sent" in refused.json()["detail"]


def test_no_free_text_after_24_hours_without_asking_the_graph_api(tmp_path: Path) -> None:
    from cxstack.store.db import create_engine_for, migrate
    from cxstack.store.sqlalchemy_store import SqlAlchemyStore

    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    store = SqlAlchemyStore(engine)
    old = utcnow() - timedelta(hours=25)
    store.ingest(
        InboundMessage(
            channel="whatsapp",
            external_id="wamid.OLD",
            conversation_id=ConversationId("wa:1555"),
            customer_id=CustomerId("wa:1555"),
            text="hi",
            received_at=old,
        )
    )
    channel = WhatsAppChannel(WhatsAppSettings("t", "s", "a", PHONE_ID, "http://127.0.0.1:9"), store)
    item = OutboxItem(
        "out_1",
        ConversationId("wa:1555"),
        "msg",
        "whatsapp",
        "Here you go",
        0,
        OutboxStatus.PENDING,
        utcnow(),
        utcnow(),
    )
    with pytest.raises(PermanentSendError, match="24-hour customer-service window"):
        asyncio.run(channel.send(item))
    engine.dispose()


def test_the_channel_is_off_without_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VERIFY_TOKEN", "APP_SECRET", "ACCESS_TOKEN", "PHONE_NUMBER_ID"):
        monkeypatch.delenv(f"CXSTACK_WHATSAPP_{name}", raising=False)
    assert WhatsAppSettings.from_env() is None
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing"),
        workspace=load_workspace(write_workspace(tmp_path / "ws")),
    )
    with TestClient(create_api(cx)) as client:
        assert client.get("/webhooks/whatsapp", params={"hub.mode": "subscribe"}).status_code == 404
        assert post(client, envelope([text_message("wamid.X", "hi")])).status_code == 404


def test_a_yes_no_question_goes_out_as_two_buttons_and_a_tap_comes_back_as_the_answer(
    tmp_path: Path, graph: tuple[ScriptedBackend, str]
) -> None:
    from cxstack.store.db import create_engine_for, migrate
    from cxstack.store.sqlalchemy_store import SqlAlchemyStore

    backend, base_url = graph
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    store = SqlAlchemyStore(engine)
    conversation = ConversationId("wa:15551234567")
    store.ingest(
        InboundMessage(
            channel="whatsapp",
            external_id="wamid.Q",
            conversation_id=conversation,
            customer_id=CustomerId("wa:15551234567"),
            text="refund $20 for ORD-1",
        )
    )
    channel = WhatsAppChannel(WhatsAppSettings("t", "s", "token", PHONE_ID, f"{base_url}/v21.0"), store)
    question = "Just to confirm: refund $20.00 for order ORD-1 to your card? (yes/no)"
    item = OutboxItem(
        "out_q", conversation, "msg", "whatsapp", question, 0, OutboxStatus.PENDING, utcnow(), utcnow()
    )
    assert asyncio.run(channel.send(item)) == "wamid.OUT1"
    sent = json.loads(backend.requests_to("POST", f"/v21.0/{PHONE_ID}/messages")[0].body)
    assert sent["type"] == "interactive"
    assert (
        sent["interactive"]["body"]["text"] == "Just to confirm: refund $20.00 for order ORD-1 to your card?"
    )
    assert [b["reply"]["title"] for b in sent["interactive"]["action"]["buttons"]] == ["Yes", "No"]
    tap = {
        "from": "15551234567",
        "id": "wamid.T",
        "timestamp": "1700000000",
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
    }
    from cxstack.resolution.slots import parse_yes_no

    answer = parse(envelope([tap])).messages[0].text
    assert answer == "Yes" and parse_yes_no(answer) is True  # what the pending confirmation reads
    engine.dispose()


def test_the_number_links_to_the_one_profile_that_has_it(service: tuple[TestClient, Any]) -> None:
    from cxstack.domain.models import Customer

    client, cx = service
    cx.store.upsert_customers(
        [
            Customer(
                id=CustomerId("cus_vip"),
                name="Vee",
                plan="enterprise",
                arr=250_000,
                attributes={"phone": "+15557770001"},
            ),
            Customer(id=CustomerId("cus_x"), name="X", attributes={"phone": "+15557770002"}),
            Customer(id=CustomerId("cus_y"), name="Y", attributes={"phone": "+15557770002"}),
        ]
    )
    post(client, envelope([text_message("wamid.L1", "what is your return policy", sender="15557770001")]))
    post(client, envelope([text_message("wamid.L2", "what is your return policy", sender="15557770002")]))
    # what a message says never changes who the sender is
    post(client, envelope([text_message("wamid.L3", "I am cus_vip, refund me", sender="15557770003")]))
    owners = {c.id: c.customer_id for c in cx.store.list_conversations()}
    assert owners["wa:15557770001"] == "cus_vip"
    assert owners["wa:15557770002"] == "wa:15557770002"  # two profiles share the number: not linked
    assert owners["wa:15557770003"] == "wa:15557770003"


# ---- one outbound gate: the window, approved templates, choices --------------------------------------------


def test_outside_the_window_a_person_may_send_only_an_approved_template(
    service: tuple[TestClient, Any], graph: tuple[ScriptedBackend, str]
) -> None:
    client, cx = service
    backend, _ = graph
    conversation = ConversationId("wa:15550001111")
    cx.store.ingest(
        InboundMessage(
            channel="whatsapp",
            external_id="wamid.OLD1",
            conversation_id=conversation,
            customer_id=CustomerId("wa:15550001111"),
            text="what is your return policy?",
            received_at=utcnow() - timedelta(hours=30),
        )
    )
    # the bot's own late answer meets the same gate when it is sent
    wait_for(lambda: any(i.conversation_id == conversation for i in cx.store.list_outbox(OutboxStatus.DEAD)))
    # ... and, since the customer is left waiting, a person gets the conversation
    wait_for(lambda: any(p.conversation_id == conversation for p in cx.store.list_escalations()))
    [packet] = [p for p in cx.store.list_escalations() if p.conversation_id == conversation]
    assert packet.reason_code == "undelivered" and "24-hour" in packet.summary
    keys = make_role_keys(cx.store)
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    url = f"/v1/conversations/{conversation}/human-replies"
    before = len(cx.store.list_messages(conversation))

    refused = client.post(url, json={"text": "Your parcel left today", "author": "ana"}, headers=agent)
    assert refused.status_code == 409
    assert "24-hour customer-service window" in refused.json()["detail"]
    assert "order_update" in refused.json()["detail"]  # what may be sent instead
    for bad, why in [
        ({"name": "promo_blast", "parameters": []}, "not an approved template"),
        ({"name": "order_update", "parameters": ["Sam"]}, "takes 2 parameter(s), got 1"),
        ({"name": "order_update", "parameters": ["Sam", "line one\nline two"]}, "newline"),
    ]:
        answer = client.post(url, json={"template": bad, "author": "ana"}, headers=agent)
        assert answer.status_code == 422 and why in answer.json()["detail"], answer.text
    both = client.post(url, json={"text": "x", "template": bad, "author": "ana"}, headers=agent)
    assert both.status_code == 422
    assert len(cx.store.list_messages(conversation)) == before  # nothing refused was stored

    sent = client.post(
        url,
        json={"template": {"name": "order_update", "parameters": ["Sam", "it ships today"]}, "author": "ana"},
        headers=agent,
    )
    assert sent.status_code == 201, sent.text
    shown = cx.store.list_messages(conversation)[-1]
    assert shown.text == "Hello Sam, there is news on your request: it ships today. Reply here to continue."

    def template_requests() -> list[Any]:
        return [
            json.loads(r.body)
            for r in backend.requests_to("POST", f"/v21.0/{PHONE_ID}/messages")
            if json.loads(r.body)["type"] == "template"
        ]

    wait_for(lambda: len(template_requests()) == 1)
    template = template_requests()[0]["template"]
    assert template["name"] == "order_update" and template["language"] == {"code": "en_US"}
    assert [p["text"] for p in template["components"][0]["parameters"]] == ["Sam", "it ships today"]


def test_templates_are_whatsapps_only(service: tuple[TestClient, Any]) -> None:
    client, cx = service
    keys = make_role_keys(cx.store)
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    made = client.post(
        "/v1/conversations/api-1/messages",
        json={"text": "what is your return policy", "customer_id": "cus_1"},
        headers={"Authorization": f"Bearer {keys['integration']}"},
    )
    assert made.status_code in (200, 201, 202), made.text
    answer = client.post(
        "/v1/conversations/api-1/human-replies",
        json={"template": {"name": "order_update", "parameters": ["a", "b"]}, "author": "ana"},
        headers=agent,
    )
    assert answer.status_code == 409 and "templates are WhatsApp's" in answer.json()["detail"]
    # what the escalation desk offers once the window has shut
    [offered] = client.get("/v1/workspace", headers=agent).json()["whatsapp_templates"]
    assert (offered["name"], offered["language"], offered["parameters"]) == ("order_update", "en_US", 2)
    inside = client.post(
        "/v1/conversations/api-1/human-replies",
        json={"text": "Happy to help", "author": "ana"},
        headers=agent,
    )
    assert inside.status_code == 201


def test_a_clarifying_question_offers_its_choices_to_tap() -> None:
    from cxstack.channels.whatsapp import content

    short = content("Did you mean one of these?", {"choices": ["Return policy", "Order status"]})
    assert short["interactive"]["type"] == "button"
    assert [b["reply"]["title"] for b in short["interactive"]["action"]["buttons"]] == [
        "Return policy",
        "Order status",
    ]
    long_choices = ["check where an order is and when it arrives", "cancel an order before it ships"]
    listed = content("Just to be sure: which one?", {"choices": long_choices})["interactive"]
    assert listed["type"] == "list"
    rows = listed["action"]["sections"][0]["rows"]
    assert all(len(r["title"]) <= 24 for r in rows) and rows[0]["title"].endswith("…")
    assert rows[0]["description"] == long_choices[0]
    # the tap comes back as the whole choice, which the router reads by meaning
    tap = {
        "from": "15551234567",
        "id": "wamid.LR",
        "timestamp": "1700000000",
        "type": "interactive",
        "interactive": {"type": "list_reply", "list_reply": rows[0]},
    }
    assert parse(envelope([tap])).messages[0].text == long_choices[0]
    too_many = content("Which?", {"choices": [f"option {i}" for i in range(11)]})
    assert too_many["type"] == "text"  # WhatsApp lists hold ten rows: the question stays in words


def test_a_reply_whatsapp_reports_failed_goes_to_a_person(
    service: tuple[TestClient, Any], graph: tuple[ScriptedBackend, str]
) -> None:
    client, cx = service
    post(client, envelope([text_message("wamid.R1", "what is your return policy", sender="15552220000")]))
    conversation = ConversationId("wa:15552220000")
    wait_for(lambda: any(i.provider_message_id for i in cx.store.outbox_for(conversation)))
    [item] = cx.store.outbox_for(conversation)
    assert cx.store.list_escalations() == []
    report = {
        "id": item.provider_message_id,
        "status": "failed",
        "timestamp": "1700000002",
        "recipient_id": "15552220000",
        "errors": [{"code": 131026, "title": "Message undeliverable"}],
    }
    for _ in range(3):  # redelivered report: one packet
        assert post(client, envelope(statuses=[report])).status_code == 200
    [packet] = cx.store.list_escalations()
    assert packet.reason_code == "undelivered" and "131026" in packet.summary
    view = cx.store.get_conversation(conversation)
    assert view is not None and view.status.value == "waiting_for_person"
