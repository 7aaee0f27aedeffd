"""Identity and authorisation end to end: a customer reads and changes only their own objects, an anonymous
customer proves who they are first, a slot naming the customer's account never comes from their text, and
connector secrets come from the environment."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SHOP, write_workspace

from cxstack.app import CxApp, Settings, build, http_connectors
from cxstack.domain.models import Customer, CustomerId
from cxstack.domain.secrets import MissingSecretError, Secret
from cxstack.integrations.actions.registry import UnknownConnectorTypeError
from cxstack.testing.http_standin import RecordedRequest, Reply, ScriptedBackend
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.validate import validate_workspace

ANA = Customer(id=CustomerId("cus_ana"), name="Ana", email="ana@example.com", plan="basic", arr=100)
BO = Customer(id=CustomerId("cus_bo"), name="Bo", email="bo@example.com", plan="basic", arr=100)
ORDERS = {
    "ORD-10001": {"account_id": "cus_ana", "status": "shipped", "address": "1 Ana Street"},
    "ORD-10002": {"account_id": "cus_bo", "status": "delivered", "address": "2 Bo Road"},
}
EMAILS = {"ana@example.com": "cus_ana", "bo@example.com": "cus_bo"}

ACTIONS = """\
version: 1
actions:
  - name: get_order_status
    method: GET
    path: /orders/{order_id}
    scope: orders:read
    owner: {field: account_id}
    slots:
      - {name: order_id, pattern: "(ORD-\\\\d{5})", prompt: "What is your order number (like ORD-10001)?"}
    success_reply: "Order {order_id} is {status}, going to {address}."
  - name: issue_refund
    method: POST
    path: /orders/{order_id}/refunds
    scope: refunds:write
    amount_slot: amount
    max_amount: 500
    requires_confirmation: true
    owner: {field: account_id, check_with: get_order_status}
    slots:
      - {name: order_id, pattern: "(ORD-\\\\d{5})", prompt: "Which order (like ORD-10001)?"}
      - {name: amount, type: money, prompt: "How much?"}
    success_reply: "Refunded {amount} for {order_id} (reference {refund_id})."
  - name: get_subscription
    method: GET
    path: /accounts/{account_id}/subscription
    scope: subscriptions:read
    slots:
      - {name: account_id, from_customer: id}
    success_reply: "Your plan is {plan}."
  - name: verify_customer
    method: POST
    path: /customers/verify
    public: true
    slots:
      - name: email
        pattern: "([\\\\w.+-]+@[\\\\w-]+\\\\.[\\\\w.]+)"
        prompt: "What's the email on your account?"
      - {name: order_id, pattern: "(ORD-\\\\d{5})", prompt: "And one of your order numbers?"}
    success_reply: "Verified."
"""
INTENTS = (
    SHOP["intents.yaml"]
    + """\
  - name: subscription_status
    description: check my subscription
    mechanism: action
    action: get_subscription
    owner: ops@shop.test
    examples:
      - what plan am I on
      - check my subscription
      - when does my subscription renew
      - what's my membership status
      - is my subscription active
      - show my subscription
"""
)
VERIFICATION = """\
identity:
  verification: {action: verify_customer, customer_field: account_id, max_attempts: 2}
"""


def _order(request: RecordedRequest) -> Reply:
    order = ORDERS.get(request.path_params["order_id"])
    return Reply(404, {"detail": "not found"}) if order is None else Reply(200, order)


def _verify(request: RecordedRequest) -> Reply:
    body = request.json or {}
    owner = EMAILS.get(str(body.get("email", "")).lower())
    order = ORDERS.get(str(body.get("order_id", "")))
    if owner is None or order is None or order["account_id"] != owner:
        return Reply(404, {"detail": "no match"})
    return Reply(200, {"account_id": owner})


@pytest.fixture
def backend() -> Iterator[tuple[str, ScriptedBackend]]:
    backend = ScriptedBackend()
    backend.on("GET", "/orders/{order_id}", handler=_order)
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "RF-1"}))
    backend.on("GET", "/accounts/{account_id}/subscription", handler=lambda r: Reply(200, {"plan": "Plus"}))
    backend.on("POST", "/customers/verify", handler=_verify)
    with backend.serve() as base_url:
        yield base_url, backend


def workspace(root: Path, *, verification: bool = True) -> Path:
    settings = SHOP["cxstack.yaml"] + (VERIFICATION if verification else "")
    return write_workspace(
        root, **{"actions.yaml": ACTIONS, "intents.yaml": INTENTS, "cxstack.yaml": settings}
    )


async def start(tmp_path: Path, base_url: str, *, verification: bool = True) -> CxApp:
    ws = load_workspace(workspace(tmp_path / "ws", verification=verification))
    cx = build(Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=base_url), workspace=ws)
    cx.store.upsert_customers([ANA, BO])
    await cx.start()
    return cx


@pytest.fixture
async def app(tmp_path: Path, backend: tuple[str, ScriptedBackend]) -> AsyncIterator[CxApp]:
    cx = await start(tmp_path, backend[0])
    yield cx
    await cx.stop()


async def say(cx: CxApp, conversation: str, text: str, customer: Customer | None = ANA) -> Any:
    if customer is None:  # an anonymous web-chat visitor
        await cx.post_message(conversation, text, customer_id=f"anon_{conversation}", verified=False)
    else:
        await cx.post_message(conversation, text, customer_id=str(customer.id), verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view


def everything_recorded(cx: CxApp, conversation: str) -> str:
    """Every stored byte of a conversation: transcript, traces, packets."""
    view = cx.conversation_view(conversation)
    assert view is not None
    return json.dumps(
        {
            "messages": [m.text for m in view.messages],
            "traces": [[s.output for s in t.steps] for t in view.traces],
            "packets": [p.summary for p in view.escalations]
            + [str(p.actions_tried) for p in view.escalations],
        },
        default=str,
    )


async def test_another_customers_order_is_not_found_and_nothing_of_it_leaks(
    app: CxApp, backend: tuple[str, ScriptedBackend]
) -> None:
    view = await say(app, "x1", "where is my order ORD-10002?")  # Bo's order, asked by Ana
    trace = view.traces[-1]
    assert "couldn't find ORD-10002 on your account" in (trace.reply or "")
    recorded = everything_recorded(app, "x1")
    assert "Bo Road" not in recorded and "delivered" not in recorded
    resolve = next(s for s in trace.steps if s.name == "resolve:action")
    assert resolve.output["detail"]["ownership"] == {
        "object": "ORD-10002",
        "exists": True,
        "owner_ok": False,
        "checked_with": "get_order_status",
        "status_code": 200,
    }
    [call] = backend[1].requests_to("GET", "/orders/ORD-10002")
    assert call.headers["x-customer-id"] == "cus_ana"  # the back office can refuse it too


async def test_an_unknown_order_gets_the_same_words_as_someone_elses(app: CxApp) -> None:
    theirs = (await say(app, "x2", "where is my order ORD-10002?")).traces[-1].reply
    unknown = (await say(app, "x3", "where is my order ORD-99999?")).traces[-1].reply
    assert theirs is not None and unknown is not None
    assert theirs.replace("ORD-10002", "ID") == unknown.replace("ORD-99999", "ID")


async def test_without_an_id_the_assistant_asks_and_shows_nothing(app: CxApp) -> None:
    view = await say(app, "x4", "where is my order?")
    assert "order number" in (view.traces[-1].reply or "").lower()
    assert "Street" not in everything_recorded(app, "x4")


async def test_the_owner_gets_their_order(app: CxApp) -> None:
    view = await say(app, "x5", "where is my order ORD-10001?")
    assert "ORD-10001 is shipped, going to 1 Ana Street" in (view.traces[-1].reply or "")


async def test_a_refund_on_someone_elses_order_never_reaches_the_back_office(
    app: CxApp, backend: tuple[str, ScriptedBackend]
) -> None:
    view = await say(app, "x6", "please refund my order ORD-10002, $20")
    assert "couldn't find ORD-10002" in (view.traces[-1].reply or "")
    assert "confirm" not in (view.traces[-1].reply or "").lower()  # checked before the confirmation question
    assert backend[1].requests_to("POST", "/orders/ORD-10002/refunds") == []


async def test_repeated_misses_go_to_a_person(app: CxApp) -> None:
    await say(app, "x7", "where is my order ORD-10002?")
    await say(app, "x7", "ORD-99998")
    view = await say(app, "x7", "ORD-99997")
    trace = view.traces[-1]
    assert trace.outcome == "escalated" and trace.reason_code == "identity_mismatch"


async def test_an_anonymous_customer_is_verified_before_anything_account_specific(
    app: CxApp, backend: tuple[str, ScriptedBackend]
) -> None:
    view = await say(app, "a1", "where is my order ORD-10001?", customer=None)
    assert "confirm who you are" in (view.traces[-1].reply or "")
    assert backend[1].requests_to("GET", "/orders/ORD-10001") == []
    # someone else's email with Ana's order number (taken from the first message)
    view = await say(app, "a1", "it's bo@example.com", customer=None)
    assert "couldn't match those details" in (view.traces[-1].reply or "")
    assert not view.conversation.verified and view.conversation.customer_id == "anon_a1"
    view = await say(app, "a1", "ana@example.com", customer=None)
    assert "order number" in (view.traces[-1].reply or "")
    view = await say(app, "a1", "ORD-10001", customer=None)
    reply = view.traces[-1].reply or ""
    assert "matches our records" in reply and "ORD-10001 is shipped" in reply
    assert view.conversation.verified and view.conversation.customer_id == "cus_ana"
    assert "bo@example.com" not in json.dumps([str(a) for p in view.escalations for a in p.actions_tried])


async def test_an_anonymous_customer_without_verification_gets_a_person(
    tmp_path: Path, backend: tuple[str, ScriptedBackend]
) -> None:
    cx = await start(tmp_path, backend[0], verification=False)
    try:
        view = await say(cx, "a2", "where is my order ORD-10001?", customer=None)
        trace = view.traces[-1]
        assert trace.outcome == "escalated" and trace.reason_code == "identity_required"
        assert backend[1].requests_to("GET", "/orders/ORD-10001") == []
        # public content is still answered
        view = await say(cx, "a3", "what is your return policy", customer=None)
        assert "30 days" in (view.traces[-1].reply or "")
    finally:
        await cx.stop()


async def test_a_typed_account_id_never_chooses_the_account(
    app: CxApp, backend: tuple[str, ScriptedBackend]
) -> None:
    await say(app, "s1", "check my subscription, my account id is cus_bo")
    assert [r.path for r in backend[1].requests if "/accounts/" in r.path] == [
        "/accounts/cus_ana/subscription"
    ]


async def test_a_missing_profile_value_is_never_asked_for(
    tmp_path: Path, backend: tuple[str, ScriptedBackend]
) -> None:
    ws = load_workspace(workspace(tmp_path / "ws"))
    actions = ACTIONS.replace(
        "{name: account_id, from_customer: id}", "{name: account_id, from_customer: crm_id}"
    )
    ws = load_workspace(
        write_workspace(tmp_path / "ws2", **{"actions.yaml": actions, "intents.yaml": INTENTS})
    )
    cx = build(Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backend[0]), workspace=ws)
    cx.store.upsert_customers([ANA])
    await cx.start()
    try:
        view = await say(cx, "s2", "check my subscription")
        trace = view.traces[-1]
        assert trace.outcome == "escalated" and trace.reason_code == "identity_required"
        view = await say(cx, "s3", "check my subscription, my crm id is cus_bo")
        assert not [r for r in backend[1].requests if "/accounts/" in r.path]
    finally:
        await cx.stop()


# --- secrets and connectors --------------------------------------------------------------------------------


def test_connector_secrets_come_from_the_environment_and_never_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SHOP["cxstack.yaml"].replace(
        'backoffice: {base_url: "http://127.0.0.1:9", timeout_s: 2, retries: 1, backoff_s: 0.01}',
        'backoffice: {base_url: "http://127.0.0.1:9", headers: {Authorization: "Bearer ${SHOP_TOKEN}"}}',
    )
    ws = load_workspace(write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings}))
    monkeypatch.delenv("SHOP_TOKEN", raising=False)
    with pytest.raises(MissingSecretError, match=r"\$\{SHOP_TOKEN\}"):
        http_connectors(ws)
    monkeypatch.setenv("SHOP_TOKEN", "s3cr3t-value")
    connectors = http_connectors(ws)
    secret = connectors["backoffice"]._headers["Authorization"]  # type: ignore[attr-defined]
    assert isinstance(secret, Secret) and secret.reveal() == "Bearer s3cr3t-value"
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(connectors["backoffice"].__dict__)
    assert "s3cr3t" not in json.dumps(ws.settings.model_dump(mode="json"))
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


async def test_the_secret_is_sent_to_the_back_office(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: tuple[str, ScriptedBackend]
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "s3cr3t-value")
    settings = SHOP["cxstack.yaml"].replace(
        'backoffice: {base_url: "http://127.0.0.1:9", timeout_s: 2, retries: 1, backoff_s: 0.01}',
        'backoffice: {base_url: "http://127.0.0.1:9", headers: {Authorization: "Bearer ${SHOP_TOKEN}"}}',
    )
    root = workspace(tmp_path / "ws")
    (root / "cxstack.yaml").write_text(settings, encoding="utf-8")
    cx = build(
        Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backend[0]),
        workspace=load_workspace(root),
    )
    cx.store.upsert_customers([ANA])
    await cx.start()
    try:
        await say(cx, "k1", "where is my order ORD-10001?")
    finally:
        await cx.stop()
    [call] = backend[1].requests_to("GET", "/orders/ORD-10001")
    assert call.headers["authorization"] == "Bearer s3cr3t-value"
    assert "s3cr3t" not in everything_recorded(cx, "k1")


def test_validate_refuses_a_literal_credential(tmp_path: Path) -> None:
    settings = SHOP["cxstack.yaml"].replace(
        'backoffice: {base_url: "http://127.0.0.1:9", timeout_s: 2, retries: 1, backoff_s: 0.01}',
        'backoffice: {base_url: "http://127.0.0.1:9", headers: {X-Api-Key: "live_abc123"}}',
    )
    problems = validate_workspace(write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings}))
    [problem] = [p for p in problems if "literal credential" in p.message]
    assert problem.is_error and problem.line is not None and "${BACKOFFICE_X_API_KEY}" in problem.fix


def test_unknown_connector_type_is_refused(tmp_path: Path) -> None:
    settings = SHOP["cxstack.yaml"].replace("backoffice: {base_url:", "backoffice: {type: grpc, base_url:")
    root = write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings})
    assert any("no installed plug-in" in p.message and p.is_error for p in validate_workspace(root))
    ws = load_workspace(write_workspace(tmp_path / "ok"))
    grpc = ws.settings.connectors["backoffice"].model_copy(update={"type": "grpc"})
    ws = dataclasses.replace(ws, settings=ws.settings.model_copy(update={"connectors": {"backoffice": grpc}}))
    with pytest.raises(UnknownConnectorTypeError, match="registered: http"):
        http_connectors(ws)


def test_validate_flags_ownership_checks_that_cannot_work(tmp_path: Path) -> None:
    broken = ACTIONS.replace(
        "owner: {field: account_id, check_with: get_order_status}", "owner: {field: account_id}"
    )
    problems = validate_workspace(
        write_workspace(tmp_path / "ws", **{"actions.yaml": broken, "intents.yaml": INTENTS})
    )
    assert any("checks ownership on its own answer" in p.message and p.is_error for p in problems)
    unchecked = ACTIONS.replace("    owner: {field: account_id}\n", "", 1)
    problems = validate_workspace(
        write_workspace(tmp_path / "ws2", **{"actions.yaml": unchecked, "intents.yaml": INTENTS})
    )
    assert any("has no owner check" in p.message for p in problems)


async def test_the_plan_records_the_actions_permission_and_the_turns_clock(app: CxApp) -> None:
    view = await say(app, "p1", "where is my order ORD-10001?")
    trace = view.traces[-1]
    plan = next(s for s in trace.steps if s.name == "plan")
    assert plan.output["permission"] == {
        "scope": "orders:read",
        "public": False,
        "owner_check": "account_id",
        "verified_customer": True,
    }
    assert trace.turn_at is not None
    assess = next(s for s in trace.steps if s.name == "assess")
    assert assess.input["now"] == trace.turn_at.isoformat()


async def test_the_packet_carries_the_customers_attributes_and_no_queue_name(
    tmp_path: Path, backend: tuple[str, ScriptedBackend]
) -> None:
    cx = await start(tmp_path, backend[0])
    vulnerable = Customer(
        id=CustomerId("cus_vic"), name="Vic", attributes={"vulnerable": True, "country": "PT"}
    )
    cx.store.upsert_customers([vulnerable])
    try:
        view = await say(cx, "q1", "I will sue you", customer=vulnerable)
    finally:
        await cx.stop()
    [packet] = view.escalations
    assert packet.customer["attributes"] == {"vulnerable": True, "country": "PT"}
    assert "vulnerable: True" in packet.summary
    reply = view.traces[-1].reply or ""
    assert packet.queue == "legal" and "legal" not in reply and "a colleague" in reply


async def test_ownership_is_checked_as_soon_as_the_object_is_named(
    app: CxApp, backend: tuple[str, ScriptedBackend]
) -> None:
    view = await say(app, "o1", "I'd like a refund for ORD-10002")  # Bo's order; no amount yet
    assert "couldn't find ORD-10002" in (view.traces[-1].reply or "")  # not "how much?"
    view = await say(app, "o2", "I'd like a refund for ORD-10001")
    assert "how much" in (view.traces[-1].reply or "").lower()
    await say(app, "o2", "$20")
    # Ana's order was checked once, when she named it, not again on every later turn
    assert len(backend[1].requests_to("GET", "/orders/ORD-10001")) == 1
