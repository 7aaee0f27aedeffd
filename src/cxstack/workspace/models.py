"""The typed form of a workspace folder ("CX as code"). Pydantic: this is an edge, YAML written by people.

Every model forbids unknown keys so that a typo is an error with a line number, never an ignored setting.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- cxstack.yaml -------------------------------------------------------------------------------------------


class Thresholds(_Strict):
    # Below this calibrated router confidence the message is treated as out of scope.
    route_min_confidence: float = Field(0.40, ge=0, le=1)
    # When the top two intents are closer than this (and both plausible), ask a clarifying question.
    clarify_margin: float = Field(0.10, ge=0, le=1)
    # Minimum hybrid retrieval score for a fact to be used in an answer.
    knowledge_min_score: float = Field(0.35, ge=0, le=1)
    # Minimum resolver confidence to send a reply without a retry or escalation.
    answer_min_confidence: float = Field(0.45, ge=0, le=1)
    max_clarifications: int = Field(1, ge=0, le=5)


class QueueConfig(_Strict):
    name: str
    description: str = ""


class EscalationConfig(_Strict):
    default_queue: str = "general"
    queues: list[QueueConfig] = Field(default_factory=list)


class ConnectorConfig(_Strict):
    type: str = "http"  # registered name of the action connector plug-in
    base_url: str
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    backoff_s: float = Field(0.2, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)


class ReviewSampling(_Strict):
    rate: float = Field(0.05, ge=0, le=1)


class WorkspaceSettings(_Strict):
    version: Literal[1] = 1
    name: str
    language: str = "en"
    description: str = ""
    # What the assistant helps with, in the customer's words; said when a message is out of scope.
    scope: str = ""
    channels: list[str] = Field(default_factory=lambda: ["api", "webchat"])
    embedder: str = "minilm"
    thresholds: Thresholds = Field(default_factory=Thresholds)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    review_sampling: ReviewSampling = Field(default_factory=ReviewSampling)
    burst_window_ms: dict[str, int] = Field(
        default_factory=lambda: {"webchat": 1200, "whatsapp": 2500},
        description="Per channel: messages that arrive within this many milliseconds of each other are "
        "answered as one turn (people often send a request in several short messages). Channels not "
        "listed: 0, every message is its own turn.",
    )


# --- strategy.yaml ------------------------------------------------------------------------------------------


class TierConfig(_Strict):
    """A customer matches the first tier (in file order) whose every given criterion holds."""

    name: str
    description: str = ""
    min_arr: float | None = None
    max_arr: float | None = None
    plans: list[str] | None = None
    segments: list[str] | None = None
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    value_weight: float = 1.0


class Condition(_Strict):
    """All given fields must hold (AND). Omitted fields do not constrain."""

    intent_in: list[str] | None = None
    intent_not_in: list[str] | None = None
    tier_in: list[str] | None = None
    plan_in: list[str] | None = None
    segment_in: list[str] | None = None
    channel_in: list[str] | None = None
    arr_gte: float | None = None
    arr_lt: float | None = None
    amount_gt: float | None = None
    amount_lte: float | None = None
    # Local hours [start, end) in the workspace time zone; end < start wraps past midnight.
    hours_between: tuple[int, int] | None = None
    weekday_in: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    attributes: dict[str, Any] | None = None


class Effect(_Strict):
    force_human: bool | None = None
    require_confirmation: bool | None = None
    cap_amount: float | None = Field(None, ge=0)
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    queue: str | None = None
    tone: str | None = None


class PolicyRule(_Strict):
    id: str
    description: str = ""
    when: Condition = Field(default_factory=Condition)
    then: Effect


class StrategyConfig(_Strict):
    version: Literal[1] = 1
    timezone: str = "UTC"
    objectives: list[str] = Field(default_factory=list)
    tiers: list[TierConfig] = Field(default_factory=list)
    default_tier: str = "standard"
    rules: list[PolicyRule] = Field(default_factory=list)


# --- intents.yaml -------------------------------------------------------------------------------------------


class IntentConfig(_Strict):
    name: str
    description: str = ""
    # content | action | human now; agent and multi_agent arrive with LLM providers. Open set: any registered
    # resolver name is accepted by the loader and checked against the registry by validate.
    mechanism: str = "human"
    owner: str = ""
    queue: str | None = None
    status: Literal["active", "draft"] = "active"
    never_automate: bool = False
    action: str | None = None  # for mechanism "action"
    fact_tags: list[str] = Field(default_factory=list)  # for mechanism "content": restrict retrieval
    fallback: str | None = None  # mechanism to retry with when the first one is not confident
    examples: list[str] = Field(default_factory=list)


class IntentCatalogue(_Strict):
    version: Literal[1] = 1
    intents: list[IntentConfig]


# --- knowledge/*.yaml ---------------------------------------------------------------------------------------


class FactConfig(_Strict):
    id: str
    text: str
    owner: str
    review_by: date | None = None
    tags: list[str] = Field(default_factory=list)
    intents: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    valid_from: date | None = None
    valid_to: date | None = None


class KnowledgeFile(_Strict):
    version: Literal[1] = 1
    facts: list[FactConfig]


# --- actions.yaml -------------------------------------------------------------------------------------------


class SlotConfig(_Strict):
    name: str
    description: str = ""
    # A regular expression with one group (or none: the whole match) that extracts the value from a message.
    pattern: str | None = None
    # Fill from the customer profile instead of asking ("id", "email", or an attribute name).
    from_customer: str | None = None
    type: Literal["string", "number"] = "string"
    required: bool = True
    default: str | float | None = None
    prompt: str = ""


class ActionConfig(_Strict):
    name: str
    description: str = ""
    connector: str = "backoffice"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str  # template, e.g. /orders/{order_id}/refunds
    slots: list[SlotConfig] = Field(default_factory=list)
    body: dict[str, str] | None = None  # body field -> slot name; default: all slots not used in the path
    amount_slot: str | None = None  # which slot a cap_amount rule limits
    requires_confirmation: bool = False
    scope: str = ""
    idempotent: bool = True
    success_reply: str  # Jinja2-free str.format template over slots and the JSON response
    # str.format over the filled slots, asked before an action that needs a confirmation; a generic
    # "I'll <action>: <slots>. Shall I go ahead?" when empty.
    confirmation_prompt: str = ""
    failure_reply: str = "I couldn't complete that just now, so I'm passing you to a colleague."


class ActionCatalogue(_Strict):
    version: Literal[1] = 1
    actions: list[ActionConfig]


# --- rubric.yaml / experiments.yaml (shape reserved; used by monitoring and optimization) ------------------


class RubricCriterion(_Strict):
    id: str
    description: str
    scale: tuple[int, int] = (1, 5)


class Rubric(_Strict):
    version: Literal[1] = 1
    criteria: list[RubricCriterion] = Field(default_factory=list)


class ExperimentConfig(_Strict):
    id: str
    description: str = ""
    status: Literal["draft", "running", "stopped"] = "draft"
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    allocation: dict[str, float] = Field(default_factory=dict)
    metrics: list[str] = Field(default_factory=list)


class Experiments(_Strict):
    version: Literal[1] = 1
    experiments: list[ExperimentConfig] = Field(default_factory=list)
