"""The amount gate of money actions: one pure function, run right before the back office is called.

It fails closed. Nothing reaches the back office unless the amount is an exact amount the customer wrote, in
the action's currency, above zero, and at most the effective cap — the lower of the action's `max_amount` and
the strategy rule cap of this turn (`cap_amount`, in the workspace currency). Otherwise:

  cap missing (no max_amount)                   hand off   amount_cap_missing
  rule cap in another currency than the action  hand off   cap_currency_mismatch
  amount missing                                ask        amount_missing
  amount refused (range, words, several, ...)   ask        amount_refused
  amount zero                                   ask        amount_not_positive
  another currency                              ask once, then hand off   amount_currency_mismatch
  amount above the effective cap                hand off   amount_over_cap
  the slot holds something that is not money    hand off   amount_not_money
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from babel.numbers import get_currency_name

from cxstack.domain.money import Money, MoneyMention, Refusal, format_money, money_from_json, money_to_json

AMOUNT_OK = "amount_ok"
AMOUNT_MISSING = "amount_missing"
AMOUNT_REFUSED = "amount_refused"
AMOUNT_NOT_POSITIVE = "amount_not_positive"
AMOUNT_CURRENCY_MISMATCH = "amount_currency_mismatch"
AMOUNT_CAP_MISSING = "amount_cap_missing"
CAP_CURRENCY_MISMATCH = "cap_currency_mismatch"
AMOUNT_OVER_CAP = "amount_over_cap"
AMOUNT_NOT_MONEY = "amount_not_money"

# How often the customer is asked again for an amount in the right currency before a person takes over.
CURRENCY_RETRIES = 1


@dataclass(frozen=True, slots=True)
class AmountCheck:
    decision: Literal["allow", "ask", "handoff"]
    reason: str
    amount: Money | None = None
    cap: Decimal | None = None
    refusal: MoneyMention | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    def as_detail(self) -> dict[str, Any]:
        """JSON-ready, for the trace: what was checked against what."""
        detail: dict[str, Any] = {"decision": self.decision, "reason": self.reason}
        if self.amount is not None:
            detail["amount"] = money_to_json(self.amount)
        if self.cap is not None:
            detail["cap"] = str(self.cap)
        if self.refusal is not None:
            detail["refused"] = {"said": self.refusal.text, "why": str(self.refusal.refusal)}
        return detail


def effective_cap(max_amount: Decimal | None, rule_cap: Decimal | None) -> Decimal | None:
    """The lower of the action's own cap and the rule cap of this turn (None when the action has none)."""
    if max_amount is None:
        return None
    return max_amount if rule_cap is None else min(max_amount, rule_cap)


def check_amount(
    value: Any,
    *,
    refusal: MoneyMention | None,
    max_amount: Decimal | None,
    rule_cap: Decimal | None,
    currency: str,
    rule_currency: str,
    currency_retries: int = 0,
) -> AmountCheck:
    """May this amount go to the back office? `value` is the money slot's value (the JSON form of
    `money_to_json`, or None), `refusal` the refused mention of this message if any, `currency` the
    action's, `rule_currency` the workspace's (the currency of `rule_cap`), `currency_retries` how often the
    customer was already asked again because of the currency."""
    if max_amount is None:
        return AmountCheck("handoff", AMOUNT_CAP_MISSING)
    if rule_cap is not None and rule_currency != currency:
        return AmountCheck("handoff", CAP_CURRENCY_MISMATCH, cap=rule_cap)
    cap = effective_cap(max_amount, rule_cap)
    if value is None:
        if refusal is None:
            return AmountCheck("ask", AMOUNT_MISSING, cap=cap)
        if refusal.refusal in (Refusal.OTHER_CURRENCY, Refusal.CONFLICTING_CURRENCY):
            return _wrong_currency(currency_retries, cap, refusal)
        return AmountCheck("ask", AMOUNT_REFUSED, cap=cap, refusal=refusal)
    amount = money_from_json(value)
    if amount is None:
        return AmountCheck("handoff", AMOUNT_NOT_MONEY, cap=cap)
    if amount.currency != currency:
        return _wrong_currency(currency_retries, cap, None, amount)
    if amount.amount <= 0:
        return AmountCheck("ask", AMOUNT_NOT_POSITIVE, amount=amount, cap=cap)
    assert cap is not None
    if amount.amount > cap:
        return AmountCheck("handoff", AMOUNT_OVER_CAP, amount=amount, cap=cap)
    return AmountCheck("allow", AMOUNT_OK, amount=amount, cap=cap)


def _wrong_currency(
    retries: int, cap: Decimal | None, refusal: MoneyMention | None, amount: Money | None = None
) -> AmountCheck:
    decision: Literal["ask", "handoff"] = "ask" if retries < CURRENCY_RETRIES else "handoff"
    return AmountCheck(decision, AMOUNT_CURRENCY_MISMATCH, amount=amount, cap=cap, refusal=refusal)


def ask_again(check: AmountCheck, *, currency: str, locale: str) -> str:
    """Why the amount could not be used, in the customer's terms (the slot's question follows it)."""
    example = format_money(Money(Decimal(35), currency), locale)
    name = get_currency_name(currency, count=2, locale=locale)
    why = check.refusal.refusal if check.refusal is not None else None
    if check.reason == AMOUNT_CURRENCY_MISMATCH:
        return f"I can only take the amount in {name}, for example {example}."
    if check.reason == AMOUNT_NOT_POSITIVE or why == Refusal.NEGATIVE:
        return "The amount needs to be above zero."
    if why == Refusal.WORDS:
        return f"Could you write the amount in figures, for example {example}?"
    if why == Refusal.SHORTHAND:
        return f"Could you write the full amount, for example {example} rather than 1.5k?"
    if why == Refusal.RANGE:
        return "I need one exact amount rather than a range."
    if why == Refusal.SEVERAL_AMOUNTS:
        return "I see more than one amount there, so I need just the one this is for."
    if why == Refusal.TOO_MANY_DECIMALS:
        return f"That has more decimals than {name} have; could you write it like {example}?"
    if why in (Refusal.AMBIGUOUS_SEPARATOR, Refusal.MALFORMED) and check.refusal is not None:
        return f"I wasn't sure how to read “{check.refusal.text}”; could you write it like {example}?"
    return "Sorry, I didn't catch the amount."
