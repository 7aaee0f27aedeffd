"""Root cause by layer: which layer, and which workspace change, is behind a change in failing conversations.

A conversation *fails* when it was escalated, ended unresolved (the bot's last word was a clarifying question
or a question the customer never answered), or a reviewer or judge scored it below the bar. Each failing
conversation is attributed to ONE layer, from its trace signals, by this rule table:

- routing: out of scope at the router, a clarifying question for it, `clarification_exhausted`; an intent
  accepted on router confidence under 0.5 (`low_confidence`); a review or judge failing an intent criterion.
- knowledge: `no_grounded_answer` (`retrieval_miss`); a content reply citing no fact (`no_fact_cited`); a
  failed verify step, `unverified:*`, `unsupported_answer` (`grounding_failure`); a content answer under the
  answer threshold (`low_confidence`); correctness or groundedness criteria failed.
- agents: the `agent_*` reasons (max turns, refused action, invalid command, agent escalated, not
  configured); an agent step refused; a handoff that carried no context (`handoff_lost_context`); a
  resolver's `internal_error`; a non-content answer under the threshold; the `resolution` criterion.
- actions: an action result not ok (`action_error`, `action_timeout` when its error says so);
  `action_failed`, `identity_mismatch`, `identity_required`.
- policy: `policy_rule:<id>`, `policy`, `never_automate` (`policy_override`); the amount and cap reasons
  (`capped`); a rule that forced a person at the assess step (`forced_person`); policy criteria failed.
- orchestration: `customer_requested`, `unsupported_language:*`, `chain_low_confidence`, `llm_unavailable`,
  `undelivered`; a customer asking for a person or reacting badly while the bot carried on
  (`missed_escalation`); more than one escalation in one conversation (`escalation_loop`).

The layer of a failing conversation is its escalation's reason (the direct cause) when it escalated; else the
layer of a failed rubric criterion (an intent/routing criterion before the others: it is upstream); else
(unresolved) the first signal of its last turns; a conversation failing with no signal is `unattributed`. An
escalation wins over a review because a new failure downstream of an old misroute must still show as new.
Every signal is also counted on its own (a conversation may show several).

Two windows (periods or workspace versions) are then compared layer by layer and signal by signal: the
change in the rate of conversations, with a Newcombe interval for the difference of two proportions and
Fisher's exact test, so a difference a fair coin would often produce is marked as noise and ranked after the
real ones.
Workspace changes between the windows' versions are attached to their layer and to the conversations they
plausibly touched (a fact → conversations citing or retrieving it and the intents whose fact tags reach it; a
threshold → decisions whose value lies between its old and new value; a rule → conversations where it fired or
whose intent it names; an intent → that intent; an action or agent → its calls and the intents that use
it), and ranked by the change in the rate of failing conversations of their layer among those they touched.

Pure: no store, no clock. `load_window` reads through the small `DiagnoseSource` port.
"""

from __future__ import annotations

import enum
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from scipy.stats import binomtest, fisher_exact

from cxstack.domain.models import Trace, WorkspaceVersionId
from cxstack.domain.quality import Judgement, Review
from cxstack.monitoring.rubric import effective_rubric
from cxstack.workspace.diff import FieldChange, diff_workspaces
from cxstack.workspace.loader import workspace_from_content
from cxstack.workspace.models import Rubric
from cxstack.workspace.workspace import Workspace

# Under this, an intent the router picked on its own is a guess (the demo's threshold is 0.40).
LOW_ROUTE_CONFIDENCE = 0.5
ALPHA = 0.05
# Fewer conversations than this in a window: rates are shown, but nothing is called a cause.
MIN_CONVERSATIONS = 10
# A threshold "touches" a decision whose value lies within this distance of the range old..new.
THRESHOLD_MARGIN = 0.05
EXAMPLES = 3
ASK_FOR_PERSON = re.compile(
    r"\b(human|real person|a person|someone|representative|agent|manager|supervisor)\b", re.IGNORECASE
)
NEGATIVE = re.compile(
    r"(useless|not helpful|ridiculous|terrible|awful|waste of time|that's wrong|that is wrong|"
    r"doesn't help|does not help|didn't answer|stupid|angry|furious|!!)",
    re.IGNORECASE,
)


class FaultLayer(enum.StrEnum):
    ROUTING = "routing"
    KNOWLEDGE = "knowledge"
    AGENTS = "agents"
    ACTIONS = "actions"
    POLICY = "policy"
    ORCHESTRATION = "orchestration"
    UNATTRIBUTED = "unattributed"


L = FaultLayer
# Escalation and handoff reason codes (orchestration/handoff.py REASON_TEXT) → layer and signal.
REASONS: dict[str, tuple[FaultLayer, str]] = {
    "out_of_scope": (L.ROUTING, "out_of_scope"),
    "clarification_exhausted": (L.ROUTING, "clarification_exhausted"),
    "no_grounded_answer": (L.KNOWLEDGE, "retrieval_miss"),
    "unsupported_answer": (L.KNOWLEDGE, "grounding_failure"),
    "unverified": (L.KNOWLEDGE, "grounding_failure"),
    "agent_action_refused": (L.AGENTS, "agent_action_refused"),
    "agent_invalid_command": (L.AGENTS, "agent_invalid_command"),
    "agent_max_turns": (L.AGENTS, "agent_max_turns"),
    "agent_escalated": (L.AGENTS, "agent_escalated"),
    "agent_not_configured": (L.AGENTS, "agent_not_configured"),
    "internal_error": (L.AGENTS, "internal_error"),
    "action_failed": (L.ACTIONS, "action_error"),
    "identity_mismatch": (L.ACTIONS, "identity_mismatch"),
    "identity_required": (L.ACTIONS, "identity_required"),
    "policy": (L.POLICY, "policy_override"),
    "policy_rule": (L.POLICY, "policy_override"),
    "never_automate": (L.POLICY, "policy_override"),
    "amount_over_cap": (L.POLICY, "capped"),
    "amount_cap_missing": (L.POLICY, "capped"),
    "amount_currency_mismatch": (L.POLICY, "capped"),
    "cap_currency_mismatch": (L.POLICY, "capped"),
    "amount_not_money": (L.POLICY, "capped"),
    "customer_requested": (L.ORCHESTRATION, "customer_requested"),
    "unsupported_language": (L.ORCHESTRATION, "unsupported_language"),
    "chain_low_confidence": (L.ORCHESTRATION, "chain_low_confidence"),
    "llm_unavailable": (L.ORCHESTRATION, "llm_unavailable"),
    "undelivered": (L.ORCHESTRATION, "undelivered"),
}
# Rubric criteria are the workspace's own: matched by words in their id.
CRITERIA: tuple[tuple[str, FaultLayer], ...] = (
    ("intent", L.ROUTING),
    ("rout", L.ROUTING),
    ("ground", L.KNOWLEDGE),
    ("correct", L.KNOWLEDGE),
    ("fact", L.KNOWLEDGE),
    ("polic", L.POLICY),
    ("complian", L.POLICY),
    ("action", L.ACTIONS),
    ("resolution", L.AGENTS),
    ("escalat", L.ORCHESTRATION),
    ("handoff", L.ORCHESTRATION),
)


def reason_layer(reason: str, mechanism: str | None = None) -> tuple[FaultLayer, str] | None:
    """The layer and signal of an escalation or handoff reason code (None for an unknown code)."""
    head = reason.split(":")[0]
    if head == "low_confidence":
        if mechanism == "content":
            return L.KNOWLEDGE, "low_confidence"
        return (L.AGENTS, "low_confidence") if mechanism else (L.ROUTING, "low_confidence")
    return REASONS.get(head)


def criterion_layer(criterion: str) -> FaultLayer:
    lowered = criterion.lower()
    return next((layer for word, layer in CRITERIA if word in lowered), L.UNATTRIBUTED)


# --- one conversation -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    layer: FaultLayer
    name: str
    trace_id: str
    step: str  # the trace step that shows it, e.g. "escalate" or "resolve:content"
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer.value,
            "signal": self.name,
            "trace_id": self.trace_id,
            "step": self.step,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class QualityNote:
    """A review's or judgement's verdict on a conversation: failed, and on which criteria."""

    passed: bool
    failed_criteria: tuple[str, ...] = ()
    source: str = "review"


@dataclass(frozen=True, slots=True)
class Touches:
    """What a conversation used, so a workspace change can be tied to it."""

    intents: frozenset[str] = frozenset()
    facts: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    # decision values a threshold compares against: "route", "knowledge", "answer", "chain"
    values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    clarified: bool = False


@dataclass(frozen=True, slots=True)
class ConversationDiagnosis:
    conversation_id: str
    workspace_version: str
    started_at: datetime
    outcome: str  # "automated" | "escalated" | "unresolved"
    failing: bool
    low_quality: bool
    layer: FaultLayer | None  # None: not failing
    cause: Signal | None
    signals: tuple[Signal, ...]
    touches: Touches

    @property
    def intent(self) -> str | None:
        return next(iter(sorted(self.touches.intents)), None)


def _trace_signals(trace: Trace, previous_text_asked_person: bool) -> list[Signal]:
    signals: list[Signal] = []
    tid = str(trace.id)

    def add(layer: FaultLayer, name: str, step: str, detail: str = "") -> None:
        signal = Signal(layer, name, tid, step, detail)
        if signal not in signals:
            signals.append(signal)

    for step in trace.steps:
        out = _dict(step.output)
        if step.name == "route":
            confidence = _number(out.get("confidence"))
            if out.get("intent") is None and out.get("out_of_scope"):
                add(L.ROUTING, "out_of_scope", "route", f"router confidence {out.get('router_confidence')}")
            elif (
                out.get("decided_by") == "router"
                and confidence is not None
                and confidence < LOW_ROUTE_CONFIDENCE
            ):
                add(L.ROUTING, "low_confidence", "route", f"{out.get('intent')} at {confidence:.2f}")
        elif step.name == "assess":
            if out.get("force_human") and out.get("fired_rules"):
                rules = ", ".join(str(r) for r in out.get("fired_rules") or [])
                add(L.POLICY, "forced_person", "assess", f"rules fired: {rules}")
        elif step.name.startswith("resolve:"):
            mechanism = step.name.split(":", 1)[1]
            for action in out.get("actions") or []:
                if isinstance(action, dict) and action.get("ok") is False:
                    error = str(action.get("error") or action.get("status") or "")
                    name = "action_timeout" if "timeout" in error.lower() else "action_error"
                    add(L.ACTIONS, name, step.name, f"{action.get('action')}: {error}".strip())
            detail = _dict(out.get("detail"))
            agent = _dict(detail.get("agent"))
            for agent_step in agent.get("steps") or []:
                if isinstance(agent_step, dict) and agent_step.get("result") == "refused":
                    add(L.AGENTS, "agent_refused", step.name, str(agent_step.get("why") or ""))
            if out.get("kind") == "handoff" and out.get("handoff_reason"):
                mapped = reason_layer(str(out["handoff_reason"]), mechanism)
                if mapped and mapped[0] is not L.POLICY:
                    add(mapped[0], mapped[1], step.name, str(out["handoff_reason"]))
            if mechanism == "content" and out.get("kind") == "reply" and not out.get("facts"):
                add(L.KNOWLEDGE, "no_fact_cited", step.name)
        elif step.name == "verify" and out.get("failed"):
            failed = [str(f) for f in out.get("failed") or []]
            add(L.KNOWLEDGE, "grounding_failure", "verify", ", ".join(failed))
        elif step.name == "handoff":
            context = _dict(out.get("context"))
            if not context.get("steps"):
                add(
                    L.AGENTS,
                    "handoff_lost_context",
                    "handoff",
                    f"{step.input.get('from')} → {step.input.get('to')}",
                )
        elif step.name == "decide" and out.get("reason") == "out_of_scope":
            add(L.ROUTING, "out_of_scope", "decide", "clarifying question")
        elif step.name == "escalate":
            reason = str(step.input.get("reason") or "")
            mapped = reason_layer(reason, trace.mechanism)
            if mapped:
                add(mapped[0], mapped[1], "escalate", reason)
        elif step.name == "error":
            add(L.ORCHESTRATION, "internal_error", "error", str(out.get("error") or ""))
    if trace.outcome not in ("escalated", "handled_by_human") and previous_text_asked_person:
        add(
            L.ORCHESTRATION, "missed_escalation", "decide", "the customer asked for a person or reacted badly"
        )
    return signals


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _touches(traces: Sequence[Trace]) -> Touches:
    intents: set[str] = set()
    facts: set[str] = set()
    actions: set[str] = set()
    agents: set[str] = set()
    rules: set[str] = set()
    tiers: set[str] = set()
    values: dict[str, list[float]] = {"route": [], "knowledge": [], "answer": [], "chain": []}
    clarified = False
    for trace in traces:
        if trace.intent:
            intents.add(trace.intent)
        if trace.decision.value == "clarify" or trace.outcome == "clarified":
            clarified = True
        for step in trace.steps:
            out = _dict(step.output)
            if step.name == "route":
                for key in ("router_confidence", "confidence"):
                    number = _number(out.get(key))
                    if number is not None:
                        values["route"].append(number)
            elif step.name == "assess":
                rules.update(str(r) for r in out.get("fired_rules") or [])
                if out.get("tier"):
                    tiers.add(str(out["tier"]))
            elif step.name == "plan" and out.get("action"):
                actions.add(str(out["action"]))
            elif step.name.startswith("resolve:"):
                for fact in out.get("facts") or []:
                    if isinstance(fact, dict) and fact.get("id"):
                        facts.add(str(fact["id"]))
                for action in out.get("actions") or []:
                    if isinstance(action, dict) and action.get("action"):
                        actions.add(str(action["action"]))
                detail = _dict(out.get("detail"))
                if detail.get("action"):
                    actions.add(str(detail["action"]))
                candidates = [c for c in detail.get("candidates") or [] if isinstance(c, dict)]
                facts.update(str(c["fact_id"]) for c in candidates[:3] if c.get("fact_id"))
                top = _number(candidates[0].get("score")) if candidates else None
                if top is not None:
                    values["knowledge"].append(top)
                agent = _dict(detail.get("agent"))
                agents.update(
                    str(s["agent"])
                    for s in agent.get("steps") or []
                    if isinstance(s, dict) and s.get("agent")
                )
                if agent.get("name"):
                    agents.add(str(agent["name"]))
                if step.confidence is not None:
                    values["answer"].append(step.confidence)
            elif step.name == "verify" and step.confidence is not None:
                values["chain"].append(step.confidence)
            elif step.name == "handoff":
                for end in (step.input.get("from"), step.input.get("to")):
                    if isinstance(end, str) and "/" in end:
                        agents.add(end.split("/", 1)[1])
            elif step.name == "decide" and out.get("decision") == "clarify":
                clarified = True
    return Touches(
        intents=frozenset(intents),
        facts=frozenset(facts),
        actions=frozenset(actions),
        agents=frozenset(agents),
        rules=frozenset(rules),
        tiers=frozenset(tiers),
        values={k: tuple(v) for k, v in values.items()},
        clarified=clarified,
    )


def _customer_text(trace: Trace) -> str:
    route = next((s for s in trace.steps if s.name == "route"), None)
    text = route.input.get("text") if route is not None else None
    return text if isinstance(text, str) else ""


def diagnose_conversation(
    traces: Sequence[Trace], *, quality: QualityNote | None = None
) -> ConversationDiagnosis:
    """One conversation's outcome, its signals and the layer it failed in (`traces` in turn order)."""
    if not traces:
        raise ValueError("a conversation needs at least one trace")
    signals: list[Signal] = []
    asked_before = False
    escalations = 0
    for trace in traces:
        signals.extend(_trace_signals(trace, asked_before))
        text = _customer_text(trace)
        asked_before = bool(text) and bool(ASK_FOR_PERSON.search(text) or NEGATIVE.search(text))
        escalations += sum(1 for s in trace.steps if s.name == "escalate")
    if escalations > 1:
        last = next(t for t in reversed(traces) if any(s.name == "escalate" for s in t.steps))
        signals.append(Signal(L.ORCHESTRATION, "escalation_loop", str(last.id), "escalate", f"{escalations}"))
    outcomes = [t.outcome for t in traces]
    if "escalated" in outcomes:
        outcome = "escalated"
    elif outcomes[-1] == "clarified" or traces[-1].decision.value == "clarify":
        outcome = "unresolved"
    else:
        outcome = "automated"
    low_quality = quality is not None and not quality.passed
    failing = outcome != "automated" or low_quality
    judged: Signal | None = None
    if low_quality and quality is not None:
        layers = [(criterion, criterion_layer(criterion)) for criterion in quality.failed_criteria]
        named = [(c, layer) for c, layer in layers if layer is not L.UNATTRIBUTED]
        # Of several failed criteria, a wrong intent is upstream of the others.
        named.sort(key=lambda item: item[1] is not L.ROUTING)
        if named:
            criterion, layer = named[0]
            judged = Signal(layer, f"{quality.source}:{criterion}", str(traces[-1].id), quality.source)
            signals.append(judged)
    cause: Signal | None = None
    if outcome == "escalated":
        escalated = next(t for t in traces if t.outcome == "escalated")
        cause = next(
            (s for s in signals if s.trace_id == str(escalated.id) and s.step == "escalate"),
            None,
        ) or next((s for s in signals if s.trace_id == str(escalated.id)), None)
    cause = cause or judged
    if cause is None and failing:
        last_ids = {str(t.id) for t in traces[-2:]}
        cause = next((s for s in signals if s.trace_id in last_ids), None) or next(iter(signals), None)
    first = traces[0]
    return ConversationDiagnosis(
        conversation_id=str(first.conversation_id),
        workspace_version=str(first.workspace_version),
        started_at=first.created_at,
        outcome=outcome,
        failing=failing,
        low_quality=low_quality,
        layer=(cause.layer if cause else L.UNATTRIBUTED) if failing else None,
        cause=cause if failing else None,
        signals=tuple(signals),
        touches=_touches(traces),
    )


def quality_notes(
    reviews: Iterable[Review], judgements: Iterable[Judgement], rubric: Rubric | None = None
) -> dict[str, QualityNote]:
    """A verdict per conversation: its latest human review, else its judgement. A criterion fails as the
    rubric says (a gate criterion under its threshold: 4 of 5, or "pass"); no rubric: the default one."""
    criteria = {c.id: c for c in effective_rubric(rubric or Rubric()).criteria}

    def failed(scores: Mapping[str, float]) -> tuple[str, ...]:
        return tuple(
            k for k, v in scores.items() if k in criteria and criteria[k].gate and v < criteria[k].threshold
        )

    notes: dict[str, QualityNote] = {}
    for judgement in judgements:
        if judgement.passed is not None:
            notes[judgement.conversation_id] = QualityNote(
                judgement.passed, failed(judgement.scores), "judge"
            )
    for review in sorted(reviews, key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC)):
        notes[review.conversation_id] = QualityNote(review.passed, failed(review.scores), "review")
    return notes


# --- two windows ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateChange:
    """`count` of `n` conversations in each window, and whether the difference is more than noise."""

    key: str
    layer: FaultLayer
    a_count: int
    a_n: int
    b_count: int
    b_n: int
    low: float
    high: float
    p_value: float
    contribution: float  # share of the change in failing conversations (Δ of this / Δ failing)
    examples: tuple[Signal, ...] = ()
    example_conversations: tuple[str, ...] = ()

    @property
    def a_rate(self) -> float:
        return self.a_count / self.a_n if self.a_n else 0.0

    @property
    def b_rate(self) -> float:
        return self.b_count / self.b_n if self.b_n else 0.0

    @property
    def delta(self) -> float:
        return self.b_rate - self.a_rate

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "layer": self.layer.value,
            "a": {"count": self.a_count, "n": self.a_n, "rate": round(self.a_rate, 4)},
            "b": {"count": self.b_count, "n": self.b_n, "rate": round(self.b_rate, 4)},
            "delta": round(self.delta, 4),
            "ci": [round(self.low, 4), round(self.high, 4)],
            "p": round(self.p_value, 6),
            "significant": self.significant,
            "contribution": round(self.contribution, 4),
            "examples": [
                {"conversation_id": c, **s.as_dict()}
                for c, s in zip(self.example_conversations, self.examples, strict=True)
            ],
        }


def wilson_interval(count: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(count, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe_interval(
    a_count: int, a_n: int, b_count: int, b_n: int, alpha: float = ALPHA
) -> tuple[float, float]:
    """Interval for rate(b) − rate(a): Newcombe's hybrid score method (his method 10, from two Wilson
    intervals), which keeps its coverage with counts near 0 where the Wald interval does not; tested equal
    to statsmodels' `confint_proportions_2indep(method="newcomb")`."""
    pa = a_count / a_n if a_n else 0.0
    pb = b_count / b_n if b_n else 0.0
    la, ua = wilson_interval(a_count, a_n, alpha)
    lb, ub = wilson_interval(b_count, b_n, alpha)
    delta = pb - pa
    return (
        delta - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2),
        delta + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2),
    )


def rate_change(
    key: str,
    layer: FaultLayer,
    a_hits: Sequence[tuple[str, Signal | None]],
    a_n: int,
    b_hits: Sequence[tuple[str, Signal | None]],
    b_n: int,
    failing_delta: float,
) -> RateChange:
    a_count, b_count = len(a_hits), len(b_hits)
    low, high = newcombe_interval(a_count, a_n, b_count, b_n)
    if a_n and b_n:
        p_value = float(fisher_exact([[a_count, a_n - a_count], [b_count, b_n - b_count]]).pvalue)
    else:
        p_value = 1.0
    delta = (b_count / b_n if b_n else 0.0) - (a_count / a_n if a_n else 0.0)
    # Examples from the window where the rate rose, those with a cause the other window does not show first
    # (a new rule id, a new action error), so the rows point at what changed rather than at what always fails.
    shown, other = (b_hits, a_hits) if delta >= 0 else (a_hits, b_hits)
    seen = {(s.name, s.detail) for _, s in other if s is not None}
    ordered = sorted(
        ((c, s) for c, s in shown if s is not None), key=lambda item: (item[1].name, item[1].detail) in seen
    )
    examples = ordered[:EXAMPLES]
    return RateChange(
        key=key,
        layer=layer,
        a_count=a_count,
        a_n=a_n,
        b_count=b_count,
        b_n=b_n,
        low=low,
        high=high,
        p_value=p_value,
        contribution=delta / failing_delta if failing_delta else 0.0,
        examples=tuple(s for _, s in examples),
        example_conversations=tuple(c for c, _ in examples),
    )


def _rank(changes: Iterable[RateChange]) -> list[RateChange]:
    """Real rises first (largest first), then rises within noise, then falls and no change."""
    return sorted(changes, key=lambda c: (not (c.significant and c.delta > 0), -c.delta, c.key))


# --- workspace changes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspaceChange:
    kind: str  # "fact" | "intent" | "rule" | "tier" | "threshold" | "action" | "agent" | "setting"
    name: str
    layer: FaultLayer
    description: str
    facts: frozenset[str] = frozenset()
    intents: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    threshold: tuple[str, float, float] | None = None  # (value kind, old, new)
    clarifications: bool = False

    def touches(self, conversation: ConversationDiagnosis) -> bool:
        t = conversation.touches
        if (
            t.facts & self.facts
            or t.intents & self.intents
            or t.actions & self.actions
            or t.agents & self.agents
            or t.rules & self.rules
            or t.tiers & self.tiers
        ):
            return True
        if self.clarifications and t.clarified:
            return True
        if self.threshold is not None:
            kind, old, new = self.threshold
            low, high = min(old, new) - THRESHOLD_MARGIN, max(old, new) + THRESHOLD_MARGIN
            return any(low <= v <= high for v in t.values.get(kind, ()))
        return False


# Thresholds: the decision value each compares against and the layer it belongs to.
THRESHOLDS: dict[str, tuple[str | None, FaultLayer]] = {
    "route_min_confidence": ("route", L.ROUTING),
    "clarify_margin": (None, L.ROUTING),
    "max_clarifications": (None, L.ROUTING),
    "knowledge_min_score": ("knowledge", L.KNOWLEDGE),
    "answer_min_confidence": ("answer", L.KNOWLEDGE),
    "human_min_confidence": ("answer", L.AGENTS),
    "chain_min_confidence": ("chain", L.ORCHESTRATION),
}
INTENT_FIELDS: tuple[tuple[str, FaultLayer], ...] = (
    ("fact_tags", L.KNOWLEDGE),
    ("never_automate", L.POLICY),
    ("action", L.ACTIONS),
    ("mechanism", L.AGENTS),
    ("agent", L.AGENTS),
)


def _intent_layer(changes: Sequence[FieldChange]) -> FaultLayer:
    paths = {c.path.split(".")[0] for c in changes}
    return next((layer for name, layer in INTENT_FIELDS if name in paths), L.ROUTING)


def _describe(name: str, changes: Sequence[FieldChange]) -> str:
    return f"{name}: " + ", ".join(c.describe() for c in changes)


def workspace_changes(old: Workspace, new: Workspace) -> list[WorkspaceChange]:
    """Every change from `old` to `new`, each with its layer and what it can touch."""
    diff = diff_workspaces(old, new)
    out: list[WorkspaceChange] = []
    both_intents = [*old.intents, *new.intents]

    def fact_reach(fact_id: str) -> frozenset[str]:
        versions = [f for ws in (old, new) for f in ws.facts if f.id == fact_id]
        tags = {t for f in versions for t in f.tags}
        named = {i for f in versions for i in f.intents}
        return frozenset(i.name for i in both_intents if tags & set(i.fact_tags) or i.name in named)

    for fact_id in (*diff.facts.added, *diff.facts.removed, *diff.facts.changed):
        changes = diff.facts.changed.get(fact_id, ())
        verb = "added" if fact_id in diff.facts.added else "removed" if fact_id in diff.facts.removed else ""
        description = _describe(fact_id, changes) if changes else f"{fact_id} {verb}"
        out.append(
            WorkspaceChange(
                "fact",
                fact_id,
                L.KNOWLEDGE,
                f"fact {description}",
                facts=frozenset({fact_id}),
                intents=fact_reach(fact_id),
            )
        )
    for name in (*diff.intents.added, *diff.intents.removed, *diff.intents.changed):
        changes = diff.intents.changed.get(name, ())
        layer = _intent_layer(changes) if changes else L.ROUTING
        verb = "added" if name in diff.intents.added else "removed"
        out.append(
            WorkspaceChange(
                "intent",
                name,
                layer,
                f"intent {_describe(name, changes) if changes else name + ' ' + verb}",
                intents=frozenset({name}),
            )
        )
    rules_by_id = {r.id: r for ws in (old, new) for r in ws.strategy.rules}
    for rule_id in (*diff.rules.added, *diff.rules.removed, *diff.rules.changed):
        changes = diff.rules.changed.get(rule_id, ())
        rule = rules_by_id[rule_id]
        verb = "added" if rule_id in diff.rules.added else "removed"
        out.append(
            WorkspaceChange(
                "rule",
                rule_id,
                L.POLICY,
                f"policy rule {_describe(rule_id, changes) if changes else rule_id + ' ' + verb}",
                rules=frozenset({rule_id}),
                intents=frozenset(rule.when.intent_in or ()),
            )
        )
    if diff.rules.reordered:
        out.append(
            WorkspaceChange(
                "rule", "(order)", L.POLICY, "policy rules reordered", rules=frozenset(rules_by_id)
            )
        )
    for tier in (*diff.tiers.added, *diff.tiers.removed, *diff.tiers.changed):
        changes = diff.tiers.changed.get(tier, ())
        out.append(
            WorkspaceChange(
                "tier",
                tier,
                L.POLICY,
                f"tier {_describe(tier, changes) if changes else tier}",
                tiers=frozenset({tier}),
            )
        )
    actions_by_name = {a.name: a for ws in (old, new) for a in ws.actions}
    for action in (*diff.actions.added, *diff.actions.removed, *diff.actions.changed):
        changes = diff.actions.changed.get(action, ())
        users = frozenset(i.name for i in both_intents if i.action == action)
        agents = frozenset(a.name for ws in (old, new) for a in ws.agents if action in a.actions)
        out.append(
            WorkspaceChange(
                "action",
                action,
                L.ACTIONS,
                f"action {_describe(action, changes) if changes else action}",
                actions=frozenset({action}),
                intents=users,
                agents=agents if not changes else frozenset(),
            )
        )
    out.extend(_agent_changes(old, new))
    connectors: dict[str, list[FieldChange]] = {}
    for change in diff.settings:
        parts = change.path.split(".")
        if parts[0] == "thresholds" and len(parts) == 2 and parts[1] in THRESHOLDS:
            kind, layer = THRESHOLDS[parts[1]]
            old_v, new_v = _number(change.old), _number(change.new)
            out.append(
                WorkspaceChange(
                    "threshold",
                    change.path,
                    layer,
                    f"threshold {change.describe()}",
                    threshold=(kind, old_v, new_v)
                    if kind and old_v is not None and new_v is not None
                    else None,
                    clarifications=kind is None,
                )
            )
        elif parts[0] == "connectors" and len(parts) >= 2:
            connectors.setdefault(parts[1], []).append(change)
        else:
            out.append(
                WorkspaceChange("setting", change.path, L.UNATTRIBUTED, f"setting {change.describe()}")
            )
    for connector, edits in connectors.items():
        users = frozenset(a.name for a in actions_by_name.values() if a.connector == connector)
        out.append(
            WorkspaceChange(
                "connector",
                connector,
                L.ACTIONS,
                f"connector {connector}: " + ", ".join(c.describe() for c in edits),
                actions=users,
            )
        )
    return out


def _agent_changes(old: Workspace, new: Workspace) -> list[WorkspaceChange]:
    before = {a.name: a.model_dump(mode="json") for a in old.agents}
    after = {a.name: a.model_dump(mode="json") for a in new.agents}
    out = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) == after.get(name):
            continue
        if name not in before or name not in after:
            description = f"agent {name} {'added' if name in after else 'removed'}"
        else:
            changed = tuple(
                FieldChange(key, before[name].get(key), after[name].get(key))
                for key in sorted(set(before[name]) | set(after[name]))
                if before[name].get(key) != after[name].get(key)
            )
            description = "agent " + _describe(name, changed)
        users = frozenset(i.name for ws in (old, new) for i in ws.intents if i.agent == name)
        out.append(
            WorkspaceChange("agent", name, L.AGENTS, description, agents=frozenset({name}), intents=users)
        )
    return out


@dataclass(frozen=True, slots=True)
class ChangeAttribution:
    change: WorkspaceChange
    touched_a: int
    touched_b: int
    failing_a: int  # failing in the change's layer, among the conversations it touched
    failing_b: int
    a_n: int
    b_n: int
    example_conversations: tuple[str, ...] = ()
    examples: tuple[Signal, ...] = ()

    @property
    def contribution(self) -> float:
        """Rise in the window's rate of failing conversations of this layer among those the change touched."""
        a = self.failing_a / self.a_n if self.a_n else 0.0
        b = self.failing_b / self.b_n if self.b_n else 0.0
        return b - a

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.change.kind,
            "name": self.change.name,
            "layer": self.change.layer.value,
            "description": self.change.description,
            "touched": {"a": self.touched_a, "b": self.touched_b},
            "failing": {"a": self.failing_a, "b": self.failing_b},
            "contribution": round(self.contribution, 4),
            "examples": [
                {"conversation_id": c, **s.as_dict()}
                for c, s in zip(self.example_conversations, self.examples, strict=True)
            ],
        }


def attribute_changes(
    changes: Sequence[WorkspaceChange],
    a: Sequence[ConversationDiagnosis],
    b: Sequence[ConversationDiagnosis],
) -> list[ChangeAttribution]:
    out = []
    for change in changes:
        touched_a = [c for c in a if change.touches(c)]
        touched_b = [c for c in b if change.touches(c)]
        failing_a = [c for c in touched_a if c.failing and c.layer is change.layer]
        failing_b = [c for c in touched_b if c.failing and c.layer is change.layer]
        shown = [c for c in failing_b if c.cause is not None][:EXAMPLES]
        out.append(
            ChangeAttribution(
                change=change,
                touched_a=len(touched_a),
                touched_b=len(touched_b),
                failing_a=len(failing_a),
                failing_b=len(failing_b),
                a_n=len(a),
                b_n=len(b),
                example_conversations=tuple(c.conversation_id for c in shown),
                examples=tuple(c.cause for c in shown if c.cause is not None),
            )
        )
    # Ties (e.g. nothing touched at all) keep the order of the layer ranking, then the diff's order.
    return sorted(out, key=lambda x: -x.contribution)


# --- the report -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Diagnosis:
    window_a: str
    window_b: str
    a: tuple[ConversationDiagnosis, ...]
    b: tuple[ConversationDiagnosis, ...]
    failing: RateChange
    layers: tuple[RateChange, ...]
    signals: tuple[RateChange, ...]
    changes: tuple[ChangeAttribution, ...]
    versions_a: tuple[str, ...] = ()
    versions_b: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def insufficient(self) -> bool:
        return len(self.a) < MIN_CONVERSATIONS or len(self.b) < MIN_CONVERSATIONS

    @property
    def top_layer(self) -> FaultLayer | None:
        rising = [c for c in self.layers if c.delta > 0]
        return rising[0].layer if rising else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.window_a,
            "to": self.window_b,
            "conversations": {"a": len(self.a), "b": len(self.b)},
            "versions": {"a": list(self.versions_a), "b": list(self.versions_b)},
            "insufficient": self.insufficient,
            "failing": self.failing.as_dict(),
            "layers": [c.as_dict() for c in self.layers],
            "signals": [c.as_dict() for c in self.signals],
            "changes": [c.as_dict() for c in self.changes],
            "notes": list(self.notes),
        }


def compare(
    a: Sequence[ConversationDiagnosis],
    b: Sequence[ConversationDiagnosis],
    *,
    window_a: str = "A",
    window_b: str = "B",
    changes: Sequence[WorkspaceChange] = (),
    notes: Sequence[str] = (),
) -> Diagnosis:
    """Window `a` against window `b`: per layer and per signal, the change in the rate of conversations,
    ranked by rise (real rises before those within noise), then the workspace changes by contribution."""
    a_n, b_n = len(a), len(b)

    def failing_hits(window: Sequence[ConversationDiagnosis]) -> list[tuple[str, Signal | None]]:
        return [(c.conversation_id, c.cause) for c in window if c.failing]

    a_fail, b_fail = failing_hits(a), failing_hits(b)
    failing_delta = (len(b_fail) / b_n if b_n else 0.0) - (len(a_fail) / a_n if a_n else 0.0)
    failing = rate_change("failing", L.UNATTRIBUTED, a_fail, a_n, b_fail, b_n, failing_delta)
    layers = []
    for layer in FaultLayer:
        ha = [(c.conversation_id, c.cause) for c in a if c.failing and c.layer is layer]
        hb = [(c.conversation_id, c.cause) for c in b if c.failing and c.layer is layer]
        if ha or hb:
            layers.append(rate_change(layer.value, layer, ha, a_n, hb, b_n, failing_delta))
    keys = sorted({(s.layer, s.name) for c in (*a, *b) for s in c.signals})
    signals = []
    for layer, name in keys:
        hits_a, hits_b = _signal_hits(a, layer, name), _signal_hits(b, layer, name)
        signals.append(rate_change(f"{layer.value}/{name}", layer, hits_a, a_n, hits_b, b_n, failing_delta))
    ranked_layers = _rank(layers)
    order = {c.layer: i for i, c in enumerate(ranked_layers)}
    attributed = attribute_changes(changes, a, b)
    attributed.sort(key=lambda x: (-round(x.contribution, 12), order.get(x.change.layer, len(order))))
    all_notes = list(notes)
    if a_n < MIN_CONVERSATIONS or b_n < MIN_CONVERSATIONS:
        all_notes.append(
            f"insufficient: {a_n} and {b_n} conversations; at least {MIN_CONVERSATIONS} per window are "
            "needed before any change is more than noise"
        )
    return Diagnosis(
        window_a=window_a,
        window_b=window_b,
        a=tuple(a),
        b=tuple(b),
        failing=failing,
        layers=tuple(ranked_layers),
        signals=tuple(_rank(signals)),
        changes=tuple(attributed),
        versions_a=_versions(a),
        versions_b=_versions(b),
        notes=tuple(all_notes),
    )


def _signal_hits(
    window: Sequence[ConversationDiagnosis], layer: FaultLayer, name: str
) -> list[tuple[str, Signal | None]]:
    found: list[tuple[str, Signal | None]] = []
    for c in window:
        signal = next((s for s in c.signals if s.layer is layer and s.name == name), None)
        if signal is not None:
            found.append((c.conversation_id, signal))
    return found


def _versions(window: Sequence[ConversationDiagnosis]) -> tuple[str, ...]:
    return tuple(v for v, _ in Counter(c.workspace_version for c in window).most_common())


# --- windows ----------------------------------------------------------------------------------------------


class DiagnoseError(ValueError):
    """Bad input (an unknown version, an unreadable period, an empty window): said plainly, exit 1."""


@dataclass(frozen=True, slots=True)
class Window:
    label: str
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    version: str | None = None

    def holds(self, trace: Trace) -> bool:
        if self.version is not None:
            return str(trace.workspace_version) == self.version
        at = trace.created_at if trace.created_at.tzinfo else trace.created_at.replace(tzinfo=UTC)
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)


def _moment(text: str, *, end: bool) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=UTC)
            return moment
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DiagnoseError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_window(text: str, known_versions: Iterable[str]) -> Window:
    """`2026-11-01..2026-11-07` (days inclusive, UTC; ISO date-times are exact), or a workspace version (its
    hash or a unique prefix of it among the versions the traces ran on)."""
    text = text.strip()
    if not text:
        raise DiagnoseError("an empty window: give a period (2026-11-01..2026-11-07) or a workspace version")
    if ".." in text:
        first, _, last = text.partition("..")
        start = _moment(first, end=False) if first else None
        end = _moment(last, end=True) if last else None
        if start and end and end <= start:
            raise DiagnoseError(f"{text!r}: the period ends before it starts")
        return Window(text, start=start, end=end)
    matches = sorted({v for v in known_versions if v.startswith(text)})
    if not matches:
        raise DiagnoseError(
            f"{text!r} is not a workspace version any stored conversation ran on (nor a period like "
            "2026-11-01..2026-11-07)"
        )
    if len(matches) > 1:
        raise DiagnoseError(f"{text!r} matches several workspace versions: {', '.join(matches[:5])}")
    return Window(text, version=matches[0])


class DiagnoseSource(Protocol):
    """What diagnose reads (the SQL store implements it)."""

    def traces_since(self, since: datetime, limit: int = 5000) -> list[Trace]: ...
    def get_workspace_version(self, version: WorkspaceVersionId) -> dict[str, Any] | None: ...


def group_conversations(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    by_conversation: dict[str, list[Trace]] = {}
    for trace in sorted(traces, key=lambda t: (t.created_at, str(t.id))):
        by_conversation.setdefault(str(trace.conversation_id), []).append(trace)
    return by_conversation


def diagnose_window(
    traces: Iterable[Trace],
    window: Window,
    *,
    quality: Mapping[str, QualityNote] | None = None,
) -> list[ConversationDiagnosis]:
    """The conversations of `window` (a conversation belongs to the window of its first turn)."""
    out = []
    for conversation_id, turns in group_conversations(traces).items():
        if not window.holds(turns[0]):
            continue
        out.append(diagnose_conversation(turns, quality=(quality or {}).get(conversation_id)))
    if not out:
        raise DiagnoseError(f"no conversations in {window.label}")
    return out


def _dominant(traces: Iterable[Trace], window: Window) -> str | None:
    firsts = [turns[0] for turns in group_conversations(traces).values() if window.holds(turns[0])]
    counted = Counter(str(t.workspace_version) for t in firsts).most_common(1)
    return counted[0][0] if counted else None


def diagnose(
    source: DiagnoseSource,
    from_text: str,
    to_text: str,
    *,
    reviews: Sequence[Review] = (),
    judgements: Sequence[Judgement] = (),
    quality: Mapping[str, QualityNote] | None = None,
    since: datetime | None = None,
    limit: int = 200_000,
) -> Diagnosis:
    """`cxstack diagnose --from A --to B`: both windows from the stored traces, and the workspace changes
    between their versions (each window's most common version, when those differ and both are stored).
    Reviews and judgements are read with the rubric of window B's version; `quality` replaces them."""
    if since is None and ".." in from_text and ".." in to_text:
        starts = [parse_window(text, ()).start for text in (from_text, to_text)]
        since = min(s for s in starts if s is not None) if all(starts) else None
    traces = source.traces_since(since or datetime(1970, 1, 1, tzinfo=UTC), limit)
    notes: list[str] = []
    if len(traces) >= limit:
        notes.append(f"only the first {limit} traces were read")
    versions = {str(t.workspace_version) for t in traces}
    window_a, window_b = parse_window(from_text, versions), parse_window(to_text, versions)
    old_version, new_version = _dominant(traces, window_a), _dominant(traces, window_b)
    if old_version is None or new_version is None:
        raise DiagnoseError(
            f"no conversations in {window_a.label if old_version is None else window_b.label}"
        )
    old = source.get_workspace_version(WorkspaceVersionId(old_version))
    new = source.get_workspace_version(WorkspaceVersionId(new_version))
    if quality is None:
        rubric = workspace_from_content(new).rubric if new is not None else None
        quality = quality_notes(reviews, judgements, rubric)
    a = diagnose_window(traces, window_a, quality=quality)
    b = diagnose_window(traces, window_b, quality=quality)
    changes: list[WorkspaceChange] = []
    if old_version == new_version:
        notes.append(f"both windows ran mostly on version {old_version[:12]}: no workspace change to rank")
    elif old is None or new is None:
        missing = old_version if old is None else new_version
        notes.append(f"workspace version {missing} is not stored: its changes cannot be listed")
    else:
        changes = workspace_changes(workspace_from_content(old), workspace_from_content(new))
        if not changes:
            notes.append(f"versions {old_version[:12]} and {new_version[:12]} have the same content")
    return compare(a, b, window_a=window_a.label, window_b=window_b.label, changes=changes, notes=notes)
