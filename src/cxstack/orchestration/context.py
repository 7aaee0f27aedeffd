"""Multi-turn context: which intent a message continues, and what it says about amounts. Pure."""

from __future__ import annotations

import re
from typing import Any

from cxstack.domain.money import Money, find_money, money_from_json, money_to_json
from cxstack.domain.turn import IntentPrediction
from cxstack.workspace.models import SlotConfig, WorkspaceSettings

_FOLLOW_UP = re.compile(r"^\s*(and|also|what about|how about|same|ok and|plus|but)\b", re.I)
# A question of its own ("where is order ORD-2?") is a new request, however short, not a slot's answer.
_NEW_QUESTION = re.compile(
    r"^\s*(where|what|when|why|how|who|which|can|could|do|does|is|are|will|would)\b.*\?\s*$", re.I | re.S
)
# Not "one"/"two": "the second one" must not read as the first option.
_ORDINALS = {"first": 0, "1": 0, "former": 0, "second": 1, "2": 1, "latter": 1}
_PERSON = re.compile(
    r"\b(talk|speak|chat)\s+(to|with)\s+(a\s+)?(human|person|agent|someone|representative|manager)\b|"
    r"\b(real|live)\s+(person|human|agent)\b|\bhuman\s+please\b|"
    r"\b(pass|put|transfer|connect|escalate)\s+(me\s+)?(through\s+)?(to|with)\s+(a\s+|an\s+)?"
    r"(human|person|agent|someone|somebody|representative|manager|colleague)\b",
    re.I,
)


def amount_in(text: str, state: dict[str, Any], settings: WorkspaceSettings) -> Money | None:
    """The money amount a request is about, in the workspace currency: the first amount read exactly in this
    message (refused mentions such as "$10-20" are skipped), else the amount a pending action carries."""
    for mention in find_money(text, currency=settings.currency, locale=settings.locale):
        if mention.money is not None:
            return mention.money
    pending = state.get("pending_action") or {}
    for value in (pending.get("slots") or {}).values():
        money = money_from_json(value)
        if money is not None and money.currency == settings.currency:
            return money
    return None


def amount_view(amount: Money | None) -> dict[str, str] | None:
    """An amount as a trace shows it: {"amount": "1500.00", "currency": "USD"}."""
    return money_to_json(amount) if amount is not None else None


def asks_for_person(text: str) -> bool:
    return bool(_PERSON.search(text))


def resolve_clarification(text: str, options: list[str], prediction: IntentPrediction) -> str | None:
    """Which of the offered intents the customer picked, by ordinal ("the second one") or by meaning."""
    lowered = text.lower()
    for word, index in _ORDINALS.items():
        if re.search(rf"\b{re.escape(word)}\b", lowered) and index < len(options):
            return options[index]
    ranked = [(prediction.intent, prediction.confidence), *prediction.alternatives]
    for intent, _ in ranked:
        if intent in options:
            return intent
    return None


def answers_awaited_slot(text: str, slot: SlotConfig | None, settings: WorkspaceSettings) -> bool:
    """The message holds what a pending action asked for: a value its slot's pattern matches, or an amount
    for a money slot. ("My number is (325) 784-8823" answers "what's your phone number?", whatever else the
    router thinks it resembles.) A free-text slot proves nothing, nor does a bare yes or no."""
    if slot is None:
        return False
    if slot.pattern:
        return re.search(slot.pattern, text) is not None
    if slot.type == "money":
        mentions = find_money(text, currency=settings.currency, locale=settings.locale)
        return any(m.money is not None for m in mentions)
    return False


def continues_previous(
    text: str, prediction: IntentPrediction, state: dict[str, Any], *, answers_pending: bool = False
) -> str | None:
    """The intent a message carries on from, when it is a follow-up rather than a new request.

    A pending action (waiting for a slot or a confirmation) keeps its intent when the message answers what
    it asked for, or unless the customer clearly moved to a new topic; a short or "and ..." message that the
    router cannot place keeps the last intent.
    """
    words = text.split()
    pending = state.get("pending_action")
    if pending:
        intent = str(pending.get("intent", ""))
        if answers_pending or prediction.intent == intent or prediction.confidence < 0.6:
            return intent
        if len(words) <= 4 and not (_NEW_QUESTION.match(text) and not prediction.out_of_scope):
            return intent
        return None
    last = state.get("last_intent")
    if not last or prediction.intent == last:
        return None
    # The clearer the follow-up form, the more the router must be sure of a new topic to override it.
    if _FOLLOW_UP.match(text):
        if last in {name for name, _ in prediction.alternatives}:
            return str(last)  # "and for my other order?": the previous topic is still a candidate
        needed = 0.85
    elif len(words) <= 4:
        needed = 0.7
    elif len(words) <= 6:
        needed = 0.5
    else:
        return None
    if prediction.out_of_scope or prediction.confidence < needed:
        return str(last)
    return None
