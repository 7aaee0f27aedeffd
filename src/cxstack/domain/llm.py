"""The LLM-provider port: what every layer that may use a language model (resolution for answers and agents,
monitoring for judges) sends and gets back. Adapters, one file per wire format, live in integrations/llm/.

The port is deliberately small: chat messages in; text, tool calls and token usage out. Reliability
(retries, the circuit breaker, the per-turn budget) and cost are added around any adapter by
`integrations/llm/guard.py`, so a plug-in only has to speak its provider's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

ChatRole = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "other"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] | None  # None when the model's arguments were not a JSON object
    raw_arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: ChatRole
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message that called tools
    tool_call_id: str | None = None  # a tool message: the call it answers


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    # JSON schema the reply must follow (OpenAI `response_format`, Anthropic: a forced tool); None: free text
    output_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    max_tokens: int = 400
    temperature: float = 0.0
    timeout_s: float = 20.0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class LLMResponse:
    text: str
    usage: Usage
    model: str
    finish_reason: FinishReason = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    # The structured output, parsed, when the request gave an `output_schema` and the reply was JSON
    output: dict[str, Any] | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class LLMProvider(Protocol):
    """One model behind one endpoint. `complete` raises `LLMError`s, never a library's own errors."""

    name: str  # the registered adapter name: "openai", "anthropic", …
    model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...


# ---- errors ----------------------------------------------------------------------------------------------


class LLMError(Exception):
    """A model call that produced nothing usable. `reason` is a short code recorded in the trace."""

    reason = "llm_error"


class LLMUnavailableError(LLMError):
    """The provider could not answer: connection refused, timeout, 429, 5xx. Retryable."""

    reason = "llm_unavailable"

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class LLMRejectedError(LLMError):
    """The provider refused the request itself (400, 401, 403, 404): retrying would not help."""

    reason = "llm_rejected"

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class LLMBadResponseError(LLMError):
    """The provider answered, but not in its own wire format (malformed JSON, a cut-off body or stream)."""

    reason = "llm_bad_response"


class LLMCircuitOpenError(LLMError):
    """Recent calls failed in a row: calls are not attempted until the breaker's cool-down has passed."""

    reason = "llm_circuit_open"


class LLMBudgetExceededError(LLMError):
    """The turn's token or time budget for model calls is spent."""

    reason = "llm_budget"


# ---- cost ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Price of a model in the workspace currency per million tokens."""

    input_per_million: Decimal
    output_per_million: Decimal

    def cost(self, usage: Usage) -> Decimal:
        million = Decimal(1_000_000)
        return (
            self.input_per_million * usage.input_tokens + self.output_per_million * usage.output_tokens
        ) / million


@dataclass(frozen=True, slots=True)
class LLMCall:
    """One model call as the trace records it (never the prompt's secrets: the key is not part of it)."""

    purpose: str  # "answer", "agent:<name>", "judge", …
    provider: str
    model: str
    usage: Usage
    latency_ms: float
    cost: Decimal | None  # None when the workspace gives no price for the model
    attempts: int = 1
    error: str | None = None  # the reason code when the call failed
    finish_reason: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "provider": self.provider,
            "model": self.model,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "latency_ms": round(self.latency_ms, 1),
            "cost": str(self.cost) if self.cost is not None else None,
            "attempts": self.attempts,
            "error": self.error,
            "finish_reason": self.finish_reason,
        }


@dataclass(slots=True)
class LLMUsageSummary:
    calls: list[LLMCall] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for call in self.calls:
            total = total + call.usage
        return total

    @property
    def cost(self) -> Decimal | None:
        priced = [c.cost for c in self.calls if c.cost is not None]
        return sum(priced, Decimal(0)) if priced else None

    @property
    def latency_ms(self) -> float:
        return sum(c.latency_ms for c in self.calls)


LLM_STEP = "llm"  # the trace step that records a turn's model calls (and their tokens and cost)
COST_MICROS = Decimal(1_000_000)  # costs are summed in millionths of the workspace currency, exactly


@dataclass(frozen=True, slots=True)
class IntentUsage:
    """Model usage and cost of the turns of one intent over a period (summed by the store, per intent), so the
    cost of an automated resolution can be set against a person's."""

    intent: str | None
    turns: int
    automated: int  # turns that ended automated
    escalated: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal | None  # None when no call was priced
    unpriced_turns: int  # turns with model calls but no price for their model

    @property
    def cost_per_automated(self) -> Decimal | None:
        if self.cost is None or not self.automated:
            return None
        return self.cost / self.automated


class LLMTurn(Protocol):
    """The model calls of one turn (one token and time budget, one record): what resolvers call."""

    record: LLMUsageSummary

    async def complete(self, request: LLMRequest, *, purpose: str) -> LLMResponse: ...


class LLMSessions(Protocol):
    """Opens a fresh `LLMTurn` for each turn (the guarded client of integrations/llm/guard.py)."""

    def session(self) -> LLMTurn: ...

    async def aclose(self) -> None: ...
