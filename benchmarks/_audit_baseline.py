"""The audit's pair search as it was before it scaled (main at 53ce3ff), kept verbatim for the benchmark's
baseline: one brute-force nearest-neighbour search over the sparse TF-IDF vectors of all facts, with the
number and negation checks of that version. Returns (kind, fact ids) pairs."""

# ruff: noqa
from __future__ import annotations

import re
from collections.abc import Sequence

from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors

from cxstack.knowledge.retrieval import tokenize
from cxstack.workspace.models import FactConfig


def _owners(*facts: FactConfig) -> str:
    return ""


class Finding:
    def __init__(self, kind: str, facts: tuple[str, ...], owner: str, detail: str, fix: str) -> None:
        self.kind = kind
        self.facts = facts


_QUANTITY = re.compile(r"([$€£]?)(\d+(?:[.,]\d+)?)\s*(%|[a-z]+)?", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|won't|isn't|aren't|don't|doesn't)\b", re.I)
_FILLER_UNITS = frozenset({"and", "or", "to", "the", "a", "of", "in", "on", "at", "for", "with", "from"})


def quantities(text: str) -> dict[str, set[str]]:
    """Numbers by what they count: "30 days" → {"days": {"30"}}, "$5" → {"$": {"5"}}."""
    found: dict[str, set[str]] = {}
    for currency, number, unit in _QUANTITY.findall(text):
        word = (unit or "").lower()
        key = currency or ("" if word in _FILLER_UNITS else word)
        if key:
            found.setdefault(key, set()).add(number.replace(",", ""))
    return found


def _content(text: str) -> set[str]:
    return {t for t in tokenize(text) if not t.isdigit()}


def _conflicts(a: str, b: str, *, same_words: float = 0.75) -> list[str]:
    """Why two related facts disagree; nothing when they are about different things. Facts that differ in
    what they talk about ("Silver members … 180 days", "Bronze members … 90 days") are not compared: their
    content words (numbers aside) must overlap by `same_words` (Jaccard), or one must add nothing."""
    wa, wb = _content(a), _content(b)
    union = wa | wb
    overlap = len(wa & wb) / len(union) if union else 1.0
    if overlap < same_words and wa - wb and wb - wa:
        return []
    reasons: list[str] = []
    qa, qb = quantities(a), quantities(b)
    for unit in sorted(set(qa) & set(qb)):
        if qa[unit].isdisjoint(qb[unit]):
            left, right = "/".join(sorted(qa[unit])), "/".join(sorted(qb[unit]))
            label = f"{unit}{left} vs {unit}{right}" if unit in "$€£" else f"{left} vs {right} {unit}"
            reasons.append(label)
    if bool(_NEGATION.search(a)) != bool(_NEGATION.search(b)):
        reasons.append("one negates what the other affirms")
    return reasons


def _pair_findings(
    facts: Sequence[FactConfig], duplicate_cosine: float, related_cosine: float, neighbours: int
) -> list[Finding]:
    if len(facts) < 2:
        return []
    texts = [f.text for f in facts]
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english").fit_transform(texts)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(texts)
    vectors = sparse.hstack([words, chars]).tocsr()
    k = min(neighbours + 1, len(facts))
    index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(vectors)
    distances, positions = index.kneighbors(vectors)
    seen: set[tuple[int, int]] = set()
    findings: list[Finding] = []
    for i in range(len(facts)):
        for distance, j in zip(distances[i], positions[i], strict=True):
            if j == i:
                continue
            pair = (min(i, int(j)), max(i, int(j)))
            if pair in seen:
                continue
            seen.add(pair)
            cosine = 1.0 - float(distance)
            if cosine < related_cosine:
                continue
            a, b = facts[pair[0]], facts[pair[1]]
            if a.subject and b.subject and a.subject.casefold() != b.subject.casefold():
                continue  # about different things: neither a duplicate nor a contradiction
            reasons = _conflicts(a.text, b.text)
            if reasons:
                findings.append(
                    Finding(
                        "contradiction",
                        (a.id, b.id),
                        _owners(a, b),
                        f"similar facts (cosine {cosine:.2f}) that disagree: {'; '.join(reasons)}",
                        "the owners agree on one version; retire or correct the other",
                    )
                )
            elif cosine >= duplicate_cosine:
                findings.append(
                    Finding(
                        "near_duplicate",
                        (a.id, b.id),
                        _owners(a, b),
                        f"say the same thing (cosine {cosine:.2f})",
                        f"keep one (e.g. {a.id}) and retire the other, or merge them",
                    )
                )
    return findings


def pairs(facts: Sequence[FactConfig]) -> list[tuple[str, tuple[str, ...]]]:
    return [(f.kind, f.facts) for f in _pair_findings(facts, 0.85, 0.5, 8)]
