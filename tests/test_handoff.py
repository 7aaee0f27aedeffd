"""Help-desk handoff against local stand-ins that speak each provider's wire format: Zendesk's Ticketing API
(basic auth with an API token, Idempotency-Key, 429 with Retry-After, 201 with the ticket) and its signed
trigger webhooks, Chatwoot's Application API and its signed account webhooks, and the generic signed webhook.
The export queue runs on SQLite and PostgreSQL; the issue's done-means runs end to end on the test shop."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
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
from cxstack.domain.handoff import ExportStatus
from cxstack.domain.models import ConversationId, ConversationStatus, EscalationId, Priority
from cxstack.domain.ports import OutboxStatus, SendRetryPolicy
from cxstack.integrations.helpdesks import chatwoot, webhook, zendesk
from cxstack.integrations.helpdesks.base import PayloadError, SignatureError
from cxstack.integrations.helpdesks.service import HandoffService, UnknownTicketError
from cxstack.store.handoff import HandoffStore
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
        self.backend.on("PUT", "/api/v2/tickets/{ticket_id}.json", handler=self._update)
        self.comments: list[tuple[int, dict[str, Any]]] = []

    def _authorized(self, request: RecordedRequest) -> bool:
        expected = "Basic " + base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
        return request.headers.get("authorization") == expected

    def _update(self, request: RecordedRequest) -> Reply:
        """`PUT /api/v2/tickets/{id}.json` with `{"ticket": {"comment": {...}}}` adds a comment."""
        if not self._authorized(request):
            return Reply(401, {"error": "Couldn't authenticate you"})
        number = int(request.path_params["ticket_id"])
        if number not in self.tickets:
            return Reply(404, {"error": "RecordNotFound", "description": "Not found"})
        self.comments.append((number, request.json["ticket"]["comment"]))
        return Reply(200, {"ticket": self.tickets[number], "audit": {"events": [{"type": "Comment"}]}})

    def _create(self, request: RecordedRequest) -> Reply:
        if not self._authorized(request):
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


def test_the_readme_trigger_body_renders_to_what_the_webhook_reads() -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Help-desk handoff") :]
    template = re.findall(r"```text\n(.*?)```", section, re.S)[0]
    values = {
        "ticket.id": "35436",
        "ticket.status": "Solved",  # Zendesk renders the status's display name
        "ticket.updated_at_with_timestamp": "2026-11-30T07:10:00Z",
        "ticket.requester.id": "20978392",
        "ticket.latest_public_comment.id": "5001",
        "ticket.latest_public_comment.value": "Refund sent.",
        "ticket.latest_public_comment.author.id": "235323",
        "ticket.latest_public_comment.author.name": "Alex Agent",
    }
    rendered = re.sub(r"\{\{([\w.]+)\}\}", lambda m: values.get(m.group(1), ""), template)
    events = desk().parse(rendered.encode(), {})
    assert [(e.kind.value, e.text, e.author) for e in events] == [
        ("reply", "Refund sent.", "Alex Agent"),
        ("solved", "", ""),
    ]


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
    [export] = service.store.exports()
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
    assert [e.escalation_id for e in service.store.exports()] == [escalation]


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
    [export] = service.store.exports()
    assert export.status == ExportStatus.DEAD and export.attempts == 4 and len(zendesk_api.requests()) == 4
    assert service.store.count(ExportStatus.DEAD) == 1
    packet = store.get_escalation(escalation)
    assert packet is not None and packet.handoff is not None
    assert packet.handoff["status"] == "dead" and "503" in packet.handoff["error"]
    assert zendesk_api.tickets == {}


def test_a_claimed_export_is_left_alone_by_other_processes(store: SqlAlchemyStore) -> None:
    escalate(store, "conv-claim")
    first, second = HandoffStore(store), HandoffStore(store)
    first.enqueue("zendesk", None, T0)
    [claimed] = first.claim(now=T0, lease_s=60)
    assert second.claim(now=T0 + timedelta(seconds=59)) == []
    assert [e.id for e in second.claim(now=T0 + timedelta(seconds=60))] == [claimed.id]  # its holder died


def test_an_escalation_resolved_before_export_is_not_exported(
    store: SqlAlchemyStore, zendesk_api: ZendeskStandIn
) -> None:
    escalation = escalate(store, "conv-early")
    service = service_for(store, zendesk_api.base_url)
    asyncio.run(asyncio.to_thread(service.store.enqueue, "zendesk", ["vip"], T0))
    store.add_human_reply(ConversationId("conv-early"), "Done, refunded.", "sam", True)  # answered here
    asyncio.run(service.flush(T0))
    [export] = service.store.exports()
    assert export.status == ExportStatus.DEAD and "resolved before it was exported" in (
        export.last_error or ""
    )
    assert zendesk_api.requests() == []
    packet = store.get_escalation(escalation)
    assert packet is not None and packet.status == "resolved"


def test_a_refusal_is_dead_at_once(store: SqlAlchemyStore, zendesk_api: ZendeskStandIn) -> None:
    escalate(store, "conv-422")
    service = service_for(store, zendesk_api.base_url)
    zendesk_api.always = Reply(
        422, {"error": "RecordInvalid", "details": {"requester": [{"description": "x"}]}}
    )
    asyncio.run(service.flush(T0))
    [export] = service.store.exports()
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
    assert first.as_dict() == {"applied": 1, "duplicates": 0, "ignored": 0, "refused": 0}
    assert again.as_dict() == {"applied": 0, "duplicates": 1, "ignored": 0, "refused": 0}
    replies = [i for i in store.outbox_for(conversation) if i.text == "Your refund is on its way."]
    assert len(replies) == 1 and replies[0].channel == "whatsapp"  # the customer's channel
    stored = store.get_conversation(conversation)
    assert stored is not None and stored.status == ConversationStatus.PERSON
    stranger = trigger_body(99999, comment_id="9002", body="hello")
    with pytest.raises(UnknownTicketError):
        asyncio.run(service.receive(stranger, {k.lower(): v for k, v in zendesk_headers(stranger).items()}))
    solved = trigger_body(35436, status="Solved", comment_id="9001", body="Your refund is on its way.")
    done = asyncio.run(service.receive(solved, {k.lower(): v for k, v in zendesk_headers(solved).items()}))
    assert done.as_dict() == {"applied": 1, "duplicates": 1, "ignored": 0, "refused": 0}
    stored = store.get_conversation(conversation)
    assert stored is not None and stored.status == ConversationStatus.BOT
    assert store.list_escalations(status="open") == []


def test_a_reply_the_customers_channel_would_not_deliver_is_noted_on_the_ticket_not_sent(
    store: SqlAlchemyStore, zendesk_api: ZendeskStandIn
) -> None:
    escalate(store, "conv-gate")
    settings = HelpdeskSettings(kind="zendesk", base_url=zendesk_api.base_url, queues=["vip"])
    window = "outside WhatsApp's 24-hour customer-service window (the customer last wrote at …)"
    service = HandoffService(
        desk(zendesk_api.base_url),
        HandoffStore(store, SendRetryPolicy()),
        settings,
        outbound_check=lambda conversation: window if conversation == "conv-gate" else None,
    )
    asyncio.run(service.flush(T0))
    body = trigger_body(35436, comment_id="9101", body="Your refund is on its way.")
    headers = {k.lower(): v for k, v in zendesk_headers(body).items()}
    first = asyncio.run(service.receive(body, headers))
    again = asyncio.run(service.receive(body, headers))
    assert first.as_dict() == {"applied": 0, "duplicates": 0, "ignored": 0, "refused": 1}
    assert again.as_dict() == {"applied": 0, "duplicates": 1, "ignored": 0, "refused": 0}
    assert [i.text for i in store.outbox_for(ConversationId("conv-gate"))] == []  # nothing was queued
    [(ticket, note)] = zendesk_api.comments
    assert ticket == 35436 and note["public"] is False and "24-hour" in note["body"]


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
    wait_for(lambda: zendesk_api.comments)  # what the customer wrote goes onto the ticket, privately
    [(on_ticket, note)] = zendesk_api.comments
    assert on_ticket == ticket["id"] and note["public"] is False and "any news on my refund" in note["body"]

    # the agent's public comment, signed by Zendesk, delivered twice: one reply to the customer
    comment = trigger_body(ticket["id"], comment_id="54509363035291", body="Hi Vee, your refund is approved.")
    for _ in range(2):
        answer = client.post("/webhooks/handoff/zendesk", content=comment, headers=zendesk_headers(comment))
        assert answer.status_code == 200, answer.text
    assert answer.json() == {"applied": 0, "duplicates": 1, "ignored": 0, "refused": 0}
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
    assert len(zendesk_api.tickets) == 1 and len(zendesk_api.comments) == 1


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
    # our ticket, pointed at someone else's conversation (an agent edited external_id): refused, not rerouted
    moved = trigger_body(ticket["id"], comment_id="3", body="hello", external_id="vip-somebody-else")
    assert client.post(url, content=moved, headers=zendesk_headers(moved)).status_code == 404
    same = trigger_body(ticket["id"], status="Pending", external_id="vip-2")  # nothing to do, but ours
    assert client.post(url, content=same, headers=zendesk_headers(same)).json()["applied"] == 0
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

        # the token is valid again (Zendesk re-enabled it): a person requeues the dead export
        agent = {"Authorization": f"Bearer {keys['agent']}"}
        requeue = "/v1/handoff/exports/requeue"
        assert client.post(requeue, json={}, headers=viewer).status_code == 403  # viewers only look
        assert client.post(requeue, json={"ids": ["exp_nope"]}, headers=agent).status_code == 404
        monkeypatch.setattr(sys.modules[__name__], "API_TOKEN", "revoked-token")
        [again] = client.post(requeue, json={}, headers=agent).json()  # every dead one
        assert (again["id"], again["status"], again["attempts"]) == (dead["id"], "pending", 0)
        wait_for(lambda: len(zendesk_api.tickets) == 1)
        wait_for(lambda: client.get("/health").json()["handoff_dead"] == 0)
        shown = client.get("/v1/conversations/vip-3", headers=viewer).json()["escalations"][0]["handoff"]
        assert shown["status"] == "sent"
        refused = client.post(requeue, json={"ids": [dead["id"]]}, headers=agent)
        assert refused.status_code == 409 and "already made ticket" in refused.json()["detail"]
        assert client.post(requeue, json={}, headers=agent).json() == []  # none dead now
    assert len(zendesk_api.tickets) == 1, "one ticket: the requeued export kept its idempotency key"


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


# ---- the generic signed webhook ----------------------------------------------------------------------------

HOOK_SECRET = "hook-secret"


def test_the_generic_signature_scheme() -> None:
    body = b'{"type": "solved", "conversation_id": "c"}'
    header = webhook.sign(HOOK_SECRET, body, at=1_764_486_000)
    stamp, digest = header.split(",")
    assert stamp == "t=1764486000" and digest.startswith("v1=") and len(digest) == 3 + 64
    now = datetime.fromtimestamp(1_764_486_000 + 10, UTC)
    webhook.check(HOOK_SECRET, body, header, now)
    for bad_body, bad_header, at in [
        (body, webhook.sign("guess", body, at=1_764_486_000), now),
        (body + b" ", header, now),
        (body, header, now + timedelta(minutes=6)),
        (body, None, now),
        (body, "v1=abc", now),
    ]:
        with pytest.raises(SignatureError):
            webhook.check(HOOK_SECRET, bad_body, bad_header, at)


@pytest.fixture
def receiver() -> Iterator[tuple[ScriptedBackend, str]]:
    """Your system's end of the generic webhook: checks our signature, answers with its ticket."""
    backend = ScriptedBackend()

    def accept(request: RecordedRequest) -> Reply:
        try:
            webhook.check(
                HOOK_SECRET, request.body, request.headers.get("x-cxstack-signature"), datetime.now(UTC)
            )
        except SignatureError as exc:
            return Reply(401, {"error": str(exc)})
        return Reply(200, {"ticket": f"T-{request.json['packet']['conversation_id']}"})

    backend.on("POST", "/hooks/cxstack", handler=accept)
    with backend.serve() as base_url:
        yield backend, base_url


def generic(client: TestClient, event: dict[str, Any], *, secret: str = HOOK_SECRET) -> Any:
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "X-Cxstack-Signature": webhook.sign(secret, body)}
    return client.post("/webhooks/handoff/generic", content=body, headers=headers)


def test_the_generic_webhook_exports_signed_and_takes_signed_events_back(
    tmp_path: Path,
    receiver: tuple[ScriptedBackend, str],
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, base_url = receiver
    monkeypatch.setenv("CXSTACK_HANDOFF_WEBHOOK_SECRET", HOOK_SECRET)
    client, cx = start_service(tmp_path, helpdesk_yaml("webhook", f"{base_url}/hooks/cxstack"), backoffice[0])
    keys = make_role_keys(cx.store)
    with client:
        say(client, keys, "gen-1", "I want a refund for order ORD-10004")
        wait_for(lambda: cx.handoff is not None and cx.handoff.store.exports(ExportStatus.SENT))
        [sent] = backend.requests_to("POST", "/hooks/cxstack")
        document = sent.json
        assert document["type"] == "escalation" and sent.headers["idempotency-key"] == document["id"]
        assert document["packet"]["queue"] == "vip" and document["packet"]["priority"] == "urgent"
        assert "vip-refunds-to-people" in document["packet"]["fired_rules"]
        assert cx.conversation_view("gen-1").escalations[0].handoff["ticket_id"] == "T-gen-1"  # type: ignore[union-attr,index]

        say(client, keys, "gen-1", "is anyone there?")  # while it waits for a person: onto the ticket
        wait_for(lambda: len(backend.requests_to("POST", "/hooks/cxstack")) == 2)
        followup = backend.requests_to("POST", "/hooks/cxstack")[1].json
        assert followup["type"] == "followup" and followup["ticket"] == "T-gen-1"
        assert [m["text"] for m in followup["messages"]] == ["is anyone there?"]

        reply = {
            "id": "evt-1",
            "conversation_id": "gen-1",
            "type": "reply",
            "text": "Approved.",
            "author": "Kim",
        }
        assert generic(client, reply, secret="guess").status_code == 401
        assert generic(client, reply).json() == {"applied": 1, "duplicates": 0, "ignored": 0, "refused": 0}
        assert generic(client, reply).json() == {"applied": 0, "duplicates": 1, "ignored": 0, "refused": 0}
        no_id = {"ticket": "T-gen-1", "type": "reply", "text": "And a voucher.", "author": "Kim"}
        assert generic(client, no_id).json()["applied"] == 1
        assert generic(client, no_id).json()["duplicates"] == 1  # the same body again: its hash is the key
        texts = [i.text for i in cx.store.outbox_for(ConversationId("gen-1"))]
        assert texts.count("Approved.") == 1 and texts.count("And a voucher.") == 1

        missing = generic(client, {"type": "reply", "text": "x"})
        assert missing.status_code == 400 and "conversation_id" in missing.text
        wrong = generic(client, {"conversation_id": "gen-1", "type": "escalate"})
        assert wrong.status_code == 400 and "type" in wrong.text
        assert generic(client, {"conversation_id": "someone-else", "type": "solved"}).status_code == 404

        assert generic(client, {"conversation_id": "gen-1", "type": "solved"}).json()["applied"] == 1
        after = say(client, keys, "gen-1", "what is your return policy")
        assert after["status"] == "bot" and "30 days" in (after["reply"] or "")


# ---- Chatwoot ----------------------------------------------------------------------------------------------

CW_TOKEN = "cw-access-token"
CW_SECRET = "cw-webhook-secret"
ACCOUNT, INBOX = 1, 5


class ChatwootStandIn:
    """Chatwoot's Application API as documented (header `api_access_token`, else 401): contacts (search,
    create with a contact inbox and its source_id), a contact's conversations, conversations (create with
    source_id, inbox_id, contact_id; the answer's `id` is the conversation's display id) and their messages.
    `lost` makes the next conversation and then answers 502."""

    def __init__(self) -> None:
        self.backend = ScriptedBackend()
        self.contacts: list[dict[str, Any]] = []
        self.conversations: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.lost = False
        base = f"/api/v1/accounts/{ACCOUNT}"
        self.backend.on("GET", f"{base}/contacts/search", handler=self._authed(self._search))
        self.backend.on("POST", f"{base}/contacts", handler=self._authed(self._contact))
        self.backend.on("GET", f"{base}/contacts/{{cid}}/conversations", handler=self._authed(self._listed))
        self.backend.on("POST", f"{base}/conversations", handler=self._authed(self._conversation))
        self.backend.on("POST", f"{base}/conversations/{{cid}}/messages", handler=self._authed(self._message))
        self.backend.on("GET", f"{base}/conversations/{{cid}}/messages", handler=self._authed(self._messages))

    def _authed(self, handler: Any) -> Any:
        def check(request: RecordedRequest) -> Reply:
            if request.headers.get("api_access_token") != CW_TOKEN:
                return Reply(401, {"errors": ["You need to sign in or sign up before continuing."]})
            reply: Reply = handler(request)
            return reply

        return check

    def _search(self, request: RecordedRequest) -> Reply:
        found = [c for c in self.contacts if request.query.get("q") in (c["identifier"], c["name"])]
        return Reply(200, {"meta": {"count": len(found), "current_page": 1}, "payload": found})

    def _contact(self, request: RecordedRequest) -> Reply:
        body = request.json
        source_id = f"src-{len(self.contacts) + 1}"
        contact = {
            "id": 100 + len(self.contacts),
            "name": body["name"],
            "email": body.get("email"),
            "identifier": body.get("identifier"),
            "contact_inboxes": [{"source_id": source_id, "inbox": {"id": body["inbox_id"]}}],
        }
        self.contacts.append(contact)
        return Reply(200, {"payload": {"contact": contact, "contact_inbox": {"source_id": source_id}}})

    def _listed(self, request: RecordedRequest) -> Reply:
        cid = int(request.path_params["cid"])
        return Reply(200, {"payload": [c for c in self.conversations if c["contact_id"] == cid]})

    def _conversation(self, request: RecordedRequest) -> Reply:
        body = request.json
        if not body.get("source_id") or body.get("inbox_id") != INBOX:
            return Reply(422, {"message": "source_id and inbox_id are required"})
        conversation = {
            "id": 42 + len(self.conversations),
            "account_id": ACCOUNT,
            "inbox_id": body["inbox_id"],
            "contact_id": body["contact_id"],
            "status": body.get("status", "open"),
            "custom_attributes": body.get("custom_attributes") or {},
        }
        self.conversations.append(conversation)
        if self.lost:
            self.lost = False
            return Reply(502, "<html>Bad gateway</html>")
        return Reply(200, conversation)

    def _messages(self, request: RecordedRequest) -> Reply:
        cid = int(request.path_params["cid"])
        return Reply(200, {"meta": {}, "payload": [m for m in self.messages if m["conversation_id"] == cid]})

    def _message(self, request: RecordedRequest) -> Reply:
        message = {
            "id": 900 + len(self.messages),
            "conversation_id": int(request.path_params["cid"]),
            **request.json,
        }
        self.messages.append(message)
        return Reply(200, message)


@pytest.fixture
def chatwoot_api() -> Iterator[tuple[ChatwootStandIn, str]]:
    stand_in = ChatwootStandIn()
    with stand_in.backend.serve() as base_url:
        yield stand_in, base_url


def chatwoot_post(
    client: TestClient, event: dict[str, Any], *, secret: str = CW_SECRET, age_s: int = 0
) -> Any:
    body = json.dumps(event).encode()
    stamp = str(int(time.time()) - age_s)
    headers = {
        "Content-Type": "application/json",
        "X-Chatwoot-Signature": chatwoot.signature_of(secret, stamp, body),
        "X-Chatwoot-Timestamp": stamp,
        "X-Chatwoot-Delivery": "00000000-0000-4000-8000-000000000000",
    }
    return client.post("/webhooks/handoff/chatwoot", content=body, headers=headers)


def message_created(message_id: int, conversation: int, content: str, **overrides: Any) -> dict[str, Any]:
    """A `message_created` webhook as Chatwoot sends it (the message at the top level, its conversation)."""
    return {
        "event": "message_created",
        "id": message_id,
        "content": content,
        "created_at": "2026-11-30T07:10:00.000Z",
        "message_type": "outgoing",
        "content_type": "text",
        "content_attributes": {},
        "source_id": None,
        "private": False,
        "sender": {"id": 1, "name": "Dana Agent", "email": "dana@shop.test", "type": "user"},
        "conversation": {"id": conversation, "inbox_id": INBOX, "status": "open", "can_reply": True},
        "account": {"id": ACCOUNT, "name": "Shop"},
        "inbox": {"id": INBOX, "name": "cxstack"},
        **overrides,
    }


def test_chatwoot_conversations_out_and_agent_messages_back(
    tmp_path: Path,
    chatwoot_api: tuple[ChatwootStandIn, str],
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in, base_url = chatwoot_api
    stand_in.lost = True  # the first conversation is made but its answer never arrives
    monkeypatch.setenv("CXSTACK_CHATWOOT_API_TOKEN", CW_TOKEN)
    monkeypatch.setenv("CXSTACK_CHATWOOT_WEBHOOK_SECRET", CW_SECRET)
    settings_yaml = (
        helpdesk_yaml("chatwoot", base_url) + f"  chatwoot: {{account_id: {ACCOUNT}, inbox_id: {INBOX}}}\n"
    )
    client, cx = start_service(tmp_path, settings_yaml, backoffice[0])
    keys = make_role_keys(cx.store)
    with client:
        say(client, keys, "cw-1", "I want a refund for order ORD-10005")
        handoff = cx.handoff
        assert handoff is not None
        wait_for(lambda: handoff.store.exports(ExportStatus.SENT))  # the retry comes after a backoff of 1-2 s
        [export] = handoff.store.exports()
        assert export.attempts == 1  # one failed try (the 502), then found again
        assert len(stand_in.contacts) == 1 and len(stand_in.conversations) == 1  # found again, not made twice
        [conversation] = stand_in.conversations
        assert conversation["custom_attributes"] == {
            "cxstack_export": export.id,
            "cxstack_conversation": "cw-1",
        }
        assert export.ticket_id == str(conversation["id"])
        [note] = stand_in.messages
        assert note["private"] is True and "vip-refunds-to-people" in note["content"]
        assert stand_in.contacts[0]["email"] == "vee@bigco.test"

        ticket = conversation["id"]
        say(client, keys, "cw-1", "is anyone there?")  # the contact's own message in the conversation
        wait_for(lambda: len(stand_in.messages) == 2)
        assert stand_in.messages[1]["message_type"] == "incoming"
        assert stand_in.messages[1]["content"] == "is anyone there?"
        assert (
            chatwoot_post(client, message_created(7001, ticket, "Refunded!"), secret="guess").status_code
            == 401
        )
        assert chatwoot_post(client, message_created(7001, ticket, "Refunded!"), age_s=600).status_code == 401
        private = message_created(7002, ticket, "internal: check the card", private=True)
        incoming = message_created(7003, ticket, "thanks", message_type="incoming")
        for ignored in (private, incoming):
            assert chatwoot_post(client, ignored).json() == {
                "applied": 0,
                "duplicates": 0,
                "ignored": 0,
                "refused": 0,
            }
        for _ in range(2):
            answered = chatwoot_post(client, message_created(7001, ticket, "Refunded!"))
        assert answered.json() == {"applied": 0, "duplicates": 1, "ignored": 0, "refused": 0}
        assert chatwoot_post(client, message_created(7004, 999, "hi")).status_code == 404
        broken = chatwoot_post(client, {"event": "message_created", "id": 1})
        assert broken.status_code == 400 and "conversation" in broken.text
        texts = [i.text for i in cx.store.outbox_for(ConversationId("cw-1"))]
        assert texts.count("Refunded!") == 1 and "internal: check the card" not in texts

        resolved = {
            "event": "conversation_status_changed",
            "id": ticket,
            "status": "resolved",
            "inbox_id": INBOX,
            "changed_attributes": [{"status": {"previous_value": "open", "current_value": "resolved"}}],
        }
        assert chatwoot_post(client, resolved).json()["applied"] == 1
        after = say(client, keys, "cw-1", "what is your return policy")
        assert after["status"] == "bot" and "30 days" in (after["reply"] or "")


def test_the_workspace_names_only_queues_it_has_and_a_complete_helpdesk(tmp_path: Path) -> None:
    from cxstack.workspace.validate import WorkspaceInvalid

    typo = helpdesk_yaml("zendesk", "https://acme.zendesk.com").replace("[vip, billing]", "[vip, biling]")
    with pytest.raises(WorkspaceInvalid) as raised:
        load_workspace(write_workspace(tmp_path / "a", **{"cxstack.yaml": typo}))
    assert "helpdesk exports unknown queue `biling`" in str(raised.value) and "billing" in str(raised.value)
    no_url = SHOP["cxstack.yaml"] + "helpdesk: {kind: zendesk}\n"
    with pytest.raises(WorkspaceInvalid) as raised:
        load_workspace(write_workspace(tmp_path / "b", **{"cxstack.yaml": no_url}))
    assert "helpdesk.base_url is required" in str(raised.value)
