"""Everyday conversation through the running service: greetings and thanks, small talk, two requests in one
message, another language, a long message, who owns the conversation, and unsure answers kept back."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SHOP, write_workspace

from cxstack.app import CxApp, Engine, Settings, build, build_engine, http_connectors
from cxstack.domain.conversation_state import Transition
from cxstack.domain.models import ConversationId, ConversationStatus, Customer, CustomerId
from cxstack.domain.turn import IntentPrediction
from cxstack.orchestration.orchestrator import Orchestrator
from cxstack.resolution.registry import ResolverDeps, ResolverRegistry
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.loader import load_workspace

BACKOFFICE: list[str] = []
SAM = Customer(id=CustomerId("cus_sam"), name="Sam", plan="basic", arr=120)


@pytest.fixture(scope="module")
def backoffice_url() -> Iterator[str]:
    backend = ScriptedBackend()
    backend.on(
        "GET",
        "/orders/{order_id}",
        handler=lambda r: Reply(200, {"status": f"shipped ({r.path_params['order_id']})"}),
    )
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "RF-1"}))
    with backend.serve() as base_url:
        BACKOFFICE[:] = [base_url]
        yield base_url


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, backoffice_url: str) -> Engine:
    root = write_workspace(tmp_path_factory.mktemp("ws"))
    return build_engine(load_workspace(root), embedder_name="minilm", backoffice_url=backoffice_url)


async def started(tmp_path: Path, engine: Engine, router: FixedRouter | None = None) -> CxApp:
    # Each app gets its own connectors: their HTTP clients close with the app that used them.
    engine = engine.with_connectors(http_connectors(engine.workspace, backoffice_url=BACKOFFICE[0]))
    if router is not None:
        registry = ResolverRegistry.from_entry_points(
            ResolverDeps(knowledge=engine.knowledge, connectors=engine.connectors)
        )
        engine = dataclasses.replace(engine, orchestrator=Orchestrator(router, registry))
    cx = build(Settings(home=tmp_path / "home"), engine=engine)
    cx.store.upsert_customers([SAM])
    await cx.start()
    return cx


@pytest.fixture
async def app(tmp_path: Path, engine: Engine) -> AsyncIterator[CxApp]:
    cx = await started(tmp_path, engine)
    yield cx
    await cx.stop()


async def say(cx: CxApp, conversation: str, text: str) -> Any:
    await cx.post_message(conversation, text, customer_id=str(SAM.id), verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view


async def test_thanks_and_goodbye_are_answered_not_escalated(app: CxApp) -> None:
    for i, text in enumerate(["thank you, bye", "thanks!", "ok bye", "cheers, that's all"]):
        view = await say(app, f"bye-{i}", text)
        trace = view.traces[-1]
        assert trace.intent in {"thanks", "goodbye"}, (text, trace.intent)
        assert trace.outcome == "automated" and trace.reply
    assert app.store.list_escalations(status=None) == []


async def test_a_greeting_gets_a_greeting_and_the_next_message_an_answer(app: CxApp) -> None:
    view = await say(app, "hi-1", "hi")
    greeting = view.traces[-1]
    assert greeting.intent == "greeting" and greeting.outcome == "automated"
    assert "orders, returns and refunds" in (greeting.reply or "")
    view = await say(app, "hi-1", "how long do I have to return an item?")
    assert "30 days" in (view.traces[-1].reply or "")
    assert view.conversation.status == ConversationStatus.BOT


async def test_weather_is_small_talk_not_a_fact(app: CxApp) -> None:
    view = await say(app, "w-1", "what's the weather in Boston tomorrow?")
    trace = view.traces[-1]
    assert trace.intent == "small_talk" and trace.outcome == "automated"
    assert not any(s.output.get("facts") for s in trace.steps)


async def test_two_requests_in_one_message_are_both_answered(app: CxApp) -> None:
    view = await say(app, "two-1", "Where is my order ORD-10001? Also, how long do I have to return an item?")
    trace = view.traces[-1]
    assert trace.intent == "order_status"
    reply = trace.reply or ""
    assert "shipped (ORD-10001)" in reply and "30 days" in reply
    assert any(s.name == "next_request" and s.output["intent"] == "return_policy" for s in trace.steps)


async def test_a_second_request_waits_while_the_first_asks_for_a_detail(app: CxApp) -> None:
    view = await say(app, "two-2", "where is my order? and can you tell me how long I have to return things")
    first = view.traces[-1]
    assert first.intent == "order_status" and "order number" in (first.reply or "").lower()
    assert "other question" in (first.reply or "")
    view = await say(app, "two-2", "ORD-10002")
    reply = view.traces[-1].reply or ""
    assert "shipped (ORD-10002)" in reply and "30 days" in reply


async def test_a_greeting_around_a_request_is_dropped(app: CxApp) -> None:
    view = await say(app, "g-1", "Hi there! How long do I have to return an item? Thanks!")
    trace = view.traces[-1]
    assert trace.intent == "return_policy" and "30 days" in (trace.reply or "")


async def test_another_language_gets_a_reply_in_it_and_a_person(app: CxApp) -> None:
    view = await say(app, "es-1", "Hola, necesito ayuda con mi pedido por favor, no ha llegado")
    trace = view.traces[-1]
    assert trace.outcome == "escalated" and trace.reason_code == "unsupported_language:es"
    assert (trace.reply or "").startswith("Lo siento")
    [packet] = app.store.list_escalations()
    assert "Spanish" in packet.summary
    assert view.conversation.status == ConversationStatus.WAITING


async def test_a_long_message_is_routed_on_its_request(app: CxApp) -> None:
    story = (
        "I have been a customer for many years and I usually love shopping with you. Last month my sister "
        "visited and we went to the city together, which was lovely, although the weather was awful. "
    ) * 18
    text = story + "Anyway, how long do I have to return an item? " + story[:300]
    assert len(text) > 3500
    view = await say(app, "long-1", text)
    trace = view.traces[-1]
    assert trace.intent == "return_policy" and "30 days" in (trace.reply or "")


async def test_a_long_run_on_message_without_punctuation_is_still_understood(app: CxApp) -> None:
    text = "I have been a customer for many years and " * 80 + "how long do I have to return an item"
    assert len(text) > 3000 and "." not in text
    view = await say(app, "long-2", text)
    trace = view.traces[-1]
    assert trace.intent == "return_policy" and "30 days" in (trace.reply or "")


async def test_after_an_escalation_messages_are_acknowledged_and_attached(
    tmp_path: Path, engine: Engine
) -> None:
    ws = dataclasses.replace(
        engine.workspace,
        settings=engine.workspace.settings.model_copy(
            update={
                "handoff": engine.workspace.settings.handoff.model_copy(update={"ack_interval_minutes": 0})
            }
        ),
    )
    cx = await started(tmp_path, dataclasses.replace(engine, workspace=ws))
    try:
        await say(cx, "esc-1", "I'm going to sue you, see you in court")
        view = await say(cx, "esc-1", "hello?? is anyone there")
        ack = view.traces[-1]
        assert ack.outcome == "handled_by_human"
        assert "A colleague has it" in (ack.reply or "")
        [packet] = cx.store.list_escalations()
        assert [f["text"] for f in packet.followups] == ["hello?? is anyone there"]
        # once a person answers, the assistant is silent
        await cx.human_reply("esc-1", "Hi, I'm Ana from our legal team.", author="ana", hand_back=False)
        view = await say(cx, "esc-1", "ok thanks ana")
        assert view.traces[-1].reply is None
        assert view.conversation.status == ConversationStatus.PERSON
        [packet] = cx.store.list_escalations()
        assert [f["text"] for f in packet.followups][-1] == "ok thanks ana"
    finally:
        await cx.stop()


async def test_messages_while_waiting_are_not_acknowledged_every_time(app: CxApp) -> None:
    await say(app, "esc-2", "I'm going to sue you")
    view = await say(app, "esc-2", "hello?")
    assert view.traces[-1].reply is None  # the handoff message itself was the acknowledgement


async def test_a_hand_back_does_not_start_an_escalation_loop(app: CxApp) -> None:
    await say(app, "loop-1", "can I talk to a real person please")
    [first] = app.store.list_escalations()
    await app.human_reply("loop-1", "Hi, Ana here. Sorted, anything else?", author="ana", hand_back=True)
    view = await say(app, "loop-1", "how long do I have to return an item?")
    assert "30 days" in (view.traces[-1].reply or "")  # the assistant has it again, nothing carried over
    await say(app, "loop-1", "let me speak to a human again")
    packets = app.store.list_escalations(status=None)
    assert [p.id for p in packets] == [first.id]  # reopened, not a second packet
    assert packets[0].status == "open"
    changes = [c.transition for c in app.store.list_status_changes(ConversationId("loop-1"))]
    assert changes == [
        Transition.ESCALATE,
        Transition.PERSON_REPLIED,
        Transition.HAND_BACK,
        Transition.ESCALATE,
    ]


class FixedRouter:
    """Stands in for the router only: these tests are about what the orchestrator does with a prediction."""

    def __init__(self, predictions: dict[str, IntentPrediction]) -> None:
        self.predictions = predictions

    def predict(self, text: str, *, oos_threshold: float) -> IntentPrediction:
        return self.predictions.get(text, IntentPrediction(None, 0.1, out_of_scope=True))


def with_thresholds(engine: Engine, **thresholds: float) -> Engine:
    settings = engine.workspace.settings
    updated = settings.model_copy(update={"thresholds": settings.thresholds.model_copy(update=thresholds)})
    return dataclasses.replace(engine, workspace=dataclasses.replace(engine.workspace, settings=updated))


async def test_a_person_is_only_called_on_a_sure_prediction(tmp_path: Path, engine: Engine) -> None:
    unsure = IntentPrediction("legal_threat", 0.55)
    router = FixedRouter({"my lawyer friend says hi": unsure, "no": unsure, "yes": unsure})
    cx = await started(tmp_path, with_thresholds(engine, human_min_confidence=0.75), router)
    try:
        view = await say(cx, "h-1", "my lawyer friend says hi")
        asked = view.traces[-1]
        assert asked.decision.value == "clarify" and asked.outcome == "automated"
        assert "pass this to a colleague" in (asked.reply or "")
        assert cx.store.list_escalations() == []
        view = await say(cx, "h-1", "no")
        assert "What can I help you with" in (view.traces[-1].reply or "")
        assert cx.store.list_escalations() == []

        await say(cx, "h-2", "my lawyer friend says hi")
        view = await say(cx, "h-2", "yes")
        trace = view.traces[-1]
        assert trace.outcome == "escalated" and trace.intent == "legal_threat"
        assert trace.intent_confidence == pytest.approx(0.55)  # the router's, not an invented one
        assert next(s for s in trace.steps if s.name == "route").output["decided_by"] == "confirmed"
    finally:
        await cx.stop()


async def test_an_unsure_answer_is_never_sent(tmp_path: Path, engine: Engine) -> None:
    router = FixedRouter({"how long do I have to return an item?": IntentPrediction("return_policy", 0.9)})
    cx = await started(tmp_path, with_thresholds(engine, answer_min_confidence=0.99), router)
    try:
        view = await say(cx, "u-1", "how long do I have to return an item?")
        trace = view.traces[-1]
        assert trace.outcome == "escalated" and trace.reason_code == "low_confidence"
        assert "30 days" not in (trace.reply or "") and "colleague" in (trace.reply or "")
        [packet] = cx.store.list_escalations()
        assert packet.draft_reply is not None and "30 days" in packet.draft_reply
        assert "30 days" not in " ".join(m.text for m in view.messages)
    finally:
        await cx.stop()


async def test_a_clarified_intent_keeps_the_routers_confidence(tmp_path: Path, engine: Engine) -> None:
    close = IntentPrediction("return_policy", 0.46, alternatives=(("order_status", 0.44),))
    router = FixedRouter(
        {"my order thing": close, "the second one": IntentPrediction(None, 0.2, out_of_scope=True)}
    )
    cx = await started(tmp_path, with_thresholds(engine, clarify_margin=0.1), router)
    try:
        view = await say(cx, "cl-1", "my order thing")
        assert view.traces[-1].decision.value == "clarify"
        [asked] = cx.store.outbox_for(ConversationId("cl-1"))
        choices = (asked.content or {})["choices"]  # for channels that can offer them as buttons or a list
        assert len(choices) == 2 and all(c.lower() in asked.text.lower() for c in choices)
        view = await say(cx, "cl-1", "the second one")
        trace = view.traces[-1]
        assert trace.intent == "order_status" and trace.intent_confidence == pytest.approx(0.44)
    finally:
        await cx.stop()


def test_builtin_intents_are_added_unless_the_workspace_declares_them(tmp_path: Path) -> None:
    plain = load_workspace(write_workspace(tmp_path / "plain"))
    assert {"greeting", "thanks", "goodbye", "small_talk"} <= {i.name for i in plain.active_intents}
    own = SHOP["intents.yaml"] + (
        "  - name: greeting\n    mechanism: conversational\n    status: draft\n    owner: me\n"
        "    examples: [hello]\n"
    )
    overridden = load_workspace(write_workspace(tmp_path / "own", **{"intents.yaml": own}))
    greetings = [i for i in overridden.intents if i.name == "greeting"]
    assert len(greetings) == 1 and not greetings[0].builtin
    assert "greeting" not in {i.name for i in overridden.active_intents}


async def test_an_answer_its_facts_do_not_support_is_not_sent(
    app: CxApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a writer (an LLM, a template) that adds a claim no fact makes.
    from cxstack.knowledge.models import ComposedAnswer
    from cxstack.resolution.resolvers import content

    real = content.compose_answer

    def embellished(*args: Any, **kwargs: Any) -> ComposedAnswer | None:
        answer = real(*args, **kwargs)
        if answer is None:
            return None
        return ComposedAnswer(answer.text + " Return shipping is free for 90 days.", answer.facts)

    monkeypatch.setattr(content, "compose_answer", embellished)
    view = await say(app, "ground-1", "how long do I have to return an item?")
    trace = view.traces[-1]
    assert trace.outcome == "escalated" and trace.reason_code == "unsupported_answer"
    assert "90 days" not in (trace.reply or "")
    grounding = next(
        s.output["detail"]["grounding"] for s in trace.steps if "grounding" in s.output.get("detail", {})
    )
    assert [u["sentence"] for u in grounding["unsupported"]] == ["Return shipping is free for 90 days."]
    [packet] = app.store.list_escalations()
    assert packet.reason_code == "unsupported_answer"


async def test_the_impact_of_a_fact_lists_the_conversations_its_answers_shaped(app: CxApp) -> None:
    from cxstack.knowledge.impact import fact_impact

    await say(app, "impact-1", "how long do I have to return an item?")
    await say(app, "impact-2", "hi")
    fact = app.workspace.fact("return-window")
    assert fact is not None
    impact = fact_impact(app.store, fact)
    assert [u.conversation_id for u in impact.uses] == ["impact-1"]
    assert impact.intents == {"return_policy": 1} and impact.conversations == 1
    assert "30 days" in (impact.uses[0].reply or "")
    assert impact.traces_scanned == 2
