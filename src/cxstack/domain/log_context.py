"""The conversation a piece of work is about, for log lines: set where a turn runs or a message is ingested,
read by the JSON log formatter. A context variable, so each asyncio task and thread carries its own."""

from __future__ import annotations

from contextvars import ContextVar

conversation_id: ContextVar[str | None] = ContextVar("cxstack_conversation_id", default=None)


def bind_conversation(value: str | None) -> None:
    """Every log line from here to the end of the current task (or thread) carries this conversation id.
    Each turn and each request runs in its own task, so the value never spills onto another's lines."""
    conversation_id.set(value)
