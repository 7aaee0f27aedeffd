"""The turn loop: strategy, routing, resolution plan, resolver, confidence policy — each step traced."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from cxstack.domain.conversation_state import Transition
from cxstack.domain.models import (
    ConversationStatus,
    CustomerId,
    Decision,
    EscalationId,
    EscalationPacket,
    Layer,
    Priority,
    Trace,
    TraceId,
    TraceStep,
    new_id,
)
from cxstack.domain.turn import BusinessContext, IntentPrediction, Outcome, ResolutionPlan
from cxstack.orchestration import context as turn_context
from cxstack.orchestration.handoff import build_packet
from cxstack.orchestration.policy import decide, should_clarify
from cxstack.orchestration.ports import ResolverLookup, Router
from cxstack.resolution.models import TurnContext
from cxstack.resolution.planner import plan as plan_resolution
from cxstack.resolution.planner import plan_out_of_scope
from cxstack.strategy.policy import assess


@dataclass(slots=True)
class TurnResult:
    trace: Trace
    reply: str | None
    state: dict[str, Any]
    # Ownership changes this turn makes, applied by the store through the state machine.
    transitions: tuple[Transition, ...] = ()
    escalation: EscalationPacket | None = None
    # The customer's messages join the open escalation packet (a person has, or is about to get, them).
    attach_to_escalation: bool = False
    # Reopen this packet instead of creating a new one (the bot escalates again soon after a hand-back).
    reopen_escalation: EscalationId | None = None
    # A verification step proved who the customer is: the conversation is bound to this customer.
    verified_customer: CustomerId | None = None


@dataclass(slots=True)
class _Recorder:
    steps: list[TraceStep] = field(default_factory=list)

    @contextmanager
    def step(self, layer: Layer, name: str, input: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Times a step; the caller fills the yielded dict with `output` and optional `confidence`."""
        slot: dict[str, Any] = {"output": {}, "confidence": None}
        started = time.perf_counter()
        try:
            yield slot
        finally:
            self.steps.append(
                TraceStep(
                    layer=layer,
                    name=name,
                    input=input,
                    output=slot["output"],
                    confidence=slot["confidence"],
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            )


class Orchestrator:
    def __init__(
        self, router: Router, resolvers: ResolverLookup, *, clock: Callable[[], float] = time.perf_counter
    ):
        self._router = router
        self._resolvers = resolvers
        self._clock = clock

    async def handle_turn(self, ctx: TurnContext) -> TurnResult:
        started = self._clock()
        rec = _Recorder()
        state = dict(ctx.conversation.state)
        if ctx.conversation.status in (ConversationStatus.WAITING, ConversationStatus.PERSON):
            return self._with_human(ctx, rec, state, started)

        prediction = self._route(ctx, rec, state)
        ctx.prediction = prediction
        business = self._assess(ctx, rec, prediction.intent, state)
        ctx.business = business

        if prediction.intent is None:
            return self._unplaced(ctx, rec, state, prediction, business, started)
        if turn_context.asks_for_person(ctx.message.text):
            intent_cfg = ctx.workspace.intent(prediction.intent)
            queue = business.queue or (intent_cfg.queue if intent_cfg else None)
            return self._escalate(
                ctx,
                rec,
                state,
                prediction,
                business,
                "customer_requested",
                started,
                queue=queue,
                mechanism=None,
            )
        clarify = self._maybe_clarify(ctx, rec, state, prediction, started)
        if clarify is not None:
            return clarify

        intent_cfg = ctx.workspace.intent(prediction.intent)
        assert intent_cfg is not None, "the router only predicts intents of the workspace"
        with rec.step(Layer.RESOLUTION, "plan", {"intent": intent_cfg.name}) as s:
            plan = plan_resolution(intent_cfg, business, ctx.workspace.settings)
            s["output"] = _plan_view(plan)

        outcome, plan = await self._resolve_with_retry(ctx, rec, plan)
        for key, value in outcome.state_updates.items():
            if value is None:  # resolvers clear a key by setting it to None
                state.pop(key, None)
            else:
                state[key] = value
        state["last_intent"] = plan.intent
        state.pop("clarify", None)
        if outcome.kind == "handoff":
            reason = outcome.handoff_reason or "low_confidence"
            return self._escalate(
                ctx, rec, state, prediction, business, reason, started,
                queue=plan.queue, mechanism=plan.mechanism, outcome=outcome, priority=plan.priority,
            )  # fmt: skip
        return self._finish(
            ctx,
            rec,
            state,
            prediction,
            plan.mechanism,
            Decision.CONTINUE,
            "automated",
            outcome.reply,
            started,
        )

    # --- steps ---------------------------------------------------------------------------------------------

    def _route(self, ctx: TurnContext, rec: _Recorder, state: dict[str, Any]) -> IntentPrediction:
        thresholds = ctx.workspace.settings.thresholds
        with rec.step(Layer.ORCHESTRATION, "route", {"text": ctx.message.text}) as s:
            raw = self._router.predict(ctx.message.text, oos_threshold=thresholds.route_min_confidence)
            prediction, how = raw, "router"
            clarify = state.get("clarify")
            picked = (
                turn_context.resolve_clarification(ctx.message.text, clarify["options"], raw)
                if clarify
                else None
            )
            carried = turn_context.continues_previous(ctx.message.text, raw, state)
            # Alternatives are the router's view of the message alone; once context decided, they are moot.
            if picked:
                prediction, how = IntentPrediction(picked, max(raw.confidence, 0.5)), "clarified"
            elif carried:
                prediction, how = IntentPrediction(carried, raw.confidence), "context"
            elif state.get("pending_action"):
                state.pop("pending_action")  # the customer moved on to something else
                how = "router (pending action dropped)"
            s["output"] = {
                "intent": prediction.intent,
                "confidence": round(raw.confidence, 4),
                "alternatives": [[i, round(p, 4)] for i, p in raw.alternatives],
                "out_of_scope": raw.out_of_scope,
                "router_intent": raw.intent,
                "decided_by": how,
            }
            s["confidence"] = raw.confidence
        return prediction

    def _assess(
        self, ctx: TurnContext, rec: _Recorder, intent: str | None, state: dict[str, Any]
    ) -> BusinessContext:
        amount = turn_context.amount_in(ctx.message.text, state)
        with rec.step(
            Layer.STRATEGY,
            "assess",
            {
                "customer": str(ctx.customer.id),
                "intent": intent,
                "channel": ctx.message.channel,
                "amount": amount,
            },
        ) as s:
            business = assess(
                ctx.customer,
                intent=intent,
                channel=ctx.message.channel,
                amount=amount,
                now=ctx.now,
                strategy=ctx.workspace.strategy,
            )
            s["output"] = {
                "tier": business.tier,
                "value": business.value,
                "priority": business.priority.name.lower(),
                "fired_rules": list(business.fired_rules),
                "force_human": business.force_human,
                "require_confirmation": business.require_confirmation,
                "cap_amount": business.cap_amount,
                "queue": business.queue,
                "tone": business.tone,
            }
        return business

    def _maybe_clarify(
        self,
        ctx: TurnContext,
        rec: _Recorder,
        state: dict[str, Any],
        prediction: IntentPrediction,
        started: float,
    ) -> TurnResult | None:
        if not prediction.alternatives or state.get("pending_action") or state.get("clarify"):
            return None
        runner_up, runner_up_p = prediction.alternatives[0]
        asked = int(state.get("clarifications", 0))
        thresholds = ctx.workspace.settings.thresholds
        if not should_clarify(prediction.confidence, runner_up_p, thresholds, clarifications_so_far=asked):
            return None
        options = [str(prediction.intent), runner_up]
        described = [_describe(ctx, o) for o in options]
        reply = (
            f"Just to be sure I help with the right thing: do you want to {described[0]}, or {described[1]}?"
        )
        with rec.step(Layer.ORCHESTRATION, "decide", {"options": options}) as s:
            s["output"] = {"decision": Decision.CLARIFY.value, "reason": "close_call"}
        state["clarify"] = {"options": options}
        state["clarifications"] = asked + 1
        return self._finish(ctx, rec, state, prediction, None, Decision.CLARIFY, "automated", reply, started)

    async def _resolve_with_retry(
        self, ctx: TurnContext, rec: _Recorder, plan: ResolutionPlan
    ) -> tuple[Outcome, ResolutionPlan]:
        thresholds = ctx.workspace.settings.thresholds
        outcome = await self._run_resolver(ctx, rec, plan)
        verdict = decide(outcome, plan, thresholds, attempt=0)
        with rec.step(Layer.ORCHESTRATION, "decide", {"mechanism": plan.mechanism}) as s:
            s["output"] = {"decision": verdict.decision.value, "reason": verdict.reason}
        if verdict.decision == Decision.RETRY and verdict.retry_mechanism:
            plan = _with_mechanism(plan, verdict.retry_mechanism)
            ctx.attempt = 1
            outcome = await self._run_resolver(ctx, rec, plan)
            verdict = decide(outcome, plan, thresholds, attempt=1)
            with rec.step(Layer.ORCHESTRATION, "decide", {"mechanism": plan.mechanism, "attempt": 1}) as s:
                s["output"] = {"decision": verdict.decision.value, "reason": verdict.reason}
        if verdict.decision == Decision.ESCALATE and outcome.kind != "handoff":
            outcome.kind = "handoff"
            outcome.handoff_reason = verdict.reason
        return outcome, plan

    async def _run_resolver(self, ctx: TurnContext, rec: _Recorder, plan: ResolutionPlan) -> Outcome:
        layer = Layer.KNOWLEDGE if plan.mechanism == "content" else Layer.RESOLUTION
        with rec.step(
            layer, f"resolve:{plan.mechanism}", {"intent": plan.intent, "attempt": ctx.attempt}
        ) as s:
            try:
                outcome = await self._resolvers.get(plan.mechanism).resolve(ctx, plan)
            except Exception as exc:  # a resolver bug must cost a handoff, never the message
                outcome = Outcome(
                    kind="handoff",
                    confidence=0.0,
                    handoff_reason="internal_error",
                    detail={"error": f"{type(exc).__name__}: {exc}"},
                )
            s["output"] = _outcome_view(outcome)
            s["confidence"] = outcome.confidence
        return outcome

    # --- endings -------------------------------------------------------------------------------------------

    def _unplaced(
        self,
        ctx: TurnContext,
        rec: _Recorder,
        state: dict[str, Any],
        prediction: IntentPrediction,
        business: BusinessContext,
        started: float,
    ) -> TurnResult:
        settings = ctx.workspace.settings
        asked = int(state.get("clarifications", 0))
        if turn_context.asks_for_person(ctx.message.text):
            return self._escalate(ctx, rec, state, prediction, business, "customer_requested", started)
        if asked < settings.thresholds.max_clarifications:
            state["clarifications"] = asked + 1
            with rec.step(Layer.ORCHESTRATION, "decide", {"intent": None}) as s:
                s["output"] = {"decision": Decision.CLARIFY.value, "reason": "out_of_scope"}
            offer = f" I can help with {settings.scope}." if settings.scope else ""
            reply = f"I'm not sure I understood.{offer} Could you tell me a bit more about what you need?"
            return self._finish(
                ctx, rec, state, prediction, None, Decision.CLARIFY, "automated", reply, started
            )
        plan = plan_out_of_scope(settings, business)
        reason = "clarification_exhausted" if asked else "out_of_scope"
        return self._escalate(
            ctx, rec, state, prediction, business, reason, started, queue=plan.queue, priority=plan.priority
        )

    def _with_human(
        self, ctx: TurnContext, rec: _Recorder, state: dict[str, Any], started: float
    ) -> TurnResult:
        with rec.step(Layer.ORCHESTRATION, "decide", {"status": "escalated"}) as s:
            s["output"] = {"decision": "hold", "reason": "a person has this conversation"}
        return self._finish(
            ctx,
            rec,
            state,
            None,
            "human",
            Decision.ESCALATE,
            "handled_by_human",
            None,
            started,
            attach_to_escalation=True,
        )

    def _escalate(
        self,
        ctx: TurnContext,
        rec: _Recorder,
        state: dict[str, Any],
        prediction: IntentPrediction,
        business: BusinessContext,
        reason: str,
        started: float,
        *,
        queue: str | None = None,
        mechanism: str | None = None,
        outcome: Outcome | None = None,
        priority: Priority | None = None,
    ) -> TurnResult:
        settings = ctx.workspace.settings
        queue = queue or business.queue or settings.escalation.default_queue
        packet = build_packet(
            ctx,
            queue=queue,
            priority=priority or business.priority,
            reason_code=reason,
            prediction=prediction,
            business=business,
            facts=list(outcome.facts) if outcome else [],
            actions=list(outcome.actions) if outcome else [],
        )
        with rec.step(Layer.ORCHESTRATION, "escalate", {"reason": reason}) as s:
            s["output"] = {
                "queue": queue,
                "priority": packet.priority.name.lower(),
                "escalation_id": packet.id,
            }
        state.pop("pending_action", None)
        reply = (
            outcome.reply
            if outcome and outcome.reply
            else f"I'm passing this to our {queue.replace('_', ' ')} team, who can see everything we've "
            "discussed — you won't need to repeat yourself. They'll reply here."
        )
        return self._finish(
            ctx,
            rec,
            state,
            prediction,
            mechanism,
            Decision.ESCALATE,
            "escalated",
            reply,
            started,
            reason=reason,
            transitions=(Transition.ESCALATE,),
            escalation=packet,
        )

    def _finish(
        self,
        ctx: TurnContext,
        rec: _Recorder,
        state: dict[str, Any],
        prediction: IntentPrediction | None,
        mechanism: str | None,
        decision: Decision,
        outcome: str,
        reply: str | None,
        started: float,
        *,
        reason: str | None = None,
        transitions: tuple[Transition, ...] = (),
        escalation: EscalationPacket | None = None,
        attach_to_escalation: bool = False,
    ) -> TurnResult:
        trace = Trace(
            id=TraceId(new_id("trc")),
            conversation_id=ctx.conversation.id,
            message_id=ctx.message.id,
            workspace_version=ctx.workspace.version,
            steps=rec.steps,
            intent=prediction.intent if prediction else None,
            intent_confidence=prediction.confidence if prediction else None,
            mechanism=mechanism,
            decision=decision,
            outcome=outcome,
            reply=reply,
            reason_code=reason,
            duration_ms=(self._clock() - started) * 1000,
            turn_at=ctx.now,
        )
        if ctx.conversation.status == ConversationStatus.CLOSED:
            transitions = (Transition.REOPEN, *transitions)  # the customer wrote again
        return TurnResult(
            trace=trace,
            reply=reply,
            state=state,
            transitions=transitions,
            escalation=escalation,
            attach_to_escalation=attach_to_escalation,
        )


def _describe(ctx: TurnContext, intent: str) -> str:
    cfg = ctx.workspace.intent(intent)
    text = cfg.description if cfg and cfg.description else intent.replace("_", " ")
    return text[0].lower() + text[1:].rstrip(".") if text else intent


def _with_mechanism(plan: ResolutionPlan, mechanism: str) -> ResolutionPlan:
    return replace(plan, mechanism=mechanism, fallback=None, reason=f"retry with {mechanism}")


def _plan_view(plan: ResolutionPlan) -> dict[str, Any]:
    return {
        "mechanism": plan.mechanism,
        "queue": plan.queue,
        "priority": plan.priority.name.lower(),
        "fallback": plan.fallback,
        "action": plan.action,
        "cap_amount": plan.cap_amount,
        "require_confirmation": plan.require_confirmation,
        "reason": plan.reason,
    }


def _outcome_view(outcome: Outcome) -> dict[str, Any]:
    return {
        "kind": outcome.kind,
        "reply": outcome.reply,
        "confidence": round(outcome.confidence, 4),
        "facts": [{"id": f.fact_id, "score": round(f.score, 4)} for f in outcome.facts],
        "actions": [
            {
                "action": a.action,
                "ok": a.ok,
                "status": a.status_code,
                "attempts": a.attempts,
                "error": a.error,
            }
            for a in outcome.actions
        ],
        "handoff_reason": outcome.handoff_reason,
        **({"detail": outcome.detail} if outcome.detail else {}),
    }
