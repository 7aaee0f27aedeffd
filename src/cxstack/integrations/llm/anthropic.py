"""Anthropic messages through the official `anthropic` SDK (whose current Messages API takes no temperature).
Structured output is a forced tool whose input schema is the output schema (the Messages API's documented way
to get JSON that follows a schema)."""

from __future__ import annotations

import json
from typing import Any

import anthropic

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

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        stream: bool = False,  # accepted for a uniform config; answers are short, so not streamed
        timeout_s: float = 20.0,
    ) -> None:
        self.model = model
        key = api_key.reveal() if isinstance(api_key, Secret) else api_key
        self._client = anthropic.AsyncAnthropic(
            api_key=key or "no-key", base_url=base_url, max_retries=0, timeout=timeout_s
        )

    def __repr__(self) -> str:  # never the key
        return f"AnthropicProvider(model={self.model!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        arguments: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": _wire_messages(request.messages),
            "timeout": request.timeout_s,
        }
        if system:
            arguments["system"] = system
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        if request.output_schema is not None:
            tools.append(
                {
                    "name": request.schema_name,
                    "description": "Give your answer by calling this tool.",
                    "input_schema": request.output_schema,
                }
            )
            arguments["tool_choice"] = {"type": "tool", "name": request.schema_name}
        if tools:
            arguments["tools"] = tools
        try:
            message = await self._client.messages.create(**arguments)
        except anthropic.AnthropicError as error:
            raise from_sdk_error(error, provider=self.name) from error
        except (ValueError, KeyError, TypeError) as error:
            raise from_sdk_error(error, provider=self.name) from error
        blocks = getattr(message, "content", None)
        if blocks is None:
            raise LLMBadResponseError(f"{self.name}: the reply has no content")
        text: list[str] = []
        calls: list[ToolCall] = []
        output: dict[str, Any] | None = None
        for block in blocks:
            kind = getattr(block, "type", "")
            if kind == "text":
                text.append(block.text)
            elif kind == "tool_use":
                arguments_ = block.input if isinstance(block.input, dict) else None
                if request.output_schema is not None and block.name == request.schema_name:
                    output = arguments_
                    continue
                calls.append(
                    ToolCall(block.id, block.name, arguments_, raw_arguments=json.dumps(block.input))
                )
        usage = message.usage
        return LLMResponse(
            text=json.dumps(output) if output is not None and not text else "".join(text),
            usage=Usage(usage.input_tokens or 0, usage.output_tokens or 0) if usage else Usage(),
            model=message.model or self.model,
            finish_reason=_FINISH.get(message.stop_reason or "", "other"),
            tool_calls=tuple(calls),
            output=output,
        )


def _wire_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    wired: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
            wired.append({"role": "user", "content": [block]})
        elif message.tool_calls:
            content: list[dict[str, Any]] = (
                [{"type": "text", "text": message.content}] if message.content else []
            )
            content += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments or {}}
                for c in message.tool_calls
            ]
            wired.append({"role": "assistant", "content": content})
        else:
            wired.append({"role": message.role, "content": message.content})
    return wired
