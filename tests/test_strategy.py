from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from cxstack.domain.models import Customer, CustomerId, Priority
from cxstack.domain.money import Money
from cxstack.domain.turn import BusinessContext
from cxstack.strategy.policy import assess, explain, in_hours, tier_of
from cxstack.workspace.models import StrategyConfig

# 2025-06-04 is a Wednesday.
WEDNESDAY_NOON_UTC = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


def strategy(**overrides: Any) -> StrategyConfig:
    data: dict[str, Any] = {
        "timezone": "UTC",
        "tiers": [
            {"name": "enterprise", "min_arr": 100_000, "priority": "high", "value_weight": 2.0},
            {"name": "growth", "min_arr": 10_000, "max_arr": 100_000, "plans": ["Pro", "Business"]},
            {"name": "startup", "segments": ["startup"], "priority": "low"},
        ],
        "default_tier": "standard",
        "rules": [],
    }
    data.update(overrides)
    return StrategyConfig.model_validate(data)


def customer(arr: float = 0, plan: str = "", segment: str = "", **attributes: Any) -> Customer:
    return Customer(id=CustomerId("c1"), plan=plan, arr=arr, segment=segment, attributes=attributes)


def usd(amount: float | str | None) -> Money | None:
    return None if amount is None else Money(Decimal(str(amount)), "USD")


def fired(config: StrategyConfig, who: Customer, **kwargs: Any) -> tuple[str, ...]:
    args: dict[str, Any] = {
        "intent": "refund",
        "channel": "webchat",
        "amount": None,
        "now": WEDNESDAY_NOON_UTC,
    }
    args.update(kwargs)
    args["amount"] = usd(args["amount"])
    context: BusinessContext = assess(who, strategy=config, **args)
    return context.fired_rules


def one_rule(when: dict[str, Any], then: dict[str, Any] | None = None, **config: Any) -> StrategyConfig:
    return strategy(rules=[{"id": "r", "when": when, "then": then or {"force_human": True}}], **config)


# --- tiers --------------------------------------------------------------------------------------------------


def test_first_matching_tier_in_file_order() -> None:
    config = strategy()
    enterprise = tier_of(customer(arr=250_000, plan="Pro"), config)
    assert enterprise is not None and enterprise.name == "enterprise"
    growth = tier_of(customer(arr=20_000, plan="pro"), config)  # plan match ignores case
    assert growth is not None and growth.name == "growth"
    startup = tier_of(customer(arr=20_000, plan="Free", segment="startup"), config)
    assert startup is not None and startup.name == "startup"


def test_max_arr_is_exclusive_and_no_match_gives_default() -> None:
    config = strategy()
    assert tier_of(customer(arr=5_000, plan="Pro"), config) is None
    context = assess(
        customer(arr=5_000, plan="Pro"),
        intent=None,
        channel="api",
        amount=None,
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    assert context.tier == "standard"
    assert context.priority == Priority.NORMAL
    boundary = tier_of(customer(arr=100_000, plan="Pro"), config)
    assert boundary is not None and boundary.name == "enterprise"


def test_default_tier_defined_in_file_is_returned() -> None:
    config = strategy(
        tiers=[{"name": "vip", "min_arr": 1e6}, {"name": "standard", "priority": "low", "value_weight": 0.5}],
        default_tier="standard",
    )
    # "standard" has no criteria, so it matches everyone not matched before it
    tier = tier_of(customer(arr=10), config)
    assert tier is not None and tier.name == "standard"
    config = strategy(
        tiers=[{"name": "standard", "plans": ["Basic"], "priority": "low"}], default_tier="standard"
    )
    tier = tier_of(customer(plan="Other"), config)
    assert tier is not None and tier.name == "standard"  # the default tier's own settings apply


def test_value_uses_tier_weight() -> None:
    context = assess(
        customer(arr=200_000),
        intent=None,
        channel="api",
        amount=None,
        now=WEDNESDAY_NOON_UTC,
        strategy=strategy(),
    )
    assert context.value == 400_000
    assert context.priority == Priority.HIGH


# --- conditions ---------------------------------------------------------------------------------------------


def test_intent_conditions() -> None:
    config = one_rule({"intent_in": ["refund", "cancel"]})
    assert fired(config, customer(), intent="refund") == ("r",)
    assert fired(config, customer(), intent="hours") == ()
    assert fired(config, customer(), intent=None) == ()
    excluded = one_rule({"intent_not_in": ["hours"]})
    assert fired(excluded, customer(), intent="refund") == ("r",)
    assert fired(excluded, customer(), intent="hours") == ()


def test_tier_plan_segment_channel_conditions() -> None:
    assert fired(one_rule({"tier_in": ["enterprise"]}), customer(arr=150_000)) == ("r",)
    assert fired(one_rule({"tier_in": ["enterprise"]}), customer(arr=15_000)) == ()
    assert fired(one_rule({"tier_in": ["standard"]}), customer(arr=15)) == ("r",)
    assert fired(one_rule({"plan_in": ["Pro"]}), customer(plan="PRO")) == ("r",)
    assert fired(one_rule({"plan_in": ["Pro"]}), customer(plan="Free")) == ()
    assert fired(one_rule({"segment_in": ["smb"]}), customer(segment="smb")) == ("r",)
    assert fired(one_rule({"segment_in": ["smb"]}), customer(segment="")) == ()
    assert fired(one_rule({"channel_in": ["whatsapp"]}), customer(), channel="whatsapp") == ("r",)
    assert fired(one_rule({"channel_in": ["whatsapp"]}), customer(), channel="email") == ()


def test_arr_bounds() -> None:
    config = one_rule({"arr_gte": 1_000, "arr_lt": 5_000})
    assert fired(config, customer(arr=999)) == ()
    assert fired(config, customer(arr=1_000)) == ("r",)
    assert fired(config, customer(arr=4_999)) == ("r",)
    assert fired(config, customer(arr=5_000)) == ()


def test_amount_conditions_are_false_without_an_amount() -> None:
    above = one_rule({"amount_gt": 100})
    assert fired(above, customer(), amount=100.01) == ("r",)
    assert fired(above, customer(), amount=100) == ()
    assert fired(above, customer(), amount=None) == ()
    at_most = one_rule({"amount_lte": 50})
    assert fired(at_most, customer(), amount=50) == ("r",)
    assert fired(at_most, customer(), amount=51) == ()
    assert fired(at_most, customer(), amount=None) == ()


def test_hours_window_in_strategy_timezone() -> None:
    # 12:00 UTC is 14:00 in Paris in June (CEST) and 08:00 in New York (EDT)
    office = {"hours_between": [9, 17]}
    assert fired(one_rule(office, timezone="Europe/Paris"), customer()) == ("r",)
    assert fired(one_rule(office, timezone="America/New_York"), customer()) == ()
    late = WEDNESDAY_NOON_UTC.replace(hour=15)  # 17:00 in Paris: end is exclusive
    assert fired(one_rule(office, timezone="Europe/Paris"), customer(), now=late) == ()


def test_hours_window_wraps_past_midnight() -> None:
    night = one_rule({"hours_between": [22, 6]}, timezone="Europe/Paris")
    # 21:30 UTC in June is 23:30 in Paris; 03:00 UTC is 05:00; 04:00 UTC is 06:00
    assert fired(night, customer(), now=datetime(2025, 6, 4, 21, 30, tzinfo=UTC)) == ("r",)
    assert fired(night, customer(), now=datetime(2025, 6, 5, 3, 0, tzinfo=UTC)) == ("r",)
    assert fired(night, customer(), now=datetime(2025, 6, 5, 4, 0, tzinfo=UTC)) == ()
    assert fired(night, customer(), now=WEDNESDAY_NOON_UTC) == ()
    assert in_hours(23, 22, 6) and in_hours(0, 22, 6) and not in_hours(6, 22, 6) and not in_hours(12, 22, 6)
    assert not in_hours(5, 5, 5)


def test_naive_and_offset_datetimes() -> None:
    night = one_rule({"hours_between": [22, 6]})
    assert fired(night, customer(), now=datetime(2025, 6, 4, 23, 0)) == ("r",)  # naive is taken as UTC
    plus_five = timezone(timedelta(hours=5))
    # 04:00 at +05:00 is 23:00 UTC the day before
    assert fired(night, customer(), now=datetime(2025, 6, 5, 4, 0, tzinfo=plus_five)) == ("r",)


def test_weekday_in_local_time() -> None:
    weekend = one_rule({"weekday_in": ["sat", "sun"]}, timezone="Asia/Tokyo")
    friday_late_utc = datetime(2025, 6, 6, 16, 0, tzinfo=UTC)  # already Saturday 01:00 in Tokyo
    assert fired(weekend, customer(), now=friday_late_utc) == ("r",)
    assert fired(weekend, customer(), now=WEDNESDAY_NOON_UTC) == ()
    wednesday = one_rule({"weekday_in": ["wed"]})
    assert fired(wednesday, customer(), now=WEDNESDAY_NOON_UTC) == ("r",)


def test_attribute_equality_tolerates_csv_strings() -> None:
    config = one_rule({"attributes": {"churn_risk": True, "seats": 10, "region": "EU"}})
    assert fired(config, customer(churn_risk="true", seats="10", region="eu")) == ("r",)
    assert fired(config, customer(churn_risk=True, seats=10, region="EU")) == ("r",)
    assert fired(config, customer(churn_risk="false", seats="10", region="EU")) == ()
    assert fired(config, customer(seats="10", region="EU")) == ()  # a missing attribute never matches


def test_all_condition_fields_are_and_ed() -> None:
    config = one_rule({"intent_in": ["refund"], "plan_in": ["Pro"], "amount_gt": 10})
    assert fired(config, customer(plan="Pro"), amount=20) == ("r",)
    assert fired(config, customer(plan="Pro"), amount=5) == ()
    assert fired(config, customer(plan="Free"), amount=20) == ()
    assert fired(config, customer(plan="Pro"), amount=20, intent="hours") == ()
    assert fired(one_rule({}), customer()) == ("r",)  # an empty condition always holds


# --- effects ------------------------------------------------------------------------------------------------


def test_effects_merge() -> None:
    config = strategy(
        rules=[
            {"id": "a", "when": {}, "then": {"cap_amount": 200, "priority": "low", "tone": "warm"}},
            {"id": "b", "when": {"intent_in": ["hours"]}, "then": {"queue": "never", "force_human": True}},
            {
                "id": "c",
                "when": {},
                "then": {"require_confirmation": True, "cap_amount": 50, "queue": "billing"},
            },
            {
                "id": "d",
                "when": {},
                "then": {"priority": "urgent", "cap_amount": 75, "queue": "vip", "tone": "x"},
            },
            {"id": "e", "when": {}, "then": {"force_human": False, "require_confirmation": False}},
        ]
    )
    context = assess(
        customer(arr=50_000, plan="Pro"),
        intent="refund",
        channel="webchat",
        amount=usd(30),
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    assert context.fired_rules == ("a", "c", "d", "e")
    assert context.force_human is False
    assert context.require_confirmation is True  # OR: a later False does not undo it
    assert context.cap_amount == 50  # the lowest cap
    assert context.priority == Priority.URGENT  # the highest
    assert context.queue == "billing"  # first fired rule that sets it
    assert context.tone == "warm"


def test_tier_priority_is_the_floor() -> None:
    config = strategy(rules=[{"id": "low", "when": {}, "then": {"priority": "low"}}])
    context = assess(
        customer(arr=500_000),
        intent="refund",
        channel="api",
        amount=None,
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    assert context.priority == Priority.HIGH


REFUND_STRATEGY = {
    "timezone": "Europe/Paris",
    "tiers": [
        {"name": "top", "min_arr": 100_000, "priority": "high"},
        {"name": "mid", "min_arr": 10_000},
        {"name": "low", "priority": "low"},
    ],
    "default_tier": "low",
    "rules": [
        {
            "id": "top-refund-human",
            "when": {"intent_in": ["refund"], "tier_in": ["top"]},
            "then": {"force_human": True, "priority": "urgent", "queue": "vip"},
        },
        {
            "id": "big-refund-human",
            "when": {"intent_in": ["refund"], "amount_gt": 100},
            "then": {"force_human": True, "queue": "billing"},
        },
        {
            "id": "refund-cap",
            "when": {"intent_in": ["refund"], "tier_in": ["low", "mid"]},
            "then": {"cap_amount": 100, "require_confirmation": True},
        },
    ],
}


@pytest.mark.parametrize("amount", [None, 20.0])
def test_top_tier_refund_goes_to_a_human_in_the_vip_queue(amount: float | None) -> None:
    config = StrategyConfig.model_validate(REFUND_STRATEGY)
    context = assess(
        customer(arr=250_000, plan="Enterprise"),
        intent="refund",
        channel="webchat",
        amount=usd(amount),
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    assert context.tier == "top"
    assert context.force_human is True
    assert context.priority >= Priority.HIGH
    assert context.queue == "vip"
    assert context.fired_rules == ("top-refund-human",)
    assert context.forced_by == ("top-refund-human",)


def test_low_tier_refund_under_cap_is_not_forced() -> None:
    config = StrategyConfig.model_validate(REFUND_STRATEGY)
    context = assess(
        customer(arr=500),
        intent="refund",
        channel="webchat",
        amount=usd(40),
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    assert context.tier == "low"
    assert context.force_human is False
    assert context.cap_amount == 100
    assert context.require_confirmation is True
    assert context.priority == Priority.LOW
    assert context.queue is None
    over_cap = assess(
        customer(arr=500),
        intent="refund",
        channel="webchat",
        amount=usd(400),
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    assert over_cap.force_human is True and over_cap.queue == "billing"


def test_explain_says_which_condition_failed() -> None:
    config = StrategyConfig.model_validate(REFUND_STRATEGY)
    assessment = explain(
        customer(arr=500),
        intent="refund",
        channel="webchat",
        amount=None,
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    )
    by_rule = {e.rule_id: e for e in assessment.evaluations}
    assert by_rule["refund-cap"].fired and by_rule["refund-cap"].failed == ()
    assert not by_rule["top-refund-human"].fired
    assert by_rule["top-refund-human"].failed == ("tier_in: tier 'low' not in ['top']",)
    assert by_rule["big-refund-human"].failed == ("amount_gt: amount none is not above 100",)
    trace = assessment.as_trace()
    assert trace["fired_rules"] == ["refund-cap"]
    assert set(trace["not_fired"]) == {"top-refund-human", "big-refund-human"}
    same = assess(
        customer(arr=500),
        intent="refund",
        channel="webchat",
        amount=None,
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
        with_evaluations=True,
    )
    assert same == assessment


def test_explain_lists_every_failed_condition() -> None:
    config = one_rule({"intent_in": ["cancel"], "plan_in": ["Pro"], "hours_between": [0, 1]})
    (evaluation,) = explain(
        customer(plan="Free"),
        intent="refund",
        channel="api",
        amount=None,
        now=WEDNESDAY_NOON_UTC,
        strategy=config,
    ).evaluations
    assert [f.split(":")[0] for f in evaluation.failed] == ["intent_in", "plan_in", "hours_between"]
    assert "not fired" in evaluation.describe()
