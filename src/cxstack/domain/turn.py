"""Types that pass between the layers during one turn."""

from __future__ import annotations

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
