"""The human mechanism: always a handoff, with a short note telling the customer what happens next."""

from __future__ import annotations

from cxstack.domain.models import Priority
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.models import TurnContext
from cxstack.resolution.registry import ResolverDeps


def handoff_reply(ctx: TurnContext, queue: str, priority: Priority, intent: str | None = None) -> str:
    """The intent's own handoff words if it has them (safety instructions, say), else the workspace's,
    naming the team only as the workspace names it to customers."""
    intent_config = ctx.workspace.intent(intent) if intent else None
    team = ctx.workspace.team_label(queue)
    if intent_config is not None and intent_config.handoff_reply:
        return ctx.workspace.render(intent_config.handoff_reply, team=team)
    reply = ctx.workspace.reply("handoff", team=team)
    # Only a high priority earns a promise about time: a promise we cannot keep is worse than none.
    if priority >= Priority.URGENT:
        return f"{reply} {ctx.workspace.reply('urgent_note')}"
    if priority >= Priority.HIGH:
        return f"{reply} {ctx.workspace.reply('priority_note')}"
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
            reply=handoff_reply(ctx, plan.queue, plan.priority, plan.intent),
            handoff_reason=reason,
            detail={"queue": plan.queue, "priority": plan.priority.name.lower()},
        )
