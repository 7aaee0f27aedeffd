"""Each LLM-provider adapter against a local HTTP stand-in speaking its provider's real wire format, and the
guard around them (retries honouring Retry-After, the circuit breaker, the per-turn budget, cost)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from tests.conftest import openai_completion as wire_completion

from cxstack.domain.llm import (
    ChatMessage,
    LLMBadResponseError,
    LLMBudgetExceededError,
    LLMCircuitOpenError,
    LLMError,
    LLMRejectedError,
    LLMRequest,
    LLMUnavailableError,
    ModelPrice,
    ToolSpec,
)
from cxstack.domain.secrets import MissingSecretError, Secret
from cxstack.integrations.llm.anthropic import AnthropicProvider
from cxstack.integrations.llm.errors import parse_retry_after
from cxstack.integrations.llm.guard import LLMClient, LLMLimits
from cxstack.integrations.llm.openai_compatible import OpenAICompatibleProvider
from cxstack.integrations.llm.registry import llm_client
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.models import LLMSettings

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ASK = LLMRequest(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hello?")), timeout_s=5)
SCHEMA = {"type": "object", "properties": {"kind": {"type": "string"}}, "required": ["kind"]}
LOOKUP = ToolSpec(
    "lookup_order", "Look an order up.", {"type": "object", "properties": {"id": {"type": "string"}}}
)


def openai_completion(
    content: str | None = "Hi there.", *, finish: str = "stop", tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return wire_completion(content, finish=finish, tool_calls=tool_calls, model="gpt-test")


def anthropic_message(content: list[dict[str, Any]], *, stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 7},
    }


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def backend() -> Iterator[tuple[ScriptedBackend, str]]:
    scripted = ScriptedBackend()
    with scripted.serve() as base_url:
        yield scripted, base_url


_OPEN: list[OpenAICompatibleProvider | AnthropicProvider] = []


@pytest.fixture(autouse=True)
async def _close_providers() -> AsyncIterator[None]:
    yield
    while _OPEN:  # their HTTP clients belong to this test's event loop
        await _OPEN.pop().aclose()


def openai_at(base_url: str, **options: Any) -> OpenAICompatibleProvider:
    provider = OpenAICompatibleProvider(model="gpt-test", base_url=f"{base_url}/v1", **options)
    _OPEN.append(provider)
    return provider


def anthropic_at(base_url: str) -> AnthropicProvider:
    provider = AnthropicProvider(model="claude-test", base_url=base_url, api_key="test-key")
    _OPEN.append(provider)
    return provider


def guarded(provider: Any, sleeps: Sleeps, **limits: Any) -> LLMClient:
    return LLMClient(provider, limits=LLMLimits(**limits), sleep=sleeps)


# ---- OpenAI-compatible ------------------------------------------------------------------------------------


async def test_openai_success_sends_the_wire_format_and_reads_usage(
    backend: tuple[ScriptedBackend, str],
) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, openai_completion("Hi there.")))
    provider = openai_at(base_url, api_key=Secret("sk-test-123", ("OPENAI_API_KEY",)))
    response = await provider.complete(ASK)
    assert response.text == "Hi there."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 5)
    assert response.finish_reason == "stop" and not response.truncated
    sent = scripted.requests_to("POST", CHAT)[0]
    assert sent.headers["authorization"] == "Bearer sk-test-123"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"},
    ]
    assert sent.json["max_tokens"] == 400
    assert "sk-test-123" not in repr(provider)


async def test_openai_tool_call_and_structured_output(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"id": "A1"}'},
    }
    scripted.on(
        "POST",
        CHAT,
        Reply(200, openai_completion(None, finish="tool_calls", tool_calls=[call])),
        Reply(200, openai_completion('{"kind": "answer"}')),
    )
    provider = openai_at(base_url)
    with_tools = await provider.complete(LLMRequest(messages=ASK.messages, tools=(LOOKUP,)))
    assert with_tools.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in with_tools.tool_calls] == [("lookup_order", {"id": "A1"})]
    structured = await provider.complete(LLMRequest(messages=ASK.messages, output_schema=SCHEMA))
    assert structured.output == {"kind": "answer"}
    first, second = scripted.requests_to("POST", CHAT)
    assert first.json["tools"][0]["function"]["name"] == "lookup_order"
    assert second.json["response_format"]["json_schema"]["schema"] == SCHEMA


async def test_openai_structured_output_that_is_not_json_is_left_to_the_caller(
    backend: tuple[ScriptedBackend, str],
) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, openai_completion("kind: answer")))
    response = await openai_at(base_url).complete(LLMRequest(messages=ASK.messages, output_schema=SCHEMA))
    assert response.output is None and response.text == "kind: answer"


async def test_openai_malformed_body_is_a_bad_response(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, b'{"choices": [', headers={"content-type": "application/json"}))
    with pytest.raises(LLMError):
        await openai_at(base_url).complete(ASK)


async def test_openai_truncated_stream_is_refused(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend

    def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        }

    scripted.on(
        "POST",
        CHAT,
        Reply(200, events=(chunk("Your refund "), chunk("is on"))),  # the connection ends mid-answer
        Reply(200, events=(chunk("Your refund "), chunk("is on its way.", "stop"), "[DONE]")),
    )
    provider = openai_at(base_url, stream=True)
    with pytest.raises(LLMBadResponseError, match="stream ended"):
        await provider.complete(ASK)
    whole = await provider.complete(ASK)
    assert whole.text == "Your refund is on its way."


async def test_openai_answer_cut_by_the_token_limit_is_marked_truncated(
    backend: tuple[ScriptedBackend, str],
) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, openai_completion("Your refund will", finish="length")))
    assert (await openai_at(base_url).complete(ASK)).truncated


async def test_429_with_retry_after_is_waited_out_then_retried(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on(
        "POST",
        CHAT,
        Reply(429, {"error": {"message": "slow down"}}, headers={"retry-after": "2"}),
        Reply(200, openai_completion("Done.")),
    )
    sleeps = Sleeps()
    session = guarded(openai_at(base_url), sleeps).session()
    response = await session.complete(ASK, purpose="answer")
    assert response.text == "Done."
    assert sleeps.waits == [2.0]
    assert session.record.calls[-1].attempts == 2
    assert len(scripted.requests_to("POST", CHAT)) == 2


async def test_retry_after_beyond_the_turn_budget_fails_now(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(429, {"error": {"message": "quota"}}, headers={"retry-after": "120"}))
    sleeps = Sleeps()
    session = guarded(openai_at(base_url), sleeps, turn_seconds=10).session()
    with pytest.raises(LLMUnavailableError) as raised:
        await session.complete(ASK, purpose="answer")
    assert raised.value.status == 429 and raised.value.retry_after_s == 120
    assert sleeps.waits == []  # not a 2-minute hang inside a customer's turn
    assert session.record.calls[-1].error == "llm_unavailable"


async def test_500s_are_retried_then_open_the_breaker(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(500, {"error": {"message": "boom"}}))
    sleeps = Sleeps()
    client = guarded(openai_at(base_url), sleeps, max_retries=1, breaker_failures=4)
    for _ in range(2):
        with pytest.raises(LLMUnavailableError):
            await client.session().complete(ASK, purpose="answer")
    assert len(scripted.requests_to("POST", CHAT)) == 4  # 2 turns x (1 try + 1 retry)
    assert client.breaker.state == "open"
    with pytest.raises(LLMCircuitOpenError):
        await client.session().complete(ASK, purpose="answer")
    assert len(scripted.requests_to("POST", CHAT)) == 4  # the open breaker sent nothing


async def test_breaker_lets_one_trial_through_after_the_cool_down(
    backend: tuple[ScriptedBackend, str],
) -> None:
    scripted, base_url = backend
    scripted.on(
        "POST", CHAT, Reply(503, {"error": {"message": "down"}}), Reply(200, openai_completion("Back."))
    )
    now = [0.0]
    client = LLMClient(
        openai_at(base_url),
        limits=LLMLimits(max_retries=0, breaker_failures=1, breaker_reset_s=30),
        clock=lambda: now[0],
        sleep=Sleeps(),
    )
    with pytest.raises(LLMUnavailableError):
        await client.session().complete(ASK, purpose="answer")
    with pytest.raises(LLMCircuitOpenError):
        await client.session().complete(ASK, purpose="answer")
    now[0] = 31.0
    assert (await client.session().complete(ASK, purpose="answer")).text == "Back."
    assert client.breaker.state == "closed"


async def test_a_hanging_provider_is_cut_off_by_its_timeout(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, openai_completion("late"), delay_s=3))
    sleeps = Sleeps()
    session = guarded(openai_at(base_url), sleeps, max_retries=0).session()
    request = LLMRequest(messages=ASK.messages, timeout_s=0.3)
    with pytest.raises(LLMUnavailableError):
        await session.complete(request, purpose="answer")


async def test_a_prompt_larger_than_what_the_budget_has_left_is_not_sent(
    backend: tuple[ScriptedBackend, str],
) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, openai_completion("Sure.")))
    session = guarded(openai_at(base_url), Sleeps(), turn_tokens=100).session()
    long = LLMRequest(messages=(ChatMessage("system", "Facts: " + "x" * 800), ChatMessage("user", "Hi?")))
    with pytest.raises(LLMBudgetExceededError):
        await session.complete(long, purpose="answer")  # ~200 tokens of prompt against 100
    assert scripted.requests_to("POST", CHAT) == []
    assert session.record.calls[-1].error == "llm_budget"


class Broken:
    """A provider plug-in that breaks the port's rule and raises its own error."""

    name = "broken"
    model = "broken-model"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: LLMRequest) -> Any:
        self.calls += 1
        raise RuntimeError("Cannot send a request, as the client has been closed.")

    async def aclose(self) -> None:
        pass


async def test_a_providers_own_error_is_an_llm_error_recorded_and_not_retried() -> None:
    provider = Broken()
    client = guarded(provider, Sleeps(), breaker_failures=2)
    session = client.session()
    with pytest.raises(LLMError) as raised:
        await session.complete(ASK, purpose="answer")
    assert raised.value.reason == "llm_error" and "client has been closed" in str(raised.value)
    assert provider.calls == 1  # a broken client is not fixed by waiting
    assert session.record.calls[-1].error == "llm_error"
    with pytest.raises(LLMError):
        await client.session().complete(ASK, purpose="answer")
    assert client.breaker.state == "open"


async def test_client_errors_are_not_retried(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(401, {"error": {"message": "bad key"}}))
    with pytest.raises(LLMRejectedError):
        await guarded(openai_at(base_url), Sleeps()).session().complete(ASK, purpose="answer")
    assert len(scripted.requests_to("POST", CHAT)) == 1


async def test_token_budget_and_cost_per_call(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", CHAT, Reply(200, openai_completion("Sure.")))
    client = LLMClient(
        openai_at(base_url),
        limits=LLMLimits(turn_tokens=30),
        prices={"gpt-test": ModelPrice(Decimal("1.00"), Decimal("4.00"))},
        sleep=Sleeps(),
    )
    session = client.session()
    await session.complete(ASK, purpose="answer")  # 17 tokens
    second = scripted.requests_to("POST", CHAT)
    await session.complete(ASK, purpose="answer")  # 34: over the budget now
    # What is left, less the prompt's estimated 4 tokens ("Be brief." and "Hello?": 15 characters).
    assert second[0].json["max_tokens"] == 26
    assert scripted.requests_to("POST", CHAT)[1].json["max_tokens"] == 9
    with pytest.raises(LLMBudgetExceededError):
        await session.complete(ASK, purpose="answer")
    assert len(scripted.requests_to("POST", CHAT)) == 2
    assert session.record.usage.total == 34
    assert session.record.calls[0].cost == Decimal("0.000032")  # (12 x 1 + 5 x 4) / 1e6
    assert session.record.calls[-1].error == "llm_budget"


# ---- Anthropic --------------------------------------------------------------------------------------------


async def test_anthropic_success_and_wire_format(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on("POST", MESSAGES, Reply(200, anthropic_message([{"type": "text", "text": "Hello!"}])))
    response = await anthropic_at(base_url).complete(ASK)
    assert response.text == "Hello!" and response.usage.total == 27 and response.model == "claude-test"
    sent = scripted.requests_to("POST", MESSAGES)[0]
    assert sent.headers["authorization"] == "Bearer test-key"  # how the SDK sends an api_key
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Hello?"}]


async def test_anthropic_tool_use_and_structured_output_by_forced_tool(
    backend: tuple[ScriptedBackend, str],
) -> None:
    scripted, base_url = backend
    scripted.on(
        "POST",
        MESSAGES,
        Reply(
            200,
            anthropic_message(
                [{"type": "tool_use", "id": "tu_1", "name": "lookup_order", "input": {"id": "A1"}}],
                stop="tool_use",
            ),
        ),
        Reply(
            200,
            anthropic_message(
                [{"type": "tool_use", "id": "tu_2", "name": "command", "input": {"kind": "answer"}}],
                stop="tool_use",
            ),
        ),
    )
    provider = anthropic_at(base_url)
    with_tools = await provider.complete(LLMRequest(messages=ASK.messages, tools=(LOOKUP,)))
    assert [(c.id, c.name, c.arguments) for c in with_tools.tool_calls] == [
        ("tu_1", "lookup_order", {"id": "A1"})
    ]
    structured = await provider.complete(
        LLMRequest(messages=ASK.messages, output_schema=SCHEMA, schema_name="command")
    )
    assert structured.output == {"kind": "answer"} and structured.tool_calls == ()
    forced = scripted.requests_to("POST", MESSAGES)[1].json
    assert forced["tool_choice"] == {"type": "tool", "name": "command"}
    assert forced["tools"][0]["input_schema"] == SCHEMA


async def test_anthropic_overload_and_rate_limit_are_retryable(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    scripted.on(
        "POST",
        MESSAGES,
        Reply(529, error),
        Reply(429, error, headers={"retry-after": "1"}),
        Reply(200, anthropic_message([{"type": "text", "text": "Ok."}], stop="max_tokens")),
    )
    sleeps = Sleeps()
    response = await guarded(anthropic_at(base_url), sleeps).session().complete(ASK, purpose="answer")
    assert response.text == "Ok." and response.truncated
    assert len(sleeps.waits) == 2 and sleeps.waits[1] == 1.0


async def test_anthropic_malformed_and_cut_short_bodies(backend: tuple[ScriptedBackend, str]) -> None:
    scripted, base_url = backend
    scripted.on(
        "POST",
        MESSAGES,
        Reply(200, b"<html>gateway</html>", headers={"content-type": "application/json"}),
        Reply(200, b'{"id": "msg_1", "content": [', headers={"content-length": "500"}),
    )
    provider = anthropic_at(base_url)
    for _ in range(2):
        with pytest.raises(LLMError):
            await provider.complete(ASK)


# ---- configuration ----------------------------------------------------------------------------------------


def test_a_literal_key_in_the_workspace_is_refused() -> None:
    with pytest.raises(ValueError, match="literal key"):
        LLMSettings(provider="openai", model="m", api_key="sk-live-abc")


def test_client_from_settings_resolves_the_key_and_never_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LLMSettings(provider="openai", model="gpt-test", api_key="${CX_TEST_LLM_KEY}")
    with pytest.raises(MissingSecretError):
        llm_client(settings)
    monkeypatch.setenv("CX_TEST_LLM_KEY", "sk-secret-999")
    client = llm_client(settings, base_url="http://127.0.0.1:9/v1")
    assert client.provider.model == "gpt-test"
    assert "sk-secret-999" not in repr(client.provider)
    assert "sk-secret-999" not in json.dumps(settings.model_dump(mode="json"))


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({}) is None
