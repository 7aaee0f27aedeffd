"""The confidence policy: after a resolver ran, continue, retry once with the fallback, or escalate. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from cxstack.domain.models import Decision
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.workspace.models import Thresholds

# Handoffs that a different mechanism cannot fix: policy said so, or an action already failed for real.
_FINAL_HANDOFFS = frozenset(
    {"never_automate", "policy_rule", "force_human", "amount_over_cap", "action_failed", "connector_missing"}
)


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    decision: Decision
    reason: str
    retry_mechanism: str | None = None


def decide(outcome: Outcome, plan: ResolutionPlan, thresholds: Thresholds, *, attempt: int) -> PolicyVerdict:
    can_retry = attempt == 0 and plan.fallback is not None and plan.fallback != plan.mechanism
    if outcome.kind == "handoff":
        reason = outcome.handoff_reason or "handoff"
        final = plan.mechanism == "human" or reason.split(":")[0] in _FINAL_HANDOFFS
        if can_retry and not final and plan.fallback != "human":
            return PolicyVerdict(Decision.RETRY, reason, plan.fallback)
        return PolicyVerdict(Decision.ESCALATE, reason)
    if outcome.kind == "ask":
        return PolicyVerdict(Decision.CONTINUE, "waiting_for_customer")
    if outcome.confidence < thresholds.answer_min_confidence:
        if can_retry and plan.fallback != "human":
            return PolicyVerdict(Decision.RETRY, "low_confidence", plan.fallback)
        return PolicyVerdict(Decision.ESCALATE, "low_confidence")
    return PolicyVerdict(Decision.CONTINUE, "confident")


def should_clarify(
    top: float, runner_up: float, thresholds: Thresholds, *, clarifications_so_far: int
) -> bool:
    """Two plausible intents too close to call: ask rather than guess, but only so often per conversation."""
    if clarifications_so_far >= thresholds.max_clarifications:
        return False
    return runner_up >= thresholds.route_min_confidence / 2 and (top - runner_up) < thresholds.clarify_margin
