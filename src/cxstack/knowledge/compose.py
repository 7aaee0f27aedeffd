"""Compose a reply from retrieved facts, without an LLM: the facts are the answer."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cxstack.knowledge.models import ComposedAnswer, ScoredFact

# Fact ids -> cosine between the two facts; KnowledgeIndex.fact_similarity fits.
FactSimilarity = Callable[[str, str], float]

TONE_PREFIXES: dict[str, str] = {
    "formal": "Thank you for your question.",
    "warm": "Happy to help!",
    "friendly": "Happy to help!",
    "apologetic": "Sorry for the trouble.",
    "empathetic": "I understand, and I'm glad to help.",
}


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


_ADDS = re.compile(r"\b(?:also|as well|in addition|additionally|too|even|still)\b", re.IGNORECASE)


def _adds_to_another(text: str) -> bool:
    return _ADDS.search(text) is not None


def compose_answer(
    results: Sequence[ScoredFact],
    *,
    min_score: float,
    similarity: FactSimilarity | None = None,
    tone: str | None = None,
    max_facts: int = 2,
    second_fact_ratio: float = 0.8,
    redundancy_cosine: float = 0.9,
) -> ComposedAnswer | None:
    """The best fact above `min_score`, plus further facts only when each is relevant in its own right (above
    `min_score` and at least `second_fact_ratio` of the best score) and not redundant with one already used
    (cosine < `redundancy_cosine`). None when no fact clears `min_score`: there is no grounded answer."""
    ranked = sorted(results, key=lambda r: r.score, reverse=True)
    if not ranked or ranked[0].score < min_score:
        return None
    chosen = [ranked[0]]
    for candidate in ranked[1:]:
        if len(chosen) >= max_facts:
            break
        if candidate.score < min_score or candidate.score < second_fact_ratio * ranked[0].score:
            break
        if candidate.fact.text.strip() == "":
            continue
        redundant = any(
            candidate.fact.text.strip() == used.fact.text.strip()
            or (similarity is not None and similarity(candidate.fact.id, used.fact.id) >= redundancy_cosine)
            for used in chosen
        )
        if not redundant:
            chosen.append(candidate)
    # A fact that adds to another ("you can also…", "…as well") never leads: the fact it adds to goes first.
    chosen.sort(key=lambda f: _adds_to_another(f.fact.text))
    parts = [_sentence(f.fact.text) for f in chosen]
    prefix = TONE_PREFIXES.get((tone or "").strip().lower())
    if prefix:
        parts.insert(0, prefix)
    text = " ".join(p for p in parts if p)
    return ComposedAnswer(text=text, facts=tuple(chosen), confidence=ranked[0].score)


@dataclass(frozen=True, slots=True)
class PartAnswer:
    """One part of a question of several parts, and the facts that answer it (None: no fact does)."""

    question: str
    answer: ComposedAnswer | None


def compose_parts(
    parts: Sequence[PartAnswer], *, tone: str | None = None, unanswered: Callable[[str], str]
) -> ComposedAnswer | None:
    """One reply for a question of several parts: the answers in the order the customer asked, each fact
    once (two parts answered by the same fact are answered once), then one sentence per part no fact
    answers (`unanswered(question)`). None when no part is answered."""
    used: list[ScoredFact] = []
    texts: list[str] = []
    for part in parts:
        if part.answer is None:
            continue
        fresh = [f for f in part.answer.facts if all(f.fact.id != u.fact.id for u in used)]
        used.extend(fresh)
        texts.extend(_sentence(f.fact.text) for f in fresh)
    if not used:
        return None
    prefix = TONE_PREFIXES.get((tone or "").strip().lower())
    missing = [unanswered(p.question.strip().rstrip("?.!").strip()) for p in parts if p.answer is None]
    text = " ".join([*([prefix] if prefix else []), *texts, *missing])
    # The best of the weakest: a reply is only as sure as its least certain answered part.
    weakest = min(p.answer.score for p in parts if p.answer is not None)
    return ComposedAnswer(text=text, facts=tuple(used), confidence=weakest, unanswered=tuple(missing))
