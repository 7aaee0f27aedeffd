"""Conversions between domain objects and stored JSON, shared by every Store adapter.

Both the SQL adapter and the in-memory adapter push values through these functions, so a value read back
from either one is identical: tz-aware UTC datetimes, plain JSON containers, no NUL characters (PostgreSQL
rejects them in text and JSONB, SQLite would keep them).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cxstack.domain.llm import COST_MICROS, LLM_STEP
from cxstack.domain.models import (
    ActionResult,
    ConversationId,
    Decision,
    EscalationId,
    EscalationPacket,
    FactCitation,
    Layer,
    MessageId,
    Priority,
    Trace,
    TraceId,
    TraceStep,
    WorkspaceVersionId,
)


def as_utc(moment: datetime) -> datetime:
    """A naive datetime is taken to be UTC (SQLite hands those back); an aware one is converted to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def clean_text(text: str) -> str:
    return text.replace("\x00", "")


def jsonable(value: Any) -> Any:
    """A deep copy of `value` made only of JSON types, identical after a round trip through any backend.

    Enums become their values, datetimes ISO strings, tuples and sets lists, dataclasses dicts, and
    non-finite floats None (JSONB refuses NaN; a trace must never fail to commit over one number).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(str(value))
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {clean_text(str(jsonable(key))): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return clean_text(str(value))


def json_object(value: Mapping[str, Any]) -> dict[str, Any]:
    result = jsonable(value)
    assert isinstance(result, dict)
    return result


def optional_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# ---- traces -------------------------------------------------------------------------------------------


def steps_to_json(steps: list[TraceStep]) -> list[dict[str, Any]]:
    return [
        {
            "layer": step.layer.value,
            "name": clean_text(step.name),
            "input": json_object(step.input),
            "output": json_object(step.output),
            "confidence": optional_float(step.confidence),
            "duration_ms": optional_float(step.duration_ms) or 0.0,
        }
        for step in steps
    ]


def steps_from_json(raw: list[dict[str, Any]]) -> list[TraceStep]:
    return [
        TraceStep(
            layer=Layer(item["layer"]),
            name=item["name"],
            input=item.get("input") or {},
            output=item.get("output") or {},
            confidence=item.get("confidence"),
            duration_ms=float(item.get("duration_ms") or 0.0),
        )
        for item in raw
    ]


def trace_fields(trace: Trace) -> dict[str, Any]:
    """The stored columns of a trace, normalised; `trace_from_fields` reverses it exactly."""
    return {
        "id": trace.id,
        "conversation_id": trace.conversation_id,
        "message_id": trace.message_id,
        "workspace_version": trace.workspace_version,
        "intent": trace.intent,
        "confidence": optional_float(trace.intent_confidence),
        "mechanism": trace.mechanism,
        "decision": Decision(trace.decision).value,
        "outcome": trace.outcome,
        "reason_code": trace.reason_code,
        "variant": trace.variant,
        "reply": None if trace.reply is None else clean_text(trace.reply),
        "steps": steps_to_json(trace.steps),
        "duration_ms": optional_float(trace.duration_ms) or 0.0,
        "created_at": as_utc(trace.created_at),
        "turn_at": None if trace.turn_at is None else as_utc(trace.turn_at),
        **llm_usage_fields(trace.steps),
    }


def llm_usage_fields(steps: list[TraceStep]) -> dict[str, Any]:
    """The turn's model usage, from its `llm` step, as columns the store can sum per intent."""
    step = next((s for s in steps if s.name == LLM_STEP), None)
    if step is None:
        return {"llm_calls": 0, "llm_input_tokens": 0, "llm_output_tokens": 0, "llm_cost_micros": None}
    output = step.output
    micros = None
    if output.get("cost") is not None:
        try:
            micros = int((Decimal(str(output["cost"])) * COST_MICROS).to_integral_value())
        except InvalidOperation:
            micros = None
    return {
        "llm_calls": len(output.get("calls") or []),
        "llm_input_tokens": int(output.get("input_tokens") or 0),
        "llm_output_tokens": int(output.get("output_tokens") or 0),
        "llm_cost_micros": micros,
    }


def trace_from_fields(fields: Mapping[str, Any]) -> Trace:
    return Trace(
        id=TraceId(fields["id"]),
        conversation_id=ConversationId(fields["conversation_id"]),
        message_id=MessageId(fields["message_id"]),
        workspace_version=WorkspaceVersionId(fields["workspace_version"]),
        steps=steps_from_json(fields["steps"]),
        intent=fields["intent"],
        intent_confidence=fields["confidence"],
        mechanism=fields["mechanism"],
        decision=Decision(fields["decision"]),
        outcome=fields["outcome"],
        reply=fields["reply"],
        reason_code=fields["reason_code"],
        variant=fields["variant"],
        created_at=as_utc(fields["created_at"]),
        duration_ms=float(fields["duration_ms"]),
        turn_at=None if fields.get("turn_at") is None else as_utc(fields["turn_at"]),
    )


# ---- escalation packets -------------------------------------------------------------------------------


def packet_to_json(packet: EscalationPacket) -> dict[str, Any]:
    """The whole packet; id, queue, priority, status and created_at are also columns of their own."""
    return {
        "id": packet.id,
        "conversation_id": packet.conversation_id,
        "queue": clean_text(packet.queue),
        "priority": int(packet.priority),
        "reason_code": clean_text(packet.reason_code),
        "summary": clean_text(packet.summary),
        "intent": packet.intent,
        "intent_confidence": optional_float(packet.intent_confidence),
        "customer": json_object(packet.customer),
        "fired_rules": [clean_text(rule) for rule in packet.fired_rules],
        "facts_used": [jsonable(fact) for fact in packet.facts_used],
        "actions_tried": [jsonable(action) for action in packet.actions_tried],
        "transcript": [json_object(line) for line in packet.transcript],
        "draft_reply": None if packet.draft_reply is None else clean_text(packet.draft_reply),
        "followups": [json_object(line) for line in packet.followups],
        "handoff": None if packet.handoff is None else json_object(packet.handoff),
    }


def packet_from_json(raw: Mapping[str, Any], *, status: str, created_at: datetime) -> EscalationPacket:
    return EscalationPacket(
        id=EscalationId(raw["id"]),
        conversation_id=ConversationId(raw["conversation_id"]),
        queue=raw["queue"],
        priority=Priority(int(raw["priority"])),
        reason_code=raw["reason_code"],
        summary=raw["summary"],
        intent=raw["intent"],
        intent_confidence=raw["intent_confidence"],
        customer=raw["customer"],
        fired_rules=list(raw["fired_rules"]),
        facts_used=[FactCitation(**fact) for fact in raw["facts_used"]],
        actions_tried=[ActionResult(**action) for action in raw["actions_tried"]],
        transcript=list(raw["transcript"]),
        created_at=as_utc(created_at),
        status=status,
        draft_reply=raw.get("draft_reply"),
        followups=list(raw.get("followups") or []),
        handoff=raw.get("handoff"),
    )
