from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cxstack.domain.llm import LLMTurn
from cxstack.domain.models import Conversation, Customer, Message, Role, utcnow
from cxstack.domain.ports import CustomerDirectory
from cxstack.domain.turn import BusinessContext, IntentPrediction, SharedContext
from cxstack.workspace.workspace import Workspace


@dataclass(slots=True)
class TurnContext:
    """Full context of one turn, handed from layer to layer (and, later, from agent to agent)."""

    workspace: Workspace
    conversation: Conversation
    customer: Customer
    message: Message
    history: list[Message]
    prediction: IntentPrediction | None = None
    business: BusinessContext | None = None
    now: datetime = field(default_factory=utcnow)
    attempt: int = 0  # 0 for the first resolver, 1 for the retry with the fallback
    # The messages this turn answers when several arrived as a burst (`message` then joins their texts).
    burst: tuple[Message, ...] = ()
    # The sentence(s) of the message this request is about, when the message says more (retrieval query).
    focus: str | None = None
    # The language the customer writes in (detected, else the workspace's): facts for other locales are out.
    language: str | None = None
    # The text this request's slots are read from, when another request in the same message shares it.
    request_text: str | None = None
    # Looks up stored customer profiles (a verification step binds the conversation to one of them).
    customers: CustomerDirectory | None = None
    # The turn's model calls (one budget, one record), when the workspace configures an LLM.
    llm: LLMTurn | None = None
    # Set by an agent for the action it runs: JSON schemas its slot values must pass, and values the agent
    # read from the customer's own words (checked against their text before they are offered here).
    slot_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    proposed_slots: dict[str, str] = field(default_factory=dict)
    # What this turn's steps have done so far (facts, action results, confidence), handed whole from one
    # specialist to the next.
    shared: SharedContext = field(default_factory=SharedContext)

    def earlier_customer_texts(self) -> list[str]:
        """What the customer wrote before this turn's message, oldest first."""
        return [m.text for m in self.history if m.role == Role.CUSTOMER and m.id != self.message.id]


def with_updates(state: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Conversation state after a resolver's `state_updates` (a key set to None is removed)."""
    merged = {**state, **{k: v for k, v in updates.items() if v is not None}}
    for key in [k for k, v in updates.items() if v is None]:
        merged.pop(key, None)
    return merged
