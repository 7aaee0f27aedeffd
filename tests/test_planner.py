from __future__ import annotations

from cxstack.domain.models import Priority
from cxstack.domain.turn import BusinessContext
from cxstack.resolution.planner import OUT_OF_SCOPE_INTENT, plan, plan_out_of_scope
from cxstack.workspace.models import EscalationConfig, IntentConfig, WorkspaceSettings

SETTINGS = WorkspaceSettings(name="shop", escalation=EscalationConfig(default_queue="general"))
REFUND = IntentConfig(
    name="refund_request", mechanism="action", action="refund_order", queue="billing", fallback="human"
)
FAQ = IntentConfig(name="shipping_question", mechanism="content", fact_tags=["shipping"], fallback="human")


def business(**overrides: object) -> BusinessContext:
    values: dict[str, object] = {"tier": "standard", "value": 1.0, "priority": Priority.NORMAL}
    values.update(overrides)
    return BusinessContext(**values)  # type: ignore[arg-type]


def test_intent_mechanism_with_its_queue_action_and_fallback() -> None:
    result = plan(REFUND, business(), SETTINGS)
    assert result.mechanism == "action"
    assert result.action == "refund_order"
    assert result.queue == "billing"
    assert result.fallback == "human"
    assert result.priority is Priority.NORMAL
    assert result.reason == "intent_mechanism"


def test_content_plan_carries_fact_tags_and_default_queue() -> None:
    result = plan(FAQ, business(), SETTINGS)
    assert result.mechanism == "content"
    assert result.fact_tags == ("shipping",)
    assert result.queue == "general"


def test_never_automate_forces_a_human() -> None:
    intent = IntentConfig(name="legal_threat", mechanism="content", never_automate=True, fallback="content")
    result = plan(intent, business(), SETTINGS)
    assert result.mechanism == "human"
    assert result.reason == "never_automate"
    assert result.fallback is None


def test_force_human_names_the_rules_that_forced_it() -> None:
    context = business(
        force_human=True, fired_rules=("vip-refund-human", "formal-tone"), forced_by=("vip-refund-human",)
    )
    result = plan(REFUND, context, SETTINGS)
    assert result.mechanism == "human"
    assert result.reason == "policy_rule:vip-refund-human"
    assert result.fallback is None
    assert plan(REFUND, business(force_human=True), SETTINGS).reason == "force_human"


def test_business_queue_priority_and_limits_win() -> None:
    result = plan(
        REFUND,
        business(queue="vip", priority=Priority.HIGH, cap_amount=100.0, require_confirmation=True),
        SETTINGS,
    )
    assert result.queue == "vip"
    assert result.priority is Priority.HIGH
    assert result.cap_amount == 100.0
    assert result.require_confirmation is True


def test_plan_is_pure() -> None:
    context = business(fired_rules=("a",))
    assert plan(REFUND, context, SETTINGS) == plan(REFUND, context, SETTINGS)


def test_out_of_scope_tries_knowledge_then_a_human() -> None:
    result = plan_out_of_scope(SETTINGS, business())
    assert result.intent == OUT_OF_SCOPE_INTENT
    assert result.mechanism == "content"
    assert result.fallback == "human"
    assert result.queue == "general"
    assert result.reason == "out_of_scope"
    straight_to_human = plan_out_of_scope(SETTINGS, business(queue="vip"), mechanism="human")
    assert straight_to_human.mechanism == "human"
    assert straight_to_human.fallback is None
    assert straight_to_human.queue == "vip"


def test_out_of_scope_respects_force_human() -> None:
    result = plan_out_of_scope(
        SETTINGS, business(force_human=True, fired_rules=("after-hours",), forced_by=("after-hours",))
    )
    assert result.mechanism == "human"
    assert result.reason == "policy_rule:after-hours"
