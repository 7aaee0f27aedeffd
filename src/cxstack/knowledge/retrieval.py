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
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from cxstack.knowledge.models import ScoredFact
from cxstack.knowledge.ports import Embedder
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


class _BM25:
    """Okapi BM25 over a fixed corpus, as one sparse (facts × vocabulary) matrix of per-term weights."""

    def __init__(self, documents: Sequence[list[str]], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.vocabulary: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        counts: list[float] = []
        lengths = np.array([len(d) for d in documents], dtype=np.float64)
        for row, tokens in enumerate(documents):
            tf: dict[int, int] = {}
            for token in tokens:
                col = self.vocabulary.setdefault(token, len(self.vocabulary))
                tf[col] = tf.get(col, 0) + 1
            for col, count in tf.items():
                rows.append(row)
                cols.append(col)
                counts.append(float(count))
        n_docs = len(documents)
        self.n_docs = n_docs
        tf_matrix = sparse.csr_matrix(
            (np.array(counts), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
            shape=(n_docs, len(self.vocabulary)),
        )
        df = np.bincount(np.array(cols, dtype=np.int64), minlength=len(self.vocabulary)).astype(np.float64)
        self.idf: NDArray[np.float64] = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        # An unseen query word weighs like the rarest indexed word: it lowers the score without dominating it.
        self.unseen_idf = math.log1p((n_docs - 1 + 0.5) / 1.5)
        avg_length = float(lengths.mean()) if n_docs and lengths.mean() > 0 else 1.0
        weights = tf_matrix.tocoo()
        doc_norm = k1 * (1 - b + b * lengths[weights.row] / avg_length)
        data = self.idf[weights.col] * weights.data * (k1 + 1) / (weights.data + doc_norm)
        self.weights = sparse.csr_matrix((data, (weights.row, weights.col)), shape=tf_matrix.shape)

    def normalised_scores(self, query_tokens: Sequence[str]) -> NDArray[np.float64]:
        """BM25 of every document divided by the query's idf mass: in [0, 1] after clipping."""
        distinct = set(query_tokens)
        if not distinct or self.n_docs == 0:
            return np.zeros(self.n_docs)
        known = [self.vocabulary[t] for t in distinct if t in self.vocabulary]
        mass = float(self.idf[known].sum()) + self.unseen_idf * (len(distinct) - len(known))
        if not known or mass <= 0:
            return np.zeros(self.n_docs)
        query = np.zeros(len(self.vocabulary))
        query[known] = 1.0
        raw = np.asarray(self.weights @ query, dtype=np.float64).ravel()
        return np.clip(raw / mass, 0.0, 1.0)


class KnowledgeIndex:
    """Every fact, indexed once: embeddings (one batch) and BM25 weights. A search is one query embedding plus
    a sparse and a dense matrix-vector product, over the facts valid on the day it asks about (the turn's
    day, not the day the engine was built: a long-running service must not keep answering with a fact that
    expired at midnight)."""

    def __init__(
        self,
        facts: Sequence[FactConfig],
        embedder: Embedder,
        *,
        today: date | None = None,
        lexical_weight: float = 0.5,
        intent_boost: float = 0.25,
        tag_boost: float = 0.10,
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
        self._targeted = np.array(
            [bool(t or c) for t, c in zip(self._tiers, self._channels, strict=True)], bool
        )
        self._dated = np.array([f.valid_from is not None or f.valid_to is not None for f in self.facts], bool)
        self._position = {f.id: i for i, f in enumerate(self.facts)}
        self._bm25 = _BM25([tokenize(f.text) for f in self.facts])
        self._embeddings: NDArray[np.float32] = (
            embedder.embed([f.text for f in self.facts])
            if self.facts
            else np.zeros((0, embedder.dim), dtype=np.float32)
        )

    def __len__(self) -> int:
        return len(self.facts)

    def get(self, fact_id: str) -> FactConfig | None:
        position = self._position.get(fact_id)
        return None if position is None else self.facts[position]

    def fact_similarity(self, fact_a: str, fact_b: str) -> float:
        """Cosine between two indexed facts' embeddings (0 when either is not indexed)."""
        a, b = self._position.get(fact_a), self._position.get(fact_b)
        if a is None or b is None:
            return 0.0
        return float(self._embeddings[a] @ self._embeddings[b])

    def valid_mask(self, on: date | None = None) -> NDArray[np.bool_]:
        day = on or self.today or date.today()
        mask = np.ones(len(self.facts), dtype=bool)
        for i in np.flatnonzero(self._dated):
            mask[i] = is_valid_on(self.facts[i], day)
        return mask

    def audience_mask(self, tier: str | None, channel: str | None) -> NDArray[np.bool_]:
        mask = np.ones(len(self.facts), dtype=bool)
        for i in np.flatnonzero(self._targeted):
            tiers, channels = self._tiers[i], self._channels[i]
            mask[i] = (not tiers or tier in tiers) and (not channels or channel in channels)
        return mask

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
    ) -> list[ScoredFact]:
        """The k best facts for `query` among those valid on `on` and meant for `tier` and `channel` (a
        fact with an audience is left out when they are unknown), best first, with fused scores in [0, 1]."""
        if not self.facts or not query.strip() or k <= 0:
            return []
        lexical = self._bm25.normalised_scores(tokenize(query))
        query_vector = self.embedder.embed([query])[0]
        semantic = np.clip(self._embeddings @ query_vector, 0.0, 1.0).astype(np.float64)
        fused = self.lexical_weight * lexical + (1.0 - self.lexical_weight) * semantic
        boosts = self._boosts(intent, tags)
        scores = np.clip(fused * (1.0 + boosts), 0.0, 1.0)
        valid = self.valid_mask(on) & self.audience_mask(tier, channel)
        scores = np.where(valid, scores, -1.0)
        top = [i for i in np.argsort(-scores, kind="stable")[:k] if valid[i]]
        return [
            ScoredFact(
                fact=self.facts[i],
                score=float(scores[i]),
                lexical=float(lexical[i]),
                semantic=float(semantic[i]),
                boost=float(boosts[i]),
            )
            for i in top
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
