"""The HTTP API end to end: a real app (store, worker, layers) behind FastAPI, a real local back office."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cxstack.api.app import create_api
from cxstack.app import CxApp, Settings, build, build_engine
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.orchestration.orchestrator import Orchestrator
from cxstack.resolution.models import TurnContext
from cxstack.resolution.registry import ResolverDeps, ResolverRegistry
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
def client(cx: CxApp) -> Iterator[TestClient]:
    with TestClient(create_api(cx)) as test_client:
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
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Api Shop" in page.text and 'id="turns"' in page.text and "/static/chat.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN: works offline
    desk = client.get("/escalations")
    assert desk.status_code == 200 and 'id="packets"' in desk.text
    for asset in ("cx.css", "common.js", "chat.js", "escalations.js"):
        assert client.get(f"/static/{asset}").status_code == 200, asset


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
