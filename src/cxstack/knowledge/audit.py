"""The knowledge audit: facts that repeat, contradict each other, went stale or have no owner. Offline.

Pairs are found by nearest neighbours over TF-IDF vectors of the facts (word and character n-grams), never by
comparing all pairs: each fact is compared with its `neighbours` most similar ones only.

* near-duplicate: cosine ≥ `duplicate_cosine` and neither fact says something the other does not (same
  numbers, same negation). Fix: keep one, retire the other.
* contradiction: similar enough to be about the same thing (cosine ≥ `related_cosine`) and conflicting on a
  number attached to the same word ("30 days" vs "60 days", "$5" vs "$8"), or one negates what the other
  affirms. Fix: the owners agree on one.
* Facts whose `subject`s differ are never paired.
* stale: `review_by` or `valid_to` before today. unowned: no owner. Retired facts are left out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors

from cxstack.knowledge.retrieval import tokenize
from cxstack.workspace.models import FactConfig

_QUANTITY = re.compile(r"([$€£]?)(\d+(?:[.,]\d+)?)\s*(%|[a-z]+)?", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|won't|isn't|aren't|don't|doesn't)\b", re.I)
_FILLER_UNITS = frozenset({"and", "or", "to", "the", "a", "of", "in", "on", "at", "for", "with", "from"})


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # near_duplicate | contradiction | stale | unowned
    facts: tuple[str, ...]
    owner: str
    detail: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "facts": list(self.facts),
            "owner": self.owner,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    facts: int
    findings: tuple[Finding, ...]
    gaps: tuple[dict[str, Any], ...] = field(default=())

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": self.facts,
            "findings": [f.to_json() for f in self.findings],
            "gaps": list(self.gaps),
        }


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


def _owners(*facts: FactConfig) -> str:
    return ", ".join(sorted({f.owner for f in facts if f.owner})) or "(no owner)"


def audit_facts(
    facts: Sequence[FactConfig],
    today: date,
    *,
    duplicate_cosine: float = 0.85,
    related_cosine: float = 0.5,
    neighbours: int = 8,
) -> AuditReport:
    findings: list[Finding] = []
    facts = [f for f in facts if f.status != "retired"]
    for fact in facts:
        if not fact.owner.strip():
            findings.append(
                Finding("unowned", (fact.id,), "", "no owner keeps this fact true", "set `owner`")
            )
        if fact.valid_to is not None and fact.valid_to < today:
            findings.append(
                Finding(
                    "stale",
                    (fact.id,),
                    fact.owner,
                    f"valid_to {fact.valid_to} has passed: the fact is no longer used",
                    "retire it, or extend valid_to if it still holds",
                )
            )
        elif fact.review_by is not None and fact.review_by < today:
            findings.append(
                Finding(
                    "stale",
                    (fact.id,),
                    fact.owner,
                    f"review_by {fact.review_by} has passed",
                    "re-check the fact and move review_by forward",
                )
            )
    findings.extend(_pair_findings(facts, duplicate_cosine, related_cosine, neighbours))
    order = {"contradiction": 0, "near_duplicate": 1, "stale": 2, "unowned": 3}
    findings.sort(key=lambda f: (order.get(f.kind, 9), f.facts))
    return AuditReport(facts=len(facts), findings=tuple(findings))


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


def audit_html(report: AuditReport, gaps: Sequence[Any], *, workspace: str, day: date, questions: int) -> str:
    """The audit as an HTML page: bar charts of findings by kind and of the gaps, then the tables."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cxstack.knowledge", "templates"), autoescape=True
    )
    kinds = Counter(f.kind for f in report.findings)
    by_kind = [(k, kinds.get(k, 0)) for k in ("contradiction", "near_duplicate", "stale", "unowned")]
    return environment.get_template("audit.html").render(
        workspace=workspace,
        day=day.isoformat(),
        facts=report.facts,
        findings=report.findings,
        by_kind=by_kind,
        max_kind=max((c for _, c in by_kind), default=0),
        gaps=gaps,
        max_gap=max((g.count for g in gaps), default=1),
        gap_questions=questions,
    )
