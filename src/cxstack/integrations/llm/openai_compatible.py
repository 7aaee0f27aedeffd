"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp's server, LiteLLM proxies) through the
official `openai` SDK. The SDK's own retries are off: the guard retries, within the turn's budget."""

from __future__ import annotations

import json
from typing import Any

import openai

from cxstack.domain.llm import (
    ChatMessage,
    FinishReason,
    LLMBadResponseError,
    LLMRequest,
    LLMResponse,
    ToolCall,
    Usage,
)
from cxstack.domain.secrets import Secret
from cxstack.integrations.llm.errors import from_sdk_error

# A local server takes any key, but the SDK insists on one.
LOCAL_PLACEHOLDER_KEY = "no-key"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        stream: bool = False,
        timeout_s: float = 20.0,
    ) -> None:
        self.model = model
        self.stream = stream
        key = api_key.reveal() if isinstance(api_key, Secret) else api_key
        self._client = openai.AsyncOpenAI(
            api_key=key or LOCAL_PLACEHOLDER_KEY,
            base_url=base_url,
            max_retries=0,
            timeout=timeout_s,
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatibleProvider(model={self.model!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        arguments = self._arguments(request)
        try:
            if self.stream:
                return await self._streamed(request, arguments)
            completion = await self._client.chat.completions.create(**arguments)
        except openai.OpenAIError as error:
            raise from_sdk_error(error, provider=self.name) from error
        except (ValueError, KeyError, TypeError) as error:
            raise from_sdk_error(error, provider=self.name) from error
        choices = getattr(completion, "choices", None)
        if not choices:
            raise LLMBadResponseError(f"{self.name}: the reply has no choices")
        message = choices[0].message
        calls = tuple(
            _tool_call(c.id, c.function.name, c.function.arguments or "") for c in (message.tool_calls or ())
        )
        usage = completion.usage
        text = message.content or ""
        return LLMResponse(
            text=text,
            usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else Usage(),
            model=completion.model or self.model,
            finish_reason=_FINISH.get(choices[0].finish_reason or "", "other"),
            tool_calls=calls,
            output=_json_object(text) if request.output_schema is not None else None,
        )

    def _arguments(self, request: LLMRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "timeout": request.timeout_s,
        }
        if request.tools:
            arguments["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.output_schema is not None:
            # llama.cpp's server turns the schema into a grammar: a small local model cannot stray from it
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.output_schema},
            }
        return arguments

    async def _streamed(self, request: LLMRequest, arguments: dict[str, Any]) -> LLMResponse:
        stream = await self._client.chat.completions.create(
            **arguments, stream=True, stream_options={"include_usage": True}
        )
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish: str | None = None
        usage = Usage()
        model = self.model
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
            for choice in chunk.choices or ():
                delta = choice.delta
                if delta is not None and delta.content:
                    text.append(delta.content)
                for call in (delta.tool_calls if delta is not None else None) or ():
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = call.id or slot["id"]
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        if finish is None:
            raise LLMBadResponseError(f"{self.name}: the stream ended before the model finished its answer")
        joined = "".join(text)
        return LLMResponse(
            text=joined,
            usage=usage,
            model=model,
            finish_reason=_FINISH.get(finish, "other"),
            tool_calls=tuple(
                _tool_call(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())
            ),
            output=_json_object(joined) if request.output_schema is not None else None,
        )


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    wired: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wired["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments or {})},
            }
            for c in message.tool_calls
        ]
    return wired


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=_json_object(raw or "{}"), raw_arguments=raw)


def _json_object(text: str) -> dict[str, Any] | None:
    """The text as a JSON object, or None (the caller decides: repair once, then escalate)."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None
