"""Types that pass between the layers during one turn."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from cxstack.domain.models import ActionResult, FactCitation, Priority


@dataclass(frozen=True, slots=True)
class BusinessContext:
    """L1's verdict on who this customer is and which policy rules apply to this request."""

    tier: str
    value: float
    priority: Priority
    fired_rules: tuple[str, ...] = ()
    force_human: bool = False
    forced_by: tuple[str, ...] = ()  # the fired rules whose effect forces a human
    require_confirmation: bool = False
    cap_amount: Decimal | None = None  # in the workspace currency
    queue: str | None = None
    tone: str | None = None


@dataclass(frozen=True, slots=True)
class IntentPrediction:
    intent: str | None  # None when out of scope
    confidence: float  # calibrated probability of `intent`
    alternatives: tuple[tuple[str, float], ...] = ()  # next best intents with their probabilities
    out_of_scope: bool = False


@dataclass(frozen=True, slots=True)
class ResolutionPlan:
    intent: str
    mechanism: str
    queue: str
    priority: Priority
    fallback: str | None = None
    action: str | None = None
    fact_tags: tuple[str, ...] = ()
    cap_amount: Decimal | None = None  # in the workspace currency
    require_confirmation: bool = False
    reason: str = ""  # why this mechanism, e.g. "rule vip-refund-human forces a human"


OutcomeKind = Literal["reply", "ask", "handoff"]


@dataclass(slots=True)
class Outcome:
    """What a resolver produced. `ask` is a reply that waits for the customer (a slot, a confirmation)."""

    kind: OutcomeKind
    confidence: float
    reply: str | None = None
    facts: list[FactCitation] = field(default_factory=list)
    actions: list[ActionResult] = field(default_factory=list)
    handoff_reason: str | None = None
    state_updates: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    # A verification step matched the customer's details to this customer (the conversation is bound to it).
    verified_customer: str | None = None
    # What earlier steps of this resolution already told the customer: sent even when the outcome hands off,
    # before the words that a person will follow up (a reply, by contrast, is the handoff message itself).
    said: str | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a turn's plan: which specialist did what, how sure it was, and what the verifier found."""

    intent: str
    mechanism: str
    agent: str | None
    kind: OutcomeKind
    confidence: float
    failed_checks: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()  # "name:ok" / "name:failed"

    def view(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "mechanism": self.mechanism,
            "agent": self.agent,
            "kind": self.kind,
            "confidence": round(self.confidence, 4),
            "failed_checks": list(self.failed_checks),
            "facts": list(self.facts),
            "actions": list(self.actions),
        }


@dataclass(slots=True)
class SharedContext:
    """What the specialists of one turn hand each other, whole, at every handoff: the steps so far, the facts
    they used, the back-office results they got and the confidence so far. The conversation and the verified
    customer travel beside it in the turn context, which is passed whole too.

    Confidence so far is the product of the steps' confidences: a mistake in any step spoils what follows,
    so unsure steps compound instead of averaging out."""

    steps: list[StepRecord] = field(default_factory=list)
    facts: list[FactCitation] = field(default_factory=list)
    actions: list[ActionResult] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return math.prod(s.confidence for s in self.steps) if self.steps else 1.0

    def record(
        self, intent: str, mechanism: str, agent: str | None, outcome: Outcome, failed: tuple[str, ...]
    ) -> None:
        """Add a step's outcome (and what the verifier found) to the context."""
        step = StepRecord(
            intent=intent,
            mechanism=mechanism,
            agent=agent,
            kind=outcome.kind,
            confidence=outcome.confidence,
            failed_checks=failed,
            facts=tuple(f.fact_id for f in outcome.facts),
            actions=tuple(f"{a.action}:{'ok' if a.ok else 'failed'}" for a in outcome.actions),
        )
        self.steps.append(step)
        known = {f.fact_id for f in self.facts}
        self.facts += [f for f in outcome.facts if f.fact_id not in known]
        self.actions += [a for a in outcome.actions if a not in self.actions]

    def hand_off(self, source: str, target: str, reason: str) -> dict[str, Any]:
        """Log a handoff between specialists; the orchestrator turns each into a trace step."""
        entry = {"from": source, "to": target, "reason": reason, "context": self.view()}
        self.handoffs.append(entry)
        return entry

    def view(self) -> dict[str, Any]:
        return {
            "steps": [s.view() for s in self.steps],
            "facts": [f.fact_id for f in self.facts],
            "actions": [{"action": a.action, "ok": a.ok} for a in self.actions],
            "confidence": round(self.confidence, 4),
        }
