"""Hybrid fact retrieval: BM25 (lexical) fused with embedding cosine (semantic).

Score fusion, chosen so that the score is an *absolute* number in [0, 1] that one threshold
(`thresholds.knowledge_min_score`) can be compared against, whatever the query:

* lexical = BM25(query, fact) / Σ idf(t) over the distinct query terms, clipped to [0, 1]. The denominator
  is the BM25 score of a fact of average length that contains every query term once, so 1.0 means "every
  informative word of the question is in this fact" and 0.0 means "none is". Query words that appear in no
  fact count with the idf of the rarest indexed word: an off-topic question that shares one common word with a
  fact stays low.
* semantic = cosine(query embedding, fact embedding), clipped to [0, 1].
* hybrid = w · lexical + (1 − w) · semantic (a convex combination, w = `lexical_weight`, 0.5 by default).
* boost, not a filter: hybrid × (1 + intent_boost + tag_boost), the first when the fact lists the routed
  intent, the second when a tag matches; clipped to 1. Multiplicative, so that a boost can promote a relevant
  fact but never lifts an irrelevant one (score 0 stays 0).

Per-query min-max normalisation and reciprocal-rank fusion were rejected: both give the best fact of *any*
query a high score, so an unanswerable question would look answerable.

BM25 is `bm25s` (Lucene's variant, k1 = 1.2, b = 0.75) over this module's tokens (stop words, crude stemmer);
its raw score is divided by the score of an average-length fact holding each query word once, which keeps the
lexical score's meaning above. The embedding side is one exact matrix product up to `ANN_MIN_FACTS` facts and
an HNSW graph (`usearch`, inner product on normalised vectors) above: the nearest `ANN_CANDIDATES` facts by
meaning plus the best by words are then fused exactly, so a fact found by words alone is never lost.

Eligibility is a filter, never a score: validity on the turn's day, audience (tier, channel), and subject (a
fact about another subject than the conversation's, `subjects.py`, is out; a fact without a subject stays).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date

import bm25s
import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from cxstack.knowledge.models import ScoredFact
from cxstack.knowledge.ports import Embedder
from cxstack.knowledge.subjects import SubjectResolver
from cxstack.workspace.models import FactConfig

_TOKEN = re.compile(r"[a-z0-9]+")
# Question words and auxiliaries carry no topic; they are stop words here even where sklearn keeps them.
# sklearn's list also holds words that name support topics ("bill", "call", "amount"): those stay searchable.
_TOPICAL = {
    "bill",
    "call",
    "amount",
    "system",
    "computer",
    "detail",
    "interest",
    "empty",
    "full",
    "move",
    "fire",
}
_STOP = (frozenset(ENGLISH_STOP_WORDS) - _TOPICAL) | {
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "please",
    "pls",
    "want",
    "need",
    "does",
    "did",
    "doing",
    "can",
    "could",
    "would",
    "should",
    "will",
    "get",
    "got",
    "know",
    "tell",
    "let",
    "im",
    "ive",
    "dont",
    "cant",
}


def _stem(token: str) -> str:
    """A deliberately crude suffix stripper: matches 'refunds' with 'refund', 'shipping' with 'ship'."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 5 and token.endswith("ing"):
        token = token[:-3]
        return token[:-1] if len(token) > 3 and token[-1] == token[-2] else token
    if len(token) > 4 and token.endswith("ed"):
        token = token[:-2]
        return token[:-1] if len(token) > 3 and token[-1] == token[-2] else token
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def tokenize(text: str) -> list[str]:
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if len(t) > 1 and t not in _STOP]


def is_valid_on(fact: FactConfig, day: date) -> bool:
    """A fact is valid from `valid_from` through `valid_to`, both inclusive; open ends are unbounded."""
    if fact.valid_from is not None and day < fact.valid_from:
        return False
    return not (fact.valid_to is not None and day > fact.valid_to)


class _Lexical:
    """BM25 (Lucene's variant, via `bm25s`) with scores normalised to [0, 1] as the module docstring says.

    bm25s scores a document d for query terms t as Σ idf(t) · tf / (tf + k1 · (1 − b + b · |d| / avgdl)),
    idf(t) = ln(1 + (N − df + 0.5) / (df + 0.5)). A fact of average length holding each query term once scores
    Σ idf(t) / (1 + k1): that is the denominator here, so 1.0 still means "every informative word of the
    question is in this fact"."""

    def __init__(self, documents: Sequence[list[str]], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.n_docs = len(documents)
        self.k1 = k1
        df: Counter[str] = Counter()
        for tokens in documents:
            df.update(set(tokens))
        self.idf: dict[str, float] = {
            t: math.log1p((self.n_docs - n + 0.5) / (n + 0.5)) for t, n in df.items()
        }
        # An unseen query word weighs like the rarest indexed word: it lowers the score without dominating it.
        self.unseen_idf = math.log1p((self.n_docs - 1 + 0.5) / 1.5)
        self._bm25: bm25s.BM25 | None = None
        if df:  # bm25s cannot index a corpus without a single word
            self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
            self._bm25.index([list(d) for d in documents], show_progress=False)

    def normalised_scores(self, query_tokens: Sequence[str]) -> NDArray[np.float64]:
        """BM25 of every document divided by the query's reference score: in [0, 1] after clipping."""
        distinct = sorted(set(query_tokens))
        known = [t for t in distinct if t in self.idf]
        if not known or self._bm25 is None:
            return np.zeros(self.n_docs)
        mass = (sum(self.idf[t] for t in known) + self.unseen_idf * (len(distinct) - len(known))) / (
            1.0 + self.k1
        )
        if mass <= 0:
            return np.zeros(self.n_docs)
        raw = np.asarray(self._bm25.get_scores(known), dtype=np.float64)
        return np.clip(raw / mass, 0.0, 1.0)


# Above this many indexed facts the embedding side is searched through an HNSW index (usearch) instead of one
# exact matrix product; below it the exact product is faster than building a graph and loses nothing.
ANN_MIN_FACTS = 5000
# How many nearest facts the ANN returns per search, before filtering and fusion (also the BM25 candidates).
ANN_CANDIDATES = 256


class _VectorIndex:
    """Approximate nearest neighbours by inner product (= cosine: the vectors are L2-normalised)."""

    def __init__(self, embeddings: NDArray[np.float32]) -> None:
        from usearch.index import Index

        self._index = Index(ndim=int(embeddings.shape[1]), metric="ip", dtype="f32", expansion_search=128)
        self._index.add(np.arange(len(embeddings), dtype=np.uint64), embeddings, threads=1)
        self.size = len(embeddings)

    def nearest(self, vector: NDArray[np.float32], count: int) -> NDArray[np.int64]:
        matches = self._index.search(vector, min(count, self.size), threads=1)
        return np.asarray(matches.keys, dtype=np.int64)


class KnowledgeIndex:
    """Every fact, indexed once: embeddings (one batch), BM25 and, above `ann_min_facts`, an HNSW graph. A
    search is one query embedding plus a sparse and a dense product, over the facts that may answer: valid on
    the day it asks about (the turn's day, not the day the engine was built: a long-running service must not
    keep answering with a fact that expired at midnight), meant for the customer's tier and channel, and not
    about another subject than the one the conversation is about (`subjects`)."""

    def __init__(
        self,
        facts: Sequence[FactConfig],
        embedder: Embedder,
        *,
        today: date | None = None,
        lexical_weight: float = 0.5,
        intent_boost: float = 0.25,
        tag_boost: float = 0.10,
        ann_min_facts: int = ANN_MIN_FACTS,
        reuse: Mapping[str, NDArray[np.float32]] | None = None,
    ) -> None:
        if not 0.0 <= lexical_weight <= 1.0:
            raise ValueError("lexical_weight must be in [0, 1]")
        self.today = today  # None: each search uses its own `on` day, else the current date
        self.embedder = embedder
        self.lexical_weight = lexical_weight
        self.intent_boost = intent_boost
        self.tag_boost = tag_boost
        # Drafts and retired facts are kept in the workspace for the record; only published ones answer.
        self.facts: tuple[FactConfig, ...] = tuple(f for f in facts if f.status == "published")
        self._tiers = [frozenset(f.audience.tiers) for f in self.facts]
        self._channels = [frozenset(f.audience.channels) for f in self.facts]
        self._locales = [frozenset(x.lower() for x in f.audience.locales) for f in self.facts]
        self._targeted = np.array(
            [bool(t or c or lo) for t, c, lo in zip(self._tiers, self._channels, self._locales, strict=True)],
            bool,
        )
        self._dated = np.array([f.valid_from is not None or f.valid_to is not None for f in self.facts], bool)
        self._position = {f.id: i for i, f in enumerate(self.facts)}
        self.subjects = SubjectResolver((f.subject, f.text) for f in self.facts)
        self._subject_of = np.array(
            [self.subjects.key(f.subject) if f.subject else "" for f in self.facts], dtype=object
        )
        self._lexical = _Lexical([tokenize(f.text) for f in self.facts])
        self._embeddings: NDArray[np.float32] = self._embed_all(reuse or {})
        self.ann_min_facts = ann_min_facts
        self._ann = _VectorIndex(self._embeddings) if len(self.facts) >= ann_min_facts else None

    def _embed_all(self, reuse: Mapping[str, NDArray[np.float32]]) -> NDArray[np.float32]:
        """One vector per fact; texts embedded before (`reuse`, by text) are not embedded again."""
        vectors = np.zeros((len(self.facts), self.embedder.dim), dtype=np.float32)
        missing = [i for i, f in enumerate(self.facts) if f.text not in reuse]
        for i, fact in enumerate(self.facts):
            if fact.text in reuse:
                vectors[i] = reuse[fact.text]
        if missing:
            vectors[missing] = self.embedder.embed([self.facts[i].text for i in missing])
        return vectors

    def vectors_by_text(self) -> dict[str, NDArray[np.float32]]:
        return {f.text: self._embeddings[i] for i, f in enumerate(self.facts)}

    def replace_facts(self, facts: Sequence[FactConfig]) -> None:
        """Index another set of facts in place (a running service after a knowledge edit), keeping every
        setting and the vectors of unchanged texts. The new index is built first and taken over at once, so a
        search sees the old facts or the new ones, never a mix, provided it runs on the same thread."""
        fresh = KnowledgeIndex(
            facts,
            self.embedder,
            today=self.today,
            lexical_weight=self.lexical_weight,
            intent_boost=self.intent_boost,
            tag_boost=self.tag_boost,
            ann_min_facts=self.ann_min_facts,
            reuse=self.vectors_by_text(),
        )
        self.__dict__.update(fresh.__dict__)

    def __len__(self) -> int:
        return len(self.facts)

    @property
    def uses_ann(self) -> bool:
        return self._ann is not None

    def get(self, fact_id: str) -> FactConfig | None:
        position = self._position.get(fact_id)
        return None if position is None else self.facts[position]

    def fact_similarity(self, fact_a: str, fact_b: str) -> float:
        """Cosine between two indexed facts' embeddings (0 when either is not indexed)."""
        a, b = self._position.get(fact_a), self._position.get(fact_b)
        if a is None or b is None:
            return 0.0
        return float(self._embeddings[a] @ self._embeddings[b])

    def fact_vectors(self, fact_ids: Sequence[str]) -> NDArray[np.float32]:
        """The indexed facts' embeddings, one row per id (zeros for an id not indexed)."""
        out = np.zeros((len(fact_ids), self._embeddings.shape[1]), dtype=np.float32)
        for row, fact_id in enumerate(fact_ids):
            position = self._position.get(fact_id)
            if position is not None:
                out[row] = self._embeddings[position]
        return out

    def valid_mask(self, on: date | None = None) -> NDArray[np.bool_]:
        day = on or self.today or date.today()
        mask = np.ones(len(self.facts), dtype=bool)
        for i in np.flatnonzero(self._dated):
            mask[i] = is_valid_on(self.facts[i], day)
        return mask

    def audience_mask(
        self, tier: str | None, channel: str | None, locale: str | None = None
    ) -> NDArray[np.bool_]:
        """Facts meant for this tier, channel and language; a fact with an audience is out when the one it
        names is unknown (a locale fact needs the customer's language)."""
        language = (locale or "").lower()
        accepted = {language, language.split("-")[0]} - {""}
        mask = np.ones(len(self.facts), dtype=bool)
        for i in np.flatnonzero(self._targeted):
            tiers, channels, locales = self._tiers[i], self._channels[i], self._locales[i]
            mask[i] = (
                (not tiers or tier in tiers)
                and (not channels or channel in channels)
                and (not locales or any(x in accepted or x.split("-")[0] == language for x in locales))
            )
        return mask

    def subject_mask(self, subjects: Sequence[str]) -> NDArray[np.bool_]:
        """Facts about none of `subjects` are out; facts without a subject stay. No subjects: all stay."""
        if not subjects:
            return np.ones(len(self.facts), dtype=bool)
        keys = {self.subjects.key(s) for s in subjects}
        return np.array([not key or key in keys for key in self._subject_of], dtype=bool)

    def excluded(self, on: date | None = None) -> tuple[FactConfig, ...]:
        """Facts not valid on `on` (not yet or no longer)."""
        mask = self.valid_mask(on)
        return tuple(f for f, valid in zip(self.facts, mask, strict=True) if not valid)

    def search(
        self,
        query: str,
        *,
        k: int = 5,
        intent: str | None = None,
        tags: Sequence[str] = (),
        on: date | None = None,
        tier: str | None = None,
        channel: str | None = None,
        subjects: Sequence[str] = (),
        lexical_weight: float | None = None,
        locale: str | None = None,
    ) -> list[ScoredFact]:
        """The k best facts for `query` among those valid on `on`, meant for `tier` and `channel` (a fact with
        an audience is left out when they are unknown) and about one of `subjects` or about no subject (all
        subjects when empty), best first, with fused scores in [0, 1]."""
        if not self.facts or not query.strip() or k <= 0:
            return []
        audience = self.audience_mask(tier, channel, locale)
        eligible = self.valid_mask(on) & audience & self.subject_mask(subjects)
        query_vector = self.embedder.embed([query])[0]
        lexical = self._lexical.normalised_scores(tokenize(query))
        rows = np.flatnonzero(eligible)
        if self._ann is not None and len(rows) >= self.ann_min_facts:
            # Candidates: the nearest facts by meaning plus the best by words, then fused exactly.
            count = max(ANN_CANDIDATES, 4 * k)
            near = self._ann.nearest(query_vector, count)
            by_words = np.argsort(-lexical, kind="stable")[:count]
            candidates = np.union1d(near, by_words[lexical[by_words] > 0])
            rows = candidates[eligible[candidates]]
        semantic = np.zeros(len(self.facts))
        semantic[rows] = np.clip(self._embeddings[rows] @ query_vector, 0.0, 1.0)
        weight = self.lexical_weight if lexical_weight is None else lexical_weight
        fused = weight * lexical + (1.0 - weight) * semantic
        boosts = self._boosts(intent, tags)
        scores = np.clip(fused * (1.0 + boosts), 0.0, 1.0)
        order = rows[np.argsort(-scores[rows], kind="stable")][:k]
        return [
            ScoredFact(
                fact=self.facts[i],
                score=float(scores[i]),
                lexical=float(lexical[i]),
                semantic=float(semantic[i]),
                boost=float(boosts[i]),
            )
            for i in order
        ]

    def _boosts(self, intent: str | None, tags: Sequence[str]) -> NDArray[np.float64]:
        boosts = np.zeros(len(self.facts))
        wanted_tags = set(tags)
        if intent is None and not wanted_tags:
            return boosts
        for i, fact in enumerate(self.facts):
            if intent is not None and intent in fact.intents:
                boosts[i] += self.intent_boost
            if wanted_tags.intersection(fact.tags):
                boosts[i] += self.tag_boost
        return boosts
