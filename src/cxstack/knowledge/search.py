"""One conversation → does its newest turn need knowledge, what is it about, which facts answer it.

The one path that `cxstack kb search`, the content resolver's trace and the DSTC11 benchmark share:

1. the subject is resolved from the whole conversation (`subjects.py`); facts about another subject are out;
2. the newest message, without the subject's name (it says *which* facts, not *what about* them), is the
   query of the hybrid search (`retrieval.py`);
3. a `KnowledgeModel` fitted on labelled conversations (`needs.py`), when the workspace has one, turns the
   search into calibrated probabilities: that the turn needs knowledge at all, and that each of its
   `candidates` best facts is relevant; the k most probable are returned, most probable first, and those
   whose probability reaches its threshold are selected (at least one when the turn needs knowledge).
   Without one: the turn needs knowledge when its best fact reaches `knowledge_min_score`, and the selected
   facts are those the composer would use (above `knowledge_min_score` and within `second_fact_ratio` of the
   best).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from cxstack.knowledge.models import ScoredFact
from cxstack.knowledge.needs import KnowledgeModel, needs_features, relevance_features
from cxstack.knowledge.retrieval import KnowledgeIndex
from cxstack.knowledge.subjects import SubjectResolution

SECOND_FACT_RATIO = 0.8  # compose.py's default: a second fact must score at least this share of the best


@dataclass(frozen=True, slots=True)
class ConversationSearch:
    needs_knowledge: bool
    needs_score: float  # P(needs knowledge) with a fitted model; else the best fact's score
    subject: SubjectResolution
    query: str
    facts: tuple[ScoredFact, ...]  # best first
    relevance: tuple[float, ...]  # per fact: P(relevant) with a fitted model; else its score
    selected: tuple[bool, ...]  # per fact: would be used to answer

    def to_json(self) -> dict[str, object]:
        return {
            "needs_knowledge": self.needs_knowledge,
            "needs_score": round(self.needs_score, 4),
            "subject": self.subject.subject,
            "facts": [
                {"id": f.fact.id, "score": round(r, 4), "selected": s}
                for f, r, s in zip(self.facts, self.relevance, self.selected, strict=True)
            ],
        }


def search_conversation(
    index: KnowledgeIndex,
    messages: Sequence[str],
    *,
    model: KnowledgeModel | None = None,
    min_score: float = 0.35,
    k: int = 10,
    on: date | None = None,
    tier: str | None = None,
    channel: str | None = None,
    intent: str | None = None,
    tags: Sequence[str] = (),
    lexical_weight: float | None = None,
) -> ConversationSearch:
    """`messages`: the conversation's texts, oldest first; the newest is the turn to answer."""
    fitted = model if model is not None and model.usable_with(index.embedder) else None
    if lexical_weight is None and fitted is not None:
        lexical_weight = fitted.lexical_weight
    newest = messages[-1] if messages else ""
    resolution = index.subjects.resolve(messages) if messages else SubjectResolution(None)
    query = resolution.strip_mentions(newest) or newest
    facts = index.search(
        query,
        k=k if fitted is None else max(k, fitted.candidates),
        intent=intent,
        tags=tags,
        on=on,
        tier=tier,
        channel=channel,
        subjects=resolution.subjects,
        lexical_weight=lexical_weight,
    )
    best = facts[0].score if facts else 0.0
    if fitted is None:
        relevance = tuple(f.score for f in facts)
        selected = tuple(f.score >= min_score and f.score >= SECOND_FACT_RATIO * best for f in facts)
        needs = best >= min_score
        return ConversationSearch(needs, best, resolution, query, tuple(facts), relevance, selected)
    vector = index.embedder.embed([newest])[0] if newest.strip() else None
    needs_score = fitted.needs_probability(needs_features(vector, facts, resolution, newest, fitted.dim))
    needs = needs_score >= fitted.needs_threshold
    probabilities = fitted.relevance_probability(
        relevance_features(
            facts,
            resolution,
            index.fact_vectors([f.fact.id for f in facts]),
            query,
            associations=fitted.associations,
            tags=fitted.tags,
        )
    )
    order = sorted(range(len(facts)), key=lambda i: -probabilities[i])[:k]
    # A turn that needs knowledge is answered from at least its most probable fact.
    selected = tuple(
        probabilities[i] >= fitted.select_threshold or (needs and n == 0) for n, i in enumerate(order)
    )
    return ConversationSearch(
        needs,
        needs_score,
        resolution,
        query,
        tuple(facts[i] for i in order),
        tuple(probabilities[i] for i in order),
        selected,
    )
