"""Slot filling for actions. Pure: text, carried-over values and the customer in; filled values out.

Where a slot's value comes from, first match wins:
  1. the customer profile (`from_customer`: "id", "email", a Customer field, or an attribute name);
  2. the current message (the slot's `pattern`; a number for `type: number`; the whole message when the
     previous turn asked for exactly this slot and nothing more specific applies);
  3. values carried over in `known` (the pending action's slots, then remembered entities);
  4. earlier customer messages, most recent first (patterned slots only: a bare number in an old message is
     too ambiguous to reuse);
  5. the slot's `default`.
Matched text is consumed, so one span never fills two slots (an amount is not read out of "ORD-10002").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cxstack.domain.models import Customer
from cxstack.workspace.models import SlotConfig

SlotValue = str | float

# A number not glued to a word or an identifier: "25", "€25.50", "1,200" — but not the 10002 of ORD-10002.
_NUMBER = re.compile(r"(?<![\w.,-])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?)(?![\w-]|[.,]\d)")


@dataclass(frozen=True, slots=True)
class SlotFill:
    values: dict[str, SlotValue] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    prompt: str | None = None  # the question for the first missing slot
    invalid: tuple[
        str, ...
    ] = ()  # slots whose text was found but could not be parsed (e.g. "abc" as a number)

    @property
    def complete(self) -> bool:
        return not self.missing


def parse_number(text: str) -> float | None:
    """'25' -> 25.0, '€25.50' -> 25.5, '25,50' -> 25.5, '1,200' -> 1200.0, '1.234,5' -> 1234.5; else None."""
    cleaned = re.sub(r"[^\d.,-]", "", text.strip())
    if not re.search(r"\d", cleaned):
        return None
    if "," in cleaned and "." in cleaned:
        # The separator that comes last is the decimal one.
        if cleaned.rfind(",") > cleaned.rfind("."):
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:
            cleaned = cleaned.replace(",", "")
    elif "," in cleaned:
        head, _, tail = cleaned.rpartition(",")
        cleaned = f"{head.replace(',', '')}.{tail}" if len(tail) != 3 else cleaned.replace(",", "")
    try:
        return float(cleaned)
    except ValueError:
        return None


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


def _coerce(slot: SlotConfig, raw: Any) -> SlotValue | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if slot.type == "number":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        return parse_number(str(raw))
    return str(raw).strip()


def _extract(
    slot: SlotConfig, text: str, *, whole_message: bool
) -> tuple[str | None, tuple[int, int] | None]:
    """The raw text of the slot in `text` and the span it came from."""
    if slot.pattern:
        match = re.search(slot.pattern, text)
        if match is None:
            return None, None
        group = 1 if match.groups() else 0
        return match.group(group), match.span(group)
    if slot.type == "number":
        number = _NUMBER.search(text)
        if number is not None:
            return number.group(1), number.span(1)
        return (text.strip() or None, None) if whole_message else (None, None)
    return (text.strip() or None, None) if whole_message else (None, None)


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
) -> SlotFill:
    """Fill `slots` from the sources above. `awaiting` names the slot the previous turn asked for;
    `earlier_texts` are earlier customer messages, oldest first."""
    known = known or {}
    values: dict[str, SlotValue] = {}
    invalid: list[str] = []
    remaining = text
    # Patterned slots read the message first, so a bare-number slot cannot take digits that belong to them.
    order = sorted(slots, key=lambda s: (s.pattern is None, s.type != "number"))
    for slot in order:
        if slot.from_customer:
            value = from_customer(customer, slot.from_customer)
            if value is not None:
                values[slot.name] = value
                continue
        raw, span = _extract(slot, remaining, whole_message=awaiting == slot.name)
        if raw is not None:
            value = _coerce(slot, raw)
            if value is not None:
                values[slot.name] = value
                remaining = _consume(remaining, span)
                continue
            invalid.append(slot.name)
        carried = _coerce(slot, known.get(slot.name))
        if carried is not None:
            values[slot.name] = carried
            continue
        if slot.pattern:
            for earlier in reversed(earlier_texts):
                raw, _ = _extract(slot, earlier, whole_message=False)
                value = _coerce(slot, raw)
                if value is not None:
                    values[slot.name] = value
                    break
            if slot.name in values:
                continue
        default = _coerce(slot, slot.default)
        if default is not None:
            values[slot.name] = default
    missing = tuple(s.name for s in slots if s.required and s.name not in values)
    first_missing = next((s for s in slots if s.name in missing), None)
    return SlotFill(
        values=values,
        missing=missing,
        prompt=prompt_for(first_missing) if first_missing else None,
        invalid=tuple(name for name in invalid if name not in values),
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
