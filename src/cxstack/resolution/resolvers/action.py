"""The action mechanism: fill slots over several turns, enforce caps and confirmations in code, call the back
office once (idempotently), and report the result in words.

Conversation state it reads and returns in `Outcome.state_updates` (the orchestrator persists it; a None value
clears the key):
  pending_action: {"action": name, "intent": name, "slots": {...}, "awaiting": <slot name> | "confirmation",
                   "currency_retries": n (money actions, after an amount in another currency)}
                  or None
  entities:       {slot name: last value} for identifier slots, so "and for my other order?" can reuse them

A money action (one with a money slot) runs `money_policy.check_amount` once the amount is known (to ask again
or hand off before asking for a confirmation) and again immediately before the connector call, which is the
gate: nothing reaches the back office that it did not allow. Money is shown in the workspace locale.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cxstack.domain.models import ActionResult, Role
from cxstack.domain.money import format_money, money_from_json
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.models import TurnContext
from cxstack.resolution.money_policy import (
    AMOUNT_CURRENCY_MISMATCH,
    AMOUNT_MISSING,
    AMOUNT_NOT_MONEY,
    AMOUNT_OVER_CAP,
    AmountCheck,
    ask_again,
    check_amount,
)
from cxstack.resolution.ports import ActionConnector
from cxstack.resolution.registry import ResolverDeps
from cxstack.resolution.slots import SlotValue, fill_slots, parse_yes_no, prompt_for
from cxstack.workspace.models import ActionConfig

PENDING_KEY = "pending_action"
ENTITIES_KEY = "entities"
CONFIRMATION = "confirmation"
_OTHER = re.compile(r"\b(other|another|different|second)\b", re.IGNORECASE)

CANCELLED_REPLY = "No problem, I haven't changed anything. Is there anything else I can help with?"
OVER_CAP_REPLY = "That needs a colleague's approval, so I'm passing you to a colleague who can help."
NOT_CONFIGURED_REPLY = "I can't do that myself, so I'm passing you to a colleague."


def idempotency_key(conversation_id: str, message_id: str, action: str) -> str:
    """The same turn re-run (after a crash) yields the same key: the back office executes the action once."""
    return hashlib.sha256(f"{conversation_id}:{message_id}:{action}".encode()).hexdigest()[:32]


def display(value: Any, locale: str = "en_US") -> str:
    money = money_from_json(value)
    if money is not None:
        return format_money(money, locale)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return str(value)


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)


def render_reply(template: str, values: Mapping[str, Any]) -> str | None:
    """`template` filled from `values`, or None when it names a field that is not there (or is malformed)."""
    try:
        return template.format_map(_Strict(values))
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        return None


def _label(action: ActionConfig) -> str:
    # The name, not the description: descriptions are written for the CX team, not for customers.
    return action.name.replace("_", " ")


def _wire(values: Mapping[str, SlotValue]) -> dict[str, Any]:
    """Slot values as the back office should see them: 25.0 is sent as 25, and an amount as a JSON number
    whose text is its exact decimal (1500.5: a float prints the shortest text that reads back as itself)."""
    return {k: _wire_value(v) for k, v in values.items()}


def _wire_value(value: SlotValue) -> Any:
    money = money_from_json(value)
    amount = money.amount if money is not None else value
    if isinstance(amount, Decimal):
        return int(amount) if amount == amount.to_integral_value() else float(amount)
    if isinstance(amount, float) and amount.is_integer():
        return int(amount)
    return amount


def _same(left: Any, right: Any) -> bool:
    """Two slot values say the same thing (an amount is the same amount, whatever words it came from)."""
    money_left, money_right = money_from_json(left), money_from_json(right)
    if money_left is not None or money_right is not None:
        return money_left == money_right
    return bool(left == right)


class ActionResolver:
    mechanism = "action"

    def __init__(self, deps: ResolverDeps) -> None:
        self.connectors: Mapping[str, ActionConnector] = deps.connectors

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
        action = ctx.workspace.action(plan.action) if plan.action else None
        if action is None:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=NOT_CONFIGURED_REPLY,
                handoff_reason="action_not_configured",
                state_updates={PENDING_KEY: None},
                detail={"action": plan.action},
            )
        state = ctx.conversation.state
        raw_pending = state.get(PENDING_KEY)
        pending: dict[str, Any] = (
            raw_pending if isinstance(raw_pending, dict) and raw_pending.get("action") == action.name else {}
        )
        pending_slots: dict[str, Any] = dict(pending.get("slots") or {})
        awaiting = pending.get("awaiting")
        entities: dict[str, Any] = dict(state.get(ENTITIES_KEY) or {})

        text = ctx.request_text or ctx.message.text
        confirmed = False
        if awaiting == CONFIRMATION:
            answer = parse_yes_no(text)
            if answer is False:
                return Outcome(
                    kind="reply",
                    confidence=1.0,
                    reply=CANCELLED_REPLY,
                    state_updates={PENDING_KEY: None},
                    detail={"action": action.name, "cancelled": True},
                )
            confirmed = answer is True

        reusable = {s.name for s in action.slots if s.type == "string" and not s.from_customer}
        earlier = [m.text for m in ctx.history if m.role == Role.CUSTOMER and m.id != ctx.message.id]
        remembered = {k: v for k, v in entities.items() if k in reusable}
        if not pending and _OTHER.search(text):
            earlier, remembered = [], {}  # "my other order": not the one we just talked about
        settings = ctx.workspace.settings
        currency = action.currency or settings.currency
        fill = fill_slots(
            action.slots,
            text,
            customer=ctx.customer,
            known={**remembered, **pending_slots},
            earlier_texts=earlier,
            awaiting=awaiting if awaiting != CONFIRMATION else None,
            currency=currency,
            locale=settings.locale,
        )
        values = dict(fill.values)
        entities.update({k: v for k, v in values.items() if k in reusable})
        # A value changed while we waited for a yes is a new request: it needs a new yes.
        if confirmed and any(not _same(pending_slots.get(k), v) for k, v in values.items()):
            confirmed = False
        currency_retries = int(pending.get("currency_retries") or 0)

        def waiting_on(slot_or_confirmation: str, reply: str, **extra: Any) -> Outcome:
            return Outcome(
                kind="ask",
                confidence=1.0,
                reply=reply,
                state_updates={
                    PENDING_KEY: {
                        "action": action.name,
                        "intent": plan.intent,
                        "slots": values,
                        "awaiting": slot_or_confirmation,
                        **({"currency_retries": currency_retries} if currency_retries else {}),
                        **extra,
                    },
                    ENTITIES_KEY: entities,
                },
                detail={"action": action.name, "slots": values, "awaiting": slot_or_confirmation},
            )

        money_slot = action.money_slot

        def amount_gate() -> AmountCheck | None:
            if not action.moves_money:
                return None
            if money_slot is None:  # amount_slot names no slot: nothing safe to check, so nothing runs
                return AmountCheck("handoff", AMOUNT_NOT_MONEY)
            return check_amount(
                values.get(money_slot.name),
                refusal=fill.refusals.get(money_slot.name),
                max_amount=action.max_amount,
                rule_cap=plan.cap_amount,
                currency=currency,
                rule_currency=settings.currency,
                currency_retries=currency_retries,
            )

        def refuse_amount(check: AmountCheck) -> Outcome:
            """Ask for the amount again (saying why), or hand off: the back office is never called."""
            if check.decision == "handoff" or money_slot is None:
                return Outcome(
                    kind="handoff",
                    confidence=0.0,
                    reply=OVER_CAP_REPLY if check.reason == AMOUNT_OVER_CAP else NOT_CONFIGURED_REPLY,
                    handoff_reason=check.reason,
                    state_updates={PENDING_KEY: None, ENTITIES_KEY: entities},
                    detail={"action": action.name, "slots": values, "amount_check": check.as_detail()},
                )
            values.pop(money_slot.name, None)
            retries = currency_retries + (1 if check.reason == AMOUNT_CURRENCY_MISMATCH else 0)
            why = ask_again(check, currency=currency, locale=settings.locale)
            outcome = waiting_on(money_slot.name, f"{why} {prompt_for(money_slot)}", currency_retries=retries)
            outcome.detail["amount_check"] = check.as_detail()
            return outcome

        early = amount_gate()
        if early is not None and not early.allowed and early.reason != AMOUNT_MISSING:
            return refuse_amount(early)

        if not fill.complete:
            first = fill.missing[0]
            prefix = "Sorry, I didn't catch that. " if first in fill.invalid and first == awaiting else ""
            return waiting_on(first, prefix + (fill.prompt or ""))

        if (action.requires_confirmation or plan.require_confirmation) and not confirmed:
            again = "Please answer yes or no. " if awaiting == CONFIRMATION else ""
            shown = {k: display(v, settings.locale) for k, v in values.items()}
            question = render_reply(action.confirmation_prompt, shown) if action.confirmation_prompt else None
            if question is None:
                summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown.items())
                question = f"Just to confirm: I'll {_label(action)} ({summary}). Shall I go ahead? (yes/no)"
            return waiting_on(CONFIRMATION, again + question)

        connector = self.connectors.get(action.connector)
        if connector is None:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=action.failure_reply,
                handoff_reason="connector_missing",
                state_updates={PENDING_KEY: None, ENTITIES_KEY: entities},
                detail={"action": action.name, "connector": action.connector},
            )
        gate = amount_gate()  # the gate: immediately before the back office, whatever happened above
        if gate is not None and not gate.allowed:
            return refuse_amount(gate)
        result: ActionResult = await connector.call(
            action, _wire(values), idempotency_key(ctx.conversation.id, ctx.message.id, action.name)
        )
        done_state = {PENDING_KEY: None, ENTITIES_KEY: entities}
        if not result.ok:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=action.failure_reply,
                actions=[result],
                handoff_reason="action_failed",
                state_updates=done_state,
                detail={"action": action.name, "status_code": result.status_code, "error": result.error},
            )
        fields = {**{k: display(v, settings.locale) for k, v in values.items()}, **result.response}
        reply = render_reply(action.success_reply, fields)
        return Outcome(
            kind="reply",
            confidence=1.0,
            reply=reply if reply is not None else f"Done: {_label(action)}.",
            actions=[result],
            state_updates=done_state,
            detail={
                "action": action.name,
                "slots": values,
                "reply_template_ok": reply is not None,
                **({"amount_check": gate.as_detail()} if gate is not None else {}),
            },
        )
