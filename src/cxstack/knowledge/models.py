"""Types of the knowledge layer (L3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cxstack.domain.models import FactCitation
from cxstack.workspace.models import FactConfig


@dataclass(frozen=True, slots=True)
class ScoredFact:
    """A fact with its hybrid retrieval score in [0, 1] and the two signals it was fused from."""

    fact: FactConfig
    score: float
    lexical: float
    semantic: float
    boost: float = 0.0  # the multiplicative boost applied (0 when no intent or tag matched)

    def citation(self) -> FactCitation:
        return FactCitation(fact_id=self.fact.id, score=round(self.score, 4), text=self.fact.text)


@dataclass(frozen=True, slots=True)
class ComposedAnswer:
    """A reply composed from facts, with the facts it cites (the best first)."""

    text: str
    facts: tuple[ScoredFact, ...]
    confidence: float | None = None  # the best fact's score; for an answer of several parts, its weakest
    unanswered: tuple[str, ...] = ()  # the sentences saying which parts no fact answers (not claims)

    @property
    def fact_ids(self) -> tuple[str, ...]:
        return tuple(f.fact.id for f in self.facts)

    @property
    def score(self) -> float:
        if self.confidence is not None:
            return self.confidence
        return self.facts[0].score if self.facts else 0.0

    def citations(self) -> list[FactCitation]:
        return [f.citation() for f in self.facts]


@dataclass(frozen=True, slots=True)
class RetrievalHistory:
    """What the stored conversations cited: `answered` of the `turns` scanned cited at least one fact."""

    turns: int
    answered: int
    cited: frozenset[str]
    since: datetime | None = None
    until: datetime | None = None
