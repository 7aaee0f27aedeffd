"""Choose the mechanism, queue and limits for a turn. Pure: the same inputs always give the same plan.

`ResolutionPlan.reason` is a short machine-readable code (the handoff reason when a human takes over):
  never_automate           the intent is marked never_automate
  policy_rule:<id>[,<id>]  business.force_human, set by the policy rule(s) that fired
  force_human              business.force_human with no rule recorded
  intent_mechanism         the intent's configured mechanism
  out_of_scope             no intent matched the message
"""

from __future__ import annotations

from cxstack.domain.turn import BusinessContext, ResolutionPlan
from cxstack.workspace.models import IntentConfig, WorkspaceSettings

OUT_OF_SCOPE_INTENT = "out_of_scope"
HUMAN = "human"


def _queue(business: BusinessContext, intent: IntentConfig | None, settings: WorkspaceSettings) -> str:
    return business.queue or (intent.queue if intent else None) or settings.escalation.default_queue


def _force_human_reason(business: BusinessContext) -> str:
    return f"policy_rule:{','.join(business.forced_by)}" if business.forced_by else "force_human"


def plan(intent: IntentConfig, business: BusinessContext, settings: WorkspaceSettings) -> ResolutionPlan:
    if intent.never_automate:
        mechanism, reason = HUMAN, "never_automate"
    elif business.force_human:
        mechanism, reason = HUMAN, _force_human_reason(business)
    else:
        mechanism, reason = intent.mechanism, "intent_mechanism"
    forced = mechanism == HUMAN and reason != "intent_mechanism"
    return ResolutionPlan(
        intent=intent.name,
        mechanism=mechanism,
        queue=_queue(business, intent, settings),
        priority=business.priority,
        # A human is the end of the line: nothing to fall back to once a rule or flag forced one.
        fallback=None if forced or intent.fallback == mechanism else intent.fallback,
        action=intent.action,
        fact_tags=tuple(intent.fact_tags),
        cap_amount=business.cap_amount,
        require_confirmation=business.require_confirmation,
        reason=reason,
    )


def plan_out_of_scope(
    settings: WorkspaceSettings, business: BusinessContext, *, mechanism: str = "content"
) -> ResolutionPlan:
    """A message no intent matched. By default the knowledge base gets a chance (an unrouted question may
    still have a fact that answers it), with a human as the fallback; a forced human wins, as for intents."""
    if business.force_human:
        mechanism, reason, fallback = HUMAN, _force_human_reason(business), None
    else:
        reason = "out_of_scope"
        fallback = None if mechanism == HUMAN else HUMAN
    return ResolutionPlan(
        intent=OUT_OF_SCOPE_INTENT,
        mechanism=mechanism,
        queue=_queue(business, None, settings),
        priority=business.priority,
        fallback=fallback,
        cap_amount=business.cap_amount,
        require_confirmation=business.require_confirmation,
        reason=reason,
    )
