"""The action mechanism: fill slots over several turns, enforce caps and confirmations in code, call the back
office once (idempotently), and report the result in words.

Conversation state it reads and returns in `Outcome.state_updates` (the orchestrator persists it; a None value
clears the key):
  pending_action: {"action": name, "intent": name, "slots": {...}, "awaiting": <slot name> | "confirmation",
                   "currency_retries": n (money actions, after an amount in another currency)}
                  or None
  entities:       {slot name: last value} for identifier slots, so "and for my other order?" can reuse them
  money_moved:    {action name: amount moved so far in this conversation, as a decimal string}

Identity: an action that is not `public` runs only for a verified customer; an anonymous one is taken through
the workspace's verification action first (its own pending action, with "verifying_for"), or handed to a
person. `from_customer` slots come from the verified profile only. An action with an `owner` rule checks, on
the back office's own answer, that the object belongs to the customer — before asking for a confirmation when
it changes something (`check_with`), before showing anything when it reads — and answers "not found" exactly
as for an object that does not exist.

A money action (one with a money slot) runs `money_policy.check_amount` once the amount is known (to ask again
or hand off before asking for a confirmation) and again immediately before the connector call, which is the
gate: nothing reaches the back office that it did not allow. The caps hold for everything the action moved in
the conversation, not for each call: what earlier calls moved comes off them, so one refund above the cap
cannot be split into several below it. Money is shown in the workspace locale.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from cxstack.domain.models import ActionResult, CustomerId
from cxstack.domain.money import format_money, money_from_json
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.identity import IDENTITY_MISMATCH, IDENTITY_REQUIRED, lookup, owns
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
MOVED_KEY = "money_moved"
CONFIRMATION = "confirmation"
_OTHER = re.compile(r"\b(other|another|different|second)\b", re.IGNORECASE)

NOT_CONFIGURED_REPLY = "I can't do that myself, so I'm passing you to a colleague."
MAX_OWNERSHIP_MISSES = 3


def _team(ctx: TurnContext, plan: ResolutionPlan) -> str:
    return ctx.workspace.team_label(plan.queue)


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


def _schema_failures(values: Mapping[str, Any], schemas: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """The slots whose value fails the agent's JSON schema for it, each with the reason in words (an amount is
    checked as its number)."""
    if not schemas:
        return {}
    from jsonschema import Draft202012Validator

    failures: dict[str, str] = {}
    for name, schema in schemas.items():
        if name not in values:
            continue
        value = values[name]
        money = money_from_json(value)
        checked = float(money.amount) if money is not None else value
        error = next(iter(Draft202012Validator(schema).iter_errors(checked)), None)
        if error is not None:
            failures[name] = f"That {name.replace('_', ' ')} doesn't work: {error.message}."
    return failures


def _left(cap: Decimal | None, moved: Decimal) -> Decimal | None:
    """What a cap still allows after `moved` went out in this conversation (None: no cap)."""
    return None if cap is None else max(cap - moved, Decimal(0))


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
        if not action.public and not ctx.conversation.verified:
            return await self._verify(ctx, plan, action)
        state = ctx.conversation.state
        raw_pending = state.get(PENDING_KEY)
        pending: dict[str, Any] = (
            raw_pending if isinstance(raw_pending, dict) and raw_pending.get("action") == action.name else {}
        )
        pending_slots: dict[str, Any] = dict(pending.get("slots") or {})
        awaiting = pending.get("awaiting")
        entities: dict[str, Any] = dict(state.get(ENTITIES_KEY) or {})
        moved_so_far: dict[str, Any] = dict(state.get(MOVED_KEY) or {})
        moved = Decimal(str(moved_so_far.get(action.name) or 0))

        text = ctx.request_text or ctx.message.text
        confirmed = False
        if awaiting == CONFIRMATION:
            answer = parse_yes_no(text)
            if answer is False:
                return Outcome(
                    kind="reply",
                    confidence=1.0,
                    reply=ctx.workspace.reply("cancelled"),
                    state_updates={PENDING_KEY: None},
                    detail={"action": action.name, "cancelled": True},
                )
            confirmed = answer is True

        reusable = {s.name for s in action.slots if s.type == "string" and not s.from_customer}
        earlier = ctx.earlier_customer_texts()
        remembered = {k: v for k, v in entities.items() if k in reusable}
        if not pending and _OTHER.search(text):
            earlier, remembered = [], {}  # "my other order": not the one we just talked about
        settings = ctx.workspace.settings
        currency = action.currency or settings.currency
        fill = fill_slots(
            action.slots,
            text,
            customer=ctx.customer,
            known={**ctx.proposed_slots, **remembered, **pending_slots},
            earlier_texts=earlier,
            awaiting=awaiting if awaiting != CONFIRMATION else None,
            currency=currency,
            locale=settings.locale,
        )
        values = dict(fill.values)
        rejected = _schema_failures(values, ctx.slot_schemas)
        for name in rejected:
            values.pop(name, None)
        entities.update({k: v for k, v in values.items() if k in reusable})
        # A value changed while we waited for a yes is a new request: it needs a new yes.
        if confirmed and any(not _same(pending_slots.get(k), v) for k, v in values.items()):
            confirmed = False
        currency_retries = int(pending.get("currency_retries") or 0)
        # The object ids (the check action's slots) already found to be the customer's in this request.
        owner_ok_for: dict[str, Any] | None = pending.get("owner_ok_for")

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
                        **({"owner_ok_for": owner_ok_for} if owner_ok_for else {}),
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
                max_amount=_left(action.max_amount, moved),
                rule_cap=_left(plan.cap_amount, moved),
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
                    reply=(
                        ctx.workspace.reply("over_cap", team=_team(ctx, plan))
                        if check.reason == AMOUNT_OVER_CAP
                        else NOT_CONFIGURED_REPLY
                    ),
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

        # Ownership first: as soon as the object is named (before asking for an amount or a yes), and once
        # per object, the back office's own answer says whether it is the customer's.
        connector = self.connectors.get(action.connector)
        customer_id = str(ctx.customer.id)
        misses = int(pending.get("ownership_misses") or 0)
        checker = (
            ctx.workspace.action(action.owner.check_with)
            if action.owner and action.owner.check_with
            else None
        )
        if checker is not None and connector is not None and action.owner is not None:
            needed = {s.name for s in checker.slots if s.required}
            named = {k: v for k, v in values.items() if k in {s.name for s in checker.slots}}
            if needed <= set(named) and owner_ok_for != named:
                check = await connector.call(
                    checker,
                    _wire(named),
                    idempotency_key(ctx.conversation.id, ctx.message.id, checker.name),
                    customer_id=customer_id,
                )
                if not check.dry_run and not (check.ok and owns(check.response, action.owner, ctx.customer)):
                    owner_ok_for = None
                    return self._not_theirs(ctx, plan, action, values, entities, check, misses, waiting_on)
                owner_ok_for = named

        early = amount_gate()
        if early is not None and not early.allowed and early.reason != AMOUNT_MISSING:
            return refuse_amount(early)

        from_profile = [s.name for s in action.slots if s.from_customer and s.name in fill.missing]
        if from_profile:  # never asked for: whose account it is comes from the verified profile alone
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=ctx.workspace.reply("identity_required", team=_team(ctx, plan)),
                handoff_reason=IDENTITY_REQUIRED,
                state_updates={PENDING_KEY: None, ENTITIES_KEY: entities},
                detail={"action": action.name, "profile_lacks": from_profile},
            )

        if rejected:  # an agent's slot rule refused the value: ask again, saying why
            name, why = next(iter(rejected.items()))
            slot = next(s for s in action.slots if s.name == name)
            return waiting_on(name, f"{why} {prompt_for(slot)}")

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
            action,
            _wire(values),
            idempotency_key(ctx.conversation.id, ctx.message.id, action.name),
            customer_id=customer_id,
        )
        # A read checks its own answer, and nothing of someone else's object is shown or kept.
        own_answer = action.owner is not None and checker is None and not result.dry_run
        if own_answer and not (result.ok and owns(result.response, action.owner, ctx.customer)):  # type: ignore[arg-type]
            return self._not_theirs(ctx, plan, action, values, entities, result, misses, waiting_on)
        done_state: dict[str, Any] = {PENDING_KEY: None, ENTITIES_KEY: entities}
        if result.ok and gate is not None and gate.amount is not None:
            done_state[MOVED_KEY] = {**moved_so_far, action.name: str(moved + gate.amount.amount)}
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

    def _not_theirs(
        self,
        ctx: TurnContext,
        plan: ResolutionPlan,
        action: ActionConfig,
        values: dict[str, SlotValue],
        entities: dict[str, Any],
        result: ActionResult,
        misses: int,
        waiting_on: Any,
    ) -> Outcome:
        """The object is not the customer's, or does not exist: the same words either way, the truth in the
        trace, and after a few misses a person."""
        identifying = _identifying_slot(action)
        attempted = values.get(identifying) if identifying else None
        exists = result.ok or (result.status_code is not None and result.status_code != 404)
        trace = {
            "action": action.name,
            "ownership": {
                "object": attempted,
                "exists": exists,
                "owner_ok": False,
                "checked_with": result.action,
                "status_code": result.status_code,
            },
        }
        hidden = ActionResult(
            action=result.action,
            ok=False,
            status_code=result.status_code,
            request=result.request,
            response={},  # never keep another customer's data in this conversation's record
            attempts=result.attempts,
            error="not found for this customer",
        )
        if result.status_code is None or (not result.ok and result.status_code >= 500):
            # The back office did not answer: that is a failed action, not an ownership verdict.
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=action.failure_reply,
                actions=[hidden],
                handoff_reason="action_failed",
                state_updates={PENDING_KEY: None, ENTITIES_KEY: entities},
                detail={**trace, "error": result.error},
            )
        if misses + 1 >= MAX_OWNERSHIP_MISSES or identifying is None:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=ctx.workspace.reply("identity_required", team=_team(ctx, plan)),
                actions=[hidden],
                handoff_reason=IDENTITY_MISMATCH,
                state_updates={PENDING_KEY: None, ENTITIES_KEY: {}},
                detail=trace,
            )
        values.pop(identifying, None)
        entities.pop(identifying, None)
        outcome: Outcome = waiting_on(
            identifying,
            ctx.workspace.reply("not_found", value=str(attempted)),
            ownership_misses=misses + 1,
        )
        outcome.actions = [hidden]
        outcome.detail.update(trace)
        return outcome

    async def _verify(self, ctx: TurnContext, plan: ResolutionPlan, action: ActionConfig) -> Outcome:
        """An anonymous customer asked for something account-specific: the workspace's verification step, or
        a person when the workspace declares none."""
        verification = ctx.workspace.settings.identity.verification
        checker = ctx.workspace.action(verification.action) if verification else None
        connector = self.connectors.get(checker.connector) if checker else None
        if verification is None or checker is None or connector is None:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=ctx.workspace.reply("identity_required", team=_team(ctx, plan)),
                handoff_reason=IDENTITY_REQUIRED,
                state_updates={PENDING_KEY: None},
                detail={"action": action.name, "verified": False},
            )
        raw_pending = ctx.conversation.state.get(PENDING_KEY)
        pending: dict[str, Any] = (
            raw_pending if isinstance(raw_pending, dict) and raw_pending.get("action") == checker.name else {}
        )
        attempts = int(pending.get("attempts") or 0)
        text = ctx.request_text or ctx.message.text
        fill = fill_slots(
            checker.slots,
            text,
            customer=ctx.customer,
            known=dict(pending.get("slots") or {}),
            awaiting=pending.get("awaiting"),
            currency=ctx.workspace.settings.currency,
            locale=ctx.workspace.settings.locale,
        )

        def asking(slot: str, reply: str, tries: int) -> Outcome:
            return Outcome(
                kind="ask",
                confidence=1.0,
                reply=reply,
                state_updates={
                    PENDING_KEY: {
                        "action": checker.name,
                        "intent": plan.intent,
                        "verifying_for": action.name,
                        "slots": dict(fill.values),
                        "awaiting": slot,
                        "attempts": tries,
                    }
                },
                detail={"action": checker.name, "verifying_for": action.name, "awaiting": slot},
            )

        if not fill.complete:
            intro = "" if pending else f"{verification.intro} "
            return asking(fill.missing[0], intro + (fill.prompt or ""), attempts)
        result = await connector.call(
            checker,
            _wire(fill.values),
            idempotency_key(ctx.conversation.id, ctx.message.id, checker.name),
            customer_id=None,
        )
        found = lookup(result.response, verification.customer_field) if result.ok else None
        detail = {
            "action": checker.name,
            "verifying_for": action.name,
            "status_code": result.status_code,
            "matched": bool(found),
        }
        hidden = ActionResult(
            action=result.action,
            ok=result.ok,
            status_code=result.status_code,
            request={"action": checker.name},  # the details the customer gave stay out of the record
            response={},
            attempts=result.attempts,
            error=result.error,
            dry_run=result.dry_run,
        )
        if found not in (None, ""):
            return Outcome(
                kind="reply",
                confidence=1.0,
                reply=ctx.workspace.reply("verified"),
                actions=[hidden],
                state_updates={PENDING_KEY: None},
                detail=detail,
                verified_customer=CustomerId(str(found)),
            )
        if (
            result.status_code is None
            or result.status_code >= 500
            or attempts + 1 >= verification.max_attempts
        ):
            return Outcome(
                kind="handoff",
                confidence=0.0,
                reply=ctx.workspace.reply("identity_required", team=_team(ctx, plan)),
                actions=[hidden],
                handoff_reason=IDENTITY_REQUIRED,
                state_updates={PENDING_KEY: None},
                detail=detail,
            )
        first = checker.slots[0] if checker.slots else None
        prompt = prompt_for(first) if first else ""
        fill = replace(fill, values={})
        outcome = asking(
            first.name if first else "", ctx.workspace.reply("not_verified", prompt=prompt), attempts + 1
        )
        outcome.actions = [hidden]
        outcome.detail.update(detail)
        return outcome


def _identifying_slot(action: ActionConfig) -> str | None:
    """The slot naming the object the customer asked about: the first string slot the customer gives."""
    return next((s.name for s in action.slots if s.type == "string" and not s.from_customer), None)
