"""Impact of a fact: the intents that declare it and the recent turns whose answers cited it, from the traces.
Before a fact is changed or retired, its owner sees which conversations its current text shaped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from cxstack.domain.models import Trace
from cxstack.domain.ports import Store
from cxstack.knowledge.models import RetrievalHistory
from cxstack.workspace.models import FactConfig


@dataclass(frozen=True, slots=True)
class FactUse:
    conversation_id: str
    message_id: str
    at: str
    intent: str | None
    outcome: str
    reply: str | None


@dataclass(frozen=True, slots=True)
class FactImpact:
    fact_id: str
    declared_intents: tuple[str, ...]
    intents: dict[str, int]  # intents of the turns that cited it, with counts
    uses: tuple[FactUse, ...]  # newest first
    traces_scanned: int

    @property
    def conversations(self) -> int:
        return len({u.conversation_id for u in self.uses})

    def to_json(self) -> dict[str, Any]:
        return {
            "fact": self.fact_id,
            "declared_intents": list(self.declared_intents),
            "intents": dict(self.intents),
            "conversations": self.conversations,
            "uses": [_use_json(u) for u in self.uses],
            "traces_scanned": self.traces_scanned,
        }


def _use_json(use: FactUse) -> dict[str, Any]:
    return {
        "conversation_id": use.conversation_id,
        "message_id": use.message_id,
        "at": use.at,
        "intent": use.intent,
        "outcome": use.outcome,
        "reply": use.reply,
    }


def cited_facts(trace: Trace) -> set[str]:
    """The fact ids a turn's answer cited (any step that reports `facts`)."""
    cited: set[str] = set()
    for step in trace.steps:
        for fact in step.output.get("facts") or []:
            if isinstance(fact, dict) and fact.get("id"):
                cited.add(str(fact["id"]))
    return cited


def fact_impact(store: Store, fact: FactConfig, *, limit: int = 5000) -> FactImpact:
    traces = store.list_traces(None, limit=limit)
    citing = [t for t in reversed(traces) if fact.id in cited_facts(t)]  # newest first
    uses = tuple(
        FactUse(
            conversation_id=str(t.conversation_id),
            message_id=str(t.message_id),
            at=t.created_at.isoformat(),
            intent=t.intent,
            outcome=t.outcome,
            reply=t.reply,
        )
        for t in citing
    )
    return FactImpact(
        fact_id=fact.id,
        declared_intents=tuple(fact.intents),
        intents=dict(Counter(t.intent or "(none)" for t in citing).most_common()),
        uses=uses,
        traces_scanned=len(traces),
    )


def retrieval_history(store: Store, *, limit: int = 5000) -> RetrievalHistory:
    """Which facts the answers of the newest `limit` stored turns cited, for the audit's never-retrieved."""
    traces = store.list_traces(None, limit=limit)
    cited: set[str] = set()
    answered = 0
    for trace in traces:
        facts = cited_facts(trace)
        if facts:
            answered += 1
            cited |= facts
    times = [t.created_at for t in traces]
    return RetrievalHistory(
        turns=len(traces),
        answered=answered,
        cited=frozenset(cited),
        since=min(times) if times else None,
        until=max(times) if times else None,
    )
