from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from cxstack.domain.models import (
    ActionResult,
    Conversation,
    ConversationId,
    Customer,
    CustomerId,
    Message,
    MessageId,
    Priority,
    Role,
    utcnow,
)
from cxstack.domain.turn import BusinessContext, Outcome, ResolutionPlan
from cxstack.integrations.actions.http_connector import HttpActionConnector
from cxstack.integrations.embedders.hashing import HashingEmbedder
from cxstack.knowledge.retrieval import KnowledgeIndex
from cxstack.resolution.models import TurnContext
from cxstack.resolution.planner import plan
from cxstack.resolution.ports import ActionConnector, Resolver
from cxstack.resolution.registry import ResolverDeps, ResolverRegistry, UnknownMechanismError
from cxstack.resolution.resolvers.action import ActionResolver, idempotency_key
from cxstack.resolution.resolvers.content import ContentResolver
from cxstack.resolution.resolvers.human import HumanResolver
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.models import (
    ActionConfig,
    ConnectorConfig,
    FactConfig,
    IntentConfig,
    SlotConfig,
    StrategyConfig,
    WorkspaceSettings,
)
from cxstack.workspace.workspace import Workspace

FACTS = (
    FactConfig(
        id="ship-ca", text="Shipping to Canada takes 5 to 7 business days.", owner="cx", tags=["shipping"]
    ),
    FactConfig(
        id="ship-us",
        text="Shipping to the United States takes 3 business days.",
        owner="cx",
        tags=["shipping"],
    ),
    FactConfig(
        id="ship-free", text="Shipping is free on orders over 50 euros.", owner="cx", tags=["shipping"]
    ),
    FactConfig(
        id="pw", text="To reset your password, click 'Forgot password' on the sign-in page.", owner="cx"
    ),
)
ORDER_SLOT = SlotConfig(name="order_id", pattern=r"\b(ORD-\d{5})\b", prompt="What's your order number?")
ACTIONS = (
    ActionConfig(
        name="order_status",
        method="GET",
        path="/orders/{order_id}",
        slots=[ORDER_SLOT],
        success_reply="Order {order_id} is {status}.",
    ),
    ActionConfig(
        name="refund_order",
        description="refund your order",
        path="/orders/{order_id}/refunds",
        slots=[ORDER_SLOT, SlotConfig(name="amount", type="money", prompt="How much should I refund?")],
        amount_slot="amount",
        max_amount=Decimal(500),
        success_reply="Refund {refund_id} of {amount} for {order_id} is on its way.",
        failure_reply="I couldn't issue the refund, so a colleague will take over.",
    ),
)
INTENTS = (
    IntentConfig(name="shipping_question", mechanism="content", fact_tags=["shipping"]),
    IntentConfig(name="order_status", mechanism="action", action="order_status"),
    IntentConfig(name="refund_request", mechanism="action", action="refund_order", queue="billing"),
)


def workspace(base_url: str = "http://127.0.0.1:9") -> Workspace:
    settings = WorkspaceSettings(
        name="shop",
        currency="EUR",
        locale="en_IE",
        connectors={
            "backoffice": ConnectorConfig(base_url=base_url, timeout_s=0.3, retries=1, backoff_s=0.01)
        },
    )
    return Workspace(
        settings=settings, strategy=StrategyConfig(), intents=INTENTS, facts=FACTS, actions=ACTIONS
    )


BUSINESS = BusinessContext(tier="standard", value=1.0, priority=Priority.NORMAL)
CUSTOMER = Customer(id=CustomerId("cus_1"), name="Ada", email="ada@example.com")


@dataclass
class Chat:
    """Plays the orchestrator's part: one event loop for the conversation, history, and state_updates
    persisted between turns."""

    runner: asyncio.Runner
    ws: Workspace
    business: BusinessContext = BUSINESS
    conversation: Conversation = field(
        default_factory=lambda: Conversation(
            id=ConversationId("conv_1"), customer_id=CUSTOMER.id, channel="api", verified=True
        )
    )
    history: list[Message] = field(default_factory=list)

    def say(
        self, resolver: Resolver, intent: str, text: str, business: BusinessContext | None = None
    ) -> Outcome:
        business = business or self.business
        message = Message(
            id=MessageId(f"msg_{len(self.history)}"),
            conversation_id=self.conversation.id,
            role=Role.CUSTOMER,
            text=text,
            created_at=utcnow(),
        )
        intent_config = self.ws.intent(intent)
        assert intent_config is not None
        ctx = TurnContext(
            workspace=self.ws,
            conversation=self.conversation,
            customer=CUSTOMER,
            message=message,
            history=list(self.history),
            business=business,
        )
        outcome = self.runner.run(resolver.resolve(ctx, plan(intent_config, business, self.ws.settings)))
        self.history.append(message)
        for key, value in outcome.state_updates.items():
            if value is None:
                self.conversation.state.pop(key, None)
            else:
                self.conversation.state[key] = value
        return outcome


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def base_url(backend: ScriptedBackend) -> Iterator[str]:
    with backend.serve() as url:
        yield url


ResolverFor = Callable[[Workspace], ActionResolver]


@pytest.fixture
def action_resolver(runner: asyncio.Runner) -> Iterator[ResolverFor]:
    """An ActionResolver with a real HTTP connector per workspace connector, closed after the test."""
    opened: list[HttpActionConnector] = []

    def build(ws: Workspace) -> ActionResolver:
        connectors = {name: HttpActionConnector(config) for name, config in ws.settings.connectors.items()}
        opened.extend(connectors.values())
        return ActionResolver(ResolverDeps(connectors=dict[str, ActionConnector](connectors)))

    yield build
    for connector in opened:
        runner.run(connector.aclose())


@pytest.fixture(scope="module")
def content() -> ContentResolver:
    index = KnowledgeIndex(FACTS, HashingEmbedder(), today=date(2025, 6, 1))
    return ContentResolver(ResolverDeps(knowledge=index))


# --- content ------------------------------------------------------------------------------------------------


def test_content_answers_from_the_best_fact_with_citations(
    runner: asyncio.Runner, content: ContentResolver
) -> None:
    outcome = Chat(runner, workspace()).say(
        content, "shipping_question", "How long does shipping to Canada take?"
    )
    assert outcome.kind == "reply"
    assert outcome.reply is not None and "5 to 7 business days" in outcome.reply
    assert outcome.facts[0].fact_id == "ship-ca"
    assert outcome.confidence == pytest.approx(outcome.facts[0].score, abs=1e-4)
    assert 0.35 <= outcome.confidence <= 1.0


def test_content_hands_off_when_nothing_is_grounded(runner: asyncio.Runner, content: ContentResolver) -> None:
    outcome = Chat(runner, workspace()).say(
        content, "shipping_question", "Can I pay with bitcoin at the till?"
    )
    assert outcome.kind == "handoff"
    assert outcome.handoff_reason == "no_grounded_answer"
    assert outcome.confidence == 0
    assert outcome.facts == []
    assert outcome.detail["candidates"], "the candidates it rejected are kept for the trace"


def test_short_follow_up_uses_the_previous_question(runner: asyncio.Runner, content: ContentResolver) -> None:
    chat = Chat(runner, workspace())
    chat.say(content, "shipping_question", "How long does shipping to Canada take?")
    outcome = chat.say(content, "shipping_question", "and to the United States?")
    assert outcome.kind == "reply"
    assert outcome.facts[0].fact_id == "ship-us"


def test_each_question_of_several_is_answered_in_order_and_an_unanswered_one_is_named(
    runner: asyncio.Runner, content: ContentResolver
) -> None:
    outcome = Chat(runner, workspace()).say(
        content,
        "shipping_question",
        "How do I reset my password? How long does shipping to Canada take? Can I pay with bitcoin?",
    )
    assert outcome.kind == "reply" and outcome.reply is not None
    assert [f.fact_id for f in outcome.facts] == ["pw", "ship-ca"]  # the customer's order
    assert outcome.reply.index("Forgot password") < outcome.reply.index("5 to 7 business days")
    assert outcome.reply.endswith(
        "I couldn't find an answer to “Can I pay with bitcoin”; just ask if you'd like me to pass it to a "
        "colleague."
    )
    assert [p["facts"] for p in outcome.detail["parts"]] == [["pw"], ["ship-ca"], []]
    assert outcome.detail["grounding"]["supported"] is True
    # One fact answering two parts is said once; a story sentence is context, not a question.
    again = Chat(runner, workspace()).say(
        content,
        "shipping_question",
        "I live in Toronto. How long does shipping to Canada take? How many days to Canada?",
    )
    assert again.reply == "Shipping to Canada takes 5 to 7 business days."


def test_content_tone_prefix_comes_from_business_context(
    runner: asyncio.Runner, content: ContentResolver
) -> None:
    formal = BusinessContext(tier="vip", value=9.0, priority=Priority.HIGH, tone="formal")
    outcome = Chat(runner, workspace(), business=formal).say(
        content, "shipping_question", "I forgot my password"
    )
    assert outcome.reply is not None and outcome.reply.startswith("Thank you for your question.")


def test_content_without_an_index_hands_off(runner: asyncio.Runner) -> None:
    outcome = Chat(runner, workspace()).say(
        ContentResolver(ResolverDeps()), "shipping_question", "shipping to Canada?"
    )
    assert outcome.kind == "handoff" and outcome.handoff_reason == "no_grounded_answer"


# --- action -------------------------------------------------------------------------------------------------


def test_order_status_asks_for_the_slot_then_calls_and_remembers_the_entity(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("GET", "/orders/ORD-10001", Reply(200, {"status": "shipped"}))
    backend.on("GET", "/orders/ORD-10002", Reply(200, {"status": "being packed"}))
    ws = workspace(base_url)
    chat = Chat(runner, ws)
    resolver = action_resolver(ws)

    asked = chat.say(resolver, "order_status", "where is my order?")
    assert asked.kind == "ask" and asked.reply == "What's your order number?"
    assert chat.conversation.state["pending_action"] == {
        "action": "order_status",
        "intent": "order_status",
        "slots": {},
        "awaiting": "order_id",
    }

    done = chat.say(resolver, "order_status", "it's ORD-10001")
    assert done.kind == "reply" and done.reply == "Order ORD-10001 is shipped."
    assert done.actions[0].ok and done.confidence == 1.0
    assert "pending_action" not in chat.conversation.state
    assert chat.conversation.state["entities"] == {"order_id": "ORD-10001"}

    other = chat.say(resolver, "order_status", "and for my other order ORD-10002?")
    assert other.reply == "Order ORD-10002 is being packed."
    again = chat.say(resolver, "order_status", "what about that one again?")
    assert again.reply == "Order ORD-10002 is being packed."
    assert [r.path for r in backend.requests] == [
        "/orders/ORD-10001",
        "/orders/ORD-10002",
        "/orders/ORD-10002",
    ]


def test_refund_with_confirmation_sends_one_idempotent_request(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "R-7"}))
    ws = workspace(base_url)
    chat = Chat(
        runner,
        ws,
        business=BusinessContext(tier="std", value=1, priority=Priority.NORMAL, require_confirmation=True),
    )
    resolver = action_resolver(ws)

    first = chat.say(resolver, "refund_request", "please refund ORD-10001")
    assert first.kind == "ask" and first.reply == "How much should I refund?"
    confirm = chat.say(resolver, "refund_request", "25 euros")
    assert confirm.kind == "ask"
    assert confirm.reply is not None and "order id ORD-10001, amount €25.00" in confirm.reply
    assert backend.requests == []
    unclear = chat.say(resolver, "refund_request", "hmm")
    assert (
        unclear.kind == "ask"
        and unclear.reply is not None
        and unclear.reply.startswith("Please answer yes or no")
    )

    done = chat.say(resolver, "refund_request", "yes please")
    assert done.kind == "reply"
    assert done.reply == "Refund R-7 of €25.00 for ORD-10001 is on its way."
    assert len(backend.requests) == 1
    received = backend.requests[0]
    assert received.json == {"amount": 25}
    assert received.headers["idempotency-key"] == idempotency_key("conv_1", "msg_3", "refund_order")


def test_no_cancels_without_calling(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    ws = workspace(base_url)
    action = ws.action("refund_order")
    assert action is not None
    ws = Workspace(
        settings=ws.settings,
        strategy=ws.strategy,
        intents=ws.intents,
        facts=ws.facts,
        actions=(action.model_copy(update={"requires_confirmation": True}),),
    )
    chat = Chat(runner, ws)
    resolver = action_resolver(ws)
    assert chat.say(resolver, "refund_request", "refund €10 for ORD-10001").kind == "ask"
    cancelled = chat.say(resolver, "refund_request", "no, don't")
    assert (
        cancelled.kind == "reply"
        and cancelled.reply is not None
        and "haven't changed anything" in cancelled.reply
    )
    assert "pending_action" not in chat.conversation.state
    assert backend.requests == []


def test_amount_over_cap_hands_off_and_never_calls(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "R-1"}))
    ws = workspace(base_url)
    capped = BusinessContext(tier="std", value=1, priority=Priority.NORMAL, cap_amount=Decimal(100))
    chat = Chat(runner, ws, business=capped)
    outcome = chat.say(action_resolver(ws), "refund_request", "refund 250 euros for ORD-10001")
    assert outcome.kind == "handoff"
    assert outcome.handoff_reason == "amount_over_cap"
    assert outcome.actions == []
    assert backend.requests == []
    at_cap = Chat(runner, ws, business=capped).say(
        action_resolver(ws), "refund_request", "refund €100 for ORD-10002"
    )
    assert at_cap.kind == "reply"
    assert len(backend.requests) == 1


def test_the_cap_holds_for_the_whole_conversation_so_a_refund_cannot_be_split(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "R-1"}))
    ws = workspace(base_url)
    capped = BusinessContext(tier="std", value=1, priority=Priority.NORMAL, cap_amount=Decimal(100))
    chat = Chat(runner, ws, business=capped)
    resolver = action_resolver(ws)
    assert chat.say(resolver, "refund_request", "refund €60 for ORD-10001").kind == "reply"
    split = chat.say(resolver, "refund_request", "and another €60 for ORD-10001")
    assert (split.kind, split.handoff_reason) == ("handoff", "amount_over_cap")
    assert len(backend.requests) == 1
    # What the cap still allows in this conversation goes through, and nothing beyond it.
    assert chat.say(resolver, "refund_request", "then €40 for ORD-10001").kind == "reply"
    assert chat.say(resolver, "refund_request", "and €1 for ORD-10001").handoff_reason == "amount_over_cap"
    assert [r.json for r in backend.requests] == [{"amount": 60}, {"amount": 40}]


def with_refund(ws: Workspace, **changes: Any) -> Workspace:
    """`ws` with the refund action changed as a workspace that skipped `validate` could have it."""
    refund = ws.action("refund_order")
    assert refund is not None
    others = tuple(a for a in ws.actions if a.name != "refund_order")
    return Workspace(
        settings=ws.settings,
        strategy=ws.strategy,
        intents=ws.intents,
        facts=ws.facts,
        actions=(*others, refund.model_copy(update=changes)),
    )


def test_a_money_action_without_a_cap_never_runs(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "R-1"}))
    ws = with_refund(workspace(base_url), max_amount=None)
    # No cap anywhere (neither the action nor a rule): before, any amount went through.
    outcome = Chat(runner, ws).say(action_resolver(ws), "refund_request", "refund €10 for ORD-10001")
    assert (outcome.kind, outcome.handoff_reason) == ("handoff", "amount_cap_missing")
    assert backend.requests == []


def test_a_money_action_without_an_amount_never_runs(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "R-1"}))
    optional = SlotConfig(name="amount", type="money", required=False, prompt="How much should I refund?")
    ws = with_refund(workspace(base_url), slots=[ORDER_SLOT, optional])
    chat = Chat(runner, ws)
    outcome = chat.say(action_resolver(ws), "refund_request", "refund ORD-10001")
    assert (
        outcome.kind == "ask"
        and outcome.reply is not None
        and outcome.reply.endswith("How much should I refund?")
    )
    refused = chat.say(action_resolver(ws), "refund_request", "between 10 and 20 euros")
    assert refused.kind == "ask" and refused.reply is not None
    assert refused.reply.startswith("I need one exact amount rather than a range.")
    assert backend.requests == []


def test_an_amount_slot_that_is_not_money_never_runs(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "R-1"}))
    number = SlotConfig(name="amount", type="number", prompt="How much should I refund?")
    ws = with_refund(workspace(base_url), slots=[ORDER_SLOT, number])
    outcome = Chat(runner, ws).say(action_resolver(ws), "refund_request", "refund 1,500 for ORD-10001")
    assert (outcome.kind, outcome.handoff_reason) == ("handoff", "amount_not_money")
    assert backend.requests == []


def test_timeout_after_retries_escalates_with_the_result(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("GET", "/orders/{order_id}", Reply(200, {"status": "late"}, delay_s=1.0))
    ws = workspace(base_url)
    outcome = Chat(runner, ws).say(action_resolver(ws), "order_status", "status of ORD-10001?")
    assert outcome.kind == "handoff"
    assert outcome.handoff_reason == "action_failed"
    assert len(outcome.actions) == 1
    result: ActionResult = outcome.actions[0]
    assert not result.ok and result.attempts == 2
    assert len(backend.requests) == 2


def test_missing_response_field_gives_a_safe_reply(
    runner: asyncio.Runner, backend: ScriptedBackend, base_url: str, action_resolver: ResolverFor
) -> None:
    backend.on("GET", "/orders/{order_id}", Reply(200, {"state": "shipped"}))
    ws = workspace(base_url)
    outcome = Chat(runner, ws).say(action_resolver(ws), "order_status", "ORD-10001")
    assert outcome.kind == "reply"
    assert outcome.reply == "Done: order status."
    assert outcome.detail["reply_template_ok"] is False


def test_missing_connector_hands_off(runner: asyncio.Runner) -> None:
    ws = workspace()
    outcome = Chat(runner, ws).say(ActionResolver(ResolverDeps()), "order_status", "ORD-10001")
    assert outcome.kind == "handoff" and outcome.handoff_reason == "connector_missing"


# --- human --------------------------------------------------------------------------------------------------


def test_human_resolver_hands_off_with_the_plan_reason(runner: asyncio.Runner) -> None:
    ws = workspace()
    forced = BusinessContext(
        tier="vip",
        value=9,
        priority=Priority.HIGH,
        force_human=True,
        fired_rules=("vip-refund-human",),
        forced_by=("vip-refund-human",),
    )
    outcome = Chat(runner, ws).say(
        HumanResolver(ResolverDeps()), "refund_request", "refund please", business=forced
    )
    assert outcome.kind == "handoff"
    assert outcome.handoff_reason == "policy_rule:vip-refund-human"
    # internal queue names never reach customers; the workspace names teams for them
    assert outcome.reply is not None and "billing" not in outcome.reply and "shortly" in outcome.reply
    assert "a colleague" in outcome.reply


def test_human_reply_promises_no_time_at_normal_priority(runner: asyncio.Runner) -> None:
    outcome = Chat(runner, workspace()).say(
        HumanResolver(ResolverDeps()), "shipping_question", "talk to a person"
    )
    assert outcome.kind == "handoff"
    assert outcome.handoff_reason == "human_mechanism"
    assert outcome.reply == (
        "I've passed this to a colleague, who can see everything we've discussed, so you won't need to "
        "repeat yourself. They'll reply here."
    )


# --- registry -----------------------------------------------------------------------------------------------


def test_registry_loads_built_ins_from_entry_points() -> None:
    registry = ResolverRegistry.from_entry_points(ResolverDeps())
    assert {"content", "action", "human"} <= set(registry.names)
    assert isinstance(registry.get("content"), ContentResolver)
    assert registry.get("human").mechanism == "human"


def test_unknown_mechanism_lists_registered_ones() -> None:
    registry = ResolverRegistry.from_entry_points(ResolverDeps(), only=["human", "content"])
    with pytest.raises(UnknownMechanismError, match=r"'agent'.*registered: content, human"):
        registry.get("agent")


def test_plug_in_registered_by_hand_is_resolved(runner: asyncio.Runner) -> None:
    class Echo:
        mechanism = "echo"

        def __init__(self, deps: ResolverDeps) -> None:
            self.deps = deps

        async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
            return Outcome(kind="reply", confidence=1.0, reply=ctx.message.text)

    registry = ResolverRegistry({"echo": Echo(ResolverDeps())})
    assert "echo" in registry
    outcome: Any = Chat(runner, workspace()).say(registry.get("echo"), "shipping_question", "hi")
    assert outcome.reply == "hi"


def test_a_part_that_leans_on_the_one_before_is_searched_with_it() -> None:
    from cxstack.resolution.resolvers.content import part_queries

    parts = ["Do you ship to Canada?", "How much does it cost?", "What about gift wrapping?"]
    assert part_queries(parts) == [
        "Do you ship to Canada?",
        "Do you ship to Canada? How much does it cost?",
        "What about gift wrapping?",
    ]
