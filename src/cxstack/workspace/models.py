"""The typed form of a workspace folder ("CX as code"). Pydantic: this is an edge, YAML written by people.

Every model forbids unknown keys so that a typo is an error with a line number, never an ignored setting.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from cxstack.domain.money import invalid_currency, invalid_locale

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_currency(code: str) -> str:
    problem = invalid_currency(code)
    if problem:
        # `fix` travels in the error context: `cxstack validate` prints it next to the line.
        raise PydanticCustomError(
            "currency", problem, {"fix": "use an ISO 4217 code such as USD, EUR or GBP"}
        )
    return code


def _check_locale(name: str) -> str:
    problem = invalid_locale(name)
    if problem:
        raise PydanticCustomError(
            "locale", problem, {"fix": "use a language and territory such as en_US, en_GB or de_DE"}
        )
    return name


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
    human_min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Router confidence needed to send a message straight to a person because its intent's "
        "mechanism is human or never automated; below it the assistant asks first. A wrong (often urgent) "
        "escalation costs a person's time, so this is higher than route_min_confidence.",
    )


class QueueConfig(_Strict):
    name: str
    description: str = ""
    customer_label: str = Field(
        "",
        description="How the team is named to customers ('our billing team'). Empty: 'a colleague'; "
        "internal queue names are never shown to customers.",
    )


class EscalationConfig(_Strict):
    default_queue: str = "general"
    queues: list[QueueConfig] = Field(default_factory=list)
    language_queues: dict[str, str] = Field(
        default_factory=dict,
        description="Language code (ISO 639-1) to queue, for messages in a language the assistant does not "
        "support; others go to default_queue.",
    )


class Replies(_Strict):
    """What the assistant says in the everyday situations no intent covers. {scope} is the workspace's
    scope, {name} its name."""

    greeting: str = "Hi! How can I help you today?"
    thanks: str = "You're welcome! Is there anything else I can help with?"
    goodbye: str = "Thanks for getting in touch. Have a great day!"
    small_talk: str = (
        "I'm the {name} assistant, so I can only help with support questions. What can I do for you?"
    )
    not_understood: str = "I'm not sure I understood. Could you tell me a bit more about what you need?"
    handoff: str = (
        "I've passed this to {team}, who can see everything we've discussed, so you won't need to repeat "
        "yourself. They'll reply here."
    )
    low_confidence: str = (
        "I want to get this right, so I've asked {team} to look at your message. They'll follow up here."
    )
    waiting: str = "Thanks, I've added this to your conversation. {team_cap} has it and will reply here."
    confirm_handoff: str = (
        "Just to be sure I understood: would you like me to pass this to a colleague? (yes/no)"
    )
    declined_handoff: str = "No problem. What can I help you with?"


class HandoffSettings(_Strict):
    ack_interval_minutes: int = Field(
        10,
        ge=0,
        description="While a person has not yet answered, further customer messages are acknowledged at most "
        "this often (0: every message).",
    )
    reescalation_window_minutes: int = Field(
        60,
        ge=0,
        description="After a person hands a conversation back, an escalation to the same queue within this "
        "window reopens the same packet instead of creating another one.",
    )


class ConnectorConfig(_Strict):
    type: str = Field(
        "http",
        description="The action connector plug-in, by its name in the `cxstack.action_connectors` entry "
        "point group (built in: http).",
    )
    base_url: str
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    backoff_s: float = Field(0.2, ge=0)
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent with every call. Secrets are written as ${ENV_NAME} references, resolved from the "
        "environment when the connector starts and never stored, traced, logged or returned; a literal value "
        "in an Authorization, token, key, secret, password or cookie header is an error.",
    )
    identity_header: str | None = Field(
        "X-Customer-Id",
        description="Header carrying the verified customer's id on every call, so the back office can refuse "
        "objects that are not theirs as well (null: not sent).",
    )


class VerificationConfig(_Strict):
    action: str = Field(
        description="An action (in actions.yaml) that checks details an anonymous customer gives, e.g. email "
        "and order number, and answers with the customer's id when they match."
    )
    customer_field: str = Field(
        "customer_id", description="The field of that action's response holding the customer's id."
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="Failed attempts before the conversation is handed to a person."
    )
    intro: str = Field(
        "To help with that, I first need to confirm who you are.",
        description="Said before the first question of the verification.",
    )


class IdentitySettings(_Strict):
    verification: VerificationConfig | None = Field(
        None,
        description="How an anonymous customer proves who they are before an account-specific action. "
        "Without it, such requests go to a person.",
    )


class ReviewSampling(_Strict):
    rate: float = Field(0.05, ge=0, le=1)


class WorkspaceSettings(_Strict):
    version: Literal[1] = 1
    name: str
    language: str = "en"
    languages: list[str] = Field(
        default_factory=list,
        description="Languages the assistant answers in (ISO 639-1); empty: just `language`. A message "
        "confidently detected in another language is handed to a person with a reply in that language.",
    )
    description: str = ""
    # What the assistant helps with, in the customer's words; said when a message is out of scope.
    scope: str = ""
    channels: list[str] = Field(default_factory=lambda: ["api", "webchat"])
    embedder: str = "minilm"
    thresholds: Thresholds = Field(default_factory=Thresholds)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    review_sampling: ReviewSampling = Field(default_factory=ReviewSampling)
    replies: Replies = Field(default_factory=Replies)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)
    burst_window_ms: dict[str, int] = Field(
        default_factory=lambda: {"webchat": 1200, "whatsapp": 2500},
        description="Per channel: messages that arrive within this many milliseconds of each other are "
        "answered as one turn (people often send a request in several short messages). Channels not "
        "listed: 0, every message is its own turn.",
    )
    currency: str = Field(
        "USD",
        description="The workspace's currency (ISO 4217 code, e.g. USD, EUR, GBP). Amounts customers write "
        "are read in it, and amounts in another currency are refused; rule caps and amount conditions are "
        "in it.",
    )
    locale: str = Field(
        "en_US",
        description="How customers write numbers and money (a Babel locale such as en_US, en_GB, de_DE): "
        "decides whether 1,500 is fifteen hundred, and how amounts are shown to customers and colleagues.",
    )

    @field_validator("currency")
    @classmethod
    def _currency_known(cls, code: str) -> str:
        return _check_currency(code)

    @field_validator("locale")
    @classmethod
    def _locale_known(cls, name: str) -> str:
        return _check_locale(name)


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


AttributeType = Literal["string", "number", "boolean", "date"]


class StrategyConfig(_Strict):
    version: Literal[1] = 1
    timezone: str = "UTC"
    objectives: list[str] = Field(default_factory=list)
    tiers: list[TierConfig] = Field(default_factory=list)
    default_tier: str = "standard"
    attributes: dict[str, AttributeType] = Field(
        default_factory=dict,
        description="Customer attributes and their types (string, number, boolean, date). Imports and the "
        "API coerce values to these types (yes/no/true/false/1/0 for booleans) or reject the row; rules on "
        "attributes are checked against them.",
    )
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
    builtin: bool = Field(False, description="Shipped with cxstack (greeting, thanks, goodbye, small_talk).")


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
    from_customer: str | None = Field(
        None,
        description="Fill from the verified customer's profile ('id', 'email', or an attribute name), never "
        "from what the customer types. An anonymous customer has none: the action needs verification first.",
    )
    type: Literal["string", "number", "money"] = Field(
        "string",
        description="string: text; number: a count such as months; money: an amount read only from the "
        "customer's own words (this message, or a bare number when this slot was just asked for) in the "
        "action's currency, never from a pattern, the profile or a default.",
    )
    required: bool = True
    default: str | float | None = None
    prompt: str = ""


class OwnershipCheck(_Strict):
    """How the action layer checks that the object an action touches belongs to the verified customer."""

    field: str = Field(
        description="Field of the back office's response naming the object's owner (dots for nesting: "
        "order.account_id)."
    )
    matches: str = Field(
        "id", description="The customer field it must equal: id, email, or an attribute name."
    )
    check_with: str | None = Field(
        None,
        description="A read action (taking the same slots) called first whose response is checked. Required "
        "for any action that changes something: a write cannot be checked after it happened. Default: this "
        "action's own response (reads only), checked before anything is shown.",
    )


class ActionConfig(_Strict):
    name: str
    description: str = ""
    connector: str = "backoffice"
    public: bool = Field(
        False,
        description="Anonymous customers may run it (a store locator, a promo-code check). Default: only a "
        "customer the channel verified (or who passed the workspace's verification step).",
    )
    owner: OwnershipCheck | None = Field(
        None,
        description="Ownership check for actions that take an object id from the customer (an order "
        "number): an object that is not theirs is 'not found' to them, exactly like one that does not exist.",
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str  # template, e.g. /orders/{order_id}/refunds
    slots: list[SlotConfig] = Field(default_factory=list)
    body: dict[str, str] | None = None  # body field -> slot name; default: all slots not used in the path
    amount_slot: str | None = Field(
        None,
        description="The money slot this action moves (a slot with type: money). An action with one is a "
        "money action: it must declare max_amount, and its amount is checked against the cap in code right "
        "before the back office is called.",
    )
    max_amount: Decimal | None = Field(
        None,
        ge=0,
        description="The most a money action may move without a person, in the action's currency. The "
        "effective cap is the lower of this and any strategy rule's cap_amount; above it the conversation is "
        "handed off (amount_over_cap). A money action without it is never automated.",
    )
    currency: str | None = Field(
        None,
        description="ISO 4217 currency the back office takes for this action's amount; default: the "
        "workspace's currency.",
    )
    requires_confirmation: bool = False
    scope: str = Field(
        "",
        description="Permission scope as resource:verb (orders:read, refunds:write); shown in traces. A "
        "`:write` action with an owner check must use check_with.",
    )
    idempotent: bool = True
    success_reply: str  # Jinja2-free str.format template over slots and the JSON response
    # str.format over the filled slots, asked before an action that needs a confirmation; a generic
    # "I'll <action>: <slots>. Shall I go ahead?" when empty.
    confirmation_prompt: str = ""
    failure_reply: str = "I couldn't complete that just now, so I'm passing you to a colleague."

    @field_validator("currency")
    @classmethod
    def _currency_known(cls, code: str | None) -> str | None:
        return None if code is None else _check_currency(code)

    @property
    def money_slot(self) -> SlotConfig | None:
        """The slot whose amount this action moves: `amount_slot`, else its first money slot."""
        name = self.amount_slot or next((s.name for s in self.slots if s.type == "money"), None)
        return next((s for s in self.slots if s.name == name), None) if name else None

    @property
    def moves_money(self) -> bool:
        return self.amount_slot is not None or any(s.type == "money" for s in self.slots)


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
