"""The typed commands a micro-agent emits. The orchestrator's agent runner executes them; nothing an agent (or
a model behind it) writes is ever executed as text. A model's reply is parsed into exactly one of these, or
refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cxstack.workspace.models import AgentConfig


@dataclass(frozen=True, slots=True)
class AskSlot:
    slot: str
    kind: Literal["ask_slot"] = "ask_slot"


@dataclass(frozen=True, slots=True)
class CallAction:
    action: str
    arguments: dict[str, Any] = field(default_factory=dict)
    kind: Literal["call_action"] = "call_action"


@dataclass(frozen=True, slots=True)
class AnswerFromFacts:
    question: str = ""
    kind: Literal["answer_from_facts"] = "answer_from_facts"


@dataclass(frozen=True, slots=True)
class HandOff:
    agent: str
    kind: Literal["hand_off"] = "hand_off"


@dataclass(frozen=True, slots=True)
class Escalate:
    reason: str = "agent_escalated"
    kind: Literal["escalate"] = "escalate"


Command = AskSlot | CallAction | AnswerFromFacts | HandOff | Escalate


class _Wire(BaseModel):
    """What a model sends: one flat object (small models follow a flat schema far better than a union)."""

    model_config = ConfigDict(extra="ignore")
    command: Literal["ask_slot", "call_action", "answer_from_facts", "hand_off", "escalate"]
    action: str | None = None
    slot: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    agent: str | None = None
    question: str | None = None
    reason: str | None = None


_WIRE = TypeAdapter(_Wire)


class InvalidCommandError(ValueError):
    pass


def command_schema(agent: AgentConfig, slots: list[str] | None = None) -> dict[str, Any]:
    """The JSON schema a model's command must follow; the enums list only what this agent may use (a server
    that enforces schemas cannot even name another action — and code refuses it anyway if one does). Every
    string is bounded, so a small model cannot loop inside one until the token limit cuts it off."""
    value = {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "number"}]}
    properties: dict[str, Any] = {
        "command": {
            "type": "string",
            "enum": ["ask_slot", "call_action", "answer_from_facts", "hand_off", "escalate"],
        },
        "arguments": {"type": "object", "maxProperties": 8, "additionalProperties": value},
        "slot": {"type": "string", "enum": slots} if slots else {"type": "string", "maxLength": 60},
        "question": {"type": "string", "maxLength": 300},
        "reason": {"type": "string", "maxLength": 100},
    }
    if agent.actions:
        properties["action"] = {"type": "string", "enum": list(agent.actions)}
    if agent.handoff_to:
        properties["agent"] = {"type": "string", "enum": list(agent.handoff_to)}
    return {"type": "object", "properties": properties, "required": ["command"]}


def parse_command(output: dict[str, Any] | None) -> Command:
    """The model's structured output as a command; InvalidCommandError says what is wrong."""
    if output is None:
        raise InvalidCommandError("the reply is not a JSON object")
    try:
        wire = _WIRE.validate_python(output)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "command"
        raise InvalidCommandError(f"{where}: {first['msg']}") from None
    match wire.command:
        case "ask_slot":
            if not wire.slot:
                raise InvalidCommandError("ask_slot needs `slot`")
            return AskSlot(wire.slot)
        case "call_action":
            if not wire.action:
                raise InvalidCommandError("call_action needs `action`")
            arguments = {str(k): v for k, v in wire.arguments.items() if isinstance(v, str | int | float)}
            return CallAction(wire.action, arguments)
        case "hand_off":
            if not wire.agent:
                raise InvalidCommandError("hand_off needs `agent`")
            return HandOff(wire.agent)
        case "escalate":
            return Escalate((wire.reason or "agent_escalated")[:100])
        case _:
            return AnswerFromFacts((wire.question or "")[:300])


def command_view(command: Command) -> dict[str, Any]:
    """The command as a trace shows it (a handoff's target is `to`: `agent` is the agent that chose it)."""
    view: dict[str, Any] = {"command": command.kind}
    for name in ("slot", "action", "arguments", "question", "reason"):
        if hasattr(command, name):
            view[name] = getattr(command, name)
    if isinstance(command, HandOff):
        view["to"] = command.agent
    return view
