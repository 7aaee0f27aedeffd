"""The human mechanism: always a handoff, with a short note telling the customer what happens next."""

from __future__ import annotations

from cxstack.domain.models import Priority
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.models import TurnContext
from cxstack.resolution.registry import ResolverDeps


def handoff_reply(ctx: TurnContext, queue: str, priority: Priority) -> str:
    """The workspace's handoff words, naming the team only as the workspace names it to customers."""
    reply = ctx.workspace.reply("handoff", team=ctx.workspace.team_label(queue))
    # Only a high priority earns a promise about time: a promise we cannot keep is worse than none.
    if priority >= Priority.URGENT:
        return reply + " It's marked urgent, so someone will pick it up very shortly."
    if priority >= Priority.HIGH:
        return reply + " We're treating it as a priority, so you'll hear back shortly."
    return reply


class HumanResolver:
    mechanism = "human"

    def __init__(self, deps: ResolverDeps) -> None:
        del deps  # a human needs nothing from us but the plan

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
        reason = plan.reason if plan.reason and plan.reason != "intent_mechanism" else "human_mechanism"
        return Outcome(
            kind="handoff",
            confidence=1.0,
            reply=handoff_reply(ctx, plan.queue, plan.priority),
            handoff_reason=reason,
            detail={"queue": plan.queue, "priority": plan.priority.name.lower()},
        )
