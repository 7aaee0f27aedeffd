"""Who owns a conversation, as a state machine: one table of allowed transitions, each a typed, traced event.

```
            escalate                person_replied
   bot ─────────────▶ waiting_for_person ─────────▶ person ◀─┐ person_replied
    ▲  ◀──────────────────────┴── hand_back ──────────┘ └────┘
    │ reopen                   close (from any open state)
  closed ◀───────────────────────────────────────────────────
```

No other code writes a conversation's status: the store applies `next_status` inside the transaction that
records the change, so an illegal move (the bot escalating a conversation a person already has, a hand-back
of a conversation nobody escalated) fails loudly instead of silently overwriting who owns it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from cxstack.domain.models import ConversationStatus, utcnow

BOT = ConversationStatus.BOT
WAITING = ConversationStatus.WAITING
PERSON = ConversationStatus.PERSON
CLOSED = ConversationStatus.CLOSED


class Transition(enum.StrEnum):
    ESCALATE = "escalate"  # the bot hands the conversation to a queue
    PERSON_REPLIED = "person_replied"  # a person answered (and so owns it)
    HAND_BACK = "hand_back"  # a person returns it to the bot
    CLOSE = "close"  # resolved; nobody owns it
    REOPEN = "reopen"  # the customer wrote again after it was closed


ALLOWED: dict[tuple[ConversationStatus, Transition], ConversationStatus] = {
    (BOT, Transition.ESCALATE): WAITING,
    (BOT, Transition.PERSON_REPLIED): PERSON,  # a person may step in unasked
    (WAITING, Transition.PERSON_REPLIED): PERSON,
    (PERSON, Transition.PERSON_REPLIED): PERSON,
    (WAITING, Transition.HAND_BACK): BOT,
    (PERSON, Transition.HAND_BACK): BOT,
    (BOT, Transition.CLOSE): CLOSED,
    (WAITING, Transition.CLOSE): CLOSED,
    (PERSON, Transition.CLOSE): CLOSED,
    (CLOSED, Transition.REOPEN): BOT,
}


class IllegalTransitionError(ValueError):
    def __init__(self, current: ConversationStatus, transition: Transition) -> None:
        self.current = current
        self.transition = transition
        allowed = sorted(t.value for (s, t) in ALLOWED if s == current)
        super().__init__(
            f"cannot {transition.value} a conversation that is {current.value} "
            f"(allowed from {current.value}: {', '.join(allowed) or 'nothing'})"
        )


def next_status(current: ConversationStatus, transition: Transition) -> ConversationStatus:
    try:
        return ALLOWED[(ConversationStatus(current), Transition(transition))]
    except KeyError:
        raise IllegalTransitionError(ConversationStatus(current), Transition(transition)) from None


def can(current: ConversationStatus, transition: Transition) -> bool:
    return (ConversationStatus(current), Transition(transition)) in ALLOWED


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One applied transition, as stored and shown: who moved the conversation, from where to where, why."""

    conversation_id: str
    transition: Transition
    from_status: ConversationStatus
    to_status: ConversationStatus
    actor: str  # "bot", "agent:<name>", "system"
    cause: str = ""  # a reason code or a short explanation
    trace_id: str | None = None
    at: datetime = field(default_factory=utcnow)


def apply_all(
    current: ConversationStatus, transitions: tuple[Transition, ...]
) -> list[tuple[Transition, ConversationStatus, ConversationStatus]]:
    """Each transition with the status before and after it; raises on the first illegal one."""
    steps = []
    status = ConversationStatus(current)
    for transition in transitions:
        after = next_status(status, transition)
        steps.append((transition, status, after))
        status = after
    return steps


def escalate_from(current: ConversationStatus) -> tuple[Transition, ...]:
    """The transitions that put a conversation in front of a person, from wherever it is now."""
    status = ConversationStatus(current)
    if status == CLOSED:
        return (Transition.REOPEN, Transition.ESCALATE)
    if status == BOT:
        return (Transition.ESCALATE,)
    return ()  # a person has it or is on the way
