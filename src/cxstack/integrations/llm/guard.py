"""Reliability and accounting around any LLM-provider adapter.

`LLMClient` is shared by every turn of an engine: it owns the circuit breaker (after `breaker_failures`
failures in a row, calls fail at once for `breaker_reset_s`, then one trial call decides). Each turn opens an
`LLMSession`, which owns the turn's budget — tokens and seconds for all of its model calls together — and the
record of every call (tokens, latency, cost, attempts) that the orchestrator writes into the trace.

The token budget counts a call's prompt before it is sent, by a tokenizer-free estimate (`prompt_tokens`): a
call whose prompt alone would spend what is left is not made, and the answer may use only what the prompt
leaves.

Retries (tenacity) cover what a retry can fix: a 429, a 5xx, a timeout, a dropped connection. A 429's
Retry-After is honoured; a wait that would outlast the turn's time budget is not started — the call fails now
and the turn falls back to the offline path or escalates, instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from cxstack.domain.llm import (
    LLMBudgetExceededError,
    LLMCall,
    LLMCircuitOpenError,
    LLMError,
    LLMProvider,
    LLMRequest,
    LLMResponse,
    LLMUnavailableError,
    LLMUsageSummary,
    ModelPrice,
    Usage,
)


def prompt_tokens(request: LLMRequest) -> int:
    """About how many tokens the request's prompt takes (messages, tools, output schema): 4 characters a
    token, as in English with the common tokenizers. An estimate, for the budget only; the trace records the
    provider's own count."""
    chars = sum(len(m.content) for m in request.messages)
    chars += sum(len(t.name) + len(t.description) + len(json.dumps(t.parameters)) for t in request.tools)
    if request.output_schema is not None:
        chars += len(json.dumps(request.output_schema))
    return math.ceil(chars / 4)


class stop_when(stop_base):  # named like tenacity's own stop conditions
    """Stop retrying when `predicate(state)` holds (tenacity combines stop conditions with `|`)."""

    def __init__(self, predicate: Callable[[RetryCallState], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate(retry_state)


@dataclass(frozen=True, slots=True)
class LLMLimits:
    max_retries: int = 2
    backoff_s: float = 0.5  # first wait when the provider gives no Retry-After; doubles, with jitter
    max_backoff_s: float = 8.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    turn_tokens: int = 8000  # all model calls of one turn together
    turn_seconds: float = 30.0


class CircuitBreaker:
    """Closed → open after `failures` failures in a row → half-open after `reset_s` (one trial call)."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, failures)
        self.reset_s = reset_s
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self.failures, self.opened_at, self._trial_running = 0, None, False

    def record_failure(self) -> None:
        self.failures += 1
        if self._trial_running or self.failures >= self.threshold:
            self.opened_at = self._clock()
        self._trial_running = False


class LLMClient:
    def __init__(
        self,
        provider: LLMProvider,
        *,
        limits: LLMLimits | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.sleep = sleep
        self.limits = limits or LLMLimits()
        self.prices = dict(prices or {})
        self.clock = clock
        self.breaker = CircuitBreaker(self.limits.breaker_failures, self.limits.breaker_reset_s, clock)

    @property
    def name(self) -> str:
        return f"{self.provider.name}:{self.provider.model}"

    def session(self) -> LLMSession:
        return LLMSession(self, deadline=self.clock() + self.limits.turn_seconds)

    def price(self, model: str) -> ModelPrice | None:
        return self.prices.get(model) or self.prices.get(self.provider.model)

    async def aclose(self) -> None:
        await self.provider.aclose()


@dataclass(slots=True)
class LLMSession:
    """The model calls of one turn: one budget, one record."""

    client: LLMClient
    deadline: float
    record: LLMUsageSummary = field(default_factory=LLMUsageSummary)

    @property
    def tokens_left(self) -> int:
        return self.client.limits.turn_tokens - self.record.usage.total

    @property
    def seconds_left(self) -> float:
        return self.deadline - self.client.clock()

    async def complete(self, request: LLMRequest, *, purpose: str) -> LLMResponse:
        """The provider's answer, or an `LLMError` (recorded in the session either way)."""
        client, limits = self.client, self.client.limits
        started = client.clock()
        attempts = 0
        try:
            prompt = prompt_tokens(request)
            if self.tokens_left <= prompt or self.seconds_left <= 0:
                raise LLMBudgetExceededError(
                    f"the turn's model budget is spent ({self.record.usage.total} tokens used and a prompt "
                    f"of about {prompt} of {limits.turn_tokens}; {limits.turn_seconds:g} s)"
                )
            # Never ask for more output than the turn can still pay for once the prompt is paid.
            max_tokens = max(1, min(request.max_tokens, self.tokens_left - prompt))

            def wait(state: RetryCallState) -> float:
                error = state.outcome.exception() if state.outcome else None
                if isinstance(error, LLMUnavailableError) and error.retry_after_s is not None:
                    return max(0.0, error.retry_after_s)
                return float(
                    wait_exponential_jitter(multiplier=limits.backoff_s, max=limits.max_backoff_s)(state)
                )

            def out_of_time(state: RetryCallState) -> bool:
                return state.upcoming_sleep >= self.seconds_left - 0.05

            retrying = AsyncRetrying(
                stop=stop_after_attempt(limits.max_retries + 1) | stop_when(out_of_time),
                wait=wait,
                retry=retry_if_exception_type(LLMUnavailableError),
                reraise=True,
                sleep=client.sleep,
            )
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if not client.breaker.allow():
                        raise LLMCircuitOpenError(
                            f"{client.name}: {client.breaker.failures} failures in a row; "
                            f"calls resume after {limits.breaker_reset_s:g} s"
                        )
                    timeout = min(request.timeout_s, self.seconds_left)
                    if timeout <= 0:
                        raise LLMBudgetExceededError("the turn's time budget for model calls is spent")
                    sized = replace(request, max_tokens=max_tokens, timeout_s=timeout)
                    try:
                        response = await asyncio.wait_for(client.provider.complete(sized), timeout + 1.0)
                    except TimeoutError:
                        client.breaker.record_failure()
                        raise LLMUnavailableError(f"no answer within {timeout:.1f} s") from None
                    except LLMError:
                        client.breaker.record_failure()
                        raise
                    except Exception as error:
                        # The port allows only LLMErrors; a plug-in's own error (the openai SDK's "client
                        # has been closed" RuntimeError, say) must cost the model's answer, not the turn.
                        client.breaker.record_failure()
                        raise LLMError(f"{client.name}: {type(error).__name__}: {error}"[:300]) from error
                    client.breaker.record_success()
            self._note(
                purpose, response.model, response.usage, started, attempts, None, response.finish_reason
            )
            return response
        except LLMError as error:
            self._note(purpose, client.provider.model, Usage(), started, attempts, error.reason, None)
            raise

    def _note(
        self,
        purpose: str,
        model: str,
        usage: Usage,
        started: float,
        attempts: int,
        error: str | None,
        finish_reason: str | None,
    ) -> None:
        price = self.client.price(model)
        self.record.calls.append(
            LLMCall(
                purpose=purpose,
                provider=self.client.provider.name,
                model=model,
                usage=usage,
                latency_ms=(self.client.clock() - started) * 1000,
                cost=price.cost(usage) if price is not None else None,
                attempts=max(attempts, 1),
                error=error,
                finish_reason=finish_reason,
            )
        )
