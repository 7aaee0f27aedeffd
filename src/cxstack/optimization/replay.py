"""Replay: run scripted or stored conversations through the orchestrator without side effects.

Each conversation gets its own in-memory state; back-office actions go to whatever connectors the engine was
built with (a dry-run connector by default in the CLI), so a replay can run against any workspace version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxstack.domain.conversation_state import apply_all
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    ConversationStatus,
    Customer,
    CustomerId,
    Decision,
    Message,
    MessageId,
    Role,
    Trace,
    utcnow,
)
from cxstack.monitoring.metrics import ConversationOutcome
from cxstack.orchestration.orchestrator import Orchestrator
from cxstack.resolution.models import TurnContext
from cxstack.workspace.workspace import Workspace


class _Expected(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intent: str | None = None
    outcome: str | None = Field(None, pattern="^(automated|escalated)$")


class _CustomerIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    name: str = ""
    email: str = ""
    plan: str = ""
    arr: float = 0.0
    segment: str = ""


class _ScriptLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    customer: _CustomerIn | None = None
    channel: str = "api"
    messages: list[str] = Field(min_length=1)
    expected: _Expected | None = None


@dataclass(frozen=True)
class ScriptedConversation:
    id: str
    customer: Customer
    channel: str
    messages: tuple[str, ...]
    expected_intent: str | None = None
    expected_outcome: str | None = None


class ScriptError(ValueError):
    pass


def parse_scripts(lines: Iterable[str], *, source: str = "<input>") -> list[ScriptedConversation]:
    """One JSON object per line; reports every bad line with its number, loads nothing if any is bad."""
    parsed: list[ScriptedConversation] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = _ScriptLine.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"{source}:{number}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"{source}:{number}: {where}: {err['msg']}")
            continue
        c = item.customer
        extra = dict(c.model_extra or {}) if c else {}
        customer = Customer(
            id=CustomerId(c.id if c else f"replay_{item.id}"),
            name=c.name if c else "",
            email=c.email if c else "",
            plan=c.plan if c else "",
            arr=c.arr if c else 0.0,
            segment=c.segment if c else "",
            attributes=extra,
        )
        parsed.append(
            ScriptedConversation(
                id=item.id,
                customer=customer,
                channel=item.channel,
                messages=tuple(item.messages),
                expected_intent=item.expected.intent if item.expected else None,
                expected_outcome=item.expected.outcome if item.expected else None,
            )
        )
    if problems:
        raise ScriptError("\n".join(problems))
    return parsed


def load_scripts(path: Path) -> list[ScriptedConversation]:
    with path.open(encoding="utf-8") as handle:
        return parse_scripts(handle, source=str(path))


@dataclass
class ReplayedConversation:
    script: ScriptedConversation
    traces: list[Trace] = field(default_factory=list)
    replies: list[str | None] = field(default_factory=list)
    final_state: dict[str, Any] = field(default_factory=dict)

    def outcome(self) -> ConversationOutcome:
        intent = next((t.intent for t in self.traces if t.intent), None)
        escalated = next((t for t in self.traces if t.outcome == "escalated"), None)
        mechanism = next((t.mechanism for t in self.traces if t.intent == intent and t.mechanism), None)
        if escalated is not None and escalated.mechanism:
            mechanism = escalated.mechanism
        if escalated is not None:
            outcome = "escalated"
        elif self.traces and (
            self.traces[-1].decision == Decision.CLARIFY or "pending_action" in self.final_state
        ):
            outcome = "unresolved"  # the script ended while the assistant was still asking
        else:
            outcome = "automated"
        return ConversationOutcome(
            conversation_id=self.script.id,
            intent=intent,
            mechanism=mechanism,
            outcome=outcome,
            reason_code=escalated.reason_code if escalated else None,
            expected_intent=self.script.expected_intent,
            expected_outcome=self.script.expected_outcome,
            turns=len(self.traces),
        )


async def replay_conversation(
    orchestrator: Orchestrator, workspace: Workspace, script: ScriptedConversation
) -> ReplayedConversation:
    cid = ConversationId(f"replay_{script.id}")
    conversation = Conversation(id=cid, customer_id=script.customer.id, channel=script.channel)
    history: list[Message] = []
    replayed = ReplayedConversation(script)
    for index, text in enumerate(script.messages):
        message = Message(
            id=MessageId(f"{cid}_m{index}"),
            conversation_id=cid,
            role=Role.CUSTOMER,
            text=text,
            created_at=utcnow(),
            channel=script.channel,
        )
        ctx = TurnContext(
            workspace=workspace,
            conversation=conversation,
            customer=script.customer,
            message=message,
            history=list(history),
        )
        result = await orchestrator.handle_turn(ctx)
        replayed.traces.append(result.trace)
        replayed.replies.append(result.reply)
        history.append(message)
        if result.reply:
            history.append(
                Message(
                    id=MessageId(f"{cid}_r{index}"),
                    conversation_id=cid,
                    role=Role.ASSISTANT,
                    text=result.reply,
                    created_at=utcnow(),
                    channel=script.channel,
                )
            )
        conversation.state = result.state
        for _, _, after in apply_all(conversation.status, result.transitions):
            conversation.status = after
    replayed.final_state = conversation.state
    if conversation.status in (ConversationStatus.WAITING, ConversationStatus.PERSON):
        replayed.final_state = {**conversation.state, "status": "escalated"}
    return replayed


async def replay_all(
    orchestrator: Orchestrator,
    workspace: Workspace,
    scripts: Iterable[ScriptedConversation],
    *,
    on_done: Callable[[ReplayedConversation], None] | None = None,
) -> list[ReplayedConversation]:
    results = []
    for script in scripts:
        replayed = await replay_conversation(orchestrator, workspace, script)
        results.append(replayed)
        if on_done is not None:
            on_done(replayed)
    return results
