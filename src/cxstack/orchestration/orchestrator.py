"""The turn loop: ownership, language, routing, strategy, resolution plan, resolver, confidence policy —
each step traced.

A turn, in order:
1. **Who owns the conversation.** While a person has it (waiting_for_person, person) the assistant never
   answers: the messages join the escalation packet, and a customer still waiting is told, at most every few
   minutes, that a colleague has it. A closed conversation the customer writes to again is reopened. The first
   turn after a person hands a conversation back starts afresh (no half-finished action, a new clarification
   budget).
2. **Language.** A message confidently in a language the workspace does not support goes to a person, with a
   reply in the customer's language.
3. **Routing.** Context first (an answer to a clarifying question, a pending action, a follow-up). Otherwise a
   message with several sentences is routed sentence by sentence: greetings and thanks around a request are
   dropped, a long message is routed on its most telling sentence, and a second request is handled after the
   first (or acknowledged when the first is still waiting for the customer).
4. **Safety before resolving.** Sending a message to a person (a human or never-automate intent, or a rule
   that forces one) needs `human_min_confidence`; below it the assistant asks first. Two intents too close to
   call get a clarifying question.
5. **Resolve and decide.** The planned resolver runs; the confidence policy continues, retries once with the
   fallback, or escalates. An answer the policy does not trust is never sent: the customer is told a person
   will follow up, and the draft goes into the packet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cxstack.domain.conversation_state import Transition
from cxstack.domain.llm import LLM_STEP, LLMSessions, LLMUsageSummary
from cxstack.domain.log_context import bind_conversation
from cxstack.domain.models import (
    ConversationStatus,
    Customer,
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
from cxstack.domain.segments import Segment, is_question, split_requests
from cxstack.domain.turn import BusinessContext, IntentPrediction, Outcome, ResolutionPlan
from cxstack.orchestration import context as turn_context
from cxstack.orchestration.handoff import build_packet
from cxstack.orchestration.language import LANGUAGE_NAMES, detect_language, unsupported_language_reply
from cxstack.orchestration.policy import PolicyVerdict, decide, should_clarify
from cxstack.orchestration.ports import ResolverLookup, Router
from cxstack.resolution.models import TurnContext
from cxstack.resolution.planner import HUMAN, plan_out_of_scope
from cxstack.resolution.planner import plan as plan_resolution
from cxstack.resolution.slots import parse_yes_no
from cxstack.resolution.verifier import evidence_for, verify_step
from cxstack.strategy.policy import assess
from cxstack.workspace.builtin import BUILTIN_NAMES

# Intents that carry no request of their own: dropped when a message also asks for something.
PHATIC = BUILTIN_NAMES
LONG_MESSAGE_CHARS = 500
LONG_MESSAGE_SEGMENTS = 4
# A second request in one message is acted on only when the router is this sure of it.
SECOND_REQUEST_MIN_CONFIDENCE = 0.7
# Reasons for which the assistant itself decided a person is needed (vs. the customer or a policy asking).
_UNCERTAIN_REASONS = frozenset(
    {
        "low_confidence",
        "no_grounded_answer",
        "unsupported_answer",
        "out_of_scope",
        "clarification_exhausted",
        "internal_error",
        "unverified",
        "chain_low_confidence",
    }
)

log = logging.getLogger(__name__)


MULTI_AGENT = "multi_agent"


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
    # The options of a clarifying question, in the customer's words; a channel with buttons or lists offers
    # them to tap (the reply's text asks the same question in words).
    choices: tuple[str, ...] = ()


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


@dataclass(slots=True)
class _Turn:
    """What one turn accumulates on its way to a TurnResult."""

    ctx: TurnContext
    rec: _Recorder
    state: dict[str, Any]
    started: float
    transitions: list[Transition] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    escalation: EscalationPacket | None = None
    reopen_escalation: EscalationId | None = None
    attach: bool = False
    verified_customer: CustomerId | None = None
    choices: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.ctx.message.text


@dataclass(frozen=True, slots=True)
class _Request:
    """One thing the customer asks for in this turn."""

    prediction: IntentPrediction
    how: str  # what decided the intent: router, context, clarified, confirmed, segment
    focus: str | None = None  # the sentence(s) it is about, when the message says more than this
    request_text: str | None = None  # the text its slots are read from, when another request shares it


@dataclass(frozen=True, slots=True)
class _Routed:
    primary: _Request
    secondary: _Request | None = None


class Orchestrator:
    def __init__(
        self,
        router: Router,
        resolvers: ResolverLookup,
        *,
        clock: Callable[[], float] = time.perf_counter,
        llm: LLMSessions | None = None,
    ):
        self._router = router
        self._resolvers = resolvers
        self._clock = clock
        self.llm = llm

    async def handle_turn(self, ctx: TurnContext) -> TurnResult:
        bind_conversation(str(ctx.conversation.id))  # each turn runs in its own task: no spill-over
        result = await self._turn(ctx)
        trace = result.trace
        log.info("turn %s: %s, %s in %d ms", trace.id, trace.decision, trace.outcome, trace.duration_ms)
        return result

    async def _turn(self, ctx: TurnContext) -> TurnResult:
        if self.llm is not None and ctx.llm is None:
            ctx.llm = self.llm.session()  # one token and time budget for all of this turn's model calls
        turn = _Turn(ctx=ctx, rec=_Recorder(), state=dict(ctx.conversation.state), started=self._clock())
        status = ctx.conversation.status
        if status == ConversationStatus.CLOSED:
            turn.transitions.append(Transition.REOPEN)  # the customer wrote again
        elif status in (ConversationStatus.WAITING, ConversationStatus.PERSON):
            return self._while_a_person_has_it(turn, status)
        if turn.state.get("escalation"):
            self._resume_after_person(turn)

        unsupported = self._language(turn)
        if unsupported is not None:
            return unsupported

        routed = self._route(turn)
        primary = routed.primary
        prediction = primary.prediction
        if primary.how == "declined":
            turn.replies.append(ctx.workspace.reply("declined_handoff"))
            return self._finish(turn, None, None, Decision.CLARIFY, "automated")
        business = self._assess(turn, prediction.intent)
        if prediction.intent is None:
            return self._unplaced(turn, prediction, business)
        if turn_context.asks_for_person(turn.text):
            return self._escalate(
                turn,
                prediction,
                business,
                "customer_requested",
                queue=self._queue_for(turn, prediction, business),
            )
        if primary.how not in ("context", "clarified", "confirmed"):
            asked = self._maybe_clarify(turn, prediction, business)
            if asked is not None:
                return asked

        outcome, plan = await self._resolve(turn, primary, business)
        if outcome.kind == "handoff":
            return self._escalate_outcome(turn, prediction, business, plan, outcome, also=routed.secondary)
        if outcome.reply:
            turn.replies.append(outcome.reply)

        if routed.secondary is not None:
            if outcome.kind == "ask":  # the first request waits for the customer: the second one waits too
                turn.state["queued_request"] = {
                    "text": routed.secondary.focus or "",
                    "intent": routed.secondary.prediction.intent,
                }
                turn.replies.append("Once this is done, I'll help with your other question too.")
            else:
                self._hand_off(turn, routed.secondary, "second_request")
                ended = await self._then(turn, routed.secondary)
                if ended is not None:
                    return ended
        elif (
            outcome.kind == "reply"
            and turn.state.get("queued_request")
            and not turn.state.get("pending_action")
        ):
            queued = turn.state.pop("queued_request")
            request = self._requeued(turn, queued)
            self._hand_off(turn, request, "queued_request")
            ended = await self._then(turn, request)
            if ended is not None:
                return ended
        return self._finish(turn, prediction, plan.mechanism, Decision.CONTINUE, "automated")

    # --- ownership -----------------------------------------------------------------------------------------

    def _while_a_person_has_it(self, turn: _Turn, status: ConversationStatus) -> TurnResult:
        """The assistant stays quiet while a person has the conversation; the messages join the packet."""
        ctx = turn.ctx
        turn.attach = True
        acknowledge = False
        if status == ConversationStatus.WAITING:
            last = turn.state.get("acknowledged_at")
            interval = timedelta(minutes=ctx.workspace.settings.handoff.ack_interval_minutes)
            acknowledge = last is None or ctx.now - datetime.fromisoformat(str(last)) >= interval
        escalation = turn.state.get("escalation") or {}
        with turn.rec.step(Layer.ORCHESTRATION, "decide", {"status": status.value}) as s:
            s["output"] = {
                "decision": "hold",
                "reason": "a person has this conversation"
                if status == ConversationStatus.PERSON
                else "waiting for a person",
                "acknowledged": acknowledge,
                "escalation_id": escalation.get("id"),
            }
        if acknowledge:
            turn.state["acknowledged_at"] = ctx.now.isoformat()
            team = ctx.workspace.team_label(str(escalation.get("queue") or ""))
            turn.replies.append(ctx.workspace.reply("waiting", team=team))
        return self._finish(turn, None, HUMAN, Decision.ESCALATE, "handled_by_human")

    def _resume_after_person(self, turn: _Turn) -> None:
        """First turn after a hand-back: nothing half-finished carries over, and a new escalation to the same
        queue soon after reopens the packet instead of piling up new ones."""
        previous = turn.state.pop("escalation")
        for key in (
            "pending_action",
            "clarify",
            "confirm",
            "clarifications",
            "queued_request",
            "acknowledged_at",
        ):
            turn.state.pop(key, None)
        turn.state["handed_back"] = {**previous, "at": turn.ctx.now.isoformat()}
        with turn.rec.step(Layer.ORCHESTRATION, "resume", {"after": "hand_back"}) as s:
            s["output"] = {"previous_escalation": previous.get("id")}

    # --- language ------------------------------------------------------------------------------------------

    def _language(self, turn: _Turn) -> TurnResult | None:
        ctx = turn.ctx
        supported = ctx.workspace.languages
        detected = detect_language(turn.text)
        is_supported = detected.code is None or detected.code in supported
        ctx.language = detected.code if detected.code in supported else ctx.workspace.settings.language
        with turn.rec.step(Layer.ORCHESTRATION, "language", {"supported": supported}) as s:
            s["output"] = {
                "detected": detected.code,
                "confidence": round(detected.confidence, 4),
                "supported": is_supported,
            }
        if is_supported or detected.code is None:
            return None
        queue = ctx.workspace.settings.escalation.language_queues.get(detected.code)
        prediction = IntentPrediction(intent=None, confidence=0.0, out_of_scope=True)
        business = self._assess(turn, None)
        reply = unsupported_language_reply(detected.code, supported)
        name = LANGUAGE_NAMES.get(detected.code, detected.code)
        return self._escalate(
            turn,
            prediction,
            business,
            f"unsupported_language:{detected.code}",
            queue=queue,
            reply=reply,
            note=f"The customer wrote in {name}.",
        )

    # --- routing -------------------------------------------------------------------------------------------

    def _route(self, turn: _Turn) -> _Routed:
        thresholds = turn.ctx.workspace.settings.thresholds
        with turn.rec.step(Layer.ORCHESTRATION, "route", {"text": turn.text}) as s:
            raw = self._router.predict(turn.text, oos_threshold=thresholds.route_min_confidence)
            routed, how = self._in_context(turn, raw)
            segments: list[dict[str, Any]] = []
            if routed is None:
                routed, segments = self._by_sentence(turn, raw)
                how = routed.primary.how
            prediction = routed.primary.prediction
            s["output"] = {
                "intent": prediction.intent,
                "confidence": round(prediction.confidence, 4),
                "alternatives": [[i, round(p, 4)] for i, p in raw.alternatives],
                "out_of_scope": raw.out_of_scope,
                "router_intent": raw.intent,
                "router_confidence": round(raw.confidence, 4),
                "decided_by": how,
                **({"segments": segments} if segments else {}),
                **(
                    {
                        "second_request": routed.secondary.prediction.intent,
                        "second_text": routed.secondary.focus,
                    }
                    if routed.secondary
                    else {}
                ),
            }
            s["confidence"] = prediction.confidence
        return routed

    def _in_context(self, turn: _Turn, raw: IntentPrediction) -> tuple[_Routed | None, str]:
        """What the conversation so far says this message is about, if anything."""
        state, text = turn.state, turn.text
        confirm = state.pop("confirm", None)
        if confirm:
            answer = parse_yes_no(text)
            if answer is True:
                prediction = IntentPrediction(str(confirm["intent"]), float(confirm.get("p", raw.confidence)))
                return _Routed(_Request(prediction, "confirmed")), "confirmed"
            if answer is False and len(text.split()) <= 4:  # just "no": nothing else to act on
                return _Routed(_Request(IntentPrediction(None, 0.0), "declined")), "declined"
        clarify = state.get("clarify")
        if clarify:
            picked = turn_context.resolve_clarification(text, clarify["options"], raw)
            if picked:
                # The probability the router gave the chosen option when it asked; the customer's choice
                # settles the intent, but the record keeps the router's own uncertainty.
                p = float((clarify.get("p") or {}).get(picked, raw.confidence))
                return _Routed(_Request(IntentPrediction(picked, p), "clarified")), "clarified"
        carried = turn_context.continues_previous(
            text, raw, state, answers_pending=self._answers_pending(turn)
        )
        if carried:
            return _Routed(_Request(IntentPrediction(carried, raw.confidence), "context")), "context"
        if state.get("pending_action"):
            state.pop("pending_action")  # the customer moved on to something else
        return None, "router"

    def _answers_pending(self, turn: _Turn) -> bool:
        pending = turn.state.get("pending_action")
        if not isinstance(pending, dict):
            return False
        workspace = turn.ctx.workspace
        action = workspace.action(str(pending.get("action") or ""))
        awaiting = pending.get("awaiting")
        slot = next((s for s in action.slots if s.name == awaiting), None) if action else None
        return turn_context.answers_awaited_slot(turn.text, slot, workspace.settings)

    def _by_sentence(self, turn: _Turn, raw: IntentPrediction) -> tuple[_Routed, list[dict[str, Any]]]:
        text = turn.text
        segments = split_requests(text)
        if len(segments) < 2:
            return _Routed(_Request(raw, "router")), []
        thresholds = turn.ctx.workspace.settings.thresholds
        predictions = self._predict_many([s.text for s in segments], thresholds.route_min_confidence)
        pairs = list(zip(segments, predictions, strict=True))
        view = [
            {"text": seg.text[:200], "intent": p.intent, "confidence": round(p.confidence, 4)}
            for seg, p in pairs
        ]
        requests = [(seg, p) for seg, p in pairs if p.intent is not None and p.intent not in PHATIC]
        if not requests:
            return _Routed(_Request(raw, "router")), view
        long = len(text) > LONG_MESSAGE_CHARS or len(segments) > LONG_MESSAGE_SEGMENTS
        # The first question, when the message asks one: "I'm on the Plus plan. How long do I have to
        # return boots?" is about returns, not about the plan the story mentions first.
        asks = [r for r in requests if is_question(r[0].text)]
        first_segment, first = max(requests, key=lambda r: r[1].confidence) if long else (asks or requests)[0]
        primary_intent = str(first.intent)
        if raw.intent == primary_intent and raw.confidence >= first.confidence and not long:
            first = raw  # the whole message says it more clearly than any one sentence
        second = next(
            (
                (seg, p)
                for seg, p in requests
                if p.intent != primary_intent
                and p.confidence >= max(SECOND_REQUEST_MIN_CONFIDENCE, thresholds.route_min_confidence)
                # A statement before the question is the story around it, not a second request.
                and (is_question(seg.text) or seg.index > first_segment.index or not asks)
            ),
            None,
        )
        secondary = None
        primary_text: str | None = None
        if second is not None:
            other = _join([seg for seg, p in pairs if p.intent == second[1].intent])
            secondary = _Request(second[1], "segment", focus=other, request_text=other)
            primary_text = _join([seg for seg, p in pairs if p.intent != second[1].intent])
        # A question no intent claims stays with the request: its answer can say it found nothing for it,
        # rather than pass over it in silence.
        own = [
            seg
            for seg, p in pairs
            if p.intent == primary_intent or (p.intent is None and is_question(seg.text))
        ]
        # Retrieval looks at the request's own sentences, not at the greeting or the story around them.
        focus = _join(own) if len(own) < len(segments) else None
        how = "router" if first is raw and not (long or secondary) else "segment"
        return _Routed(_Request(first, how, focus=focus, request_text=primary_text), secondary), view

    def _predict_many(self, texts: list[str], threshold: float) -> list[IntentPrediction]:
        many = getattr(self._router, "predict_many", None)
        if callable(many):
            predictions: list[IntentPrediction] = many(texts, oos_threshold=threshold)
            return predictions
        return [self._router.predict(t, oos_threshold=threshold) for t in texts]

    def _requeued(self, turn: _Turn, queued: dict[str, Any]) -> _Request:
        text = str(queued.get("text") or "")
        thresholds = turn.ctx.workspace.settings.thresholds
        prediction = (
            self._router.predict(text, oos_threshold=thresholds.route_min_confidence) if text else None
        )
        if prediction is None or prediction.intent is None:
            prediction = IntentPrediction(str(queued.get("intent")), 0.0)
        return _Request(prediction, "queued", focus=text, request_text=text)

    # --- strategy ------------------------------------------------------------------------------------------

    def _assess(self, turn: _Turn, intent: str | None) -> BusinessContext:
        ctx = turn.ctx
        amount = turn_context.amount_in(turn.text, turn.state, ctx.workspace.settings)
        with turn.rec.step(
            Layer.STRATEGY,
            "assess",
            {
                "customer": str(ctx.customer.id),
                "verified": ctx.conversation.verified,
                "intent": intent,
                "channel": ctx.message.channel,
                "amount": turn_context.amount_view(amount),
                "now": ctx.now.isoformat(),
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
        ctx.business = business
        return business

    # --- before resolving ----------------------------------------------------------------------------------

    def _maybe_clarify(
        self, turn: _Turn, prediction: IntentPrediction, business: BusinessContext
    ) -> TurnResult | None:
        ctx, state = turn.ctx, turn.state
        thresholds = ctx.workspace.settings.thresholds
        intent_cfg = ctx.workspace.intent(str(prediction.intent))
        assert intent_cfg is not None, "the router only predicts intents of the workspace"
        to_person = intent_cfg.never_automate or intent_cfg.mechanism == HUMAN or business.force_human
        if to_person and prediction.confidence < thresholds.human_min_confidence:
            state["confirm"] = {"intent": prediction.intent, "p": prediction.confidence}
            with turn.rec.step(Layer.ORCHESTRATION, "decide", {"intent": prediction.intent}) as s:
                s["output"] = {
                    "decision": Decision.CLARIFY.value,
                    "reason": "person_needs_confidence",
                    "confidence": round(prediction.confidence, 4),
                    "needed": thresholds.human_min_confidence,
                }
            turn.replies.append(ctx.workspace.reply("confirm_handoff"))
            return self._finish(turn, prediction, None, Decision.CLARIFY, "automated")
        if not prediction.alternatives or state.get("pending_action") or state.get("clarify"):
            return None
        runner_up, runner_up_p = prediction.alternatives[0]
        asked = int(state.get("clarifications", 0))
        if not should_clarify(prediction.confidence, runner_up_p, thresholds, clarifications_so_far=asked):
            return None
        options = [str(prediction.intent), runner_up]
        described = [_describe(ctx, o) for o in options]
        with turn.rec.step(Layer.ORCHESTRATION, "decide", {"options": options}) as s:
            s["output"] = {"decision": Decision.CLARIFY.value, "reason": "close_call"}
        state["clarify"] = {
            "options": options,
            "p": {options[0]: prediction.confidence, runner_up: runner_up_p},
        }
        state["clarifications"] = asked + 1
        turn.replies.append(
            f"Just to be sure I help with the right thing: do you want to {described[0]}, or {described[1]}?"
        )
        turn.choices = [d[:1].upper() + d[1:] for d in described]
        return self._finish(turn, prediction, None, Decision.CLARIFY, "automated")

    # --- resolving -----------------------------------------------------------------------------------------

    async def _resolve(
        self, turn: _Turn, request: _Request, business: BusinessContext
    ) -> tuple[Outcome, ResolutionPlan]:
        ctx = turn.ctx
        ctx.prediction = request.prediction
        ctx.focus = request.focus
        ctx.request_text = request.request_text
        intent_cfg = ctx.workspace.intent(str(request.prediction.intent))
        assert intent_cfg is not None, "the router only predicts intents of the workspace"
        with turn.rec.step(Layer.RESOLUTION, "plan", {"intent": intent_cfg.name}) as s:
            plan = plan_resolution(intent_cfg, business, ctx.workspace.settings)
            s["output"] = _plan_view(plan)
            action = ctx.workspace.action(plan.action) if plan.action else None
            if action is not None:  # what the action may touch, and for whom
                s["output"]["permission"] = {
                    "scope": action.scope or None,
                    "public": action.public,
                    "owner_check": action.owner.field if action.owner else None,
                    "verified_customer": ctx.conversation.verified,
                }
        outcome, plan = await self._resolve_with_retry(turn, plan)
        for key, value in outcome.state_updates.items():
            if value is None:  # resolvers clear a key by setting it to None
                turn.state.pop(key, None)
            else:
                turn.state[key] = value
        if plan.intent not in PHATIC:
            turn.state["last_intent"] = plan.intent
        turn.state.pop("clarify", None)
        if outcome.verified_customer and turn.verified_customer is None:
            return await self._as_verified(turn, request, CustomerId(outcome.verified_customer), outcome)
        return outcome, plan

    async def _as_verified(
        self, turn: _Turn, request: _Request, customer_id: CustomerId, verification: Outcome
    ) -> tuple[Outcome, ResolutionPlan]:
        """The verification step matched the customer: from now on the conversation is theirs (the store
        binds it with this turn), and the request they made is resolved again as a verified customer's."""
        ctx = turn.ctx
        found = ctx.customers.get_customer(customer_id) if ctx.customers is not None else None
        ctx.customer = found or Customer(id=customer_id)
        ctx.conversation = replace(
            ctx.conversation, customer_id=customer_id, verified=True, state=dict(turn.state)
        )
        turn.verified_customer = customer_id
        with turn.rec.step(Layer.ORCHESTRATION, "verified", {"customer": str(customer_id)}) as s:
            s["output"] = {"profile_found": found is not None}
        business = self._assess(turn, request.prediction.intent)
        outcome, plan = await self._resolve(turn, request, business)
        if verification.reply and outcome.reply:
            outcome.reply = f"{verification.reply} {outcome.reply}"
        outcome.actions = [*verification.actions, *outcome.actions]
        return outcome, plan

    async def _resolve_with_retry(self, turn: _Turn, plan: ResolutionPlan) -> tuple[Outcome, ResolutionPlan]:
        ctx = turn.ctx
        thresholds = ctx.workspace.settings.thresholds
        ctx.attempt = 0
        outcome = await self._run_resolver(turn, plan)
        verdict = decide(outcome, plan, thresholds, attempt=0)
        with turn.rec.step(Layer.ORCHESTRATION, "decide", {"mechanism": plan.mechanism}) as s:
            s["output"] = {"decision": verdict.decision.value, "reason": verdict.reason}
        if verdict.decision == Decision.RETRY and verdict.retry_mechanism:
            plan = _with_mechanism(plan, verdict.retry_mechanism)
            ctx.attempt = 1
            outcome = await self._run_resolver(turn, plan)
            verdict = decide(outcome, plan, thresholds, attempt=1)
            with turn.rec.step(
                Layer.ORCHESTRATION, "decide", {"mechanism": plan.mechanism, "attempt": 1}
            ) as s:
                s["output"] = {"decision": verdict.decision.value, "reason": verdict.reason}
        if verdict.decision != Decision.ESCALATE:
            verdict = self._verify(turn, plan, outcome, verdict)
        if verdict.decision == Decision.ESCALATE and outcome.kind != "handoff":
            # An answer the policy does not trust is never sent; a person gets it as a draft.
            outcome.detail["draft"] = outcome.reply
            outcome.kind = "handoff"
            outcome.reply = None
            outcome.handoff_reason = verdict.reason
        return outcome, plan

    def _verify(
        self, turn: _Turn, plan: ResolutionPlan, outcome: Outcome, verdict: PolicyVerdict
    ) -> PolicyVerdict:
        """Check the step's output before anything of it is sent or the next step starts, and add it to the
        turn's shared context; escalate when it fails or the confidence across the turn's steps is too low."""
        ctx = turn.ctx
        thresholds = ctx.workspace.settings.thresholds
        check = verify_step(
            outcome,
            mechanism=plan.mechanism,
            evidence=[*evidence_for(ctx, outcome), *(r for r in turn.replies)],
            min_confidence=thresholds.answer_min_confidence,
        )
        agent = (outcome.detail.get("agent") or {}).get("name")
        if plan.mechanism != MULTI_AGENT:  # the multi-agent resolver records each of its agents' steps
            ctx.shared.record(
                plan.intent, plan.mechanism, str(agent) if agent else None, outcome, check.failed
            )
        chained = len(ctx.shared.steps) > 1
        with turn.rec.step(Layer.ORCHESTRATION, "verify", {"mechanism": plan.mechanism}) as s:
            s["output"] = {
                "passed": check.passed,
                "failed": list(check.failed),
                **({"unsupported": list(check.unsupported)} if check.unsupported else {}),
                **({"confidence_so_far": round(ctx.shared.confidence, 4)} if chained else {}),
            }
            s["confidence"] = ctx.shared.confidence
        if not check.passed:
            return PolicyVerdict(Decision.ESCALATE, f"unverified:{check.failed[0]}")
        if chained and outcome.kind == "reply" and ctx.shared.confidence < thresholds.chain_min_confidence:
            return PolicyVerdict(Decision.ESCALATE, "chain_low_confidence")
        return verdict

    async def _run_resolver(self, turn: _Turn, plan: ResolutionPlan) -> Outcome:
        ctx = turn.ctx
        layer = Layer.KNOWLEDGE if plan.mechanism == "content" else Layer.RESOLUTION
        before = len(ctx.shared.handoffs)
        with turn.rec.step(
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
        for handoff in ctx.shared.handoffs[before:]:  # between the resolver's own agents
            self._trace_handoff(turn, handoff)
        return outcome

    def _hand_off(self, turn: _Turn, target: _Request, reason: str) -> None:
        """The next request of this message goes to its own specialist, with the turn's context whole."""
        shared = turn.ctx.shared
        last = shared.steps[-1] if shared.steps else None
        source = f"{last.intent}/{last.agent or last.mechanism}" if last else "router"
        self._trace_handoff(turn, shared.hand_off(source, str(target.prediction.intent), reason))

    def _trace_handoff(self, turn: _Turn, handoff: dict[str, Any]) -> None:
        with turn.rec.step(
            Layer.ORCHESTRATION, "handoff", {"from": handoff["from"], "to": handoff["to"]}
        ) as s:
            s["output"] = {"reason": handoff["reason"], "context": handoff["context"]}
            s["confidence"] = handoff["context"]["confidence"]

    async def _then(self, turn: _Turn, request: _Request) -> TurnResult | None:
        """A second request, after the first one was answered; a TurnResult only if it ends the turn."""
        ctx = turn.ctx
        with turn.rec.step(Layer.ORCHESTRATION, "next_request", {"text": request.focus}) as s:
            s["output"] = {
                "intent": request.prediction.intent,
                "confidence": round(request.prediction.confidence, 4),
            }
        if request.prediction.intent is None:
            return None
        business = self._assess(turn, request.prediction.intent)
        intent_cfg = ctx.workspace.intent(str(request.prediction.intent))
        if intent_cfg is None:
            return None
        outcome, plan = await self._resolve(turn, request, business)
        if outcome.kind == "handoff":
            return self._escalate_outcome(turn, request.prediction, business, plan, outcome)
        if outcome.reply:
            turn.replies.append(outcome.reply)
        return None

    # --- endings -------------------------------------------------------------------------------------------

    def _unplaced(self, turn: _Turn, prediction: IntentPrediction, business: BusinessContext) -> TurnResult:
        ctx, state = turn.ctx, turn.state
        settings = ctx.workspace.settings
        asked = int(state.get("clarifications", 0))
        if turn_context.asks_for_person(turn.text):
            return self._escalate(turn, prediction, business, "customer_requested")
        if asked < settings.thresholds.max_clarifications:
            state["clarifications"] = asked + 1
            with turn.rec.step(Layer.ORCHESTRATION, "decide", {"intent": None}) as s:
                s["output"] = {"decision": Decision.CLARIFY.value, "reason": "out_of_scope"}
            offer = f" I can help with {settings.scope}." if settings.scope else ""
            turn.replies.append(ctx.workspace.reply("not_understood") + offer)
            return self._finish(turn, prediction, None, Decision.CLARIFY, "automated")
        plan = plan_out_of_scope(settings, business)
        reason = "clarification_exhausted" if asked else "out_of_scope"
        return self._escalate(turn, prediction, business, reason, queue=plan.queue, priority=plan.priority)

    def _escalate_outcome(
        self,
        turn: _Turn,
        prediction: IntentPrediction,
        business: BusinessContext,
        plan: ResolutionPlan,
        outcome: Outcome,
        *,
        also: _Request | None = None,
    ) -> TurnResult:
        reason = outcome.handoff_reason or "low_confidence"
        draft = outcome.detail.get("draft")
        if outcome.said:
            turn.replies.append(outcome.said)
        note = None
        if also is not None and also.prediction.intent:
            about = _describe(turn.ctx, also.prediction.intent)
            note = f"They also asked about {about}: “{(also.focus or '')[:200]}”."
        return self._escalate(
            turn,
            prediction,
            business,
            reason,
            queue=plan.queue,
            mechanism=plan.mechanism,
            outcome=outcome,
            priority=plan.priority,
            reply=outcome.reply if not draft else None,
            draft=str(draft) if draft else None,
            note=note,
        )

    def _escalate(
        self,
        turn: _Turn,
        prediction: IntentPrediction,
        business: BusinessContext,
        reason: str,
        *,
        queue: str | None = None,
        mechanism: str | None = None,
        outcome: Outcome | None = None,
        priority: Priority | None = None,
        reply: str | None = None,
        draft: str | None = None,
        note: str | None = None,
    ) -> TurnResult:
        ctx, state = turn.ctx, turn.state
        settings = ctx.workspace.settings
        queue = queue or business.queue or settings.escalation.default_queue
        team = ctx.workspace.team_label(queue)
        if reply is None:
            words = "low_confidence" if reason.split(":")[0] in _UNCERTAIN_REASONS else "handoff"
            reply = ctx.workspace.reply(words, team=team)
        reopen = self._reopenable(turn, queue)
        packet = build_packet(
            ctx,
            queue=queue,
            priority=priority or business.priority,
            reason_code=reason,
            prediction=prediction,
            business=business,
            facts=list(outcome.facts) if outcome else [],
            actions=list(outcome.actions) if outcome else [],
            draft_reply=draft,
            note=note,
        )
        with turn.rec.step(Layer.ORCHESTRATION, "escalate", {"reason": reason}) as s:
            s["output"] = {
                "queue": queue,
                "priority": packet.priority.name.lower(),
                "escalation_id": reopen or packet.id,
                "reopened": reopen is not None,
                "draft_withheld": draft is not None,
            }
        for key in ("pending_action", "clarify", "confirm", "queued_request"):
            state.pop(key, None)
        state["escalation"] = {
            "id": reopen or packet.id,
            "queue": queue,
            "reason": reason,
            "at": ctx.now.isoformat(),
        }
        state["acknowledged_at"] = ctx.now.isoformat()  # the handoff reply is the first acknowledgement
        state.pop("handed_back", None)
        if reopen is not None:
            turn.reopen_escalation = reopen
            turn.attach = True
        else:
            turn.escalation = packet
        turn.transitions.append(Transition.ESCALATE)
        turn.replies.append(reply)
        return self._finish(turn, prediction, mechanism, Decision.ESCALATE, "escalated", reason=reason)

    def _reopenable(self, turn: _Turn, queue: str) -> EscalationId | None:
        """The packet a person just handed back, when this escalation goes to the same queue soon after."""
        handed_back = turn.state.get("handed_back")
        if not handed_back or handed_back.get("queue") != queue or not handed_back.get("id"):
            return None
        window = timedelta(minutes=turn.ctx.workspace.settings.handoff.reescalation_window_minutes)
        at = datetime.fromisoformat(str(handed_back["at"]))
        return EscalationId(str(handed_back["id"])) if turn.ctx.now - at <= window else None

    def _queue_for(self, turn: _Turn, prediction: IntentPrediction, business: BusinessContext) -> str | None:
        intent_cfg = turn.ctx.workspace.intent(str(prediction.intent))
        return business.queue or (intent_cfg.queue if intent_cfg else None)

    def _finish(
        self,
        turn: _Turn,
        prediction: IntentPrediction | None,
        mechanism: str | None,
        decision: Decision,
        outcome: str,
        *,
        reason: str | None = None,
    ) -> TurnResult:
        ctx = turn.ctx
        reply = "\n\n".join(r for r in turn.replies if r) or None
        if ctx.llm is not None and ctx.llm.record.calls:
            turn.rec.steps.append(_llm_step(ctx.llm.record))
        trace = Trace(
            id=TraceId(new_id("trc")),
            conversation_id=ctx.conversation.id,
            message_id=ctx.message.id,
            workspace_version=ctx.workspace.version,
            steps=turn.rec.steps,
            intent=prediction.intent if prediction else None,
            intent_confidence=prediction.confidence if prediction else None,
            mechanism=mechanism,
            decision=decision,
            outcome=outcome,
            reply=reply,
            reason_code=reason,
            duration_ms=(self._clock() - turn.started) * 1000,
            turn_at=ctx.now,
        )
        return TurnResult(
            trace=trace,
            reply=reply,
            state=turn.state,
            transitions=tuple(turn.transitions),
            escalation=turn.escalation,
            attach_to_escalation=turn.attach,
            reopen_escalation=turn.reopen_escalation,
            verified_customer=turn.verified_customer,
            choices=tuple(turn.choices),
        )


def _llm_step(record: LLMUsageSummary) -> TraceStep:
    """Every model call of the turn, and their sum: tokens, latency and cost (the key is never part of it)."""
    cost = record.cost
    usage = record.usage
    return TraceStep(
        layer=Layer.ORCHESTRATION,
        name=LLM_STEP,
        input={"calls": len(record.calls)},
        output={
            "calls": [c.view() for c in record.calls],
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost": str(cost) if cost is not None else None,
        },
        duration_ms=record.latency_ms,
    )


def _join(segments: list[Segment]) -> str:
    return " ".join(s.text for s in sorted(segments, key=lambda s: s.index))


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
        **({"said": outcome.said} if outcome.said else {}),
        **({"detail": outcome.detail} if outcome.detail else {}),
    }
