"""Replay: run scripted conversations through the running service, exactly as `serve` handles messages.

A replay posts each scripted message to the service (store, then the turn worker, then the orchestrator),
waits until its turn has committed, and reads the conversation back: transcript, traces and escalation
packets. It does not build the service itself: the caller passes something with the service's public surface
(`post_message`, `wait_idle`, `conversation_view`), normally a `CxApp` on a throwaway store with a dry-run
action connector, so a replay has no side effects and runs against any workspace version.

The script file has one JSON object per line:

    {"id": "nw-001", "customer": {"id": "cus_1004", "plan": "basic", "arr": 95},
     "channel": "webchat", "messages": ["where is ORD-10015?", "thanks"],
     "expected": {"intent": "order_status", "outcome": "automated"}, "note": "optional, ignored"}

`id` and `messages` are required. `customer` (id, name, email, plan, arr, segment; any other key becomes a
custom attribute) defaults to a fresh anonymous customer; a named customer is posted as verified (the channel
vouches for them, as an integration or a signed widget session does) unless the line says `"verified": false`.
`channel` defaults to "api"; `expected` is optional and is what routing accuracy and outcome agreement are
measured against (outcome: automated | escalated).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxstack.domain.models import (
    Conversation,
    Customer,
    CustomerId,
    Decision,
    EscalationPacket,
    Message,
    Role,
    Trace,
)
from cxstack.monitoring.metrics import ConversationOutcome

DEFAULT_TURN_TIMEOUT_S = 120.0
# Built-in intents every workspace has: a "hi" before the request does not make a conversation a greeting.
CONVERSATIONAL_INTENTS = frozenset({"greeting", "thanks", "goodbye", "small_talk"})


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
    id: str = Field(min_length=1)
    customer: _CustomerIn | None = None
    channel: str = "api"
    messages: list[str] = Field(min_length=1)
    expected: _Expected | None = None
    verified: bool | None = None  # default: True when a customer is named
    note: str = ""  # why the case is there (e.g. "adversarial: someone else's order"); not used by replay


@dataclass(frozen=True)
class ScriptedConversation:
    id: str
    customer: Customer
    channel: str
    messages: tuple[str, ...]
    expected_intent: str | None = None
    expected_outcome: str | None = None
    note: str = ""
    verified: bool = False  # the channel vouches for `customer` (never the message text)


class ScriptError(ValueError):
    pass


class ReplayStalled(RuntimeError):
    """A scripted message whose turn did not commit in time: the service is stuck, not the script."""


def parse_scripts(lines: Iterable[str], *, source: str = "<input>") -> list[ScriptedConversation]:
    """One JSON object per line; reports every bad line with its number, loads nothing if any is bad."""
    parsed: list[ScriptedConversation] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
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
        if item.id in seen:
            problems.append(f"{source}:{number}: id {item.id!r} already used on line {seen[item.id]}")
            continue
        seen[item.id] = number
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
                note=item.note,
                verified=item.verified if item.verified is not None else c is not None,
            )
        )
    if problems:
        raise ScriptError("\n".join(problems))
    return parsed


def load_scripts(path: Path) -> list[ScriptedConversation]:
    with path.open(encoding="utf-8") as handle:
        return parse_scripts(handle, source=str(path))


# ---- what replay needs from the service (CxApp has it) ----------------------------------------------------


class ConversationRecord(Protocol):
    @property
    def conversation(self) -> Conversation: ...
    @property
    def messages(self) -> Sequence[Message]: ...
    @property
    def traces(self) -> Sequence[Trace]: ...
    @property
    def escalations(self) -> Sequence[EscalationPacket]: ...


class ReplayTarget(Protocol):
    async def post_message(
        self,
        conversation_id: str,
        text: str,
        *,
        external_id: str | None = None,
        channel: str = "api",
        customer: Customer | None = None,
        verified: bool = False,
    ) -> object: ...

    async def wait_idle(self, conversation_id: str | None = None) -> None: ...

    def conversation_view(self, conversation_id: str) -> ConversationRecord | None: ...


# ---- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionCall:
    name: str
    arguments: dict[str, Any]
    status: str  # "ok" | "failed" | "dry_run"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "status": self.status}


@dataclass(frozen=True)
class ReplayedTurn:
    """One scripted customer message and what the service did with it, read back from the store."""

    text: str
    reply: str | None  # what the customer was sent after this message (several replies joined by newlines)
    trace: Trace | None  # None when no turn of its own committed (e.g. merged into a burst)
    queue: str | None = None
    priority: str | None = None  # of the escalation this turn opened, if any
    actions: tuple[ActionCall, ...] = ()
    facts: tuple[str, ...] = ()

    @property
    def intent(self) -> str | None:
        return self.trace.intent if self.trace else None

    @property
    def escalated(self) -> bool:
        return self.trace is not None and self.trace.outcome == "escalated"

    def reason(self) -> str | None:
        if self.trace is None:
            return None
        if self.trace.reason_code:
            return self.trace.reason_code
        decided = [s.output.get("reason") for s in self.trace.steps if s.name == "decide"]
        return next((str(r) for r in reversed(decided) if r), None)

    def as_dict(self) -> dict[str, Any]:
        t = self.trace
        return {
            "text": self.text,
            "reply": self.reply,
            "intent": t.intent if t else None,
            "confidence": round(t.intent_confidence, 4) if t and t.intent_confidence is not None else None,
            "decision": t.decision.value if t else None,
            "reason": self.reason(),
            "queue": self.queue,
            "priority": self.priority,
            "actions": [a.as_dict() for a in self.actions],
            "facts": list(self.facts),
        }


@dataclass
class ReplayedConversation:
    script: ScriptedConversation
    conversation_id: str = ""
    turns: list[ReplayedTurn] = field(default_factory=list)
    final_state: dict[str, Any] = field(default_factory=dict)

    @property
    def traces(self) -> list[Trace]:
        return [turn.trace for turn in self.turns if turn.trace is not None]

    @property
    def replies(self) -> list[str | None]:
        return [turn.reply for turn in self.turns]

    def escalation(self) -> ReplayedTurn | None:
        return next((turn for turn in self.turns if turn.escalated), None)

    def outcome(self) -> ConversationOutcome:
        traces = self.traces
        intents = [t.intent for t in traces if t.intent]
        # The conversation's intent: its first request, else its first pleasantry.
        intent = next(
            (i for i in intents if i not in CONVERSATIONAL_INTENTS), intents[0] if intents else None
        )
        escalated = next((t for t in traces if t.outcome == "escalated"), None)
        mechanism = next((t.mechanism for t in traces if t.intent == intent and t.mechanism), None)
        if escalated is not None and escalated.mechanism:
            mechanism = escalated.mechanism
        if escalated is not None:
            outcome = "escalated"
        elif traces and (_asks_the_customer(traces[-1]) or "pending_action" in self.final_state):
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
            turns=len(traces),
        )

    def as_dict(self) -> dict[str, Any]:
        """The per-conversation result of `cxstack replay --json`, stable for diffing two runs."""
        summary = self.outcome()
        return {
            "id": self.script.id,
            "conversation_id": self.conversation_id,
            "outcome": summary.outcome,
            "intent": summary.intent,
            "expected": {"intent": self.script.expected_intent, "outcome": self.script.expected_outcome},
            "turns": [turn.as_dict() for turn in self.turns],
        }


def read_back(
    script: ScriptedConversation, conversation_id: str, view: ConversationRecord | None
) -> ReplayedConversation:
    """The scripted conversation as the store recorded it: one turn per customer message, in order."""
    replayed = ReplayedConversation(script, conversation_id)
    if view is None:
        return replayed
    state = view.conversation.state
    replayed.final_state = dict(state) if isinstance(state, Mapping) else {}
    traces = {t.message_id: t for t in view.traces}
    packets = {p.id: p for p in view.escalations}
    pending: tuple[Message, list[str]] | None = None

    def close(entry: tuple[Message, list[str]]) -> None:
        message, replies = entry
        replayed.turns.append(_turn(message, replies, traces.get(message.id), packets))

    for message in view.messages:
        if message.role == Role.CUSTOMER:
            if pending is not None:
                close(pending)
            pending = (message, [])
        elif message.role == Role.ASSISTANT and pending is not None:
            pending[1].append(message.text)
    if pending is not None:
        close(pending)
    return replayed


def _turn(
    message: Message, replies: list[str], trace: Trace | None, packets: dict[Any, EscalationPacket]
) -> ReplayedTurn:
    reply = "\n".join(replies) if replies else None
    if trace is None:
        return ReplayedTurn(text=message.text, reply=reply, trace=None)
    queue: str | None = None
    priority: str | None = None
    actions: list[ActionCall] = []
    facts: list[str] = []
    for step in trace.steps:
        output = step.output or {}
        if step.name == "escalate":
            packet = packets.get(output.get("escalation_id"))
            queue = output.get("queue") or (packet.queue if packet else None)
            priority = output.get("priority") or (packet.priority.name.lower() if packet else None)
        elif step.name.startswith("resolve:"):
            detail = output.get("detail") or {}
            for called in output.get("actions") or []:
                name = str(called.get("action"))
                arguments = detail.get("slots") if detail.get("action") == name else None
                actions.append(ActionCall(name, dict(arguments or {}), _action_status(called)))
            for fact in output.get("facts") or []:
                if fact.get("id") and fact["id"] not in facts:
                    facts.append(str(fact["id"]))
    return ReplayedTurn(
        text=message.text,
        reply=reply,
        trace=trace,
        queue=queue,
        priority=priority,
        actions=tuple(actions),
        facts=tuple(facts),
    )


def _asks_the_customer(trace: Trace) -> bool:
    """A clarifying question, or a resolver waiting for a slot or a yes: the conversation is not finished."""
    if trace.decision == Decision.CLARIFY:
        return True
    resolved = [s.output for s in trace.steps if s.name.startswith("resolve:")]
    return bool(resolved) and trace.outcome != "escalated" and resolved[-1].get("kind") == "ask"


def _action_status(called: dict[str, Any]) -> str:
    if not called.get("ok"):
        return "failed"
    # The dry-run connector answers without a request: no attempt, no HTTP status.
    if called.get("attempts") == 0 and called.get("status") is None:
        return "dry_run"
    return "ok"


async def replay_scripts(
    target: ReplayTarget,
    scripts: Iterable[ScriptedConversation],
    *,
    conversation_prefix: str = "replay_",
    concurrency: int = 1,
    turn_timeout_s: float = DEFAULT_TURN_TIMEOUT_S,
    on_done: Callable[[ReplayedConversation], None] | None = None,
) -> list[ReplayedConversation]:
    """Posts every scripted message as a customer would, one at a time: each waits for the previous turn to
    commit, so a script's messages are never merged into one burst. Up to `concurrency` conversations run at
    once (they are independent); results come back in script order."""
    ordered = list(scripts)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(script: ScriptedConversation) -> ReplayedConversation:
        async with gate:
            replayed = await _replay_one(target, script, f"{conversation_prefix}{script.id}", turn_timeout_s)
        if on_done is not None:
            on_done(replayed)
        return replayed

    return list(await asyncio.gather(*(one(script) for script in ordered)))


async def _replay_one(
    target: ReplayTarget, script: ScriptedConversation, conversation_id: str, turn_timeout_s: float
) -> ReplayedConversation:
    for index, text in enumerate(script.messages):
        await target.post_message(
            conversation_id,
            text,
            external_id=f"{conversation_id}:m{index}",
            channel=script.channel,
            customer=script.customer,
            verified=script.verified,
        )
        try:
            await asyncio.wait_for(target.wait_idle(conversation_id), turn_timeout_s)
        except TimeoutError:
            raise ReplayStalled(
                f"conversation {script.id}: message {index + 1} had no committed turn after "
                f"{turn_timeout_s:.0f} s"
            ) from None
    return read_back(script, conversation_id, target.conversation_view(conversation_id))
