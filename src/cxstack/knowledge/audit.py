"""The knowledge audit: facts that repeat, contradict each other, went stale, have no owner or are never used.
Offline and deterministic.

Pairs are found by nearest neighbours over TF-IDF vectors of the facts (word and character n-grams, cosine),
never by comparing all pairs:

* Blocking by subject. A fact with a `subject` is compared with the facts about the same subject and with the
  facts without one; a fact without a subject with the other facts without one (and with a fact with a
  subject when it is among that fact's nearest: pairs go both ways). Facts whose `subject`s differ are never
  paired.
* In each block, each fact keeps its `neighbours` most similar candidates (the same rule as one global search,
  restricted to the facts it may be paired with). A small search is exact (sparse cosine); a larger one
  compares a 256-dimensional sketch of the vectors (every query with every candidate while that stays
  moderate, beyond that through an HNSW index, usearch) for twice as many candidates, then keeps those whose
  exact cosine clears the bar. Exact and approximate searches give the same findings in the tests.
* A fact without a subject says what it is about only in its text, and template facts crowd around it
  ("Orders shipped to Brazil by DHL / by UPS / …"): it looks at 4 × `neighbours` candidates and skips those
  that name something it does not while it names something they do not, which could never pair with it.

On the pairs (the rules compare per-fact traits, each worked out once):

* near-duplicate: neither fact says something the other does not (same numbers, amounts and dates, whatever
  word follows a number; same negation; the same names; no conflicting policy word), and either cosine ≥
  `duplicate_cosine`; or, for a paraphrase, cosine ≥ `paraphrase_cosine` with content words overlapping ≥
  `paraphrase_words` (Jaccard); or, for a rewording in other words ("take about 9 business days" / "need
  roughly 9 working days"), the cosine of WordLlama's static embeddings ≥ `paraphrase_embedding`. Fix: keep
  one, retire the other.
* contradiction: about the same thing and conflicting on a number attached to the same word ("30 days" vs
  "60 days"), an amount ("$5" vs "5.50 USD"), a date ("31 March" vs "March 15") — from cosine ≥
  `candidate_cosine`, since the differing digits' rare character n-grams pull the cosine of such a pair down —
  or, from cosine ≥ `related_cosine`, on a policy word ("can" vs "cannot", "allowed" vs "prohibited", "free"
  vs "charged"), or one negates what the other affirms. Fix: the owners agree on one.
* stale: `review_by` or `valid_to` before today. unowned: no owner. Retired facts are left out.
* never retrieved: with stored conversations, published facts that no answer cited in the stored history.

`duplicate_cosine` and `related_cosine` were chosen on the demo; the paraphrase rule (0.6, 0.65), the name
rule, `candidate_cosine` (0.4) and `paraphrase_embedding` (0.85) on one seed of the synthetic benchmark
(`benchmarks/audit_scale.py --seed 11`, others checked on seed 7), which reports others.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from cxstack.knowledge.models import RetrievalHistory
from cxstack.knowledge.ports import Embedder
from cxstack.knowledge.retrieval import tokenize
from cxstack.workspace.models import FactConfig

Search = Literal["auto", "exact", "ann"]
__all__ = ["AuditReport", "Finding", "RetrievalHistory", "audit_facts", "audit_html", "quantities"]

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<{0}>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<{0}>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<{0}>(?:19|20)\d\d))?"
_DATE = re.compile(
    r"\b(?:(?P<iso>(?:19|20)\d\d-[01]\d-[0-3]\d)"
    + "|"
    + _DAY.format("d1")
    + r"\s+(?:of\s+)?"
    + _MONTH.format("m1")
    + _YEAR.format("y1")
    + "|"
    + _MONTH.format("m2")
    + r"\s+"
    + _DAY.format("d2")
    + _YEAR.format("y2")
    + r")\b",
    re.IGNORECASE,
)
_QUANTITY = re.compile(r"([$€£]?)(\d+(?:[.,]\d+)*)(?:\s*-\s*|\s*)(%|[a-z]+)?", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|won't|isn't|aren't|don't|doesn't)\b", re.I)
# "no" that affirms: "at no extra cost" is free, "no later than" a deadline.
_NOT_NEGATION = re.compile(
    r"\bno (?:extra |additional )?(?:cost|charge|fee)s?\b|\bno (?:later|more|less|earlier) than\b", re.I
)
_NAME = re.compile(r"\b[A-Z][A-Za-z'’-]*[a-z][A-Za-z'’-]*|\b[A-Z]{2,}\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\W*$")
_NOT_NAMES = frozenset(
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
) | frozenset(_MONTHS)
_FILLER_UNITS = frozenset({"and", "or", "to", "the", "a", "of", "in", "on", "at", "for", "with", "from"})
_CURRENCY_WORDS = {
    "usd": "$",
    "dollar": "$",
    "dollars": "$",
    "eur": "€",
    "euro": "€",
    "euros": "€",
    "gbp": "£",
    "pound": "£",
    "pounds": "£",
}
# Policy words that cannot both hold: (label, affirming words, opposing words). A fact that uses one side and
# not the other conflicts with a related fact that uses the other side and not the first.
_POLICY: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (label, re.compile(rf"\b(?:{yes})\b", re.I), re.compile(rf"\b(?:{no})\b", re.I))
    for label, yes, no in (
        (
            "free vs charged",
            r"free(?: of charge)?|no (?:extra |additional )?(?:charge|cost)|complimentary",
            r"charged|charges|paid|fees?|costs?|billed",
        ),
        (
            "allowed vs prohibited",
            r"(?<!not )(?:allowed|permitted)",
            r"prohibited|forbidden|banned|disallowed",
        ),
        ("included vs excluded", r"includes?|included", r"excludes?|excluded"),
        ("refundable vs non-refundable", r"(?<!non-)refundable", r"non-refundable|nonrefundable"),
        ("available vs unavailable", r"(?<!not )available", r"unavailable"),
        ("eligible vs ineligible", r"(?<!not )eligible", r"ineligible"),
        (
            "accepted vs refused",
            r"accepts?|accepted",
            r"refuses?|refused|rejects?|rejected|declines?|declined",
        ),
        ("required vs optional", r"required|mandatory|compulsory", r"optional"),
        ("automatic vs manual", r"automatic(?:ally)?", r"manual(?:ly)?"),
    )
)

_POLICY_WORDS = re.compile("|".join(f"(?:{p.pattern})|(?:{q.pattern})" for _, p, q in _POLICY), re.I)

SKETCH_DIM = 256
EXACT_LIMIT = 4_000_000  # a search of |queries| × |candidates| up to this is exact (sparse cosine)
BRUTE_LIMIT = 400_000_000  # up to this, every query meets every candidate in the sketch; beyond, HNSW
# The embedder (registry name) whose cosine confirms a rewording, and the cosine chosen for it: at 0.85 a pair
# with the same claims is a rewording. Another embedder would need its own threshold.
PARAPHRASE_EMBEDDER = "wordllama"
PARAPHRASE_EMBEDDING = 0.85
_MARGIN = 0.25  # how far the sketch's cosine may fall below the exact one before a pair is lost


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # contradiction | near_duplicate | stale | unowned | never_retrieved
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


def _number(text: str) -> str:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return text
    return format(value.normalize(), "f")


def dates(text: str) -> set[str]:
    """Calendar dates: "31 March", "March 31st, 2026", "2026-03-31" → {"03-31"} or {"2026-03-31"}."""
    found: set[str] = set()
    for match in _DATE.finditer(text):
        if match.group("iso"):
            found.add(match.group("iso"))
            continue
        day = int(match.group("d1") or match.group("d2"))
        month = _MONTHS[(match.group("m1") or match.group("m2")).lower()]
        year = match.group("y1") or match.group("y2")
        if 1 <= day <= 31:
            found.add(f"{year}-{month:02d}-{day:02d}" if year else f"{month:02d}-{day:02d}")
    return found


def quantities(text: str) -> dict[str, set[str]]:
    """Numbers by what they count: "30 days" → {"day": {"30"}}, "$5" and "5.00 USD" → {"$": {"5"}}, and
    dates under "date" ("31 March" → {"date": {"03-31"}})."""
    found: dict[str, set[str]] = {}
    when = dates(text)
    if when:
        found["date"] = when
        text = _DATE.sub(" ", text)
    for currency, number, unit in _QUANTITY.findall(text):
        word = (unit or "").lower()
        if not currency and word in _CURRENCY_WORDS:
            currency = _CURRENCY_WORDS[word]
        if not currency and len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]  # "1 day" and "7 days" count the same thing
        key = currency or ("" if word in _FILLER_UNITS else word)
        if key:
            found.setdefault(key, set()).add(_number(number))
    return found


def _content(text: str) -> set[str]:
    return {t for t in tokenize(_POLICY_WORDS.sub(" ", _DATE.sub(" ", text))) if not t.isdigit()}


def _same_day(a: set[str], b: set[str]) -> bool:
    """Some date of each is the same day (a date without a year matches that day in any year)."""
    return any(x == y or (x[-5:] == y[-5:] and (len(x) == 5 or len(y) == 5)) for x in a for y in b)


def names(text: str) -> set[str]:
    """Names a fact mentions: capitalised words that do not start a sentence, and acronyms; not days or
    months. "Express delivery to Mexico by DHL" → {"mexico", "dhl"}."""
    found: set[str] = set()
    for match in _NAME.finditer(text):
        word = match.group(0).casefold()
        if word not in _NOT_NAMES and not _SENTENCE_START.search(text[: match.start()]):
            found.add(word)
    return found


class _Traits:
    """What the pair rules compare in one fact, each worked out once (and only if a rule asks) however many
    pairs the fact is in."""

    def __init__(self, text: str) -> None:
        self.text = text

    @functools.cached_property
    def content(self) -> frozenset[str]:
        return frozenset(_content(self.text))

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(names(self.text))

    @functools.cached_property
    def quantities(self) -> dict[str, set[str]]:
        return quantities(self.text)

    @functools.cached_property
    def negated(self) -> bool:
        return _negated(self.text)

    @functools.cached_property
    def policy(self) -> tuple[tuple[int, int], ...]:
        return tuple(_policy_sides(yes, no, self.text) for _, yes, no in _POLICY)

    @functools.cached_property
    def values(self) -> frozenset[tuple[str, str]]:
        """The numbers it states, whatever word follows them ("4 business days" and "4 working days" state
        the same 4); amounts by currency and dates apart."""
        return frozenset(
            (unit if unit in ("date", "$", "€", "£") else "", value)
            for unit, found in self.quantities.items()
            for value in found
        )


def _comparable(a: _Traits, b: _Traits, *, same_words: float = 0.75) -> bool:
    """Whether two facts talk about the same thing, so that they can repeat or contradict each other. Not when
    each names something the other does not ("to Mexico" and "to Japan"), nor when their content words
    (numbers, dates and policy words aside) overlap by less than `same_words` (Jaccard) and each adds some."""
    if _different_names(a, b):
        return False
    return not (_word_overlap(a, b) < same_words and a.content - b.content and b.content - a.content)


def _word_overlap(a: _Traits, b: _Traits) -> float:
    """Jaccard overlap of the content words (numbers, dates and policy words aside)."""
    union = a.content | b.content
    return len(a.content & b.content) / len(union) if union else 1.0


def _different_names(a: _Traits, b: _Traits) -> bool:
    return bool(a.names - b.names and b.names - a.names)


def _same_claims(a: _Traits, b: _Traits) -> bool:
    """Neither states a number, amount, date, negation, policy word or name that the other does not: what a
    repeat needs (a conflict is a contradiction; "by DHL" and "by the national postal service": two facts)."""
    return (
        a.names == b.names
        and a.values == b.values
        and a.negated == b.negated
        and not any(_flipped(x, y) for x, y in zip(a.policy, b.policy, strict=True))
    )


def _negated(text: str) -> bool:
    return bool(_NEGATION.search(_NOT_NEGATION.sub(" ", text)))


def _policy_sides(yes: re.Pattern[str], no: re.Pattern[str], text: str) -> tuple[int, int]:
    """How often a text uses each side of a policy pair ("free of charge" counts as free only)."""
    return len(yes.findall(text)), len(no.findall(yes.sub(" ", text)))


def _flipped(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """One affirms where the other does not, and that other uses the opposing word more: "Hemming is free;
    alterations cost $15" against "Hemming is charged; alterations cost $15"."""
    return (a[0] > 0 and b[0] == 0 and b[1] > a[1]) or (b[0] > 0 and a[0] == 0 and a[1] > b[1])


def _conflicts(a: _Traits, b: _Traits, *, same_words: float = 0.75, numbers_only: bool = False) -> list[str]:
    """Why two related facts disagree; nothing when they are about different things (`_comparable`): "Silver
    members … 180 days" and "Bronze members … 90 days" are not compared. `numbers_only`: numbers, amounts
    and dates only, not negations or policy words."""
    if not _comparable(a, b, same_words=same_words):
        return []
    reasons: list[str] = []
    qa, qb = a.quantities, b.quantities
    for unit in sorted(set(qa) & set(qb)):
        if unit == "date":
            if not _same_day(qa[unit], qb[unit]):
                reasons.append(f"date {'/'.join(sorted(qa[unit]))} vs {'/'.join(sorted(qb[unit]))}")
            continue
        if qa[unit].isdisjoint(qb[unit]):
            left, right = "/".join(sorted(qa[unit])), "/".join(sorted(qb[unit]))
            label = (
                f"{unit}{left} vs {unit}{right}"
                if unit in "$€£"
                else f"{left} vs {right} {_as_written(unit, a.text, b.text)}"
            )
            reasons.append(label)
    if numbers_only:
        return reasons
    if a.negated != b.negated:
        reasons.append("one negates what the other affirms")
    for (label, _, _), sides_a, sides_b in zip(_POLICY, a.policy, b.policy, strict=True):
        if _flipped(sides_a, sides_b):
            reasons.append(label)
    return reasons


def _as_written(unit: str, *texts: str) -> str:
    """The unit as the texts spell it after a number, plural if either does ("days" for the key "day")."""
    plural = unit + "s"
    if any(re.search(rf"\d\s*{re.escape(plural)}\b", t, re.I) for t in texts):
        return plural
    return unit


def _owners(*facts: FactConfig) -> str:
    return ", ".join(sorted({f.owner for f in facts if f.owner})) or "(no owner)"


def audit_facts(
    facts: Sequence[FactConfig],
    today: date,
    *,
    duplicate_cosine: float = 0.85,
    related_cosine: float = 0.5,
    candidate_cosine: float = 0.4,
    neighbours: int = 8,
    paraphrase_cosine: float = 0.6,
    paraphrase_words: float = 0.65,
    paraphrase_embedding: float = PARAPHRASE_EMBEDDING,
    meaning: Embedder | None = None,
    history: RetrievalHistory | None = None,
    search: Search = "auto",
) -> AuditReport:
    """Every finding about `facts` as of `today`. `meaning` (the embedder named PARAPHRASE_EMBEDDER, which
    `paraphrase_embedding` was chosen for) confirms rewordings; without it they are not looked for.
    `history` (what stored answers cited) adds never-retrieved facts; `search` forces the exact or the
    approximate neighbour search (default: by size)."""
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
    if history is not None:
        findings.extend(_never_retrieved(facts, history, today))
    findings.extend(
        _pair_findings(
            facts,
            duplicate_cosine,
            related_cosine,
            neighbours,
            search,
            candidate_cosine,
            paraphrase_cosine,
            paraphrase_words,
            paraphrase_embedding,
            meaning,
        )
    )
    order = {"contradiction": 0, "near_duplicate": 1, "stale": 2, "unowned": 3, "never_retrieved": 4}
    findings.sort(key=lambda f: (order.get(f.kind, 9), f.facts))
    return AuditReport(facts=len(facts), findings=tuple(findings))


def _never_retrieved(facts: Sequence[FactConfig], history: RetrievalHistory, today: date) -> list[Finding]:
    """Published facts, in force during the stored history, that no stored answer cited. Nothing without a
    history in which some answer cited a fact."""
    if history.answered == 0:
        return []
    last = history.until.date() if history.until is not None else today
    since = f" since {history.since.date()}" if history.since is not None else ""
    return [
        Finding(
            "never_retrieved",
            (fact.id,),
            fact.owner,
            f"no answer cited it in the {history.turns} stored turns{since} "
            f"({history.answered} answers cited facts)",
            "check that its text and intents match how customers ask; retire it if no one needs it",
        )
        for fact in facts
        if fact.status == "published"
        and fact.id not in history.cited
        and (fact.valid_from is None or fact.valid_from <= last)
    ]


def _vectors(texts: Sequence[str]) -> sparse.csr_matrix:
    """L2-normalised TF-IDF of word 1-2-grams and character 3-5-grams: dot products are cosines."""
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english").fit_transform(texts)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(texts)
    return normalize(sparse.hstack([words, chars]).tocsr()).astype(np.float32)


def _sketch(vectors: sparse.csr_matrix, dim: int = SKETCH_DIM) -> NDArray[np.float32]:
    """A count sketch of the sparse vectors into `dim` dense ones (signed feature hashing, fixed seed): it
    keeps cosines in expectation, within about 0.05 at 256 dimensions."""
    rng = np.random.default_rng(0)
    width = vectors.shape[1]
    projection = sparse.csr_matrix(
        (
            rng.choice(np.array([-1.0, 1.0], dtype=np.float32), width),
            (np.arange(width), rng.integers(0, dim, width)),
        ),
        shape=(width, dim),
    )
    dense = np.asarray((vectors @ projection).todense(), dtype=np.float32)
    return np.asarray(normalize(dense), dtype=np.float32)


_Pairs = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]


_Keep = Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]]


class _Neighbours:
    """Each query's `k` nearest facts among a set of candidates, kept only when cosine ≥ `floor` (and, with
    `keep`, only the candidates `keep` allows: those can take no neighbour's place)."""

    def __init__(self, vectors: sparse.csr_matrix, k: int, floor: float, search: Search) -> None:
        self.vectors = vectors
        self.k = k
        self.floor = floor
        self.search = search
        self._dense: NDArray[np.float32] | None = None

    def __call__(
        self, queries: NDArray[np.int64], base: NDArray[np.int64], keep: _Keep | None = None, fetch: int = 0
    ) -> _Pairs:
        """`fetch`: how many candidates to look at per query before `keep` and the top `k` (default 2k)."""
        if len(queries) == 0 or len(base) == 0:
            return _empty()
        fetch = max(fetch, 2 * self.k)
        size = len(queries) * len(base)
        if self.search == "exact" or (self.search == "auto" and size <= EXACT_LIMIT):
            left, right, values = self._exact(queries, base, fetch)
        else:
            left, right = self._approximate(
                queries, base, fetch, brute=self.search == "auto" and size <= BRUTE_LIMIT
            )
            values = self.cosines(left, right)
            close = values >= self.floor
            left, right, values = left[close], right[close], values[close]
        if keep is not None and len(left):
            allowed = keep(left, right)
            left, right, values = left[allowed], right[allowed], values[allowed]
        chosen = _per_query_top(left, values, self.k, right)
        return left[chosen], right[chosen], values[chosen]

    def cosines(self, left: NDArray[np.int64], right: NDArray[np.int64]) -> NDArray[np.float32]:
        out = np.empty(len(left), dtype=np.float32)
        step = 20_000
        for start in range(0, len(left), step):
            a = self.vectors[left[start : start + step]]
            b = self.vectors[right[start : start + step]]
            out[start : start + step] = np.asarray(a.multiply(b).sum(axis=1)).ravel()
        return out

    def _exact(self, queries: NDArray[np.int64], base: NDArray[np.int64], fetch: int) -> _Pairs:
        left: list[NDArray[np.int64]] = []
        right: list[NDArray[np.int64]] = []
        values: list[NDArray[np.float32]] = []
        base_vectors = self.vectors[base].T.tocsc()
        count = min(fetch + 1, len(base))
        step = max(1, 2_000_000 // len(base))
        for start in range(0, len(queries), step):
            rows = queries[start : start + step]
            scores = np.asarray((self.vectors[rows] @ base_vectors).todense(), dtype=np.float32)
            scores[rows[:, None] == base[None, :]] = -1.0  # not its own neighbour
            top = (
                np.argpartition(-scores, count - 1, axis=1)[:, :count]
                if count < len(base)
                else np.tile(np.arange(len(base)), (len(rows), 1))
            )
            best = np.take_along_axis(scores, top, axis=1)
            close = best >= self.floor
            left.append(np.repeat(rows, top.shape[1])[close.ravel()])
            right.append(base[top[close]])
            values.append(best[close])
        return np.concatenate(left), np.concatenate(right), np.concatenate(values)

    def _approximate(
        self, queries: NDArray[np.int64], base: NDArray[np.int64], fetch: int, *, brute: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Candidate pairs by the sketch's cosine: every query against every candidate (a dense product, for
        a search of moderate size) or through an HNSW index (usearch); the caller re-checks them exactly."""
        if self._dense is None:
            self._dense = _sketch(self.vectors)
        dense = self._dense
        count = min(fetch + 1, len(base))
        if brute:
            keys, sketched = _brute_top(dense[queries], dense[base], count)
            found = np.ones(keys.shape, dtype=bool)
        else:
            keys, sketched, found = self._hnsw(dense, queries, base, count)
        rows = np.repeat(queries, keys.shape[1]).reshape(keys.shape)
        others = base[np.where(found, keys, 0)]
        keep = found & (others != rows) & (np.nan_to_num(sketched, nan=-1.0) >= self.floor - _MARGIN)
        return rows[keep], others[keep]

    @staticmethod
    def _hnsw(
        dense: NDArray[np.float32], queries: NDArray[np.int64], base: NDArray[np.int64], count: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.bool_]]:
        from usearch.index import BatchMatches, Index

        index = Index(
            ndim=dense.shape[1],
            metric="cos",
            dtype="f16",
            connectivity=12,
            expansion_add=48,
            expansion_search=96,
        )
        # Built on one thread: the same graph every run (built on several, a third of the queries' results
        # changed from run to run); searching it on several changes nothing.
        index.add(np.arange(len(base), dtype=np.uint64), dense[base], threads=1)
        matches = index.search(dense[queries], count, threads=os.cpu_count() or 1)
        assert isinstance(matches, BatchMatches)
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        sketched = 1.0 - np.asarray(matches.distances, dtype=np.float32).reshape(len(queries), -1)
        found = np.arange(keys.shape[1])[None, :] < np.asarray(matches.counts).reshape(-1, 1)
        return keys, sketched, found


def _brute_top(
    queries: NDArray[np.float32], base: NDArray[np.float32], count: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each query's `count` highest dot products with the rows of `base` (positions, values), in chunks."""
    keys: list[NDArray[np.int64]] = []
    values: list[NDArray[np.float32]] = []
    step = max(1, 8_000_000 // len(base))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ base.T
        top = (
            np.argpartition(-scores, count - 1, axis=1)[:, :count]
            if count < len(base)
            else np.tile(np.arange(len(base)), (len(scores), 1))
        )
        keys.append(top.astype(np.int64))
        values.append(np.take_along_axis(scores, top, axis=1))
    return np.concatenate(keys), np.concatenate(values)


def _empty() -> _Pairs:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)


def _per_query_top(
    queries: NDArray[np.int64], values: NDArray[np.float32], k: int, others: NDArray[np.int64] | None = None
) -> NDArray[np.int64]:
    """Positions of the `k` highest values of each query (ties: the lower of `others` first)."""
    order = np.lexsort((-values, queries) if others is None else (others, -values, queries))
    sorted_queries = queries[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_queries)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.asarray(order[rank < k], dtype=np.int64)


def candidate_pairs(
    facts: Sequence[FactConfig],
    *,
    related_cosine: float = 0.5,
    neighbours: int = 8,
    search: Search = "auto",
) -> dict[tuple[int, int], float]:
    """The pairs (i < j, positions in `facts`) worth comparing, with their cosine: each fact's
    `neighbours` nearest, if ≥ `related_cosine`, among the facts it may be paired with: a fact with a subject
    among those about the same subject and those without one; a fact without a subject among the others
    without one, skipping those that each name something the other does not."""
    return _candidates(facts, related_cosine, neighbours, search, _Traited(facts))


class _Traited:
    """Each fact's `_Traits`, worked out when first asked for."""

    def __init__(self, facts: Sequence[FactConfig]) -> None:
        self.facts = facts
        self.known: dict[int, _Traits] = {}

    def __call__(self, position: int) -> _Traits:
        found = self.known.get(position)
        if found is None:
            found = self.known[position] = _Traits(self.facts[position].text)
        return found


def _candidates(
    facts: Sequence[FactConfig], related_cosine: float, neighbours: int, search: Search, of: _Traited
) -> dict[tuple[int, int], float]:
    if len(facts) < 2:
        return {}

    def same_thing(left: NDArray[np.int64], right: NDArray[np.int64]) -> NDArray[np.bool_]:
        # A fact without a subject says what it is about only in its text: among many near-identical
        # template facts ("Orders shipped to Brazil by DHL / by UPS / …") those naming something else
        # cannot be paired with it, and must not crowd its real repeat out of its neighbours.
        return np.fromiter(
            (not _different_names(of(i), of(j)) for i, j in zip(left.tolist(), right.tolist(), strict=True)),
            dtype=bool,
            count=len(left),
        )

    vectors = _vectors([f.text for f in facts])
    find = _Neighbours(vectors, neighbours, related_cosine, search)
    blocks: dict[str, list[int]] = {}
    free: list[int] = []
    for position, fact in enumerate(facts):
        if fact.subject:
            blocks.setdefault(fact.subject.casefold(), []).append(position)
        else:
            free.append(position)
    pool = np.asarray(free, dtype=np.int64)
    everyone = np.arange(len(facts), dtype=np.int64)
    found: list[_Pairs] = [
        find(np.asarray(b, dtype=np.int64), np.asarray(b, dtype=np.int64))
        for b in blocks.values()
        if len(b) > 1
    ]
    if len(pool):
        # Facts with a subject, among those without: the pairs go both ways, so a fact without a subject
        # meets the facts with one that have it among their nearest (no index over every fact for it).
        found.append(find(np.setdiff1d(everyone, pool), pool))
        found.append(find(pool, pool, same_thing, 4 * neighbours))  # without a subject, among themselves
    if not found:
        return {}
    left = np.concatenate([f[0] for f in found])
    right = np.concatenate([f[1] for f in found])
    values = np.concatenate([f[2] for f in found])
    # A fact's own neighbours: the best `neighbours` over its blocks' searches.
    keys = left * len(facts) + right
    _, unique = np.unique(keys, return_index=True)
    left, right, values = left[unique], right[unique], values[unique]
    chosen = _per_query_top(left, values, neighbours, right)
    pairs: dict[tuple[int, int], float] = {}
    for i, j, value in zip(
        left[chosen].tolist(), right[chosen].tolist(), values[chosen].tolist(), strict=True
    ):
        pairs[(min(i, j), max(i, j))] = value
    return pairs


def _pair_findings(
    facts: Sequence[FactConfig],
    duplicate_cosine: float,
    related_cosine: float,
    neighbours: int,
    search: Search = "auto",
    candidate_cosine: float = 0.4,
    paraphrase_cosine: float = 0.6,
    paraphrase_words: float = 0.65,
    paraphrase_embedding: float = PARAPHRASE_EMBEDDING,
    meaning: Embedder | None = None,
) -> list[Finding]:
    findings: list[Finding] = []
    floor = min(related_cosine, candidate_cosine)
    of = _Traited(facts)
    pairs = _candidates(facts, floor, neighbours, search, of)

    undecided: list[tuple[int, int, float]] = []  # repeats only if their meaning is as close as their claims
    for (i, j), value in sorted(pairs.items()):
        cosine = min(1.0, value)
        a, b = facts[i], facts[j]
        reasons = _conflicts(of(i), of(j), numbers_only=cosine < related_cosine)
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
        elif _same_claims(of(i), of(j)):
            if cosine >= duplicate_cosine or (
                cosine >= paraphrase_cosine and _word_overlap(of(i), of(j)) >= paraphrase_words
            ):
                findings.append(_duplicate(a, b, f"cosine {cosine:.2f}"))
            else:
                undecided.append((i, j, cosine))
    if undecided and meaning is not None:
        closeness = _meaning_cosines(facts, undecided, meaning)
        for (i, j, cosine), close in zip(undecided, closeness.tolist(), strict=True):
            if close >= paraphrase_embedding:
                findings.append(_duplicate(facts[i], facts[j], f"cosine {cosine:.2f}, meaning {close:.2f}"))
    return findings


def _duplicate(a: FactConfig, b: FactConfig, how: str) -> Finding:
    return Finding(
        "near_duplicate",
        (a.id, b.id),
        _owners(a, b),
        f"say the same thing ({how})",
        f"keep one (e.g. {a.id}) and retire the other, or merge them",
    )


def _meaning_cosines(
    facts: Sequence[FactConfig], pairs: Sequence[tuple[int, int, float]], embedder: Embedder
) -> NDArray[np.float32]:
    """Cosine of the embeddings for each pair: close for a rewording in other words ("take about 9 business
    days" / "need roughly 9 working days") where TF-IDF sees different words."""
    positions = sorted({p for i, j, _ in pairs for p in (i, j)})
    row = {p: n for n, p in enumerate(positions)}
    vectors = embedder.embed([facts[p].text for p in positions])
    left = vectors[[row[i] for i, _, _ in pairs]]
    right = vectors[[row[j] for _, j, _ in pairs]]
    return np.asarray((left * right).sum(axis=1), dtype=np.float32)


KINDS = ("contradiction", "near_duplicate", "stale", "unowned", "never_retrieved")


def audit_html(report: AuditReport, gaps: Sequence[Any], *, workspace: str, day: date, questions: int) -> str:
    """The audit as an HTML page: bar charts of findings by kind and of the gaps, then the tables."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cxstack.knowledge", "templates"), autoescape=True
    )
    kinds = Counter(f.kind for f in report.findings)
    by_kind = [(k, kinds.get(k, 0)) for k in KINDS]
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
