"""Escalation packets: a human picks the conversation up without asking the customer anything twice."""

from __future__ import annotations

import math
from decimal import Decimal

from cxstack.domain.models import (
    ActionResult,
    EscalationId,
    EscalationPacket,
    FactCitation,
    Message,
    Priority,
    new_id,
)
from cxstack.domain.money import Money, format_money
from cxstack.domain.turn import BusinessContext, IntentPrediction
from cxstack.resolution.models import TurnContext
from cxstack.workspace.models import WorkspaceSettings

REASON_TEXT = {
    "never_automate": "this intent is never automated",
    "policy": "a policy rule requires a person",
    "out_of_scope": "the request is outside what the assistant handles",
    "low_confidence": "the assistant was not confident enough to answer",
    "no_grounded_answer": "no knowledge fact answers this",
    "unsupported_answer": "the composed answer says something its facts do not support",
    "amount_over_cap": "the amount is over the automated cap",
    "amount_cap_missing": "the action moves money but has no cap (max_amount), so it is never automated",
    "amount_currency_mismatch": "the customer gave the amount in another currency",
    "cap_currency_mismatch": "the rule cap and the action are in different currencies",
    "amount_not_money": "the action's amount slot does not hold money",
    "action_failed": "a back-office action failed",
    "internal_error": "an internal error interrupted the turn",
    "customer_requested": "the customer asked for a person",
    "clarification_exhausted": "the request stayed unclear after a clarifying question",
    "unsupported_language": "the customer wrote in a language the assistant does not support",
    "identity_required": "the request needs a verified customer",
    "identity_mismatch": "the customer asked about something that is not theirs",
    "unverified": "a step's output failed the verifier and was not sent",
    "chain_low_confidence": "confidence across the steps of this request fell below the workspace threshold",
    "agent_action_refused": "an agent asked, twice, for an action it may not use",
    "agent_invalid_command": "an agent's command was invalid after one repair",
    "agent_max_turns": "an agent used up its turns",
    "agent_escalated": "an agent asked for a person",
    "agent_not_configured": "the intent's agent is missing from the workspace",
    "llm_unavailable": "the language model was unavailable",
}


def reason_text(reason_code: str) -> str:
    return REASON_TEXT.get(reason_code.split(":")[0], reason_code.replace("_", " "))


def arr_text(arr: float, settings: WorkspaceSettings) -> str:
    """A customer's ARR in the workspace currency and locale, in whole units ("£12,000", "12.000 €")."""
    if not math.isfinite(arr):
        return "unknown"
    return format_money(Money(Decimal(str(arr)), settings.currency), settings.locale, whole_units=True)


def transcript_of(history: list[Message], current: Message) -> list[dict[str, str]]:
    messages = [*history, current] if all(m.id != current.id for m in history) else history
    return [{"role": m.role.value, "text": m.text, "at": m.created_at.isoformat()} for m in messages]


def build_packet(
    ctx: TurnContext,
    *,
    queue: str,
    priority: Priority,
    reason_code: str,
    prediction: IntentPrediction | None,
    business: BusinessContext | None,
    facts: list[FactCitation],
    actions: list[ActionResult],
    draft_reply: str | None = None,
    note: str | None = None,
) -> EscalationPacket:
    intent = prediction.intent if prediction else None
    intent_cfg = ctx.workspace.intent(intent) if intent else None
    customer = ctx.customer
    who = customer.name or str(customer.id)
    tier = business.tier if business else "unknown tier"
    # An intent's description is a verb phrase ("cancel an order before it ships"), as in clarifications.
    described = intent_cfg.description.rstrip(". ") if intent_cfg and intent_cfg.description else ""
    wants = (
        f"wants to {described[:1].lower() + described[1:]}"
        if described
        else f"wrote about {intent.replace('_', ' ') if intent else 'an unrecognised request'}"
    )
    parts = [
        f"{who} ({tier}, ARR {arr_text(customer.arr, ctx.workspace.settings)}) {wants}: "
        f"“{ctx.message.text.strip()[:280]}”."
    ]
    parts.append(f"Escalated because {reason_text(reason_code)}.")
    if note:
        parts.append(note)
    if customer.attributes:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(customer.attributes.items()))
        parts.append(f"Customer attributes: {shown}.")
    earlier = ctx.shared.steps
    if len(earlier) > 1 or (earlier and earlier[0].intent != intent):
        done_steps = "; ".join(
            f"{s.intent} by {s.agent or s.mechanism} ({s.kind}, confidence {s.confidence:.2f})"
            for s in earlier
        )
        parts.append(f"Steps this turn: {done_steps}.")
    facts = [*ctx.shared.facts, *(f for f in facts if f not in ctx.shared.facts)]
    actions = [*ctx.shared.actions, *(a for a in actions if a not in ctx.shared.actions)]
    if draft_reply:
        parts.append("A draft answer was withheld because the assistant was not confident; see the draft.")
    if business and business.fired_rules:
        parts.append(f"Rules fired: {', '.join(business.fired_rules)}.")
    failed = [a for a in actions if not a.ok]
    done = [a for a in actions if a.ok]
    if done:
        parts.append(f"Done already: {', '.join(a.action for a in done)}.")
    if failed:
        parts.append(f"Failed: {', '.join(f'{a.action} ({a.error or a.status_code})' for a in failed)}.")
    return EscalationPacket(
        id=EscalationId(new_id("esc")),
        conversation_id=ctx.conversation.id,
        queue=queue,
        priority=priority,
        reason_code=reason_code,
        summary=" ".join(parts),
        intent=intent,
        intent_confidence=prediction.confidence if prediction else None,
        customer={
            "id": str(customer.id),
            "name": customer.name,
            "email": customer.email,
            "plan": customer.plan,
            "arr": customer.arr,
            "segment": customer.segment,
            "tier": business.tier if business else None,
            "value": business.value if business else customer.arr,
            "verified": ctx.conversation.verified,
            "attributes": dict(customer.attributes),
        },
        fired_rules=list(business.fired_rules) if business else [],
        facts_used=facts,
        actions_tried=actions,
        transcript=transcript_of(ctx.history, ctx.message),
        draft_reply=draft_reply,
    )
