"""Help-desk handoff against local stand-ins that speak each provider's wire format: Zendesk's Ticketing API
(basic auth with an API token, Idempotency-Key, 429 with Retry-After, 201 with the ticket) and its signed
trigger webhooks, Chatwoot's Application API and its signed account webhooks, and the generic signed webhook.
The export queue runs on SQLite and PostgreSQL; the issue's done-means runs end to end on the test shop."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.conftest import SHOP, write_workspace

from cxstack.api.app import create_api
from cxstack.app import CxApp, Settings, build
from cxstack.domain.conversation_state import Transition
from cxstack.domain.models import ConversationId, ConversationStatus, EscalationId, Priority
from cxstack.domain.ports import OutboxStatus, SendRetryPolicy
from cxstack.integrations.helpdesks import zendesk
from cxstack.integrations.helpdesks.base import PayloadError, SignatureError
from cxstack.integrations.helpdesks.service import HandoffService, UnknownTicketError
from cxstack.store.handoff import ExportStatus, HandoffStore
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.authz import make_role_keys
from cxstack.testing.http_standin import RecordedRequest, Reply, ScriptedBackend
from cxstack.testing.store_contract import inbound, make_commit, make_packet
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.models import HelpdeskSettings

EMAIL = "bot@shop.test"
API_TOKEN = "zd-api-token"
SECRET = "zd-signing-secret"
T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


# ---- the Zendesk stand-in ----------------------------------------------------------------------------------


class ZendeskStandIn:
    """Zendesk's `POST /api/v2/tickets.json` as documented: basic auth `{email}/token:{api_token}` (else 401),
    201 with `{"ticket": {...}}`; a request carrying an `Idempotency-Key` it has seen answers the ticket made
    the first time with `x-idempotency-lookup: hit` instead of making another. `failures` are answered first,
    in order; a `lost` one makes the ticket and then answers 502 (the answer lost on the way back)."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend()
        self.tickets: dict[int, dict[str, Any]] = {}
        self.by_key: dict[str, dict[str, Any]] = {}
        self.failures: list[Reply | str] = []
        self.always: Reply | None = None
        self.base_url = ""
        self.backend.on("POST", "/api/v2/tickets.json", handler=self._create)

    def _create(self, request: RecordedRequest) -> Reply:
        expected = "Basic " + base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Reply(401, {"error": "Couldn't authenticate you"})
        if self.always is not None:
            return self.always
        failure = self.failures.pop(0) if self.failures else None
        if isinstance(failure, Reply):
            return failure
        key = request.headers.get("idempotency-key")
        if key and key in self.by_key:
            return Reply(201, {"ticket": self.by_key[key]}, headers={"x-idempotency-lookup": "hit"})
        body = request.json["ticket"]
        number = 35436 + len(self.tickets)
        ticket = {
            "id": number,
            "url": f"{self.base_url}/api/v2/tickets/{number}.json",
            "external_id": body.get("external_id"),
            "subject": body["subject"],
            "description": body["comment"]["body"],
            "priority": body.get("priority"),
            "status": "new",
            "tags": body.get("tags", []),
            "requester_id": 20978392,
        }
        self.tickets[number] = ticket
        if key:
            self.by_key[key] = ticket
        if failure == "lost":
            return Reply(502, "<html>Bad gateway</html>")
        return Reply(201, {"ticket": ticket}, headers={"x-idempotency-lookup": "miss"})

    def requests(self) -> list[RecordedRequest]:
        return self.backend.requests_to("POST", "/api/v2/tickets.json")


@pytest.fixture
def zendesk_api() -> Iterator[ZendeskStandIn]:
    stand_in = ZendeskStandIn()
    with stand_in.backend.serve() as base_url:
        stand_in.base_url = base_url
        yield stand_in


def trigger_body(
    ticket: int | str,
    *,
    status: str = "Open",
    comment_id: str = "",
    body: str = "",
    author: str = "Alex Agent",
    author_id: str = "235323",
    requester_id: str = "20978392",
    external_id: str = "",
    updated_at: str = "2026-11-30T07:10:00Z",
) -> bytes:
    """What the README's trigger body renders to (Zendesk placeholders are rendered as strings)."""
    return json.dumps(
        {
            "ticket_id": str(ticket),
            "external_id": external_id,
            "status": status,
            "updated_at": updated_at,
            "requester_id": requester_id,
            "comment": {"id": comment_id, "body": body, "author_id": author_id, "author": author},
        }
    ).encode()


def zendesk_headers(body: bytes, *, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature": zendesk.signature_of(secret, stamp, body),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Id": "01F1KRFQ6BG29CNWFR60NK5FNY",
    }


# ---- the port's pure parts ---------------------------------------------------------------------------------


def desk(base_url: str = "http://127.0.0.1:9") -> zendesk.Zendesk:
    return zendesk.Zendesk(base_url, zendesk.ZendeskSecrets(EMAIL, API_TOKEN, SECRET), tags=["cxstack"])


def test_the_ticket_carries_the_packet_privately_with_its_priority_and_conversation() -> None:
    packet = make_packet("conv-9", queue="vip", priority=Priority.URGENT)
    body = zendesk.ticket_body(packet, ["cxstack"])["ticket"]
    assert body["priority"] == "urgent" and body["external_id"] == "conv-9"
    assert body["comment"]["public"] is False
    text = body["comment"]["body"]
    for part in (
        "double charge",
        "refund-policy",
        "lookup_order: ok",
        "I was charged twice",
        "vip-refund-human",
    ):
        assert part in text
    assert {"cxstack", "queue_vip", "reason_low_confidence"} <= set(body["tags"])
    assert "requester" not in body  # no email in the packet: the ticket is the API user's
    assert "zd-api-token" not in repr(zendesk.ZendeskSecrets(EMAIL, API_TOKEN, SECRET))


def test_zendesk_signatures_are_checked_on_the_raw_body_and_the_timestamp() -> None:
    zd = desk()
    body = trigger_body(35436, status="Solved")
    zd.verify(body, {k.lower(): v for k, v in zendesk_headers(body, at=T0).items()}, T0)
    forged = {k.lower(): v for k, v in zendesk_headers(body, secret="guess", at=T0).items()}
    tampered = {k.lower(): v for k, v in zendesk_headers(body, at=T0).items()}
    old = {k.lower(): v for k, v in zendesk_headers(body, at=T0 - timedelta(minutes=6)).items()}
    for headers, payload in [(forged, body), (tampered, body + b" "), (old, body), ({}, body)]:
        with pytest.raises(SignatureError):
            zd.verify(payload, headers, T0)


def test_zendesk_trigger_bodies_parse_into_replies_and_hand_backs() -> None:
    zd = desk()
    reply_and_solve = trigger_body(35436, status="Solved", comment_id="5001", body="Refund sent.")
    events = zd.parse(reply_and_solve, {})
    assert [(e.kind.value, e.key, e.text, e.author) for e in events] == [
        ("reply", "comment:5001", "Refund sent.", "Alex Agent"),
        ("solved", "status:35436:solved:2026-11-30T07:10:00Z", "", ""),
    ]
    # the customer's own comment (author = requester) and a pending ticket: nothing to do
    assert (
        zd.parse(trigger_body(1, status="Pending", comment_id="7", body="hi", author_id="20978392"), {}) == []
    )
    for broken, field in [
        (b"[1]", "body"),
        (b"{not json", "body"),
        (json.dumps({"status": "solved"}).encode(), "ticket_id"),
        (json.dumps({"ticket_id": "1", "comment": "x"}).encode(), "comment"),
    ]:
        with pytest.raises(PayloadError) as caught:
            zd.parse(broken, {})
        assert caught.value.field == field


# ---- the export queue, on SQLite and PostgreSQL ------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> SqlAlchemyStore:
    engine: Engine = request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    return SqlAlchemyStore(engine)


def escalate(store: SqlAlchemyStore, conversation: str, *, queue: str = "vip") -> EscalationId:
    message = store.ingest(
        inbound(f"m-{conversation}", conversation, "refund me", channel="whatsapp")
    ).message
    packet = make_packet(conversation, queue=queue, priority=Priority.URGENT)
    store.commit_turn(
        make_commit(
            conversation, message.id, reply=None, transitions=(Transition.ESCALATE,), escalation=packet
        )
    )
    return packet.id


def service_for(store: SqlAlchemyStore, base_url: str, *, attempts: int = 10) -> HandoffService:
    settings = HelpdeskSettings(kind="zendesk", base_url=base_url, queues=["vip"], max_attempts=attempts)
    retry = SendRetryPolicy(max_attempts=attempts, first_delay_s=2.0, max_delay_s=60.0, jitter=0.0)
    return HandoffService(desk(base_url), HandoffStore(store, retry), settings)


def test_a_429_is_honoured_and_a_lost_answer_never_makes_a_second_ticket(
    store: SqlAlchemyStore, zendesk_api: ZendeskStandIn
) -> None:
    escalation = escalate(store, "conv-429")
    escalate(store, "conv-general", queue="general")  # not a queue that exports
    service = service_for(store, zendesk_api.base_url)
    zendesk_api.failures = [
        Reply(429, {"error": "APIRateLimitExceeded"}, headers={"Retry-After": "7"}),
        "lost",
    ]

    assert asyncio.run(service.flush(T0)) == 0
    [export] = service.store.list()
    assert (
        export.status == ExportStatus.PENDING and export.attempts == 1 and "429" in (export.last_error or "")
    )
    assert export.next_attempt_at == T0 + timedelta(seconds=7)  # what Retry-After asked for
    assert asyncio.run(service.flush(T0 + timedelta(seconds=6))) == 0 and len(zendesk_api.requests()) == 1

    assert asyncio.run(service.flush(T0 + timedelta(seconds=7))) == 0  # made, but the answer was lost
    assert len(zendesk_api.tickets) == 1
    assert asyncio.run(service.flush(T0 + timedelta(minutes=5))) == 1

    assert len(zendesk_api.tickets) == 1  # three requests, one ticket
    keys = {r.headers["idempotency-key"] for r in zendesk_api.requests()}
    assert keys == {export.id} and len(zendesk_api.requests()) == 3
    sent = service.store.get(export.id)
    assert sent is not None and sent.status == ExportStatus.SENT and sent.ticket_id == "35436"
    packet = store.get_escalation(escalation)
    assert packet is not None and packet.handoff is not None
    assert packet.handoff["status"] == "sent" and packet.handoff["ticket_id"] == "35436"
    assert "error" not in packet.handoff
    assert asyncio.run(service.flush(T0 + timedelta(hours=1))) == 0  # nothing more to export
    assert [e.escalation_id for e in service.store.list()] == [escalation]


def test_a_5xx_storm_ends_dead_with_its_reason_on_the_escalation(
    store: SqlAlchemyStore, zendesk_api: ZendeskStandIn
) -> None:
    escalation = escalate(store, "conv-storm")
    service = service_for(store, zendesk_api.base_url, attempts=4)
    zendesk_api.always = Reply(503, {"error": "Service Unavailable"})
    at = T0
    for _ in range(6):
        asyncio.run(service.flush(at))
        at += timedelta(hours=1)
    [export] = service.store.list()
    assert export.status == ExportStatus.DEAD and export.attempts == 4 and len(zendesk_api.requests()) == 4
    assert service.store.count(ExportStatus.DEAD) == 1
    packet = store.get_escalation(escalation)
    assert packet is not None and packet.handoff is not None
    assert packet.handoff["status"] == "dead" and "503" in packet.handoff["error"]
    assert zendesk_api.tickets == {}


def test_a_refusal_is_dead_at_once(store: SqlAlchemyStore, zendesk_api: ZendeskStandIn) -> None:
    escalate(store, "conv-422")
    service = service_for(store, zendesk_api.base_url)
    zendesk_api.always = Reply(
        422, {"error": "RecordInvalid", "details": {"requester": [{"description": "x"}]}}
    )
    asyncio.run(service.flush(T0))
    [export] = service.store.list()
    assert export.status == ExportStatus.DEAD and export.attempts == 1 and "422" in (export.last_error or "")


def test_events_apply_once_and_only_to_tickets_we_made(
    store: SqlAlchemyStore, zendesk_api: ZendeskStandIn
) -> None:
    escalate(store, "conv-ev")
    service = service_for(store, zendesk_api.base_url)
    asyncio.run(service.flush(T0))
    conversation = ConversationId("conv-ev")
    body = trigger_body(35436, comment_id="9001", body="Your refund is on its way.")
    headers = {k.lower(): v for k, v in zendesk_headers(body).items()}
    first = asyncio.run(service.receive(body, headers))
    again = asyncio.run(service.receive(body, headers))
    assert first.as_dict() == {"applied": 1, "duplicates": 0, "ignored": 0}
    assert again.as_dict() == {"applied": 0, "duplicates": 1, "ignored": 0}
    replies = [i for i in store.outbox_for(conversation) if i.text == "Your refund is on its way."]
    assert len(replies) == 1 and replies[0].channel == "whatsapp"  # the customer's channel
    stored = store.get_conversation(conversation)
    assert stored is not None and stored.status == ConversationStatus.PERSON
    stranger = trigger_body(99999, comment_id="9002", body="hello")
    with pytest.raises(UnknownTicketError):
        asyncio.run(service.receive(stranger, {k.lower(): v for k, v in zendesk_headers(stranger).items()}))
    solved = trigger_body(35436, status="Solved", comment_id="9001", body="Your refund is on its way.")
    done = asyncio.run(service.receive(solved, {k.lower(): v for k, v in zendesk_headers(solved).items()}))
    assert done.as_dict() == {"applied": 1, "duplicates": 1, "ignored": 0}
    stored = store.get_conversation(conversation)
    assert stored is not None and stored.status == ConversationStatus.BOT
    assert store.list_escalations(status="open") == []


# ---- the service, end to end (the done-means) ------------------------------------------------------


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def helpdesk_yaml(kind: str, base_url: str, **extra: str) -> str:
    lines = [f"helpdesk:\n  kind: {kind}\n  base_url: {base_url}\n  queues: [vip, billing]\n"]
    lines += [f"  {key}: {value}\n" for key, value in extra.items()]
    return SHOP["cxstack.yaml"] + "".join(lines)


def start_service(tmp_path: Path, settings_yaml: str, backoffice_url: str) -> tuple[TestClient, CxApp]:
    root = write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings_yaml})
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice_url),
        workspace=load_workspace(root),
    )
    return TestClient(create_api(cx)), cx


@pytest.fixture
def zendesk_service(
    tmp_path: Path, zendesk_api: ZendeskStandIn, backoffice: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, CxApp, dict[str, str]]]:
    monkeypatch.setenv("CXSTACK_ZENDESK_EMAIL", EMAIL)
    monkeypatch.setenv("CXSTACK_ZENDESK_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("CXSTACK_ZENDESK_WEBHOOK_SECRET", SECRET)
    client, cx = start_service(tmp_path, helpdesk_yaml("zendesk", zendesk_api.base_url), backoffice[0])
    keys = make_role_keys(cx.store)
    with client:
        yield client, cx, keys


VIP = {"id": "cus_vip", "name": "Vee", "email": "vee@bigco.test", "plan": "enterprise", "arr": 250000}


def say(client: TestClient, keys: dict[str, str], conversation: str, text: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/conversations/{conversation}/messages?wait=true",
        json={"text": text, "customer": VIP},
        headers={"Authorization": f"Bearer {keys['admin']}"},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["completed"], body
    return body


def test_a_vip_refund_becomes_one_zendesk_ticket_whose_reply_reaches_the_customer_and_solving_hands_back(
    zendesk_service: tuple[TestClient, CxApp, dict[str, str]], zendesk_api: ZendeskStandIn
) -> None:
    client, cx, keys = zendesk_service
    first = say(client, keys, "vip-1", "I want a refund for order ORD-10001")
    assert first["status"] == ConversationStatus.WAITING.value
    wait_for(lambda: len(zendesk_api.tickets) == 1)
    [ticket] = zendesk_api.tickets.values()
    sent = zendesk_api.requests()[0].json["ticket"]
    assert sent["external_id"] == "vip-1" and sent["priority"] == "urgent"
    assert sent["requester"] == {"name": "Vee", "email": "vee@bigco.test"}
    assert "vip-refunds-to-people" in sent["comment"]["body"] and "ORD-10001" in sent["comment"]["body"]
    assert sent["comment"]["public"] is False and "queue_vip" in sent["tags"]

    # the ticket is shown on the conversation and the escalation
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    wait_for(
        lambda: (
            (
                client.get("/v1/conversations/vip-1", headers=agent).json()["escalations"][0]["handoff"] or {}
            ).get("status")
            == "sent"
        )
    )
    shown = client.get("/v1/conversations/vip-1", headers=agent).json()["escalations"][0]["handoff"]
    assert shown["ticket_id"] == str(ticket["id"]) and shown["kind"] == "zendesk"

    # while the ticket is open the bot stays quiet
    quiet = say(client, keys, "vip-1", "hello? any news on my refund?")
    assert quiet["status"] == ConversationStatus.WAITING.value and quiet["reply"] is None
    assert quiet["trace"]["outcome"] == "handled_by_human"

    # the agent's public comment, signed by Zendesk, delivered twice: one reply to the customer
    comment = trigger_body(ticket["id"], comment_id="54509363035291", body="Hi Vee, your refund is approved.")
    for _ in range(2):
        answer = client.post("/webhooks/handoff/zendesk", content=comment, headers=zendesk_headers(comment))
        assert answer.status_code == 200, answer.text
    assert answer.json() == {"applied": 0, "duplicates": 1, "ignored": 0}
    items = [i for i in cx.store.outbox_for(ConversationId("vip-1")) if "refund is approved" in i.text]
    assert len(items) == 1 and items[0].channel == "api"  # the channel the customer wrote on
    wait_for(lambda: cx.store.outbox_for(ConversationId("vip-1"))[-1].status == OutboxStatus.SENT)

    # solved: the bot answers the next message again
    solved = trigger_body(ticket["id"], status="Solved", comment_id="54509363035291", body="x")
    assert (
        client.post("/webhooks/handoff/zendesk", content=solved, headers=zendesk_headers(solved)).status_code
        == 200
    )
    conversation = cx.store.get_conversation(ConversationId("vip-1"))
    assert conversation is not None and conversation.status == ConversationStatus.BOT
    after = say(client, keys, "vip-1", "what is your return policy")
    assert after["status"] == "bot" and "30 days" in (after["reply"] or "")
    assert len(zendesk_api.tickets) == 1


def test_forged_old_malformed_and_unknown_webhooks_change_nothing(
    zendesk_service: tuple[TestClient, CxApp, dict[str, str]], zendesk_api: ZendeskStandIn
) -> None:
    client, cx, keys = zendesk_service
    say(client, keys, "vip-2", "I want a refund for order ORD-10002")
    wait_for(lambda: len(zendesk_api.tickets) == 1)
    [ticket] = zendesk_api.tickets.values()
    before = len(cx.store.outbox_for(ConversationId("vip-2")))
    comment = trigger_body(ticket["id"], comment_id="1", body="forged reply")
    url = "/webhooks/handoff/zendesk"
    unsigned = {"Content-Type": "application/json"}
    assert client.post(url, content=comment, headers=unsigned).status_code == 401
    assert (
        client.post(url, content=comment, headers=zendesk_headers(comment, secret="guess")).status_code == 401
    )
    old = zendesk_headers(comment, at=datetime.now(UTC) - timedelta(minutes=10))
    assert client.post(url, content=comment, headers=old).status_code == 401
    broken = b'{"status": "solved"}'
    refused = client.post(url, content=broken, headers=zendesk_headers(broken))
    assert refused.status_code == 400 and "ticket_id" in refused.text
    stranger = trigger_body(777, comment_id="2", body="not our ticket")
    assert client.post(url, content=stranger, headers=zendesk_headers(stranger)).status_code == 404
    # the other help desks are off here
    assert client.post("/webhooks/handoff/chatwoot", content=b"{}").status_code == 404
    assert client.post("/webhooks/handoff/generic", content=b"{}").status_code == 404
    assert len(cx.store.outbox_for(ConversationId("vip-2"))) == before
    conversation = cx.store.get_conversation(ConversationId("vip-2"))
    assert conversation is not None and conversation.status == ConversationStatus.WAITING


def test_a_dead_export_is_visible_on_health_the_api_and_the_conversation(
    tmp_path: Path, zendesk_api: ZendeskStandIn, backoffice: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXSTACK_ZENDESK_EMAIL", EMAIL)
    monkeypatch.setenv("CXSTACK_ZENDESK_API_TOKEN", "revoked-token")  # Zendesk answers 401: permanent
    monkeypatch.setenv("CXSTACK_ZENDESK_WEBHOOK_SECRET", SECRET)
    client, cx = start_service(tmp_path, helpdesk_yaml("zendesk", zendesk_api.base_url), backoffice[0])
    keys = make_role_keys(cx.store)
    with client:
        say(client, keys, "vip-3", "I want a refund for order ORD-10003")
        wait_for(lambda: client.get("/health").json()["handoff_dead"] == 1)
        viewer = {"Authorization": f"Bearer {keys['viewer']}"}
        [dead] = client.get("/v1/handoff/exports?status=dead", headers=viewer).json()
        assert dead["conversation_id"] == "vip-3" and "401" in dead["last_error"]
        shown = client.get("/v1/conversations/vip-3", headers=viewer).json()["escalations"][0]["handoff"]
        assert shown["status"] == "dead" and "401" in shown["error"]
        assert client.get("/v1/handoff/exports").status_code == 401  # credentials needed
    assert zendesk_api.tickets == {}


def test_handoff_is_off_without_its_secrets(
    tmp_path: Path, backoffice: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("EMAIL", "API_TOKEN", "WEBHOOK_SECRET"):
        monkeypatch.delenv(f"CXSTACK_ZENDESK_{name}", raising=False)
    client, cx = start_service(tmp_path, helpdesk_yaml("zendesk", "http://127.0.0.1:9"), backoffice[0])
    with client:
        assert cx.handoff is None
        body = trigger_body(1, status="Solved")
        assert (
            client.post("/webhooks/handoff/zendesk", content=body, headers=zendesk_headers(body)).status_code
            == 404
        )
        assert client.get("/health").json()["handoff_dead"] is None
