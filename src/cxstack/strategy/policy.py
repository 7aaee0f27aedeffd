"""L1 policy: who the customer is (tier, value) and which business rules apply to this request.

Pure functions over the strategy config: no I/O, no clock (the caller passes `now`), so a trace can replay a
decision exactly and a test can pin any hour of any weekday.

How effects of several fired rules combine: `force_human` and `require_confirmation` are OR-ed (one rule is
enough to protect), `cap_amount` takes the lowest cap, `priority` the highest (the tier's priority is the
floor), and `queue` / `tone` come from the first fired rule, in file order, that sets them.

Amounts are exact: the request's amount is `Money` (a Decimal, in the workspace currency, read by
`cxstack.domain.money`), and the figures of `amount_gt`, `amount_lte` and `cap_amount` become Decimals
through their text (`Decimal(str(100.1))` is 100.1, not 100.0999...), so "above 100" never depends on float
rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, overload
from zoneinfo import ZoneInfo

from cxstack.domain.attributes import AttributeTypeError, coerce_attribute
from cxstack.domain.models import Customer, Priority
from cxstack.domain.money import Money
from cxstack.domain.turn import BusinessContext
from cxstack.workspace.models import Condition, PolicyRule, StrategyConfig, TierConfig

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class RuleEvaluation:
    """Why a rule fired or not: every condition that failed, in the words a CX lead would use."""

    rule_id: str
    fired: bool
    failed: tuple[str, ...] = ()

    def describe(self) -> str:
        return (
            f"{self.rule_id}: fired"
            if self.fired
            else f"{self.rule_id}: not fired ({'; '.join(self.failed)})"
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    context: BusinessContext
    evaluations: tuple[RuleEvaluation, ...]

    def as_trace(self) -> dict[str, Any]:
        """A JSON-ready summary for the strategy step of a trace."""
        return {
            "tier": self.context.tier,
            "priority": self.context.priority.name.lower(),
            "fired_rules": list(self.context.fired_rules),
            "not_fired": {e.rule_id: list(e.failed) for e in self.evaluations if not e.fired},
        }


def tier_of(customer: Customer, strategy: StrategyConfig) -> TierConfig | None:
    """The first tier, in file order, whose every given criterion holds; else the tier named `default_tier`
    if the file defines one; else None (the customer is in the default tier with default settings)."""
    for tier in strategy.tiers:
        if _tier_matches(customer, tier):
            return tier
    return next((t for t in strategy.tiers if t.name == strategy.default_tier), None)


def _tier_matches(customer: Customer, tier: TierConfig) -> bool:
    if tier.min_arr is not None and customer.arr < tier.min_arr:
        return False
    if tier.max_arr is not None and customer.arr >= tier.max_arr:
        return False
    if tier.plans is not None and not _in(customer.plan, tier.plans):
        return False
    return tier.segments is None or _in(customer.segment, tier.segments)


def _in(value: str, allowed: list[str]) -> bool:
    folded = value.casefold()
    return any(folded == a.casefold() for a in allowed)


def _attribute_matches(actual: Any, expected: Any, kind: str | None) -> bool:
    """A declared attribute compares by its type (a stored "yes" is the boolean true a rule asks for); an
    undeclared one compares as text, ignoring case. An absent value matches nothing."""
    if actual is None or expected is None:
        return bool(actual == expected)
    if kind is not None:
        try:
            return bool(coerce_attribute(actual, kind) == coerce_attribute(expected, kind))
        except AttributeTypeError:
            return False  # a value that is not of the declared type matches no rule
    if actual == expected:
        return True
    return str(actual).strip().casefold() == str(expected).strip().casefold()


def _fmt(value: float | Decimal) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value == value.to_integral_value() else f"{value:f}"
    return f"{value:g}"


def exact(figure: float) -> Decimal:
    """A figure from YAML as the Decimal its text says (100.1 -> Decimal("100.1"))."""
    return Decimal(str(figure))


def condition_failures(
    condition: Condition,
    *,
    customer: Customer,
    tier: str,
    intent: str | None,
    channel: str,
    amount: Money | None,
    local_time: datetime,
    attribute_types: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Every part of `condition` that does not hold (none: the condition holds). All parts are AND-ed."""
    failed: list[str] = []
    if condition.intent_in is not None and intent not in condition.intent_in:
        failed.append(f"intent_in: intent {intent!r} not in {condition.intent_in}")
    if condition.intent_not_in is not None and intent in condition.intent_not_in:
        failed.append(f"intent_not_in: intent {intent!r} is excluded")
    if condition.tier_in is not None and tier not in condition.tier_in:
        failed.append(f"tier_in: tier {tier!r} not in {condition.tier_in}")
    if condition.plan_in is not None and not _in(customer.plan, condition.plan_in):
        failed.append(f"plan_in: plan {customer.plan!r} not in {condition.plan_in}")
    if condition.segment_in is not None and not _in(customer.segment, condition.segment_in):
        failed.append(f"segment_in: segment {customer.segment!r} not in {condition.segment_in}")
    if condition.channel_in is not None and not _in(channel, condition.channel_in):
        failed.append(f"channel_in: channel {channel!r} not in {condition.channel_in}")
    if condition.arr_gte is not None and not customer.arr >= condition.arr_gte:
        failed.append(f"arr_gte: arr {_fmt(customer.arr)} < {_fmt(condition.arr_gte)}")
    if condition.arr_lt is not None and not customer.arr < condition.arr_lt:
        failed.append(f"arr_lt: arr {_fmt(customer.arr)} >= {_fmt(condition.arr_lt)}")
    # A condition on the amount cannot hold for a request that has no amount.
    value = amount.amount if amount is not None else None
    shown = "none" if value is None else _fmt(value)
    if condition.amount_gt is not None and (value is None or not value > exact(condition.amount_gt)):
        failed.append(f"amount_gt: amount {shown} is not above {_fmt(exact(condition.amount_gt))}")
    if condition.amount_lte is not None and (value is None or not value <= exact(condition.amount_lte)):
        failed.append(f"amount_lte: amount {shown} is not at most {_fmt(exact(condition.amount_lte))}")
    if condition.hours_between is not None:
        start, end = condition.hours_between
        if not in_hours(local_time.hour, start, end):
            failed.append(f"hours_between: local hour {local_time.hour} outside [{start}, {end})")
    if condition.weekday_in is not None:
        weekday = WEEKDAYS[local_time.weekday()]
        if weekday not in condition.weekday_in:
            failed.append(f"weekday_in: {weekday} not in {condition.weekday_in}")
    for key, expected in (condition.attributes or {}).items():
        actual = customer.attributes.get(key)
        if not _attribute_matches(actual, expected, (attribute_types or {}).get(key)):
            failed.append(f"attributes.{key}: {actual!r} != {expected!r}")
    return tuple(failed)


def in_hours(hour: int, start: int, end: int) -> bool:
    """Whether `hour` is in [start, end); end < start wraps past midnight; start == end is an empty window."""
    if start < end:
        return start <= hour < end
    if start > end:
        return hour >= start or hour < end
    return False


def local_time(now: datetime, timezone: str) -> datetime:
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)  # a naive `now` is taken as UTC
    return aware.astimezone(ZoneInfo(timezone))


def evaluate_rule(
    rule: PolicyRule,
    *,
    customer: Customer,
    tier: str,
    intent: str | None,
    channel: str,
    amount: Money | None,
    local_now: datetime,
    attribute_types: Mapping[str, str] | None = None,
) -> RuleEvaluation:
    failed = condition_failures(
        rule.when,
        customer=customer,
        tier=tier,
        intent=intent,
        channel=channel,
        amount=amount,
        local_time=local_now,
        attribute_types=attribute_types,
    )
    return RuleEvaluation(rule.id, fired=not failed, failed=failed)


def explain(
    customer: Customer,
    *,
    intent: str | None,
    channel: str,
    amount: Money | None,
    now: datetime,
    strategy: StrategyConfig,
) -> Assessment:
    """The business context for this request, with the evaluation of every rule (fired or not, and why)."""
    tier = tier_of(customer, strategy)
    tier_name = tier.name if tier is not None else strategy.default_tier
    local_now = local_time(now, strategy.timezone)
    evaluations = tuple(
        evaluate_rule(
            rule,
            customer=customer,
            tier=tier_name,
            intent=intent,
            channel=channel,
            amount=amount,
            local_now=local_now,
            attribute_types=strategy.attributes,
        )
        for rule in strategy.rules
    )
    fired = [rule for rule, evaluation in zip(strategy.rules, evaluations, strict=True) if evaluation.fired]
    priority = Priority.parse(tier.priority) if tier is not None else Priority.NORMAL
    force_human = False
    require_confirmation = False
    cap_amount: Decimal | None = None
    queue: str | None = None
    tone: str | None = None
    for rule in fired:
        effect = rule.then
        force_human = force_human or bool(effect.force_human)
        require_confirmation = require_confirmation or bool(effect.require_confirmation)
        if effect.cap_amount is not None:
            cap = exact(effect.cap_amount)
            cap_amount = cap if cap_amount is None else min(cap_amount, cap)
        if effect.priority is not None:
            priority = max(priority, Priority.parse(effect.priority))
        queue = queue if queue is not None else effect.queue
        tone = tone if tone is not None else effect.tone
    value_weight = tier.value_weight if tier is not None else 1.0
    context = BusinessContext(
        tier=tier_name,
        value=customer.arr * value_weight,
        priority=priority,
        fired_rules=tuple(rule.id for rule in fired),
        force_human=force_human,
        forced_by=tuple(rule.id for rule in fired if rule.then.force_human),
        require_confirmation=require_confirmation,
        cap_amount=cap_amount,
        queue=queue,
        tone=tone,
    )
    return Assessment(context, evaluations)


@overload
def assess(
    customer: Customer,
    *,
    intent: str | None,
    channel: str,
    amount: Money | None,
    now: datetime,
    strategy: StrategyConfig,
    with_evaluations: Literal[False] = False,
) -> BusinessContext: ...


@overload
def assess(
    customer: Customer,
    *,
    intent: str | None,
    channel: str,
    amount: Money | None,
    now: datetime,
    strategy: StrategyConfig,
    with_evaluations: Literal[True],
) -> Assessment: ...


def assess(
    customer: Customer,
    *,
    intent: str | None,
    channel: str,
    amount: Money | None,
    now: datetime,
    strategy: StrategyConfig,
    with_evaluations: bool = False,
) -> BusinessContext | Assessment:
    """L1's verdict for one request. With `with_evaluations=True`, the `Assessment` that also says, for every
    rule, which conditions failed (for the trace and for debugging a strategy file)."""
    assessment = explain(customer, intent=intent, channel=channel, amount=amount, now=now, strategy=strategy)
    return assessment if with_evaluations else assessment.context
