"""The HTTP API end to end: a real app (store, worker, layers) behind FastAPI, a real local back office."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cxstack.api.app import create_api
from cxstack.api.keys import ApiKeys
from cxstack.app import CxApp, Settings, build, build_engine
from cxstack.domain.auth import ApiRole
from cxstack.domain.models import utcnow
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.orchestration.orchestrator import Orchestrator
from cxstack.resolution.models import TurnContext
from cxstack.resolution.registry import ResolverDeps, ResolverRegistry
from cxstack.testing.authz import (
    ACCESS,
    PRINCIPALS,
    TEST_HASHER,
    Targets,
    api_routes,
    check_routes,
    make_role_keys,
    send_as,
)
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.loader import DEFAULT_MECHANISMS, load_workspace

WORKSPACE = {
    "cxstack.yaml": """\
version: 1
name: Api Shop
embedder: hashing
thresholds:
  route_min_confidence: 0.30
  clarify_margin: 0.05
  knowledge_min_score: 0.30
  answer_min_confidence: 0.30
escalation:
  default_queue: general
  queues:
    - {name: general}
    - {name: legal}
    - {name: engineering}
connectors:
  backoffice: {base_url: "http://127.0.0.1:9", timeout_s: 2, retries: 1, backoff_s: 0.01}
""",
    "strategy.yaml": """\
version: 1
tiers:
  - {name: enterprise, min_arr: 20000, priority: high}
  - {name: standard}
default_tier: standard
""",
    "intents.yaml": """\
version: 1
intents:
  - name: return_policy
    description: ask about the return policy
    mechanism: content
    owner: cx@shop.test
    examples:
      - what is your return policy
      - how many days do I have to return something
      - can I return an item I bought
      - do you accept returns
      - how long is the return window
  - name: order_status
    description: check where an order is
    mechanism: action
    action: get_order_status
    owner: ops@shop.test
    examples:
      - where is my order
      - what's the status of my order
      - has my package shipped yet
      - track my order please
      - when will my order arrive
  - name: legal_threat
    description: threaten legal action
    mechanism: human
    never_automate: true
    owner: legal@shop.test
    queue: legal
    examples:
      - I will sue you
      - my lawyer will contact you
      - I'm taking legal action against your company
      - see you in court
      - I am filing a lawsuit
  - name: gift_wrap
    description: ask for gift wrapping
    mechanism: exploding
    owner: eng@shop.test
    queue: engineering
    examples:
      - can you gift wrap my present
      - I want gift wrapping
      - please wrap it as a gift
      - do you offer gift wrap
      - add gift wrapping to the parcel
""",
    "knowledge/returns.yaml": """\
version: 1
facts:
  - id: return-window
    text: You can return any item within 30 days of delivery for a full refund.
    owner: cx@shop.test
    review_by: 2099-01-01
    tags: [returns]
    intents: [return_policy]
  - id: return-condition
    text: Returned items must be unused and in their original packaging.
    owner: cx@shop.test
    review_by: 2099-01-01
    tags: [returns]
    intents: [return_policy]
""",
    "actions.yaml": """\
version: 1
actions:
  - name: get_order_status
    method: GET
    path: /orders/{order_id}
    slots:
      - {name: order_id, pattern: "(ORD-\\\\d{5})", prompt: "What is your order number (like ORD-10001)?"}
    success_reply: "Order {order_id} is {status}."
""",
}

SMALL = {"id": "cus_small", "name": "Sam Small", "plan": "basic", "arr": 120, "segment": "consumer"}
BIG = {"id": "cus_big", "name": "Bea Big", "plan": "enterprise", "arr": 90000, "segment": "corporate"}


class ExplodingResolver:
    """A resolver with a bug: the turn must still end with a person, and the message must survive."""

    mechanism = "exploding"

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
        raise RuntimeError("gift wrap service misconfigured")


@pytest.fixture(scope="module")
def workspace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api_shop")
    for name, text in WORKSPACE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[str, ScriptedBackend]]:
    scripted = ScriptedBackend()
    scripted.on(
        "GET",
        "/orders/{order_id}",
        handler=lambda r: Reply(200, {"status": f"shipped ({r.path_params['order_id']})"}),
    )
    with scripted.serve() as base_url:
        yield base_url, scripted


def make_app(home: Path, workspace_path: Path, base_url: str) -> CxApp:
    workspace = load_workspace(workspace_path, known_mechanisms={*DEFAULT_MECHANISMS, "exploding"})
    engine = build_engine(workspace, embedder_name="hashing", backoffice_url=base_url)
    registry = ResolverRegistry.from_entry_points(
        ResolverDeps(knowledge=engine.knowledge, connectors=engine.connectors)
    )
    registry.register("exploding", ExplodingResolver())
    engine = dataclasses.replace(engine, orchestrator=Orchestrator(engine.router, registry))
    return build(Settings(home=home, embedder="hashing", backoffice_url=base_url), engine=engine)


@pytest.fixture
def cx(tmp_path: Path, workspace_path: Path, backend: tuple[str, ScriptedBackend]) -> CxApp:
    return make_app(tmp_path / "home", workspace_path, backend[0])


@pytest.fixture
def keys(cx: CxApp) -> dict[str, str]:
    """A key per role (admin, agent, integration, viewer), created through the store as the CLI does."""
    return make_role_keys(cx.store)


@pytest.fixture
def api(cx: CxApp) -> FastAPI:
    return create_api(cx)


@pytest.fixture
def client(api: FastAPI, keys: dict[str, str]) -> Iterator[TestClient]:
    """Calls as admin unless a request says otherwise (see cxstack.testing.authz.send_as)."""
    with TestClient(api, headers={"Authorization": f"Bearer {keys['admin']}"}) as test_client:
        yield test_client


def say(
    client: TestClient, conversation: str, text: str, customer: dict[str, Any] = SMALL, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        f"/v1/conversations/{conversation}/messages?wait=true",
        json={"text": text, "customer": customer, **extra},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["completed"], body
    return body


def step(trace: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in trace["steps"] if s["name"] == name)
    return found


# --- conversations ------------------------------------------------------------------------------------------


def test_post_with_wait_returns_reply_and_layer_trace(client: TestClient) -> None:
    body = say(client, "c1", "how long do I have to return an item?")
    assert body["duplicate"] is False and body["status"] == "bot"
    assert "30 days" in body["reply"]
    trace = body["trace"]
    assert trace["intent"] == "return_policy" and trace["decision"] == "continue"
    assert {"strategy", "orchestration", "knowledge"} <= {s["layer"] for s in trace["steps"]}
    assert step(trace, "route")["output"]["decided_by"] == "router"
    assert step(trace, "assess")["output"]["tier"] == "standard"
    assert "return-window" in [f["id"] for f in step(trace, "resolve:content")["output"]["facts"]]

    conversation = client.get("/v1/conversations/c1").json()
    assert [m["role"] for m in conversation["messages"]] == ["customer", "assistant"]
    assert conversation["messages"][1]["text"] == body["reply"]
    assert [t["id"] for t in conversation["traces"]] == [trace["id"]]
    assert conversation["customer"]["name"] == "Sam Small"
    assert "30 days" in conversation["facts"]["return-window"]
    assert [c["id"] for c in client.get("/v1/conversations").json()] == ["c1"]


def test_without_wait_the_message_is_accepted_and_processed(client: TestClient, cx: CxApp) -> None:
    response = client.post("/v1/conversations/c9/messages", json={"text": "do you accept returns?"})
    assert response.status_code == 202
    assert response.json()["waited"] is False and response.json()["trace"] is None
    events = client.get("/v1/conversations/c9/events?after=1&timeout=10").json()
    assert events["changed"] is True
    assert events["conversation"]["messages"][-1]["role"] == "assistant"


def test_action_calls_the_back_office(client: TestClient, backend: tuple[str, ScriptedBackend]) -> None:
    body = say(client, "c2", "where is my order ORD-10001?")
    assert "shipped (ORD-10001)" in body["reply"]
    (action,) = step(body["trace"], "resolve:action")["output"]["actions"]
    assert action["ok"] is True and action["status"] == 200 and action["attempts"] == 1
    assert backend[1].requests_to("GET", "/orders/ORD-10001")


def test_duplicate_external_id_is_a_no_op(client: TestClient) -> None:
    payload = {"text": "what is your return policy", "external_id": "wamid.1", "customer": SMALL}
    first = client.post("/v1/conversations/c3/messages?wait=true", json=payload)
    second = client.post("/v1/conversations/c3/messages?wait=true", json=payload)
    assert first.status_code == 202 and first.json()["duplicate"] is False
    assert second.status_code == 200 and second.json()["duplicate"] is True
    assert second.json()["message_id"] == first.json()["message_id"]
    conversation = client.get("/v1/conversations/c3").json()
    assert len(conversation["traces"]) == 1
    assert [m["role"] for m in conversation["messages"]] == ["customer", "assistant"]


# --- errors -------------------------------------------------------------------------------------------------


def test_missing_field_is_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/v1/conversations/c4/messages", json={})
    assert response.status_code == 422
    body = response.json()
    assert ["body", "text"] in [e["loc"] for e in body["detail"]]
    assert "body.text" in body["message"] and "required" in body["message"].lower()

    blank = client.post("/v1/conversations/c4/messages", json={"text": "   "})
    assert blank.status_code == 422 and "body.text" in blank.json()["message"]

    reply = client.post("/v1/conversations/c4/human-replies", json={"text": "hello"})
    assert reply.status_code == 422 and "body.author" in reply.json()["message"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/conversations/c4/messages",
        content=b'{"text": "hi",',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["detail"][0]["type"] == "json_invalid"
    assert "malformed JSON" in body["message"]


def test_unknown_channel_is_422_naming_the_channel(client: TestClient) -> None:
    response = client.post("/v1/conversations/c4/messages", json={"text": "hi", "channel": "carrier-pigeon"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "channel"]
    assert client.get("/v1/conversations/c4").status_code == 404  # nothing was stored


def test_unknown_conversation_and_escalation_are_404(client: TestClient) -> None:
    response = client.get("/v1/conversations/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "conversation nope not found"}
    assert client.get("/v1/conversations/nope/events?timeout=0").status_code == 404
    replied = client.post("/v1/conversations/nope/human-replies", json={"text": "hi", "author": "ann"})
    assert replied.status_code == 404 and replied.json() == {"detail": "conversation nope not found"}
    assert client.get("/v1/escalations/esc_nope").json() == {"detail": "escalation esc_nope not found"}


# --- escalations and people ---------------------------------------------------------------------------------


def test_escalation_is_queued_and_a_human_reply_hands_back(client: TestClient) -> None:
    body = say(client, "c5", "I will sue you, my lawyer will contact you")
    assert body["trace"]["decision"] == "escalate" and body["status"] == "waiting_for_person"
    escalation_id = step(body["trace"], "escalate")["output"]["escalation_id"]

    legal = client.get("/v1/escalations", params={"queue": "legal"}).json()
    assert [p["id"] for p in legal] == [escalation_id]
    assert legal[0]["conversation_id"] == "c5" and legal[0]["intent"] == "legal_threat"
    assert legal[0]["customer"]["name"] == "Sam Small"
    assert client.get("/v1/escalations", params={"queue": "general"}).json() == []
    assert client.get(f"/v1/escalations/{escalation_id}").json()["queue"] == "legal"
    workspace = client.get("/v1/workspace").json()
    assert {q["name"]: q["open"] for q in workspace["queues"]}["legal"] == 1

    # While a person has it, automation holds back.
    held = say(client, "c5", "hello? anyone?")
    assert held["trace"]["outcome"] == "handled_by_human" and held["reply"] is None

    reply = client.post(
        "/v1/conversations/c5/human-replies",
        json={"text": "We are on it.", "author": "ann", "hand_back": True},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["status"] == "bot"
    assert client.get("/v1/escalations", params={"queue": "legal"}).json() == []
    (resolved,) = client.get("/v1/escalations", params={"queue": "legal", "status": "all"}).json()
    assert resolved["id"] == escalation_id and resolved["status"] == "resolved"

    again = say(client, "c5", "how long do I have to return an item?")
    assert again["trace"]["outcome"] == "automated" and "30 days" in again["reply"]
    roles = [(m["role"], m["author"]) for m in client.get("/v1/conversations/c5").json()["messages"]]
    assert ("human_agent", "ann") in roles and roles[-1][0] == "assistant"


def test_human_reply_without_hand_back_keeps_the_person_in_charge(client: TestClient) -> None:
    say(client, "c8", "see you in court")
    reply = client.post(
        "/v1/conversations/c8/human-replies",
        json={"text": "Could you tell me more?", "author": "ann", "hand_back": False},
    )
    assert reply.status_code == 201 and reply.json()["status"] == "person"
    assert len(client.get("/v1/escalations", params={"queue": "legal"}).json()) == 1
    held = say(client, "c8", "how long do I have to return an item?")
    assert held["trace"]["outcome"] == "handled_by_human" and held["reply"] is None


def test_escalations_most_urgent_first_then_oldest(client: TestClient) -> None:
    say(client, "e1", "I will sue you", customer=SMALL)
    say(client, "e2", "see you in court", customer=BIG)
    say(client, "e3", "I am filing a lawsuit", customer=SMALL)
    packets = client.get("/v1/escalations", params={"queue": "legal", "status": "open"}).json()
    assert [(p["conversation_id"], p["priority"]) for p in packets] == [
        ("e2", "high"),
        ("e1", "normal"),
        ("e3", "normal"),
    ]


def test_resolver_exception_escalates_and_keeps_the_message(client: TestClient) -> None:
    body = say(client, "c6", "can you gift wrap my present please")
    trace = body["trace"]
    assert trace["intent"] == "gift_wrap"
    assert trace["decision"] == "escalate" and trace["reason_code"] == "internal_error"
    assert "misconfigured" in step(trace, "resolve:exploding")["output"]["detail"]["error"]
    conversation = client.get("/v1/conversations/c6").json()
    assert conversation["messages"][0]["text"] == "can you gift wrap my present please"
    assert conversation["status"] == "waiting_for_person"
    (packet,) = client.get("/v1/escalations", params={"queue": "engineering"}).json()
    assert packet["reason_code"] == "internal_error" and packet["conversation_id"] == "c6"
    assert client.get("/health").json()["pending"] == 0


def test_long_poll_wakes_on_a_human_reply(client: TestClient) -> None:
    say(client, "c7", "I will sue you")
    seen = len(client.get("/v1/conversations/c7").json()["messages"])
    result: dict[str, Any] = {}

    def wait_for_news() -> None:
        result["events"] = client.get(f"/v1/conversations/c7/events?after={seen}&timeout=20").json()

    waiter = threading.Thread(target=wait_for_news)
    waiter.start()
    client.post("/v1/conversations/c7/human-replies", json={"text": "Hi, Ann here.", "author": "ann"})
    waiter.join(timeout=30)
    assert result["events"]["changed"] is True
    assert result["events"]["conversation"]["messages"][-1]["text"] == "Hi, Ann here."
    unchanged = client.get(f"/v1/conversations/c7/events?after={seen + 1}&timeout=0").json()
    assert unchanged["changed"] is False


# --- registry, health, pages --------------------------------------------------------------------------------


def test_intents_workspace_health_and_customers(client: TestClient, cx: CxApp) -> None:
    intents = {i["name"]: i for i in client.get("/v1/intents").json()}
    own = {name for name, i in intents.items() if not i["builtin"]}
    assert own == {"return_policy", "order_status", "legal_threat", "gift_wrap"}
    assert set(intents) - own == {"greeting", "thanks", "goodbye", "small_talk"}
    assert intents["legal_threat"]["queue"] == "legal" and intents["legal_threat"]["never_automate"] is True
    assert intents["return_policy"]["queue"] == "general" and intents["return_policy"]["examples"] == 5

    workspace = client.get("/v1/workspace").json()
    assert workspace["name"] == "Api Shop" and workspace["version"] == str(cx.workspace.version)
    assert workspace["counts"]["intents"] == 8 and workspace["counts"]["facts"] == 2

    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() | {"pending": 0} == {
        "status": "ok",
        "reasons": [],
        "workspace": "Api Shop",
        "workspace_version": str(cx.workspace.version),
        "db_ok": True,
        "pending": 0,
        "db_error": None,
        "worker": {"state": "running", "restarts": 0, "pid": None, "last_exit": None, "reason": None},
        "outbox_dead": 0,
        "handoff_dead": None,  # no help desk configured
    }

    say(client, "health-1", "hello", customer=BIG)  # profiles come from the store: imported or sent
    client.post("/v1/conversations/health-2/messages", json={"text": "hi", "customer_id": "anon_sender"})
    customers = client.get("/v1/customers").json()
    assert {"id", "name", "plan", "arr"} <= set(customers[0])
    assert "cus_big" in {c["id"] for c in customers}
    assert "anon_sender" not in {c["id"] for c in customers}  # bare senders are not profiles
    enterprise = client.get("/v1/customers", params={"q": "enterprise"}).json()
    assert [c["id"] for c in enterprise] == ["cus_big"]


def test_pages_and_static_files_are_served(client: TestClient) -> None:
    # The page shells are public; their data comes from the API with a session or a key.
    page = send_as(client, "GET", "/", None)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Api Shop" in page.text and 'id="turns"' in page.text and "/static/chat.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN: works offline
    assert "cxk_" not in page.text
    desk = send_as(client, "GET", "/escalations", None)
    assert desk.status_code == 200 and 'id="packets"' in desk.text and 'id="login-form"' in desk.text
    reviews = send_as(client, "GET", "/reviews", None)
    assert reviews.status_code == 200 and 'id="review"' in reviews.text
    assert "/static/reviews.js" in reviews.text
    assert "http://" not in reviews.text and "https://" not in reviews.text
    for asset in ("cx.css", "common.js", "chat.js", "escalations.js", "reviews.js"):
        assert send_as(client, "GET", f"/static/{asset}", None).status_code == 200, asset
    assert send_as(client, "GET", "/health", None).status_code == 200
    assert send_as(client, "GET", "/openapi.json", None).status_code == 200


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/events",
        "/v1/conversations/{conversation_id}/human-replies",
        "/v1/escalations",
        "/v1/escalations/{escalation_id}",
        "/v1/intents",
        "/v1/workspace",
        "/v1/customers",
        "/health",
    } <= set(paths)
    assert "/" not in paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text  # offline: assets come from this server
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_customer_profiles_are_upserted_and_read_back(client: TestClient) -> None:
    body = {
        "name": "Ada",
        "plan": "enterprise",
        "arr": 90000,
        "segment": "corporate",
        "attributes": {"csm": "jo"},
    }
    put = client.put("/v1/customers/cus_api", json=body)
    assert put.status_code == 200 and put.json()["arr"] == 90000
    got = client.get("/v1/customers/cus_api").json()
    assert got["plan"] == "enterprise" and got["attributes"] == {"csm": "jo"}
    assert client.get("/v1/customers/nobody").status_code == 404
    bad = client.put("/v1/customers/cus_api", json={"arr": -5})
    assert bad.status_code == 422 and "arr" in bad.json()["message"]


def test_a_message_with_only_the_customer_id_keeps_the_stored_profile(client: TestClient) -> None:
    client.put("/v1/customers/cus_keep", json={"name": "Kim", "plan": "enterprise", "arr": 50000})
    sent = client.post(
        "/v1/conversations/keep-1/messages?wait=true", json={"text": "hello", "customer": {"id": "cus_keep"}}
    )
    assert sent.status_code == 202
    assert client.get("/v1/customers/cus_keep").json()["arr"] == 50000
    client.post(
        "/v1/conversations/keep-2/messages",
        json={"text": "hi", "customer": {"id": "cus_keep", "plan": "pro"}},
    )
    profile = client.get("/v1/customers/cus_keep").json()
    assert (profile["plan"], profile["arr"], profile["name"]) == ("pro", 50000, "Kim")  # only what was sent


# --- authentication and roles -------------------------------------------------------------------------------


def test_every_route_answers_by_the_role_table(api: FastAPI, client: TestClient, cx: CxApp) -> None:
    body = say(client, "authz-1", "I will sue you, my lawyer will contact you")
    escalation_id = step(body["trace"], "escalate")["output"]["escalation_id"]
    session = send_as(client, "POST", "/v1/webchat/sessions", None).json()
    spare_keys = ApiKeys(cx.store, hasher=TEST_HASHER)
    targets = Targets(
        conversation_id="authz-1",
        escalation_id=escalation_id,
        customer_id=SMALL["id"],
        session_token=session["token"],
        spare_key=lambda: spare_keys.create("spare", ApiRole.VIEWER).key.id,
        fact_id="return-window",
        fact_version=lambda: cx.store.fact_versions("return-window")[-1].number,
    )
    credentials = make_role_keys(cx.store)

    checks = check_routes(api, client, credentials, targets)

    assert set(api_routes(api)) == set(ACCESS)  # no stale entry either
    assert len(checks) == len(ACCESS) * len(PRINCIPALS)
    assert [c for c in checks if not c.ok] == []
    assert {c.actual for c in checks if c.expected == "401"} == {401}
    assert {c.actual for c in checks if c.expected == "403"} == {403}


def test_a_new_route_without_an_entry_in_the_role_table_fails_the_check(
    api: FastAPI, client: TestClient
) -> None:
    @api.get("/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {"oops": "no credentials needed"}

    targets = Targets("c", "e", "cus", "token", spare_key=lambda: "none")
    with pytest.raises(KeyError, match="/v1/forgotten"):
        check_routes(api, client, {}, targets)


def test_openapi_documents_the_security_schemes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": ANY_TEXT}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            names = {name for requirement in operation.get("security", []) for name in requirement}
            if path.startswith("/v1/") or path == "/metrics":  # counts of conversations are not public
                assert names == {"bearer", "apiKey"}, (method, path)
            else:
                assert names == set(), (method, path)


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


def test_keys_are_read_from_either_header_and_bad_ones_are_401(
    client: TestClient, keys: dict[str, str]
) -> None:
    viewer = keys["viewer"]
    assert send_as(client, "GET", "/v1/intents", None, headers={"X-API-Key": viewer}).status_code == 200
    assert send_as(client, "GET", "/v1/intents", viewer).status_code == 200

    wrong_secret = viewer[: len("cxk_12345678_")] + "A" * 43
    for bad in (wrong_secret, "cxk_nope", "cxk_zzzzzzzz_" + "B" * 43, "not-a-credential"):
        response = send_as(client, "GET", "/v1/intents", bad)
        assert response.status_code == 401, bad
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert viewer not in response.text
    basic = send_as(client, "GET", "/v1/intents", None, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401 and "Bearer" in basic.json()["detail"]
    missing = send_as(client, "GET", "/v1/intents", None)
    assert missing.status_code == 401 and "missing credentials" in missing.json()["detail"]
    two = send_as(client, "GET", "/v1/intents", viewer, headers={"X-API-Key": keys["agent"]})
    assert two.status_code == 401


def test_wrong_role_is_403_naming_what_is_missing(client: TestClient, keys: dict[str, str]) -> None:
    response = send_as(client, "PUT", "/v1/customers/cus_x", keys["viewer"], json={"plan": "enterprise"})
    assert response.status_code == 403
    assert response.json() == {"detail": "the viewer role may not do this (it needs customers:write)"}


def test_a_key_revoked_through_the_api_stops_working_at_once(
    client: TestClient, keys: dict[str, str]
) -> None:
    viewer = keys["viewer"]
    assert send_as(client, "GET", "/v1/workspace", viewer).status_code == 200  # now cached
    key_id = send_as(client, "GET", "/v1/me", viewer).json()["name"]
    listed = {k["name"]: k for k in client.get("/v1/keys").json()}
    assert key_id == "test viewer" and listed["test viewer"]["active"] is True

    revoked = client.post(f"/v1/keys/{listed['test viewer']['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert send_as(client, "GET", "/v1/workspace", viewer).status_code == 401
    assert client.post("/v1/keys/nope0000/revoke").status_code == 404


def test_a_key_created_through_the_api_is_shown_once(client: TestClient) -> None:
    created = client.post("/v1/keys", json={"name": "crm sync", "role": "integration"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith(created.json()["prefix"]) and key.startswith("cxk_")
    listing = client.get("/v1/keys")
    assert key not in listing.text and "argon2" not in listing.text
    assert send_as(client, "PUT", "/v1/customers/cus_crm", key, json={"plan": "pro"}).status_code == 200
    assert send_as(client, "GET", "/v1/me", key).json()["role"] == "integration"


def test_an_integration_key_bound_to_a_channel_posts_only_there(client: TestClient, cx: CxApp) -> None:
    key = ApiKeys(cx.store, hasher=TEST_HASHER).create("widget backend", "integration", channel="api").secret
    other = send_as(
        client, "POST", "/v1/conversations/ch-1/messages", key, json={"text": "hi", "channel": "webchat"}
    )
    assert other.status_code == 403 and "channel 'api' only" in other.json()["detail"]
    assert client.get("/v1/conversations/ch-1").status_code == 404
    ok = send_as(client, "POST", "/v1/conversations/ch-1/messages", key, json={"text": "hi"})
    assert ok.status_code == 202
    assert client.get("/v1/conversations/ch-1").json()["channel"] == "api"


def test_only_integration_or_admin_keys_set_profile_fields(client: TestClient, keys: dict[str, str]) -> None:
    forged = {"text": "refund me", "customer": {"id": "cus_forge", "plan": "enterprise", "arr": 999999}}
    for role in ("agent", "viewer"):
        response = send_as(client, "POST", "/v1/conversations/forge-1/messages", keys[role], json=forged)
        assert response.status_code == 403, role
    assert client.get("/v1/customers/cus_forge").status_code == 404

    sent = send_as(
        client, "POST", "/v1/conversations/forge-1/messages?wait=true", keys["integration"], json=forged
    )
    assert sent.status_code == 202
    assert sent.json()["trace"] is None  # an integration delivers replies; traces are for staff
    assert sent.json()["completed"] is True and sent.json()["reply"]
    assert client.get("/v1/customers/cus_forge").json()["plan"] == "enterprise"


# --- web chat sessions --------------------------------------------------------------------------------------


def test_an_anonymous_web_chat_session_sees_only_customer_facing_messages(
    client: TestClient, cx: CxApp
) -> None:
    started = send_as(client, "POST", "/v1/webchat/sessions", None)
    assert started.status_code == 201
    session = started.json()
    assert session["customer_id"].startswith("anon_") and session["verified"] is False
    token = session["token"]

    question = {"text": "how long do I have to return an item?"}
    sent = send_as(client, "POST", "/v1/webchat/messages?wait=true", token, json=question)
    assert sent.status_code == 202 and "30 days" in sent.json()["reply"]
    assert set(sent.json()) == {"conversation_id", "message_id", "duplicate", "waited", "completed", "reply"}

    events = send_as(client, "GET", "/v1/webchat/messages?timeout=0", token).json()
    assert events["message_count"] == 2
    assert [m["role"] for m in events["messages"]] == ["customer", "assistant"]
    assert all(set(m) == {"id", "role", "text", "created_at"} for m in events["messages"])
    assert "trace" not in json.dumps(events) and "return-window" not in json.dumps(events)

    conversation = client.get(f"/v1/conversations/{session['conversation_id']}").json()
    assert conversation["customer_id"] == session["customer_id"] and conversation["channel"] == "webchat"


def test_a_session_reaches_only_its_own_conversation(client: TestClient) -> None:
    say(client, "private-1", "where is my order ORD-10001?", customer=BIG)
    token = send_as(client, "POST", "/v1/webchat/sessions", None).json()["token"]
    for method, url in (
        ("GET", "/v1/conversations/private-1"),
        ("GET", "/v1/conversations/private-1/events?timeout=0"),
        ("GET", "/v1/conversations"),
        ("GET", "/v1/customers/cus_big"),
    ):
        assert send_as(client, method, url, token).status_code == 403, url
    posted = send_as(client, "POST", "/v1/conversations/private-1/messages", token, json={"text": "hi"})
    assert posted.status_code == 403
    own = send_as(client, "GET", "/v1/webchat/messages?timeout=0", token).json()
    assert own["messages"] == [] and own["changed"] is False
    assert len(client.get("/v1/conversations/private-1").json()["messages"]) == 2


def test_an_identified_session_needs_an_integration_key_and_is_verified(
    client: TestClient, keys: dict[str, str]
) -> None:
    ask = {"customer_id": "cus_small"}
    anonymous = send_as(client, "POST", "/v1/webchat/sessions", None, json=ask)
    assert anonymous.status_code == 401 and "webchat:identify" in anonymous.json()["detail"]
    assert send_as(client, "POST", "/v1/webchat/sessions", keys["agent"], json=ask).status_code == 403

    started = send_as(client, "POST", "/v1/webchat/sessions", keys["integration"], json=ask)
    assert started.status_code == 201
    assert started.json()["verified"] is True and started.json()["customer_id"] == "cus_small"
    token = started.json()["token"]
    assert (
        send_as(client, "POST", "/v1/webchat/messages?wait=true", token, json={"text": "hello"}).status_code
        == 202
    )
    conversation_id = started.json()["conversation_id"]
    assert client.get(f"/v1/conversations/{conversation_id}").json()["customer_id"] == "cus_small"

    # Resuming works for the conversation's own customer only, and never tells whose it is.
    resumed = send_as(
        client,
        "POST",
        "/v1/webchat/sessions",
        keys["integration"],
        json={**ask, "conversation_id": conversation_id},
    )
    assert resumed.status_code == 201 and resumed.json()["conversation_id"] == conversation_id
    stolen = send_as(
        client,
        "POST",
        "/v1/webchat/sessions",
        keys["integration"],
        json={"customer_id": "cus_big", "conversation_id": conversation_id},
    )
    assert stolen.status_code == 409 and "cus_small" not in stolen.text
    orphan = send_as(
        client, "POST", "/v1/webchat/sessions", keys["integration"], json={"conversation_id": "x"}
    )
    assert orphan.status_code == 422 and "customer_id" in orphan.json()["message"]


def test_a_web_chat_session_can_never_change_a_profile(client: TestClient) -> None:
    client.put("/v1/customers/cus_web", json={"name": "Wen", "plan": "basic", "arr": 100})
    token = send_as(client, "POST", "/v1/webchat/sessions", None).json()["token"]
    forged = {"text": "hi", "customer": {"id": "cus_web", "plan": "enterprise", "arr": 500000}}
    response = send_as(client, "POST", "/v1/webchat/messages", token, json=forged)
    assert response.status_code == 422 and "body.customer" in response.json()["message"]
    assert (
        send_as(client, "PUT", "/v1/customers/cus_web", token, json={"plan": "enterprise"}).status_code == 403
    )
    profile = client.get("/v1/customers/cus_web").json()
    assert (profile["plan"], profile["arr"]) == ("basic", 100)


def test_expired_and_tampered_sessions_are_401_with_a_clear_message(client: TestClient, api: FastAPI) -> None:
    sessions = api.state.auth.sessions
    expired, _ = sessions.issue("web_old", "anon_old", verified=False, now=utcnow() - timedelta(hours=2))
    response = send_as(client, "GET", "/v1/webchat/messages?timeout=0", expired)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert send_as(client, "POST", "/v1/webchat/sessions/refresh", expired).status_code == 401

    token = send_as(client, "POST", "/v1/webchat/sessions", None).json()["token"]
    head, payload, signature = token.split(".")
    tampered_signature = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps({**claims, "cid": "private-1"}).encode()).decode().rstrip("=")
    )
    for bad in (tampered_signature, f"{head}.{forged_payload}.{signature}"):
        response = send_as(client, "GET", "/v1/webchat/messages?timeout=0", bad)
        assert response.status_code == 401 and "invalid web-chat session" in response.json()["detail"]


def test_refresh_extends_a_still_valid_session(client: TestClient, api: FastAPI) -> None:
    sessions = api.state.auth.sessions
    token, session = sessions.issue("web_r", "anon_r", verified=False, now=utcnow() - timedelta(minutes=20))
    refreshed = send_as(client, "POST", "/v1/webchat/sessions/refresh", token)
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert body["conversation_id"] == "web_r" and body["verified"] is False
    assert datetime.fromisoformat(body["expires_at"]) > session.expires_at
    assert send_as(client, "GET", "/v1/webchat/messages?timeout=0", body["token"]).status_code == 200


# --- API-edge defects ---------------------------------------------------------------------------------------


def test_422_never_echoes_the_request_body(client: TestClient) -> None:
    secret_text = "S3CRET-" + "x" * 6000  # over the 4,000-character message limit
    response = client.post("/v1/conversations/echo-1/messages", json={"text": secret_text})
    assert response.status_code == 422
    assert "S3CRET" not in response.text and len(response.content) < 1000
    assert all("input" not in error for error in response.json()["detail"])
    assert "body.text" in response.json()["message"]


def test_a_body_over_the_limit_is_413_and_never_echoed(client: TestClient) -> None:
    huge = "H" * (70 * 1024)
    response = client.post("/v1/conversations/big-1/messages", json={"text": huge})
    assert response.status_code == 413
    assert "HHHH" not in response.text and "65536 bytes" in response.json()["detail"]
    assert client.get("/v1/conversations/big-1").status_code == 404

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"text": "'
        for _ in range(80):
            yield b"H" * 1024
        yield b'"}'

    streamed = client.post(
        "/v1/conversations/big-2/messages", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and "HHHH" not in streamed.text


def test_the_body_limit_is_configurable(
    tmp_path: Path, workspace_path: Path, backend: tuple[str, ScriptedBackend]
) -> None:
    cx = make_app(tmp_path / "home", workspace_path, backend[0])
    cx.settings.max_body_bytes = 200
    admin = make_role_keys(cx.store)["admin"]
    with TestClient(create_api(cx), headers={"Authorization": f"Bearer {admin}"}) as small:
        assert small.post("/v1/conversations/l-1/messages", json={"text": "y" * 300}).status_code == 413
        assert small.post("/v1/conversations/l-1/messages", json={"text": "fine"}).status_code == 202


def test_an_external_id_reused_in_another_conversation_is_409_and_stores_nothing(client: TestClient) -> None:
    first = client.post("/v1/conversations/ext-a/messages", json={"text": "hello", "external_id": "wamid.77"})
    assert first.status_code == 202
    again = client.post(
        "/v1/conversations/ext-b/messages",
        json={"text": "other", "external_id": "wamid.77", "customer": {"id": "cus_ext", "plan": "pro"}},
    )
    assert again.status_code == 409
    assert again.json() == {"detail": "external_id already used in another conversation"}
    assert "ext-a" not in again.text
    assert client.get("/v1/conversations/ext-b").status_code == 404
    assert client.get("/v1/customers/cus_ext").status_code == 404  # the carried profile was not stored either
    assert [
        m["text"] for m in client.get("/v1/conversations/ext-a").json()["messages"] if m["role"] == "customer"
    ] == ["hello"]


def test_the_customer_may_be_given_as_a_bare_id(client: TestClient) -> None:
    client.put("/v1/customers/cus_b", json={"name": "Bo", "plan": "pro", "arr": 5000})
    response = client.post(
        "/v1/conversations/bare-1/messages?wait=true",
        json={"text": "what is your return policy", "customer": "cus_b"},
    )
    assert response.status_code == 202, response.text
    conversation = client.get("/v1/conversations/bare-1").json()
    assert conversation["customer_id"] == "cus_b" and conversation["customer"]["plan"] == "pro"


def test_a_slow_store_read_does_not_hold_up_other_requests(
    client: TestClient, cx: CxApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = cx.store.list_conversations
    other_request_done = threading.Event()
    seen: dict[str, Any] = {}

    def slow_list(limit: int = 50) -> Any:
        # Blocks until another request has been answered: impossible if this call held the event loop.
        seen["other_request_answered_meanwhile"] = other_request_done.wait(10)
        return original(limit)

    monkeypatch.setattr(cx.store, "list_conversations", slow_list)
    client.get("/v1/me")  # the admin key is verified and cached first
    slow = threading.Thread(target=lambda: seen.update(listing=client.get("/v1/conversations")))
    slow.start()
    while "other_request_answered_meanwhile" not in seen and slow.is_alive():
        if client.get("/v1/workspace").status_code == 200:
            other_request_done.set()
            break
    slow.join(20)
    assert seen["other_request_answered_meanwhile"] is True
    assert seen["listing"].status_code == 200


# --- monitoring: metrics and CSAT ---------------------------------------------------------------------------


def test_metrics_pair_automation_with_quality_and_csat_is_recorded(client: TestClient) -> None:
    say(client, "m1", "where is my order ORD-1?")
    assert client.post("/v1/conversations/m1/csat", json={"score": 5, "comment": "fast"}).status_code == 200
    body = client.get("/v1/metrics", params={"by": "channel"}).json()
    for row in [body["overall"], *body["rows"]]:
        assert set(row) >= {"automation_rate", "quality"}
        assert row["quality"]["method"] == "insufficient" and row["quality"]["rate"] is None
    assert body["overall"]["conversations"] == 1
    assert body["overall"]["csat"]["responses"] == 1 and body["overall"]["csat"]["mean"] == 5.0


def test_csat_and_metrics_refuse_bad_input_naming_the_field(client: TestClient) -> None:
    say(client, "m2", "where is my order ORD-1?")
    response = client.post("/v1/conversations/m2/csat", json={"score": 9})
    assert response.status_code == 422 and "score" in response.text
    assert client.post("/v1/conversations/nobody/csat", json={"score": 3}).status_code == 404
    response = client.get("/v1/metrics", params={"by": "customer"})
    assert response.status_code == 422 and "by" in response.text


def test_reviews_through_the_api_take_the_reviewer_from_the_key_and_name_bad_fields(
    client: TestClient, keys: dict[str, str]
) -> None:
    say(client, "r1", "where is my order ORD-1?")
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    assert client.get("/v1/reviews/next", headers=agent).status_code == 204  # nothing drawn yet
    rubric = client.get("/v1/rubric").json()
    scores = {c["id"]: c["scale"][1] for c in rubric["criteria"]}
    body = {"conversation_id": "r1", "scores": scores, "reviewer": "someone else"}
    made = client.post("/v1/reviews", json=body, headers=agent)
    assert made.status_code == 201, made.text
    assert made.json()["reviewer"].startswith("test agent (") and made.json()["passed"] is True
    assert made.json()["rubric_version"] == rubric["version"]
    assert client.post("/v1/reviews", json=body, headers=agent).status_code == 409  # once per reviewer
    wrong = client.post("/v1/reviews", json={**body, "scores": {**scores, "correctness": 9}})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "scores", "correctness"]
    unknown = client.post("/v1/reviews", json={**body, "conversation_id": "nobody"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "conversation_id"]
    listed = client.get("/v1/reviews", params={"conversation_id": "r1"}).json()
    assert [r["reviewer"].split(" (")[0] for r in listed] == ["test agent"]
