"""Conversations end to end through the running service: store, worker, orchestrator, layers, outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cxstack.app import CxApp, Settings, build
from cxstack.domain.models import ConversationId, ConversationStatus, Customer, CustomerId, Decision, Priority
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.loader import load_workspace

SMALL = Customer(id=CustomerId("cus_small"), name="Sam Small", plan="basic", arr=120)
BIG = Customer(id=CustomerId("cus_big"), name="Bea Big", plan="enterprise", arr=90_000)


def make_app(tmp_path: Path, shop_path: Path, base_url: str, embedder: str = "hashing") -> CxApp:
    settings = Settings(home=tmp_path / "home", embedder=embedder, backoffice_url=base_url)
    return build(settings, workspace=load_workspace(shop_path))


@pytest.fixture
async def app(tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]) -> AsyncIterator[CxApp]:
    cx = make_app(tmp_path, shop_path, backoffice[0])
    cx.store.upsert_customers([SMALL, BIG])
    await cx.start()
    yield cx
    await cx.stop()


async def say(cx: CxApp, conversation: str, text: str, customer: Customer = SMALL) -> Any:
    await cx.post_message(conversation, text, customer_id=str(customer.id), verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view


async def test_content_answer_cites_facts(app: CxApp) -> None:
    view = await say(app, "c1", "how long do I have to return an item?")
    trace = view.traces[-1]
    assert trace.intent == "return_policy"
    assert trace.outcome == "automated" and trace.decision == Decision.CONTINUE
    resolve = next(s for s in trace.steps if s.name == "resolve:content")
    cited = [f["id"] for f in resolve.output["facts"]]
    assert "return-window" in cited
    assert "30 days" in (trace.reply or "")
    assert view.messages[-1].text == trace.reply
    assert trace.workspace_version == app.workspace.version


async def test_action_calls_back_office_and_keeps_context(app: CxApp, backoffice: tuple[str, Any]) -> None:
    _, backend = backoffice
    view = await say(app, "c2", "where is my order ORD-10001?")
    trace = view.traces[-1]
    assert trace.intent == "order_status" and trace.outcome == "automated"
    assert "shipped (ORD-10001)" in (trace.reply or "")
    # a follow-up the router alone could not place stays on the same intent
    view = await say(app, "c2", "and ORD-10002?")
    follow = view.traces[-1]
    assert follow.intent == "order_status"
    assert next(s for s in follow.steps if s.name == "route").output["decided_by"] == "context"
    assert "ORD-10002" in (follow.reply or "")
    assert [r.path for r in backend.requests_to("GET", "/orders/ORD-10002")] == ["/orders/ORD-10002"]


async def test_slot_filling_over_two_turns(app: CxApp, backoffice: tuple[str, Any]) -> None:
    view = await say(app, "c3", "where is my order?")
    assert view.traces[-1].outcome == "automated"
    assert "order number" in (view.traces[-1].reply or "").lower()
    view = await say(app, "c3", "ORD-10003")
    assert "shipped (ORD-10003)" in (view.traces[-1].reply or "")


async def test_never_automate_escalates_with_full_packet(app: CxApp) -> None:
    await say(app, "c4", "where is my order ORD-10001?")
    view = await say(app, "c4", "this is unacceptable, I will sue you and my lawyer will contact you")
    trace = view.traces[-1]
    assert trace.intent == "legal_threat" and trace.outcome == "escalated"
    assert view.conversation.status == ConversationStatus.WAITING
    [packet] = app.store.list_escalations(queue="legal")
    assert packet.conversation_id == "c4"
    assert packet.reason_code.startswith("never_automate")
    assert packet.intent == "legal_threat" and packet.intent_confidence is not None
    assert packet.customer["tier"] == "standard"
    assert any(a.action == "get_order_status" for a in packet.actions_tried) or packet.transcript
    assert [m["role"] for m in packet.transcript][:2] == ["customer", "assistant"]
    assert "sue" in packet.summary


async def test_refund_top_tier_goes_to_person_low_tier_is_automated(
    app: CxApp, backoffice: tuple[str, Any]
) -> None:
    _, backend = backoffice
    big = await say(app, "c5", "I want a refund of $40 for order ORD-10004", BIG)
    trace = big.traces[-1]
    assert trace.outcome == "escalated"
    assert "vip-refunds-to-people" in next(s for s in trace.steps if s.name == "assess").output["fired_rules"]
    [packet] = app.store.list_escalations(queue="vip")
    assert packet.priority == Priority.URGENT
    assert backend.requests_to("POST", "/orders/ORD-10004/refunds") == []

    small = await say(app, "c6", "I want a refund of $40 for order ORD-10005", SMALL)
    assert small.traces[-1].outcome == "automated"
    assert "RF-1" in (small.traces[-1].reply or "")
    [call] = backend.requests_to("POST", "/orders/ORD-10005/refunds")
    assert call.json["amount"] == 40
    assert call.headers.get("idempotency-key")


async def test_refund_over_cap_never_calls_the_back_office(app: CxApp, backoffice: tuple[str, Any]) -> None:
    _, backend = backoffice
    view = await say(app, "c7", "please refund $250 for ORD-10006")
    assert view.traces[-1].outcome == "escalated"
    assert backend.requests_to("POST", "/orders/ORD-10006/refunds") == []
    [packet] = app.store.list_escalations(queue="billing")
    assert "big-refunds-to-people" in packet.fired_rules


async def test_duplicate_external_id_is_one_turn(app: CxApp) -> None:
    first = await app.post_message(
        "c8", "what is your return policy", external_id="wa-1", customer_id="cus_small"
    )
    again = await app.post_message(
        "c8", "what is your return policy", external_id="wa-1", customer_id="cus_small"
    )
    await app.wait_idle("c8")
    assert first.created and not again.created
    assert again.message.id == first.message.id
    view = app.conversation_view("c8")
    assert view is not None and len(view.traces) == 1
    assert [m.role.value for m in view.messages] == ["customer", "assistant"]


async def test_out_of_scope_clarifies_then_escalates(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    # the semantic embedder: nonsense must be far from every example, whatever the softmax says
    cx = make_app(tmp_path, shop_path, backoffice[0], embedder="minilm")
    await cx.start()
    try:
        view = await say(cx, "c9", "my spaceship's flux capacitor needs recalibrating")
        first = view.traces[-1]
        view = await say(cx, "c9", "the quantum gearbox on my submarine is leaking plasma")
    finally:
        await cx.stop()
    assert first.decision == Decision.CLARIFY and first.intent is None
    assert "I can help with orders, returns and refunds" in (first.reply or "")
    assert next(s for s in first.steps if s.name == "route").output["out_of_scope"] is True
    assert view.traces[-1].outcome == "escalated"
    assert view.traces[-1].reason_code == "clarification_exhausted"
    [packet] = cx.store.list_escalations(queue="general")
    assert packet.intent is None and [m["role"] for m in packet.transcript] == [
        "customer",
        "assistant",
        "customer",
    ]


async def test_small_talk_is_answered_politely_never_escalated(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    cx = make_app(tmp_path, shop_path, backoffice[0], embedder="minilm")
    await cx.start()
    try:
        for text in ["what's the weather like in Paris tomorrow?", "hi", "thank you, bye"]:
            await say(cx, f"talk-{text[:5]}", text)
        traces = [t for c in cx.store.list_conversations() for t in cx.store.list_traces(c.id)]
    finally:
        await cx.stop()
    by_text = {t.steps[0].input.get("text") or "": t for t in traces}
    assert {t.intent for t in traces} == {"small_talk", "greeting", "goodbye"} or {
        t.intent for t in traces
    } == {"small_talk", "greeting", "thanks"}
    assert all(t.outcome == "automated" and t.reply for t in traces), by_text
    assert cx.store.list_escalations(status=None) == []


async def test_human_reply_hands_back(app: CxApp) -> None:
    await say(app, "c10", "I will sue you")
    view = await say(app, "c10", "hello? anyone?")
    assert view.traces[-1].outcome == "handled_by_human" and view.traces[-1].reply is None
    await app.human_reply("c10", "Hi, this is Ana from legal. All sorted.", author="ana", hand_back=True)
    view = await say(app, "c10", "great, and what is your return policy?")
    assert view.traces[-1].outcome == "automated"
    assert app.store.list_escalations(queue="legal", status="open") == []


async def test_resolver_exception_escalates_as_internal_error(app: CxApp) -> None:
    class Broken:
        mechanism = "content"

        async def resolve(self, ctx: Any, plan: Any) -> Any:
            raise RuntimeError("index corrupted")

    registry = app.engine.orchestrator._resolvers
    registry.register("content", Broken())  # type: ignore[attr-defined]
    view = await say(app, "c11", "what is your return policy")
    trace = view.traces[-1]
    assert trace.outcome == "escalated" and trace.reason_code == "internal_error"
    step = next(s for s in trace.steps if s.name == "resolve:content")
    assert "index corrupted" in step.output["detail"]["error"]
    assert view.messages[0].text == "what is your return policy"


async def test_back_office_failure_retries_once_then_escalates(tmp_path: Path, shop_path: Path) -> None:
    backend = ScriptedBackend()
    backend.on("GET", "/orders/{order_id}", Reply(503, {"error": "down"}))
    with backend.serve() as base_url:
        cx = make_app(tmp_path, shop_path, base_url)
        await cx.start()
        try:
            view = await say(cx, "c12", "where is my order ORD-10001?")
        finally:
            await cx.stop()
    assert len(backend.requests_to("GET", "/orders/ORD-10001")) == 2  # first try + one retry
    trace = view.traces[-1]
    assert trace.outcome == "escalated" and (trace.reason_code or "").startswith("action_failed")
    [packet] = cx.store.list_escalations()
    assert packet.actions_tried and packet.actions_tried[0].status_code == 503


async def test_pending_messages_survive_a_restart(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    crashed = make_app(tmp_path, shop_path, backoffice[0])
    # ingested and acknowledged, but the process dies before any worker runs
    crashed.store.ingest  # noqa: B018 - the store is the only thing that survives
    for i, text in enumerate(["what is your return policy", "where is my order ORD-10001?"]):
        from cxstack.domain.models import ConversationId, InboundMessage

        crashed.store.ingest(
            InboundMessage(
                "api", f"x{i}", ConversationId(f"r{i}"), CustomerId("cus_small"), text, verified=True
            )
        )
    restarted = make_app(tmp_path, shop_path, backoffice[0])
    resumed = await restarted.start()
    await restarted.wait_idle()
    await asyncio.sleep(0)
    await restarted.stop()
    assert resumed == 2
    for i in range(2):
        view = restarted.conversation_view(f"r{i}")
        assert view is not None and len(view.traces) == 1 and view.traces[0].outcome == "automated"
    assert restarted.store.conversations_with_pending() == []


async def test_process_runtime_turns_and_a_killed_worker_loses_nothing(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    settings = Settings(
        home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0], runtime="process"
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    await cx.start()
    view = await say(cx, "p1", "where is my order ORD-10001?")
    assert view.traces[-1].outcome == "automated" and "ORD-10001" in (view.traces[-1].reply or "")

    worker = cx.runtime._process  # type: ignore[union-attr]
    assert worker is not None
    worker.kill()
    worker.join(5)
    accepted = await cx.post_message("p2", "what is your return policy", customer_id="cus_small")
    assert accepted.created  # acknowledged and stored with no worker alive
    assert [m.text for m in cx.store.pending_messages(ConversationId("p2"))] == ["what is your return policy"]
    await cx.stop()

    restarted = build(settings, workspace=load_workspace(shop_path))
    assert await restarted.start() == 1
    await restarted.wait_idle("p2")
    await restarted.stop()
    view2 = restarted.conversation_view("p2")
    assert view2 is not None and [t.outcome for t in view2.traces] == ["automated"]


@pytest.mark.postgres
async def test_the_same_engine_runs_on_postgresql(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    import os
    import uuid

    from sqlalchemy import text

    from cxstack.store.db import create_engine_for

    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    url = os.environ.get("CXSTACK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"cxstack_e2e_{uuid.uuid4().hex[:12]}"
    admin = create_engine_for(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        settings = Settings(
            home=tmp_path / "home",
            embedder="hashing",
            backoffice_url=backoffice[0],
            database_url=f"{url}?options=-csearch_path%3D{schema}",
        )
        cx = build(settings, workspace=load_workspace(shop_path))
        await cx.start()
        try:
            view = await say(cx, "pg1", "where is my order ORD-10001?")
            again = await cx.post_message("pg1", "x", external_id=view.messages[0].external_id or "")
        finally:
            await cx.stop()
        assert view.traces[-1].outcome == "automated" and "ORD-10001" in (view.traces[-1].reply or "")
        assert not again.created
        with admin.connect() as connection:
            stored = connection.execute(text(f'SELECT count(*) FROM "{schema}".traces')).scalar()
        assert stored == 1
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


async def test_my_other_order_asks_which_one_instead_of_reusing_the_last(
    app: CxApp, backoffice: tuple[str, Any]
) -> None:
    _, backend = backoffice
    await say(app, "c13", "where is my order ORD-10001?")
    view = await say(app, "c13", "and for my other order?")
    assert view.traces[-1].intent == "order_status"
    assert "order number" in (view.traces[-1].reply or "").lower()
    assert len(backend.requests_to("GET", "/orders/ORD-10001")) == 1
    view = await say(app, "c13", "ORD-10002")
    assert "shipped (ORD-10002)" in (view.traces[-1].reply or "")
