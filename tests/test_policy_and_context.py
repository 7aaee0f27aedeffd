"""The confidence policy and the multi-turn context rules: pure functions, decided here case by case."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cxstack.domain.models import Decision, Priority
from cxstack.domain.money import Money
from cxstack.domain.turn import IntentPrediction, Outcome, ResolutionPlan
from cxstack.orchestration.context import (
    amount_in,
    answers_awaited_slot,
    asks_for_person,
    continues_previous,
    resolve_clarification,
)
from cxstack.orchestration.policy import decide, should_clarify
from cxstack.workspace.models import SlotConfig, Thresholds, WorkspaceSettings

THRESHOLDS = Thresholds(answer_min_confidence=0.5, clarify_margin=0.1, route_min_confidence=0.4)


def plan(mechanism: str = "content", fallback: str | None = "action") -> ResolutionPlan:
    return ResolutionPlan(
        intent="x", mechanism=mechanism, queue="general", priority=Priority.NORMAL, fallback=fallback
    )


def test_confident_reply_continues() -> None:
    verdict = decide(Outcome(kind="reply", confidence=0.9, reply="hi"), plan(), THRESHOLDS, attempt=0)
    assert verdict.decision == Decision.CONTINUE


def test_unsure_reply_retries_once_with_the_fallback_then_escalates() -> None:
    unsure = Outcome(kind="reply", confidence=0.2, reply="maybe")
    first = decide(unsure, plan(), THRESHOLDS, attempt=0)
    assert (first.decision, first.retry_mechanism, first.reason) == (
        Decision.RETRY,
        "action",
        "low_confidence",
    )
    assert decide(unsure, plan(), THRESHOLDS, attempt=1).decision == Decision.ESCALATE


def test_no_retry_to_a_human_fallback_it_is_an_escalation() -> None:
    verdict = decide(Outcome(kind="reply", confidence=0.2), plan(fallback="human"), THRESHOLDS, attempt=0)
    assert verdict.decision == Decision.ESCALATE


@pytest.mark.parametrize(
    "reason", ["never_automate", "policy_rule:vip", "amount_over_cap", "action_failed", "connector_missing"]
)
def test_final_handoffs_are_not_retried(reason: str) -> None:
    outcome = Outcome(kind="handoff", confidence=0.0, handoff_reason=reason)
    verdict = decide(outcome, plan(), THRESHOLDS, attempt=0)
    assert verdict.decision == Decision.ESCALATE and verdict.reason == reason


def test_no_grounded_answer_is_retried_with_the_fallback() -> None:
    outcome = Outcome(kind="handoff", confidence=0.0, handoff_reason="no_grounded_answer")
    assert decide(outcome, plan(), THRESHOLDS, attempt=0).decision == Decision.RETRY


def test_asking_the_customer_continues() -> None:
    verdict = decide(Outcome(kind="ask", confidence=1.0, reply="Which order?"), plan(), THRESHOLDS, attempt=0)
    assert verdict.decision == Decision.CONTINUE


def test_clarify_only_close_plausible_calls_and_only_so_often() -> None:
    assert should_clarify(0.45, 0.40, THRESHOLDS, clarifications_so_far=0)
    assert not should_clarify(0.80, 0.15, THRESHOLDS, clarifications_so_far=0)  # clear winner
    assert not should_clarify(0.45, 0.40, THRESHOLDS, clarifications_so_far=1)  # asked once already


def test_amount_from_the_message_or_the_pending_action() -> None:
    usd = WorkspaceSettings(name="shop")
    assert amount_in("refund $49.90 please", {}, usd) == Money(Decimal("49.90"), "USD")
    assert amount_in("it was 30 dollars", {}, usd) == Money(Decimal(30), "USD")
    pending = {"pending_action": {"slots": {"amount": {"amount": "25.00", "currency": "USD"}}}}
    assert amount_in("yes", pending, usd) == Money(Decimal(25), "USD")
    assert amount_in("order ORD-10001 please", {}, usd) is None


def test_the_amount_of_the_issue_is_1500_for_strategy_too() -> None:
    usd = WorkspaceSettings(name="shop")
    assert amount_in("I want a refund of $1,500 for ORD-10001", {}, usd) == Money(Decimal(1500), "USD")
    # A refused mention is skipped, a later exact one counts; another currency is never ours.
    assert amount_in("not $10-20 but $15", {}, usd) == Money(Decimal(15), "USD")
    assert amount_in("refund €40", {}, usd) is None
    gbp = WorkspaceSettings(name="shop", currency="GBP", locale="en_GB")
    pending = {"pending_action": {"slots": {"amount": {"amount": "25.00", "currency": "USD"}}}}
    assert amount_in("yes", pending, gbp) is None


def test_asks_for_person() -> None:
    assert asks_for_person("can I talk to a human please")
    assert asks_for_person("I want a real person")
    assert not asks_for_person("a person ordered this for me")


PREDICTION = IntentPrediction("legal_threat", 0.45, (("order_status", 0.3), ("refund_request", 0.1)))


def test_follow_ups_keep_the_last_intent_unless_the_router_is_sure() -> None:
    state = {"last_intent": "order_status"}
    assert continues_previous("and ORD-10002?", PREDICTION, state) == "order_status"
    sure = IntentPrediction("refund_request", 0.95)
    assert continues_previous("and I want a refund for it", sure, state) is None
    long_new_topic = "I would like to know more about your membership tiers and what they include"
    assert continues_previous(long_new_topic, PREDICTION, state) is None
    assert continues_previous("and ORD-10002?", PREDICTION, {}) is None


def test_an_and_follow_up_stays_when_the_last_intent_is_still_a_candidate() -> None:
    state = {"last_intent": "order_status"}
    confident_elsewhere = IntentPrediction("modify_order_items", 0.93, (("order_status", 0.05),))
    assert continues_previous("and for my other order?", confident_elsewhere, state) == "order_status"
    new_topic = IntentPrediction("cancel_subscription", 0.99, (("renew_subscription", 0.004),))
    assert continues_previous("and I also want to cancel my subscription", new_topic, state) is None


def test_pending_action_keeps_its_intent_for_short_answers() -> None:
    state = {"pending_action": {"intent": "refund_request", "slots": {}}}
    assert continues_previous("ORD-10001", IntentPrediction("order_status", 0.9), state) == "refund_request"
    moved_on = IntentPrediction("store_hours", 0.95)
    assert continues_previous("actually what time do your stores open on sunday", moved_on, state) is None
    # a short question of its own is a new request, not the answer the action waits for
    elsewhere = IntentPrediction("order_status", 0.9)
    assert continues_previous("where is order ORD-10002?", elsewhere, state) is None
    assert continues_previous("12 Elm St, Springfield?", elsewhere, state) == "refund_request"
    unsure = IntentPrediction("order_status", 0.5)
    assert continues_previous("where is order ORD-10002?", unsure, state) == "refund_request"


def test_a_pending_action_keeps_a_long_answer_that_holds_what_it_asked_for() -> None:
    state = {"pending_action": {"intent": "change_phone", "action": "update_phone", "awaiting": "phone"}}
    elsewhere = IntentPrediction("recover_username", 0.8)
    answer = "sure thing, my number is (325) 784-8823"
    assert continues_previous(answer, elsewhere, state) is None  # the router alone would move on
    assert continues_previous(answer, elsewhere, state, answers_pending=True) == "change_phone"
    settings = WorkspaceSettings(name="shop")
    phone = SlotConfig(name="phone", pattern=r"\(?\d{3}\)?[ -]?\d{3}-\d{4}")
    assert answers_awaited_slot(answer, phone, settings)
    assert not answers_awaited_slot("actually, what are your opening hours on sunday", phone, settings)
    amount = SlotConfig(name="amount", type="money")
    assert answers_awaited_slot("it was about $35 I think, for the blue jacket", amount, settings)
    assert not answers_awaited_slot("I don't remember how much it was", amount, settings)
    assert not answers_awaited_slot("no idea, why do you need it", SlotConfig(name="reason"), settings)


def test_clarification_answers_by_ordinal_or_by_meaning() -> None:
    options = ["refund_status", "refund_request"]
    assert resolve_clarification("the second one", options, PREDICTION) == "refund_request"
    by_meaning = IntentPrediction("refund_status", 0.7)
    assert resolve_clarification("where is my refund", options, by_meaning) == "refund_status"
    assert resolve_clarification("neither", options, IntentPrediction("store_hours", 0.9)) is None
