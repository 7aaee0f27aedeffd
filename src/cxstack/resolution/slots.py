"""Slot filling for actions. Pure: text, carried-over values and the customer in; filled values out.

Where a slot's value comes from, first match wins:
  1. the customer profile (`from_customer`: "id", "email", a Customer field, or an attribute name) — and for
     such a slot nothing else, ever: a missing profile value leaves it missing, it is never asked for;
  2. the current message (the slot's `pattern`; a number for `type: number`; the whole message when the
     previous turn asked for exactly this slot and nothing more specific applies);
  3. values carried over in `known` (the pending action's slots, then remembered entities);
  4. earlier customer messages, most recent first (patterned slots only: a bare number in an old message is
     too ambiguous to reuse);
  5. the slot's `default`.
A `type: money` slot is different: its value is only ever an amount the customer wrote — a money mention in
this message (`cxstack.domain.money.find_money`), or a bare number when this slot was just asked for — or the
one carried in the pending action, which came from such a mention. Never a pattern, the profile, an earlier
message or a default. A mention that is refused (a range, words, another currency...) is reported in
`SlotFill.refusals`, so the customer is asked again with the reason. Its value is the JSON form of
`money_to_json`: {"amount": "1500.00", "currency": "USD", "said": "$1,500"}.
Matched text is consumed, so one span never fills two slots (an amount is not read out of "ORD-10002").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cxstack.domain.models import Customer
from cxstack.domain.money import (
    MoneyMention,
    Refusal,
    find_money,
    find_numbers,
    money_from_json,
    money_to_json,
    parse_money_answer,
    read_number,
)
from cxstack.workspace.models import SlotConfig

# A money slot holds the JSON form of `money_to_json`.
SlotValue = str | float | dict[str, str]


@dataclass(frozen=True, slots=True)
class SlotFill:
    values: dict[str, SlotValue] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    prompt: str | None = None  # the question for the first missing slot
    # slots whose text was found but could not be parsed (e.g. "abc" as a number, "$10-20" as money)
    invalid: tuple[str, ...] = ()
    # money slots whose mention was refused, and why (the mention carries the reason and the words)
    refusals: dict[str, MoneyMention] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing


def prompt_for(slot: SlotConfig) -> str:
    if slot.prompt:
        return slot.prompt
    label = slot.description.rstrip(".") if slot.description else slot.name.replace("_", " ")
    return f"Could you tell me the {label}?"


def from_customer(customer: Customer, source: str) -> SlotValue | None:
    if source in ("id", "email", "name", "plan", "segment"):
        value: Any = getattr(customer, source)
    elif source == "arr":
        value = customer.arr
    else:
        value = customer.attributes.get(source)
    if value is None or value == "":
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _count(raw: Any, locale: str) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float | Decimal):
        return float(raw)
    value = read_number(str(raw), locale=locale)
    return float(value) if isinstance(value, Decimal) else None


def _coerce(slot: SlotConfig, raw: Any, locale: str) -> SlotValue | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if slot.type == "number":
        return _count(raw, locale)
    if slot.type == "money":
        money = money_from_json(raw)
        if money is None:
            return None
        said = raw.get("said")
        return money_to_json(money, said=said if isinstance(said, str) else None)
    return str(raw).strip()


def _extract(
    slot: SlotConfig, text: str, *, whole_message: bool, locale: str
) -> tuple[str | None, tuple[int, int] | None]:
    """The raw text of the slot in `text` and the span it came from."""
    if slot.pattern:
        match = re.search(slot.pattern, text)
        if match is None:
            return None, None
        group = 1 if match.groups() else 0
        return match.group(group), match.span(group)
    if slot.type == "number":
        numbers = find_numbers(text, locale=locale)
        if numbers:
            return numbers[0].text, numbers[0].span
        return (text.strip() or None, None) if whole_message else (None, None)
    return (text.strip() or None, None) if whole_message else (None, None)


def _money_mention(text: str, *, asked_for_it: bool, currency: str, locale: str) -> MoneyMention | None:
    """The amount the customer wrote in this message for a money slot: the one amount read, else (when the
    slot was just asked for) a bare number, else the first refused mention. Two different amounts in one
    message ("I paid $80, refund $20") are refused: which one is meant is a guess."""
    mentions = find_money(text, currency=currency, locale=locale)
    read = [m for m in mentions if m.money is not None]
    if len({m.money for m in read}) > 1:
        span = (read[0].span[0], read[-1].span[1])
        return MoneyMention(text[span[0] : span[1]], span, refusal=Refusal.SEVERAL_AMOUNTS, currency=currency)
    if read:
        return read[0]
    if asked_for_it:
        return parse_money_answer(text, currency=currency, locale=locale)
    return mentions[0] if mentions else None


def _consume(text: str, span: tuple[int, int] | None) -> str:
    return text if span is None else text[: span[0]] + " " * (span[1] - span[0]) + text[span[1] :]


def fill_slots(
    slots: Sequence[SlotConfig],
    text: str,
    *,
    customer: Customer,
    known: Mapping[str, Any] | None = None,
    earlier_texts: Sequence[str] = (),
    awaiting: str | None = None,
    currency: str = "USD",
    locale: str = "en_US",
) -> SlotFill:
    """Fill `slots` from the sources above. `awaiting` names the slot the previous turn asked for;
    `earlier_texts` are earlier customer messages, oldest first; money is read in `currency` as customers of
    `locale` write it."""
    known = known or {}
    values: dict[str, SlotValue] = {}
    invalid: list[str] = []
    refusals: dict[str, MoneyMention] = {}
    remaining = text
    # Patterned slots read the message first, so a bare-number slot cannot take digits that belong to them.
    order = sorted(slots, key=lambda s: (s.pattern is None or s.type == "money", s.type == "string"))
    for slot in order:
        if slot.type == "money":
            mention = _money_mention(
                remaining, asked_for_it=awaiting == slot.name, currency=currency, locale=locale
            )
            if mention is not None and mention.money is not None:
                values[slot.name] = money_to_json(mention.money, said=mention.text)
                remaining = _consume(remaining, mention.span)
                continue
            if mention is not None:
                refusals[slot.name] = mention  # a new, unreadable amount replaces any carried one
                invalid.append(slot.name)
                continue
            if awaiting == slot.name:
                invalid.append(slot.name)  # asked for the amount, and the answer holds none
            carried = _coerce(slot, known.get(slot.name), locale)
            if carried is not None:
                values[slot.name] = carried
            continue
        if slot.from_customer:
            # Only ever the verified profile: never the message, a carried value, an earlier message or a
            # default — a typed account id must not choose whose account is used.
            value = from_customer(customer, slot.from_customer)
            if value is not None:
                values[slot.name] = value
            continue
        raw, span = _extract(slot, remaining, whole_message=awaiting == slot.name, locale=locale)
        if raw is not None:
            value = _coerce(slot, raw, locale)
            if value is not None:
                values[slot.name] = value
                remaining = _consume(remaining, span)
                continue
            invalid.append(slot.name)
        carried = _coerce(slot, known.get(slot.name), locale)
        if carried is not None:
            values[slot.name] = carried
            continue
        if slot.pattern:
            for earlier in reversed(earlier_texts):
                raw, _ = _extract(slot, earlier, whole_message=False, locale=locale)
                value = _coerce(slot, raw, locale)
                if value is not None:
                    values[slot.name] = value
                    break
            if slot.name in values:
                continue
        default = _coerce(slot, slot.default, locale)
        if default is not None:
            values[slot.name] = default
    missing = tuple(s.name for s in slots if s.required and s.name not in values)
    first_missing = next((s for s in slots if s.name in missing), None)
    return SlotFill(
        values=values,
        missing=missing,
        prompt=prompt_for(first_missing) if first_missing else None,
        invalid=tuple(name for name in invalid if name not in values),
        refusals=refusals,
    )


_YES = frozenset(
    {
        "yes",
        "y",
        "yeah",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "confirm",
        "confirmed",
        "correct",
        "right",
        "absolutely",
    }
)
_YES_PHRASES = ("go ahead", "please do", "do it", "sounds good", "that's right", "that is right")
_NO = frozenset({"no", "n", "nope", "nah", "cancel", "stop", "don't", "dont", "not", "never"})
_NO_PHRASES = ("never mind", "nevermind", "do not", "changed my mind", "forget it")


def parse_yes_no(text: str) -> bool | None:
    """True for a clear yes, False for a clear no, None when the message is neither (or both)."""
    lowered = text.lower().strip()
    tokens = re.findall(r"[a-z']+", lowered)
    # An answer that starts with yes or no says so, whatever follows ("yes cancel it", "no, keep it").
    bare_no = {"no", "nope", "nah", "n"}
    if (
        tokens
        and tokens[0] in _YES
        and not bare_no & set(tokens)
        and not any(p in lowered for p in _NO_PHRASES)
    ):
        return True
    if tokens and tokens[0] in bare_no and not _YES & set(tokens[1:]):
        return False
    words = set(tokens)
    yes = bool(words & _YES) or any(p in lowered for p in _YES_PHRASES)
    no = bool(words & _NO) or any(p in lowered for p in _NO_PHRASES)
    if yes == no:
        return None
    return yes
