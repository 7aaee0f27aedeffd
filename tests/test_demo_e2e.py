"""The demo as a person meets it: the real demo workspace, MiniLM, and the demo back office over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cxstack.app import CxApp, Engine, Settings, build, build_engine, http_connectors
from cxstack.demo import demo_customers_csv, demo_workspace_path
from cxstack.demo.backoffice import create_backoffice_app
from cxstack.domain.models import Priority
from cxstack.strategy.customers import parse_customers_csv
from cxstack.testing.http_standin import LocalHttpServer
from cxstack.workspace.loader import load_workspace


@pytest.fixture(scope="module")
def demo_backoffice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_backoffice_app(tmp_path_factory.mktemp("backoffice") / "northwind.db")
    with LocalHttpServer(app) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def trained() -> Engine:
    """Training the router on the demo's 560 examples takes seconds: once per module."""
    return build_engine(load_workspace(demo_workspace_path()), embedder_name="minilm")


@pytest.fixture
async def demo(tmp_path: Path, demo_backoffice: str, trained: Engine) -> AsyncIterator[CxApp]:
    engine = trained.with_connectors(http_connectors(trained.workspace, backoffice_url=demo_backoffice))
    cx = build(Settings(home=tmp_path / "home"), engine=engine)
    cx.store.upsert_customers(parse_customers_csv(demo_customers_csv()))
    await cx.start()
    yield cx
    await cx.stop()


async def turn(cx: CxApp, conversation: str, text: str, customer: str) -> Any:
    await cx.post_message(conversation, text, customer_id=customer, verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view.traces[-1]


async def test_content_question_is_answered_with_cited_facts(demo: CxApp) -> None:
    trace = await turn(demo, "d1", "what is your return policy?", "cus_1001")
    assert trace.intent == "return_policy" and trace.outcome == "automated"
    resolve = next(s for s in trace.steps if s.name == "resolve:content")
    cited = [f["id"] for f in resolve.output["facts"]]
    assert cited and all(demo.workspace.fact(fact_id) is not None for fact_id in cited)
    assert (
        trace.reply == " ".join(demo.workspace.fact(f).text for f in cited) or cited[0]
    )  # composed from facts


async def test_action_runs_against_the_demo_back_office(demo: CxApp) -> None:
    trace = await turn(demo, "d2", "where is my order ORD-10001?", "cus_1001")
    assert trace.intent == "order_status" and trace.outcome == "automated"
    [action] = next(s for s in trace.steps if s.name == "resolve:agent").output["actions"]
    assert action["action"] == "get_order_status" and action["ok"] and action["status"] == 200
    assert "ORD-10001" in trace.reply and "delivered" in trace.reply


async def test_never_automate_intent_escalates_with_a_full_packet(demo: CxApp) -> None:
    trace = await turn(demo, "d3", "I'm going to sue you, my lawyer will be in touch", "cus_1001")
    assert trace.intent == "legal_threat" and trace.outcome == "escalated"
    [packet] = demo.store.list_escalations(queue="legal")
    assert packet.reason_code == "never_automate" and packet.intent == "legal_threat"
    assert packet.customer["name"] == "Maya Thompson" and packet.customer["tier"] == "standard"
    assert packet.transcript[0]["text"].startswith("I'm going to sue you")
    assert "Maya Thompson" in packet.summary


async def test_refund_top_tier_to_a_person_low_tier_automated_after_confirmation(demo: CxApp) -> None:
    vip = await turn(demo, "d4", "I need a refund of $40 for order ORD-10101", "cus_1027")
    assert vip.intent == "refund_request" and vip.outcome == "escalated"
    [packet] = demo.store.list_escalations(queue="vip")
    assert packet.priority >= Priority.HIGH and "vip-refund-human" in packet.fired_rules

    first = await turn(demo, "d5", "I need a refund of $40 for order ORD-10001", "cus_1001")
    assert first.intent == "refund_request" and first.outcome == "automated"
    assert "confirm" in first.reply.lower() or "?" in first.reply  # asks before moving money
    done = await turn(demo, "d5", "yes please", "cus_1001")
    assert done.outcome == "automated"
    [action] = next(s for s in done.steps if s.name == "resolve:agent").output["actions"]
    assert action["action"] == "issue_refund" and action["ok"]


def test_a_story_sentence_before_the_question_does_not_become_the_request() -> None:
    """'I'm on the Plus plan.' routes to the plan's intent on its own; the question after it is the request,
    and each question of the message is answered (gift wrap included)."""
    import asyncio
    import tempfile
    from pathlib import Path

    from cxstack.app import Settings, build
    from cxstack.demo import demo_workspace_path
    from cxstack.knowledge.impact import cited_facts

    async def ask() -> tuple[str, list[str]]:
        with tempfile.TemporaryDirectory() as home:
            cx = build(
                Settings(
                    home=Path(home), workspace=demo_workspace_path(), embedder="hashing", burst_window_ms=0
                )
            )
            await cx.start()
            try:
                text = "Hi, I'm on the Plus plan. How long do I have to return boots? Also, do you gift wrap?"
                await cx.post_message("story", text, customer_id="cus_1002", verified=True)
                await cx.wait_idle("story")
                view = cx.conversation_view("story")
                assert view is not None
                trace = view.traces[-1]
                cited = [fact for t in view.traces for fact in cited_facts(t)]
                return str(trace.intent), cited
            finally:
                await cx.stop()

    intent, cited = asyncio.run(ask())
    assert intent != "membership_benefits"
    assert any(fact.startswith("gift-wrap") for fact in cited)
