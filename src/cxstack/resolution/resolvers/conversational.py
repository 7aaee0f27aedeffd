"""The conversational mechanism: greetings, thanks, goodbyes and small talk answered in the workspace's words.

Never a handoff: a customer who says "thanks, bye" is done, not in need of a person. Small talk is answered
with what the assistant can do, so the conversation turns back to support.
"""

from __future__ import annotations

from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.models import TurnContext
from cxstack.resolution.registry import ResolverDeps

# Reply name in `replies` per built-in intent; an intent of this mechanism with another name gets small talk.
REPLY_FOR_INTENT = {
    "greeting": "greeting",
    "thanks": "thanks",
    "goodbye": "goodbye",
    "small_talk": "small_talk",
}


class ConversationalResolver:
    mechanism = "conversational"

    def __init__(self, deps: ResolverDeps) -> None:
        del deps  # the workspace's replies are all it needs

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
        reply_name = REPLY_FOR_INTENT.get(plan.intent, "small_talk")
        reply = ctx.workspace.reply(reply_name)
        if reply_name in ("greeting", "small_talk") and ctx.workspace.settings.scope:
            reply = f"{reply} I can help with {ctx.workspace.settings.scope}."
        return Outcome(kind="reply", confidence=1.0, reply=reply, detail={"reply": reply_name})
