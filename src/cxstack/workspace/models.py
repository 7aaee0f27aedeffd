"""The typed form of a workspace folder ("CX as code"). Pydantic: this is an edge, YAML written by people.

Every model forbids unknown keys so that a typo is an error with a line number, never an ignored setting.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cxstack.domain.money import invalid_currency, invalid_locale
from cxstack.domain.secrets import references

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
    route_min_confidence: float = Field(
        0.40,
        ge=0,
        le=1,
        description="Below this calibrated router confidence (0 to 1) a message matches no intent: the "
        "assistant says it did not understand (and what it can help with), then hands off if it happens "
        "again. Raise it when messages land in the wrong intent; lower it when too many are 'not "
        "understood'.",
    )
    clarify_margin: float = Field(
        0.10,
        ge=0,
        le=1,
        description="When the two most likely intents are closer than this (in router confidence) and the "
        "second is plausible, the assistant asks which one the customer means instead of guessing.",
    )
    knowledge_min_score: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Minimum retrieval score (0 to 1, words and meaning combined) for a fact to be used in "
        "an answer. When no fact reaches it, a content intent has no grounded answer and goes to a person.",
    )
    answer_min_confidence: float = Field(
        0.45,
        ge=0,
        le=1,
        description="Minimum confidence of an answer before it is sent. Below it the answer is not sent: "
        "the customer gets `replies.low_confidence` and the unsent draft goes to the person. Keep it above "
        "knowledge_min_score, or an unsure content answer is never held back.",
    )
    chain_min_confidence: float = Field(
        0.3,
        ge=0,
        le=1,
        description="When one message is served in several steps (two requests, or a multi_agent intent's "
        "agents), the product of the steps' confidences so far must stay at or above this; below it the rest "
        "goes to a person with everything done so far. A product, because a mistake in any step spoils "
        "what follows.",
    )
    max_clarifications: int = Field(
        1,
        ge=0,
        le=5,
        description="How many clarifying questions ('do you want to A, or B?', 'could you tell me more?') "
        "the assistant may ask in one conversation (0: never). Once they are used up, a close call goes with "
        "the likelier intent, and a message that is still not understood goes to a person.",
    )
    human_min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Router confidence needed to send a message straight to a person because its intent's "
        "mechanism is human or never automated; below it the assistant asks first. A wrong (often urgent) "
        "escalation costs a person's time, so this is higher than route_min_confidence.",
    )


class QueueConfig(_Strict):
    name: str = Field(
        description="The queue's internal name, used by intents (`queue:`), rules (`then.queue`) and the "
        "escalation desk's filter. Never shown to customers."
    )
    description: str = Field("", description="What this queue handles, for the people who work it.")
    customer_label: str = Field(
        "",
        description="How the team is named to customers ('our billing team'). Empty: 'a colleague'; "
        "internal queue names are never shown to customers.",
    )


class EscalationConfig(_Strict):
    default_queue: str = Field(
        "general",
        description="Queue for escalations that no intent (`queue:`) or rule (`then.queue`) sends elsewhere, "
        "including messages that match no intent.",
    )
    queues: list[QueueConfig] = Field(
        default_factory=list,
        description="The teams a conversation can be handed to. Names used anywhere else must be listed "
        "here (validate checks); empty: only default_queue.",
    )
    cost_per_handoff: Decimal | None = Field(
        None,
        ge=0,
        description="What a person's handling of one escalated conversation costs, in the workspace "
        "currency. `cxstack report costs` sets the model cost of an automated resolution beside it.",
    )
    language_queues: dict[str, str] = Field(
        default_factory=dict,
        description="Language code (ISO 639-1) to queue, for messages in a language the assistant does not "
        "support; others go to default_queue.",
    )


class Replies(_Strict):
    """What the assistant says in the everyday situations no intent covers. {scope} is the workspace's
    scope, {name} its name."""

    greeting: str = Field(
        "Hi! How can I help you today?",
        description="Answer to a greeting ('hi', 'good morning'); followed by 'I can help with {scope}.' "
        "when the workspace has a scope.",
    )
    thanks: str = Field(
        "You're welcome! Is there anything else I can help with?", description="Answer to a thank-you."
    )
    goodbye: str = Field("Thanks for getting in touch. Have a great day!", description="Answer to a goodbye.")
    small_talk: str = Field(
        "I'm the {name} assistant, so I can only help with support questions. What can I do for you?",
        description="Answer to chat that is not a support request (the weather, a joke, 'are you a bot?'); "
        "followed by 'I can help with {scope}.' when the workspace has a scope.",
    )
    not_understood: str = Field(
        "I'm not sure I understood. Could you tell me a bit more about what you need?",
        description="Said when a message matches no intent (followed by 'I can help with {scope}.'); after "
        "thresholds.max_clarifications of these the conversation goes to a person.",
    )
    handoff: str = Field(
        "I've passed this to {team}, who can see everything we've discussed, so you won't need to repeat "
        "yourself. They'll reply here.",
        description="Said when the conversation is handed to a person by design: an intent for people, a "
        "rule, the customer asking for one. {team} is the queue's customer_label.",
    )
    low_confidence: str = Field(
        "I want to get this right, so I've asked {team} to look at your message. They'll follow up here.",
        description="Said instead of an answer the assistant is not sure of (the draft goes to the person), "
        "and when it hands off because it could not understand or answer.",
    )
    unanswered_part: str = Field(
        "I couldn't find an answer to “{question}”; just ask if you'd like me to pass it to a colleague.",
        description="Said after the answers to a question of several parts, for each part no fact answers. "
        "{question} is that part, as the customer wrote it.",
    )
    waiting: str = Field(
        "Thanks, I've added this to your conversation. {team_cap} has it and will reply here.",
        description="Acknowledges a message sent while the conversation waits for a person (at most every "
        "handoff.ack_interval_minutes). {team_cap} is {team} with a capital letter.",
    )
    confirm_handoff: str = Field(
        "Just to be sure I understood: would you like me to pass this to a colleague? (yes/no)",
        description="Asked before handing to a person when the router is below "
        "thresholds.human_min_confidence.",
    )
    declined_handoff: str = Field(
        "No problem. What can I help you with?",
        description="Said when the customer answers no to confirm_handoff.",
    )
    urgent_note: str = Field(
        "It's marked urgent, so someone will pick it up very shortly.",
        description="Added to a handoff at urgent priority (a promise about time only where it can be kept).",
    )
    priority_note: str = Field(
        "We're treating it as a priority, so you'll hear back shortly.",
        description="Added to a handoff at high priority.",
    )
    over_cap: str = Field(
        "That amount needs a colleague's approval, so I've passed this to {team}, who will follow up here.",
        description="Said when an amount is above what the assistant may move on its own (the action's "
        "max_amount or a rule's cap_amount).",
    )
    identity_required: str = Field(
        "I need to be sure who I'm talking to before I can do that, so I've passed this to {team}.",
        description="Said when a request needs a verified customer and the workspace has no verification "
        "step (or it failed too often), or the object asked about keeps not being theirs.",
    )
    not_found: str = Field(
        "I couldn't find {value} on your account. Could you check it and send it again?",
        description="Said when the object a customer names (an order number) is not theirs or does not "
        "exist: the same words either way. {value} is what they wrote.",
    )
    verified: str = Field(
        "Thanks, that matches our records.", description="Said when the verification step succeeds."
    )
    not_verified: str = Field(
        "I couldn't match those details, sorry. Let's try again: {prompt}",
        description="Said when the verification details do not match; {prompt} is the first question again.",
    )
    cancelled: str = Field(
        "No problem, I haven't changed anything. Is there anything else I can help with?",
        description="Said when the customer answers no to an action's confirmation question.",
    )


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


# ---- help-desk handoff (issue 9): where escalation packets are exported as tickets -------------------------


class ZendeskOptions(_Strict):
    tags: list[str] = Field(
        default_factory=list,
        description="Tags on every exported ticket besides `cxstack`, `queue_<queue>` and `reason_<reason>`.",
    )


class ChatwootOptions(_Strict):
    account_id: int | None = Field(None, ge=1, description="The Chatwoot account the conversations go to.")
    inbox_id: int | None = Field(
        None, ge=1, description="The inbox (an API channel inbox) that holds the exported conversations."
    )


class HelpdeskSettings(_Strict):
    """Secrets never sit here: they come from the environment (CXSTACK_ZENDESK_EMAIL,
    CXSTACK_ZENDESK_API_TOKEN, CXSTACK_ZENDESK_WEBHOOK_SECRET; CXSTACK_CHATWOOT_API_TOKEN,
    CXSTACK_CHATWOOT_WEBHOOK_SECRET; CXSTACK_HANDOFF_WEBHOOK_SECRET)."""

    kind: Literal["none", "zendesk", "chatwoot", "webhook"] = Field(
        "none",
        description="The help desk escalation packets go to as tickets: zendesk, chatwoot, a generic signed "
        "webhook, or none (people answer on the escalation desk of this service).",
    )
    base_url: str | None = Field(
        None,
        description="zendesk: https://<subdomain>.zendesk.com; chatwoot: the installation's address; "
        "webhook: the URL the packets are posted to.",
    )
    queues: list[str] | None = Field(
        None, description="Only escalations to these queues are exported (unset: every queue)."
    )
    max_attempts: int = Field(
        10, ge=1, le=50, description="Tries before an export is dead (its reason shown on the escalation)."
    )
    zendesk: ZendeskOptions = Field(default_factory=ZendeskOptions, description="Options for kind zendesk.")
    chatwoot: ChatwootOptions = Field(
        default_factory=ChatwootOptions, description="Options for kind chatwoot."
    )

    @model_validator(mode="after")
    def _complete(self) -> HelpdeskSettings:
        if self.kind != "none" and not self.base_url:
            raise ValueError(f"helpdesk.base_url is required for kind {self.kind}")
        if self.kind == "chatwoot" and (self.chatwoot.account_id is None or self.chatwoot.inbox_id is None):
            raise ValueError("helpdesk.chatwoot.account_id and inbox_id are required for kind chatwoot")
        return self


class ConnectorConfig(_Strict):
    type: str = Field(
        "http",
        description="The action connector plug-in, by its name in the `cxstack.action_connectors` entry "
        "point group (built in: http).",
    )
    base_url: str = Field(
        description="Address of the back office's API; each action's `path` is appended to it "
        "(https://api.example.com/v1)."
    )
    timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for one call before it counts as failed (and is retried)."
    )
    retries: int = Field(
        1,
        ge=0,
        le=5,
        description="Extra attempts after a timeout, a connection error or a 5xx answer. A 4xx is the back "
        "office saying no and is never retried; an action with idempotent: false is retried only when the "
        "request never left.",
    )
    backoff_s: float = Field(
        0.2, ge=0, description="Seconds before the first retry; doubled before each further one."
    )
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


class ModelPriceConfig(_Strict):
    input_per_million: Decimal = Field(
        ge=0, description="Price of one million input (prompt) tokens, in the workspace currency."
    )
    output_per_million: Decimal = Field(
        ge=0, description="Price of one million output (completion) tokens, in the workspace currency."
    )


class LLMSettings(_Strict):
    provider: str = Field(
        description="The LLM-provider plug-in, by its name in the `cxstack.llm_providers` entry point group "
        "(built in: openai — any OpenAI-compatible chat completions endpoint: OpenAI, vLLM, Ollama, "
        "llama.cpp, LiteLLM — and anthropic)."
    )
    model: str = Field(description="The model name the endpoint expects (gpt-4o-mini, claude-…, smollm2).")
    base_url: str | None = Field(
        None,
        description="The endpoint, for a server other than the provider's own (http://127.0.0.1:8080/v1). "
        "${ENV_NAME} references are resolved from the environment.",
    )
    api_key: str | None = Field(
        None,
        description="The key, always as an ${ENV_NAME} reference (a literal key is an error): resolved when "
        "the provider starts, never stored, traced, logged or returned. Empty for a local server.",
    )
    stream: bool = Field(False, description="Receive answers as a stream (OpenAI-compatible endpoints).")
    timeout_s: float = Field(20.0, gt=0, description="Seconds one model call may take.")
    max_retries: int = Field(
        2, ge=0, le=5, description="Extra attempts after a 429, a 5xx, a timeout or a dropped connection."
    )
    max_tokens: int = Field(400, ge=16, le=8192, description="Most tokens one answer may have.")
    turn_tokens: int = Field(
        8000, ge=100, description="Most tokens (in and out) all model calls of one turn may use together."
    )
    turn_seconds: float = Field(
        30.0, gt=0, description="Most seconds all model calls of one turn may take together."
    )
    breaker_failures: int = Field(
        5, ge=1, description="Failures in a row after which calls stop for `breaker_reset_s`."
    )
    breaker_reset_s: float = Field(30.0, gt=0, description="Seconds the circuit breaker stays open.")
    on_failure: Literal["fallback", "escalate"] = Field(
        "fallback",
        description="When the provider fails: `fallback` answers the offline way (template answers, "
        "deterministic agents); `escalate` hands the conversation to a person with reason llm_unavailable.",
    )
    answers: bool = Field(
        True,
        description="Write content answers with the model (from the retrieved facts only, with citations, "
        "grounding-checked before sending). False: facts are composed without the model.",
    )
    prices: dict[str, ModelPriceConfig] = Field(
        default_factory=dict,
        description="Price per model, so that the cost of each turn and of each automated resolution is "
        "recorded in the trace.",
    )

    @field_validator("api_key")
    @classmethod
    def _key_is_reference(cls, value: str | None) -> str | None:
        if value and not references(value):
            raise PydanticCustomError(
                "literal_secret",
                "api_key is a literal key; keys never live in workspace files",
                {"fix": "write api_key: ${OPENAI_API_KEY} and set that variable in the environment"},
            )
        return value


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


# --- cxstack.yaml: whatsapp ---------------------------------------------------------------------------------

TEMPLATE_PLACEHOLDER = r"\{\{(\d+)\}\}"


class WhatsAppTemplate(_Strict):
    """A message template as approved in WhatsApp Manager: the only thing WhatsApp delivers outside the
    24-hour customer-service window. Declared here so every sender (a person, a follow-up, a survey) can
    only use what was approved, with the right number of parameters."""

    name: str = Field(
        pattern=r"^[a-z0-9_]{1,512}$",
        description="The template's name exactly as approved (lower case, digits and underscores).",
    )
    language: str = Field(
        "en",
        pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$",
        description="The language code it was approved in (en, en_US, pt_BR).",
    )
    body: str = Field(
        min_length=1,
        max_length=1024,
        description="Its body as approved, with {{1}}, {{2}} … where parameters go; the transcript shows "
        "it filled in, as the customer sees it.",
    )
    purpose: str = Field("", description="When the team sends it, for the people who pick one.")

    @field_validator("body")
    @classmethod
    def _placeholders_numbered(cls, body: str) -> str:
        numbers = sorted({int(n) for n in re.findall(TEMPLATE_PLACEHOLDER, body)})
        if numbers != list(range(1, len(numbers) + 1)):
            raise PydanticCustomError(
                "template_placeholders",
                "placeholders must be numbered {{1}}, {{2}} … without gaps (found {found})",
                {"found": ", ".join(f"{{{{{n}}}}}" for n in numbers), "fix": "renumber them from {{1}}"},
            )
        return body

    @property
    def parameter_count(self) -> int:
        return len({int(n) for n in re.findall(TEMPLATE_PLACEHOLDER, self.body)})


class WhatsAppConfig(_Strict):
    templates: list[WhatsAppTemplate] = Field(
        default_factory=list,
        description="Approved message templates: outside the 24-hour window, the only messages a person or "
        "a follow-up may send on WhatsApp. Empty: nothing can be sent once the window shuts.",
    )

    @field_validator("templates")
    @classmethod
    def _unique(cls, templates: list[WhatsAppTemplate]) -> list[WhatsAppTemplate]:
        seen: set[tuple[str, str]] = set()
        for template in templates:
            key = (template.name, template.language)
            if key in seen:
                raise PydanticCustomError(
                    "duplicate_template",
                    "template {name} ({language}) is declared twice",
                    {"name": template.name, "language": template.language, "fix": "keep one of them"},
                )
            seen.add(key)
        return templates

    def template(self, name: str, language: str | None = None) -> WhatsAppTemplate | None:
        matches = [t for t in self.templates if t.name == name and language in (None, t.language)]
        return matches[0] if matches else None


class ReviewSampling(_Strict):
    rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Base share of settled conversations drawn for human review against rubric.yaml (0.05: "
        "one in twenty). Each draw keeps its probability, so oversampling never biases the quality rate.",
    )
    low_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Conversations whose lowest routing confidence is below this are oversampled.",
    )
    oversample: float = Field(
        3.0,
        ge=1,
        description="How many times more likely a low-confidence or escalated conversation is to be drawn.",
    )
    new_version_reviews: int = Field(
        30,
        ge=0,
        description="Conversations of a workspace version with fewer draws than this are drawn twice as "
        "often, so a change is reviewed soon after it ships.",
    )
    double: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of drawn conversations reviewed by two people, to measure how much people agree.",
    )
    margin: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="The planner's target: ± this margin on each stratum's quality rate "
        "(`cxstack review plan`).",
    )


class MonitoringSettings(_Strict):
    settle_hours: float = Field(
        24.0,
        gt=0,
        description="Hours of silence after which a conversation is settled: one the bot left waiting on the "
        "customer (or never resolved) counts as abandoned.",
    )
    reopen_days: float = Field(
        7.0,
        gt=0,
        description="A conversation the bot resolved counts as reopened when the customer comes back with a "
        "request (not a thank-you), at least an hour later and within this many days.",
    )
    confidence: float = Field(
        0.95, gt=0, lt=1, description="Confidence level of every interval monitoring shows."
    )
    min_reviews: int = Field(
        10,
        ge=2,
        description="Fewer human reviews than this in a slice: its quality rate is shown as insufficient, "
        "not as a number.",
    )
    judge_trust_threshold: float = Field(
        0.80,
        ge=0,
        le=1,
        description="A judge is trusted for a slice (its labels on every conversation correct the human "
        "sample) only where it agreed with people on at least this share of reviewed conversations.",
    )
    judge_min_pairs: int = Field(
        20,
        ge=2,
        description="…and only after it has been compared with people on at least this many conversations "
        "there.",
    )
    drift_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="A drift alert needs its test's p-value below this (quality, judge agreement, escalation "
        "rate, intent mix; between the last week and the one before, or two workspace versions)…",
    )
    drift_min_change: float = Field(
        0.05,
        gt=0,
        le=1,
        description="…and a change at least this large: 0.05 is 5 points for a rate, a Cramér's V of 0.05 "
        "for the intent mix.",
    )
    judge: str = Field(
        "offline",
        description="Which judge the service runs on settled conversations, by its name in the "
        "`cxstack.judges` entry point group: offline (built in; no model, no cost), llm (built in; the "
        "workspace's `llm`, through the same guard as answers) or a plug-in's.",
    )


class WorkspaceSettings(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    name: str = Field(
        description="The assistant's business name, shown in the web chat and in {name} in replies."
    )
    language: str = Field(
        "en", description="The language the assistant answers in (ISO 639-1 code), when `languages` is empty."
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Languages the assistant answers in (ISO 639-1); empty: just `language`. A message "
        "confidently detected in another language is handed to a person with a reply in that language.",
    )
    description: str = Field(
        "", description="What this assistant is for, in a sentence or two; for the team, shown by the API."
    )
    scope: str = Field(
        "",
        description="What the assistant helps with, in the customer's words ('your bills, meter readings "
        "and moving home'). Said after a greeting and when a message is not understood; {scope} in "
        "replies. Empty: 'your questions'.",
    )
    channels: list[str] = Field(
        default_factory=lambda: ["api", "webchat"],
        description="Channels that may post messages and receive replies, besides api and webchat, which "
        "are always on.",
    )
    whatsapp: WhatsAppConfig = Field(
        default_factory=WhatsAppConfig,
        description="WhatsApp's approved templates (the channel's credentials come from the environment).",
    )
    embedder: str = Field(
        "minilm",
        description="The sentence embedder the router and knowledge search use: minilm (best), wordllama "
        "(faster, weaker on paraphrases) or hashing (instant, word overlap only; for tests). The "
        "--embedder option of chat, serve, replay and router overrides it.",
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds,
        description="When the assistant is sure enough to route, answer or hand off.",
    )
    escalation: EscalationConfig = Field(
        default_factory=EscalationConfig,
        description="The queues people work and where handoffs go by default.",
    )
    connectors: dict[str, ConnectorConfig] = Field(
        default_factory=dict,
        description="Back-office APIs that actions call, by name (actions refer to one with "
        "`connector:`). Empty: a workspace without actions.",
    )
    review_sampling: ReviewSampling = Field(
        default_factory=ReviewSampling, description="How many conversations people review."
    )
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings,
        description="How outcomes are decided and how sure a quality rate must be before it is shown.",
    )
    replies: Replies = Field(
        default_factory=Replies,
        description="What the assistant says in situations no intent covers. Placeholders: {name}, "
        "{scope}, {team}, {team_cap}.",
    )
    identity: IdentitySettings = Field(
        default_factory=IdentitySettings,
        description="How anonymous customers prove who they are before account-specific actions.",
    )
    handoff: HandoffSettings = Field(
        default_factory=HandoffSettings,
        description="How the assistant behaves while, and after, a person has the conversation.",
    )
    helpdesk: HelpdeskSettings = Field(
        default_factory=HelpdeskSettings,
        description="Escalations exported as tickets to a help desk; its replies come back to the customer.",
    )
    burst_window_ms: dict[str, int] = Field(
        default_factory=lambda: {"webchat": 1200, "whatsapp": 2500},
        description="Per channel: messages that arrive within this many milliseconds of each other are "
        "answered as one turn (people often send a request in several short messages). Channels not "
        "listed: 0, every message is its own turn.",
    )
    llm: LLMSettings | None = Field(
        None,
        description="A language model for written answers and micro-agents. None (the default): cxstack "
        "works without one — answers are composed from facts and agents run deterministically.",
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

    name: str = Field(description="The tier's name, used by rules (`when.tier_in`) and shown in traces.")
    description: str = Field("", description="Who belongs here, for the team.")
    min_arr: float | None = Field(
        None,
        description="Lowest annual revenue (ARR, the customer profile's `arr`, in the workspace currency) "
        "for this tier, inclusive. Omitted: no lower bound.",
    )
    max_arr: float | None = Field(
        None, description="ARR at which a customer is above this tier (exclusive). Omitted: no upper bound."
    )
    plans: list[str] | None = Field(
        None, description="The profile's `plan` must be one of these (case ignored). Omitted: any plan."
    )
    segments: list[str] | None = Field(
        None,
        description="The profile's `segment` must be one of these (case ignored). Omitted: any segment.",
    )
    priority: Literal["low", "normal", "high", "urgent"] = Field(
        "normal",
        description="Priority of this tier's escalations; the floor, which rules can raise but not lower.",
    )
    value_weight: float = Field(
        1.0,
        description="Multiplies the customer's ARR into the 'value' shown in traces and escalation packets.",
    )


class Condition(_Strict):
    """All given fields must hold (AND). Omitted fields do not constrain."""

    intent_in: list[str] | None = Field(None, description="The message's intent is one of these.")
    intent_not_in: list[str] | None = Field(None, description="The message's intent is none of these.")
    tier_in: list[str] | None = Field(None, description="The customer's tier is one of these.")
    plan_in: list[str] | None = Field(None, description="The customer's plan is one of these (case ignored).")
    segment_in: list[str] | None = Field(
        None, description="The customer's segment is one of these (case ignored)."
    )
    channel_in: list[str] | None = Field(
        None, description="The message came through one of these channels (api, webchat, ...)."
    )
    arr_gte: float | None = Field(None, description="The customer's ARR is at least this.")
    arr_lt: float | None = Field(None, description="The customer's ARR is below this.")
    amount_gt: float | None = Field(
        None,
        description="The amount the customer wrote in this request is above this (workspace currency). A "
        "request without an amount does not match.",
    )
    amount_lte: float | None = Field(
        None,
        description="The amount the customer wrote is at most this. A request without an amount does not "
        "match.",
    )
    hours_between: tuple[int, int] | None = Field(
        None,
        description="Local hours [start, end) in strategy.yaml's timezone, e.g. [18, 8] for 18:00 to "
        "08:00: an end before the start wraps past midnight.",
    )
    weekday_in: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        None, description="The local day of the week is one of these."
    )
    attributes: dict[str, Any] | None = Field(
        None,
        description="Customer attributes that must have these values, e.g. {vulnerable: true}. Compared "
        "by the type declared in strategy.yaml `attributes` (so a CSV's 'yes' is true); an undeclared "
        "attribute is compared as text. A customer without the attribute does not match.",
    )


class Effect(_Strict):
    force_human: bool | None = Field(
        None,
        description="true: a person handles the request, whatever the intent's mechanism (reason "
        "policy_rule:<id>).",
    )
    require_confirmation: bool | None = Field(
        None,
        description="true: an action is read back to the customer and runs only after a yes.",
    )
    cap_amount: float | None = Field(
        None,
        ge=0,
        description="Most a money action may move without a person, in the workspace currency. Several "
        "rules: the lowest cap wins; the action's own max_amount applies too. Only limits intents whose "
        "action has a money slot (validate flags a cap that cannot).",
    )
    priority: Literal["low", "normal", "high", "urgent"] | None = Field(
        None,
        description="Escalation priority. Several rules: the highest wins; never below the tier's.",
    )
    queue: str | None = Field(
        None,
        description="Queue for the escalation, overriding the intent's. Several rules: the first in file "
        "order that sets one.",
    )
    tone: str | None = Field(
        None,
        description="How to phrase answers. Exactly formal, warm, friendly, apologetic or empathetic "
        "opens a content answer with a matching sentence; any other text is recorded in the trace for "
        "people and future LLM mechanisms.",
    )


class PolicyRule(_Strict):
    id: str = Field(description="A unique, stable name; traces and escalation reasons cite it.")
    description: str = Field("", description="Why the rule exists, for the team.")
    when: Condition = Field(
        default_factory=Condition,
        description="The conditions, all of which must hold. Omitted: the rule applies to every message.",
    )
    then: Effect = Field(description="What happens when the rule fires. Set at least one effect.")


AttributeType = Literal["string", "number", "boolean", "date"]


class StrategyConfig(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    timezone: str = Field(
        "UTC",
        description="IANA time zone (Europe/London) for rules on hours and weekdays and for fact "
        "validity dates.",
    )
    objectives: list[str] = Field(
        default_factory=list,
        description="What the team is aiming for, in words; documentation for people, not enforced.",
    )
    tiers: list[TierConfig] = Field(
        default_factory=list,
        description="Customer tiers; a customer is in the first tier, in file order, that they match.",
    )
    default_tier: str = Field("standard", description="The tier of a customer who matches none of `tiers`.")
    attributes: dict[str, AttributeType] = Field(
        default_factory=dict,
        description="Customer attributes and their types (string, number, boolean, date). Imports and the "
        "API coerce values to these types (yes/no/true/false/1/0 for booleans) or reject the row; rules on "
        "attributes are checked against them.",
    )
    rules: list[PolicyRule] = Field(
        default_factory=list,
        description="Business rules, checked on every message. Every rule whose conditions hold fires.",
    )


# --- intents.yaml -------------------------------------------------------------------------------------------


class IntentConfig(_Strict):
    name: str = Field(
        description="A unique name in snake_case; rules, facts and traces refer to the intent by it."
    )
    description: str = Field(
        "",
        description="What the customer wants, as a verb phrase ('ask how to submit a meter reading'); used "
        "in clarifying questions ('do you want to ...?').",
    )
    # Open set: any registered resolver name is accepted by the loader and checked against the registry by
    # validate; agent and multi_agent arrive with LLM providers.
    mechanism: str = Field(
        "human",
        description="How the intent is resolved: content (answer from facts), action (call the back "
        "office), human (hand to a person) or another registered mechanism (see Mechanisms below).",
    )
    owner: str = Field(
        "", description="Who is responsible for this intent's quality (a person or team address)."
    )
    queue: str | None = Field(
        None,
        description="Queue its escalations go to, unless a rule says otherwise. Omitted: "
        "escalation.default_queue.",
    )
    status: Literal["active", "draft"] = Field(
        "active",
        description="draft: kept in the file but not routed to (imported intents start as drafts).",
    )
    never_automate: bool = Field(
        False,
        description="true: always a person, whatever rules or confidence say (legal threats, safety). "
        "Requires mechanism: human.",
    )
    action: str | None = Field(
        None, description="For mechanism action: the action (in actions.yaml) that serves it."
    )
    agent: str | None = Field(
        None, description="For mechanism agent: the micro-agent (in agents/) that serves it."
    )
    agents: list[str] = Field(
        default_factory=list,
        description="For mechanism multi_agent: the specialist agents (in agents/) that serve it, one step "
        "each, in this order. Each step's output is verified before the next starts, every handoff passes "
        "the turn's whole context (facts used, action results, confidence so far) and is traced.",
    )
    fact_tags: list[str] = Field(
        default_factory=list,
        description="For mechanism content: facts with one of these tags rank higher. A boost, not a filter.",
    )
    fallback: str | None = Field(
        None,
        description="Mechanism to try once when the first one cannot answer confidently (e.g. content for "
        "an action intent); a person after that. Omitted: straight to a person.",
    )
    handoff_reply: str = Field(
        "",
        description="What the customer is told when this intent goes to a person, instead of replies.handoff "
        "(e.g. safety instructions for a gas smell: 'Leave the property and call the emergency line ...'). "
        "Placeholders as in replies.",
    )
    examples: list[str] = Field(
        default_factory=list,
        description="Messages customers really write for this intent; the router learns from them. At "
        "least 5 varied ones for an automated intent (validate warns), 10 to 20 is better. An example "
        "may belong to one intent only.",
    )
    builtin: bool = Field(
        False,
        description="Shipped with cxstack (greeting, thanks, goodbye, small_talk). Leave it out of your own "
        "intents.",
    )


class IntentCatalogue(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    intents: list[IntentConfig] = Field(
        description="What customers ask for. Built-in conversational intents are added unless declared here."
    )


# --- knowledge/*.yaml ---------------------------------------------------------------------------------------


class FactAudience(_Strict):
    tiers: list[str] = Field(
        default_factory=list,
        description="Customer tiers (strategy.yaml) this fact is for. Empty: every tier.",
    )
    channels: list[str] = Field(
        default_factory=list, description="Channels (api, webchat, whatsapp, email …) it is for. Empty: all."
    )
    locales: list[str] = Field(
        default_factory=list,
        description="Languages (en, fr) or locales (fr-CA) it is for, matched against the language the "
        "customer writes in (`fr` covers `fr-CA`). Empty: every language.",
    )


class FactConfig(_Strict):
    id: str = Field(
        description="A unique, stable id (kebab-case); answers cite it, so keep it when the text changes."
    )
    text: str = Field(
        description="One self-contained statement a customer can be told as it is. Content answers are "
        "made of these texts, word for word, so write them for customers. In a Markdown fact: the body."
    )
    owner: str = Field(description="Who keeps this fact true (a person or team address).")
    review_by: date | None = Field(
        None,
        description="Date (YYYY-MM-DD) by which the owner re-checks the fact; validate warns after it. "
        "The fact is still used.",
    )
    tags: list[str] = Field(
        default_factory=list, description="Topics; an intent's fact_tags rank facts with these higher."
    )
    intents: list[str] = Field(
        default_factory=list,
        description="Intents this fact answers; it ranks higher for them (the knowledge search still "
        "considers every fact).",
    )
    sources: list[str] = Field(
        default_factory=list,
        description="Where the fact comes from (policy document, page, ticket), for reviewers.",
    )
    valid_from: date | None = Field(
        None,
        description="First day (YYYY-MM-DD, in strategy.yaml's timezone) the fact may be used. Omitted: "
        "always.",
    )
    valid_to: date | None = Field(
        None, description="Last day the fact may be used (inclusive). Omitted: no end."
    )
    subject: str | None = Field(
        None,
        description="The entity the fact is about (a product, a plan, a store, a membership level), when it "
        "is about one. The audit compares only facts about the same subject (or without one).",
    )
    status: Literal["draft", "published", "retired"] = Field(
        "published",
        description="Only published facts are used in answers; drafts wait for their owner's approval, "
        "retired facts stay for the record.",
    )
    audience: FactAudience = Field(
        default_factory=FactAudience,
        description="Who the fact is for; a fact outside a customer's tier or the conversation's channel is "
        "never used for them.",
    )


class KnowledgeFile(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    facts: list[FactConfig] = Field(description="The facts of this file; ids are unique across all files.")


# --- actions.yaml -------------------------------------------------------------------------------------------


class SlotConfig(_Strict):
    name: str = Field(
        description="The slot's name: {name} in the action's path, a body field, and {name} in its replies."
    )
    description: str = Field(
        "", description="What the value is; asked as 'Could you tell me the <description>?' without a prompt."
    )
    pattern: str | None = Field(
        None,
        description="A regular expression that finds the value in a message; its first group (or the "
        "whole match) is the value. Write it in single quotes in YAML. Without one, the value is the "
        "customer's whole answer when this slot was just asked for.",
    )
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
    required: bool = Field(
        True, description="false: the action runs without it (with `default` if one is given)."
    )
    default: str | float | None = Field(
        None, description="Value used when the customer gave none. Not allowed on money slots."
    )
    prompt: str = Field(
        "",
        description="The question that asks for the value ('What is your bill number? It starts with "
        "BL-.'). Empty: built from the description.",
    )


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
    name: str = Field(
        description="A unique name in snake_case; intents refer to it with `action:`. Shown to customers "
        "with spaces in a generic confirmation question."
    )
    agents: list[str] | None = Field(
        None,
        description="The micro-agents that may call this action (checked in code when the call is made). "
        "Unset: any agent that lists the action in its own `actions`; [] : no agent, only the action "
        "mechanism.",
    )
    description: str = Field("", description="What the action does, for the team.")
    connector: str = Field(
        "backoffice", description="The connector (in cxstack.yaml `connectors`) that performs the call."
    )
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
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST",
        description="HTTP method. GET and DELETE send the slots as query parameters; the others as a JSON "
        "body.",
    )
    path: str = Field(
        description="Path appended to the connector's base_url, with {slot} placeholders "
        "(/bills/{bill_number}); every placeholder must be a slot."
    )
    slots: list[SlotConfig] = Field(
        default_factory=list,
        description="The values the action needs; the assistant asks for missing ones, one at a time.",
    )
    body: dict[str, str] | None = Field(
        None,
        description="Body (or query) field name to slot name. Omitted: every slot not used in the path, "
        "under its own name.",
    )
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
    requires_confirmation: bool = Field(
        False,
        description="true: the assistant reads the request back and runs it only after a yes (a rule's "
        "require_confirmation can ask for this too).",
    )
    scope: str = Field(
        "",
        description="Permission scope as resource:verb (orders:read, refunds:write); shown in traces. A "
        "`:write` action with an owner check must use check_with.",
    )
    idempotent: bool = Field(
        True,
        description="true: the back office executes a repeated call (same Idempotency-Key header) once, so "
        "failed calls are retried. false: retried only when the request never left.",
    )
    success_reply: str = Field(
        description="Said after the call succeeds: {name} placeholders take the slots and the top-level "
        "fields of the back office's JSON answer ({amount_due}). A placeholder the answer lacks gives a "
        "plain 'Done: <action>.' instead."
    )
    confirmation_prompt: str = Field(
        "",
        description="The yes/no question asked before a confirmed action, with {slot} placeholders. Empty: "
        "'Just to confirm: I'll <action> (<slots>). Shall I go ahead? (yes/no)'.",
    )
    failure_reply: str = Field(
        "I couldn't complete that just now, so I'm passing you to a colleague.",
        description="Said when the back office fails or refuses; the conversation then goes to a person.",
    )

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
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    actions: list[ActionConfig] = Field(description="The back-office operations intents can run.")


# --- rubric.yaml / experiments.yaml (shape reserved; used by monitoring and optimization) ------------------


class RubricCriterion(_Strict):
    id: str = Field(description="A unique name for the criterion (correctness, tone, ...).")
    description: str = Field(
        description="What a reviewer scores, and what a good and a poor score look like."
    )
    kind: Literal["ordinal", "pass_fail"] = Field(
        "ordinal",
        description="ordinal: a score on `scale`; pass_fail: 1 (passes) or 0 (fails), `scale` and "
        "`pass_at` ignored.",
    )
    scale: tuple[int, int] = Field(
        (1, 5), description="Lowest and highest score, e.g. [1, 5]; the first must be below the second."
    )
    pass_at: int | None = Field(
        None,
        description="The lowest score that passes (ordinal criteria). Empty: the top two points of the scale "
        "(4 on 1-5).",
    )
    gate: bool = Field(
        True,
        description="A conversation passes review only if every gate criterion passes; false: the "
        "criterion is scored and tracked but does not decide the pass.",
    )

    @property
    def bounds(self) -> tuple[int, int]:
        return (0, 1) if self.kind == "pass_fail" else self.scale

    @property
    def threshold(self) -> int:
        if self.kind == "pass_fail":
            return 1
        return self.pass_at if self.pass_at is not None else max(self.scale[0], self.scale[1] - 1)


class Rubric(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    criteria: list[RubricCriterion] = Field(
        default_factory=list,
        description="What reviewers and judges score a conversation on. Every review and judgement records "
        "the rubric's content hash, so a change leaves earlier reviews with the rubric they were made "
        "against. Empty: cxstack's default rubric (correctness, groundedness, policy, resolution, tone).",
    )


EXPERIMENT_METRICS = (
    "automation_rate",
    "escalation_rate",
    "quality_rate",
    "reopen_rate",
    "abandon_rate",
    "csat",
)


class Guardrail(_Strict):
    metric: Literal[
        "automation_rate", "escalation_rate", "quality_rate", "reopen_rate", "abandon_rate", "csat"
    ] = Field(description="The metric that must not get worse.")
    max_drop: float = Field(
        ge=0,
        description="How far it may move the wrong way before the experiment stops (0.02: two points of a "
        "rate; for escalation, reopen and abandon rates a rise is the wrong way).",
    )


class ExperimentConfig(_Strict):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="A unique name for the experiment (lower case, digits, - and _); traces record it.",
    )
    description: str = Field("", description="The question the experiment answers.")
    status: Literal["draft", "running", "stopped"] = Field(
        "draft", description="draft or stopped: not run. running: conversations are assigned to variants."
    )
    unit: Literal["conversation", "customer"] = Field(
        "conversation",
        description="What is assigned: each conversation, or each customer (all their conversations get the "
        "same variant; use it when a change is felt across conversations).",
    )
    salt: str = Field(
        "",
        description="Mixed into the hash that assigns units; empty: the experiment's id. Fixed once running.",
    )
    control: str = Field("control", description="The variant the others are compared with.")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Variant name to the workspace settings it overrides, by dotted path "
        "(strategy.rules.<rule id>.then.cap_amount: 150, settings.thresholds.route_min_confidence: 0.5, "
        "intents.<name>.mechanism: human, facts.<id>.text: …); {} for the control.",
    )
    allocation: dict[str, float] = Field(
        default_factory=dict,
        description="Variant name to its share of units (0 to 1, adding up to 1). Fixed once running.",
    )
    primary_metric: Literal[
        "automation_rate", "escalation_rate", "quality_rate", "reopen_rate", "abandon_rate", "csat"
    ] = Field("automation_rate", description="The metric the decision is made on.")
    guardrails: list[Guardrail] = Field(
        default_factory=list,
        description="Metrics that must not get worse by more than `max_drop` (quality_rate, say).",
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Further metrics shown (automation_rate, escalation_rate, quality_rate, reopen_rate, "
        "abandon_rate, csat).",
    )
    start: datetime | None = Field(
        None, description="Conversations that start from then on are enrolled (ISO time). Unset: from now."
    )
    stop: datetime | None = Field(None, description="No unit is assigned after this time (ISO time).")


class Experiments(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    experiments: list[ExperimentConfig] = Field(
        default_factory=list,
        description="Planned, running and stopped experiments: each turn of an enrolled conversation runs on "
        "its variant's workspace, and its trace records the exposure.",
    )


# --- agents/*.yaml ------------------------------------------------------------------------------------------


class AgentExit(_Strict):
    after_action: str | None = Field(
        None,
        description="The agent's work is done once this action has run (default: the last of `actions`).",
    )


class AgentConfig(_Strict):
    name: str = Field(description="A unique name; intents refer to it with `agent:`.")
    description: str = Field("", description="What the agent handles, for the team and for other agents.")
    instructions: str = Field(
        "",
        description="How the agent works, for the model (with an LLM). Rules that matter for money, identity "
        "or other people's data are enforced in code, not here.",
    )
    actions: list[str] = Field(
        default_factory=list,
        description="The actions (in actions.yaml) the agent may call. Without an LLM it runs them in this "
        "order, each one's slots filled from the conversation and the customer profile.",
    )
    fact_tags: list[str] = Field(
        default_factory=list, description="The knowledge it may answer from (facts with one of these tags)."
    )
    slots: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="JSON schemas that slot values must also pass before an action runs "
        "(`amount: {type: number, exclusiveMinimum: 0}`); a value that fails is asked for again, with "
        "the reason.",
    )
    handoff_to: list[str] = Field(
        default_factory=list, description="Agents this one may hand the conversation to."
    )
    exit: AgentExit = Field(default_factory=AgentExit, description="When the agent's work is done.")
    max_turns: int = Field(
        8, ge=1, le=50, description="Customer turns the agent may take before a person takes over."
    )

    @property
    def done_after(self) -> str | None:
        return self.exit.after_action or (self.actions[-1] if self.actions else None)


class AgentFile(_Strict):
    version: Literal[1] = Field(1, description="Version of the file format. Only 1 exists.")
    agents: list[AgentConfig] = Field(description="The micro-agents of this file; names are unique.")
