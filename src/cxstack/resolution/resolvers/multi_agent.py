"""The multi_agent mechanism: several specialist agents resolve one intent, one step each, in the order
the intent lists them (`agents:` in intents.yaml) — e.g. an order agent finds the order, then a refunds agent
refunds it.

The turn's shared context (facts used, action results, confidence so far) is passed whole to each agent,
and every handoff between them is logged there and traced. Each step's output is checked by the verifier
before the next step starts: a step that fails a check, hands off to a person, or leaves the confidence
across the steps below `thresholds.chain_min_confidence` ends the resolution with a person, with everything
done so far in the escalation packet. A step that waits for the customer (a slot, a confirmation) resumes
on their next message.

Conversation state it reads and returns: multi_agent: {"intent", "index"} (the step in progress) or None.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from cxstack.domain.models import ActionResult, FactCitation
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.models import TurnContext, with_updates
from cxstack.resolution.registry import ResolverDeps
from cxstack.resolution.resolvers.agent import AGENT_KEY, AGENT_NOT_CONFIGURED, AgentResolver
from cxstack.resolution.verifier import evidence_for, verify_step

MULTI_KEY = "multi_agent"
CHAIN_LOW_CONFIDENCE = "chain_low_confidence"


class MultiAgentResolver:
    mechanism = "multi_agent"

    def __init__(self, deps: ResolverDeps) -> None:
        self.agents = AgentResolver(deps)

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome:
        intent = ctx.workspace.intent(plan.intent)
        names = list(intent.agents) if intent else []
        missing = [n for n in names if ctx.workspace.agent(n) is None]
        if len(names) < 2 or missing:
            return Outcome(
                kind="handoff",
                confidence=0.0,
                handoff_reason=AGENT_NOT_CONFIGURED,
                state_updates={MULTI_KEY: None},
                detail={"multi_agent": {"agents": names, "missing": missing}},
            )
        saved = ctx.conversation.state.get(MULTI_KEY)
        resumed = isinstance(saved, dict) and saved.get("intent") == plan.intent
        index = int(saved.get("index") or 0) if resumed and isinstance(saved, dict) else 0
        thresholds = ctx.workspace.settings.thresholds
        run = _Run()
        while index < len(names):
            name = names[index]
            if run.steps:
                source = f"{plan.intent}/{names[index - 1]}"
                ctx.shared.hand_off(source, f"{plan.intent}/{name}", "next_step")
            outcome = await self.agents.run(ctx, plan, name)
            check = verify_step(
                outcome,
                mechanism="agent",
                evidence=[*evidence_for(ctx, outcome), *run.replies],
                min_confidence=thresholds.answer_min_confidence,
            )
            working = (outcome.detail.get("agent") or {}).get("name") or name
            ctx.shared.record(plan.intent, "agent", str(working), outcome, check.failed)
            run.add(name, outcome, check.failed)
            if outcome.kind == "handoff":
                return run.handoff(outcome.handoff_reason or "agent_escalated", outcome.detail.get("draft"))
            if not check.passed:
                return run.handoff(f"unverified:{check.failed[0]}", outcome.reply)
            if ctx.shared.confidence < thresholds.chain_min_confidence:
                return run.handoff(CHAIN_LOW_CONFIDENCE, outcome.reply)
            if outcome.reply:
                run.replies.append(outcome.reply)
            if outcome.kind == "ask" or outcome.state_updates.get(AGENT_KEY):
                # This step waits for the customer: the next message resumes it.
                return run.outcome("ask" if outcome.kind == "ask" else "reply", ctx, plan, index)
            # The step is done: the next one starts on the state this one left.
            ctx.conversation = replace(
                ctx.conversation, state=with_updates(ctx.conversation.state, run.updates)
            )
            index += 1
        return run.outcome("reply", ctx, plan, None)


class _Run:
    """What the steps of this turn produced, gathered into one outcome."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.replies: list[str] = []
        self.updates: dict[str, Any] = {}
        self.facts: list[FactCitation] = []
        self.actions: list[ActionResult] = []

    def add(self, name: str, outcome: Outcome, failed: tuple[str, ...]) -> None:
        self.steps.append(
            {
                "agent": name,
                "kind": outcome.kind,
                "confidence": round(outcome.confidence, 4),
                "failed_checks": list(failed),
                "agent_steps": (outcome.detail.get("agent") or {}).get("steps", []),
            }
        )
        self.updates.update(outcome.state_updates)
        self.facts += [f for f in outcome.facts if f not in self.facts]
        self.actions += [a for a in outcome.actions if a not in self.actions]

    def handoff(self, reason: str, draft: object) -> Outcome:
        detail: dict[str, Any] = {"multi_agent": {"steps": self.steps}}
        if draft:
            detail["draft"] = str(draft)
        return Outcome(
            kind="handoff",
            confidence=0.0,
            said=" ".join(self.replies) or None,
            facts=self.facts,
            actions=self.actions,
            handoff_reason=reason,
            state_updates={**self.updates, MULTI_KEY: None, AGENT_KEY: None},
            detail=detail,
        )

    def outcome(
        self, kind: Literal["ask", "reply"], ctx: TurnContext, plan: ResolutionPlan, index: int | None
    ) -> Outcome:
        waiting = {"intent": plan.intent, "index": index} if index is not None else None
        return Outcome(
            kind=kind,
            confidence=ctx.shared.confidence,
            reply=" ".join(self.replies) or None,
            facts=self.facts,
            actions=self.actions,
            state_updates={**self.updates, MULTI_KEY: waiting},
            detail={"multi_agent": {"steps": self.steps, "done": index is None}},
        )
