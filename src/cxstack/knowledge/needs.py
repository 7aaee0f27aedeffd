"""Does a turn need knowledge, and how likely is each retrieved fact to be relevant: a `KnowledgeModel`.

Two logistic regressions (scikit-learn fits them; numpy applies them), fitted from labelled conversations and
saved in the workspace as `models/knowledge.json` (`fit_model(...).save(workspace)`; the DSTC11 benchmark
does so on its development half):

* **needs knowledge** over the newest message's sentence embedding (the workspace's embedder) plus what the
  search found: the best fact's fused, lexical and semantic scores, the mean of the best three, whether a
  subject is named or carried over, a question mark, the length. The embedding tells "book a table for two"
  (a task) from "is the food there any good?" (a question the facts answer); the scores tell whether the facts
  can answer it.
* **relevance** of each of the top facts: its fused, lexical and semantic scores, its score relative to the
  best, its rank, whether it is about the resolved subject. Its probability is the fact's calibrated score;
  the facts at or above `select_threshold` are the ones selected.

Why this and not a fine-tuned transformer: it fits in seconds on a few thousand examples on 2 cores, needs no
GPU or download, and its outputs are probabilities the confidence policy can compare with one threshold.
Without a fitted model (or one fitted with another embedder) `search.py` falls back to the fused score.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cxstack.knowledge.models import ScoredFact
from cxstack.knowledge.ports import Embedder
from cxstack.knowledge.subjects import SubjectResolution

if TYPE_CHECKING:
    from cxstack.knowledge.retrieval import KnowledgeIndex

MODEL_PATH = Path("models") / "knowledge.json"
NEEDS_EXTRA = ("best", "best_lexical", "best_semantic", "top3", "named", "subject", "question", "words")
RELEVANCE_FEATURES = (
    "score",
    "lexical",
    "semantic",
    "ratio",
    "gap",
    "rank",
    "about_subject",
    "second_gap",
    "like_best",
    "like_others",
)
# Fact ids -> cosine between the two facts (KnowledgeIndex.fact_similarity).
Similarity = Callable[[str, str], float]


@dataclass(frozen=True, slots=True)
class Logistic:
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def probability(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        z = ((x - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.coef) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: Sequence[int], *, c: float = 1.0) -> Logistic:
        from sklearn.linear_model import LogisticRegression

        mean = x.mean(axis=0)
        std = x.std(axis=0)
        scale = np.where(std > 1e-9, std, 1.0)
        classifier = LogisticRegression(C=c, max_iter=2000)
        classifier.fit((x - mean) / scale, list(y))
        return cls(
            tuple(float(v) for v in mean),
            tuple(float(v) for v in scale),
            tuple(float(v) for v in classifier.coef_[0]),
            float(classifier.intercept_[0]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Logistic:
        return cls(tuple(data["mean"]), tuple(data["scale"]), tuple(data["coef"]), float(data["intercept"]))


@dataclass(frozen=True, slots=True)
class KnowledgeModel:
    embedder: str  # the embedder the needs-knowledge model was fitted with
    dim: int
    needs: Logistic
    relevance: Logistic
    needs_threshold: float = 0.5
    select_threshold: float = 0.5
    lexical_weight: float | None = None  # the fusion weight chosen with it (None: the index's)
    fitted_on: str = ""

    def usable_with(self, embedder: Embedder) -> bool:
        return embedder.name == self.embedder and embedder.dim == self.dim

    def needs_probability(self, features: NDArray[np.float64]) -> float:
        return float(self.needs.probability(features[None, :])[0])

    def relevance_probability(self, features: NDArray[np.float64]) -> list[float]:
        if len(features) == 0:
            return []
        return [float(p) for p in self.relevance.probability(features)]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "embedder": self.embedder,
            "dim": self.dim,
            "needs_features": [f"embedding[{self.dim}]", *NEEDS_EXTRA],
            "needs": self.needs.to_json(),
            "relevance_features": list(RELEVANCE_FEATURES),
            "relevance": self.relevance.to_json(),
            "needs_threshold": self.needs_threshold,
            "select_threshold": self.select_threshold,
            "lexical_weight": self.lexical_weight,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KnowledgeModel:
        return cls(
            embedder=str(data["embedder"]),
            dim=int(data["dim"]),
            needs=Logistic.from_json(data["needs"]),
            relevance=Logistic.from_json(data["relevance"]),
            needs_threshold=float(data.get("needs_threshold", 0.5)),
            select_threshold=float(data.get("select_threshold", 0.5)),
            lexical_weight=None if data.get("lexical_weight") is None else float(data["lexical_weight"]),
            fitted_on=str(data.get("fitted_on", "")),
        )

    def save(self, workspace: Path) -> Path:
        path = workspace / MODEL_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path


def load_model(workspace: Path | None) -> KnowledgeModel | None:
    """The workspace's fitted model, or None when it has none."""
    if workspace is None:
        return None
    path = workspace / MODEL_PATH
    if not path.is_file():
        return None
    return KnowledgeModel.from_json(json.loads(path.read_text(encoding="utf-8")))


def needs_features(
    vector: NDArray[np.float32] | None,
    facts: Sequence[ScoredFact],
    resolution: SubjectResolution,
    newest: str,
    dim: int | None = None,
) -> NDArray[np.float64]:
    embedding = np.zeros(dim or 0) if vector is None else vector.astype(np.float64)
    scores = [f.score for f in facts]
    extra = [
        scores[0] if scores else 0.0,
        max((f.lexical for f in facts), default=0.0),
        max((f.semantic for f in facts), default=0.0),
        float(np.mean(scores[:3])) if scores else 0.0,
        float(resolution.via == "named"),
        float(resolution.subject is not None),
        float("?" in newest),
        min(len(newest.split()), 40) / 40,
    ]
    return np.concatenate([embedding, np.array(extra)])


def relevance_features(
    facts: Sequence[ScoredFact], resolution: SubjectResolution, similarity: Similarity
) -> NDArray[np.float64]:
    """Per fact: its scores, where it stands against the best, and how alike it is to the best fact and to
    the other top facts (the facts that answer one question tend to say alike things)."""
    if not facts:
        return np.zeros((0, len(RELEVANCE_FEATURES)))
    best = facts[0].score
    second = facts[1].score if len(facts) > 1 else 0.0
    keys = {s.lower() for s in resolution.subjects}
    ids = [f.fact.id for f in facts]
    alike = np.array([[similarity(a, b) if a != b else 0.0 for b in ids] for a in ids])
    others = alike[:, :5].sum(axis=1) / max(1, min(5, len(ids)) - 1)
    rows = [
        [
            f.score,
            f.lexical,
            f.semantic,
            f.score / best if best > 0 else 0.0,
            best - f.score,
            1.0 / (rank + 1),
            float(f.fact.subject is not None and f.fact.subject.lower() in keys),
            best - second,
            1.0 if rank == 0 else float(alike[rank, 0]),
            float(others[rank]),
        ]
        for rank, f in enumerate(facts)
    ]
    return np.array(rows, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LabelledTurn:
    """A conversation (texts, oldest first), whether its newest turn needs knowledge, its relevant facts."""

    messages: tuple[str, ...]
    needs_knowledge: bool
    relevant: frozenset[str] = frozenset()


def _best_threshold(
    probabilities: Sequence[Sequence[float]], relevant: Sequence[Sequence[bool]], totals: Sequence[int]
) -> float:
    """The selection threshold with the best micro F1 over the turns (a missed relevant fact counts)."""
    best, best_f1 = 0.5, -1.0
    for threshold in np.arange(0.05, 0.96, 0.01):
        tp = fp = 0
        for probs, labels in zip(probabilities, relevant, strict=True):
            for p, y in zip(probs, labels, strict=True):
                if p >= threshold:
                    tp += int(y)
                    fp += int(not y)
        fn = sum(totals) - tp
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return round(best, 2)


def fit_model(
    index: KnowledgeIndex,
    examples: Sequence[LabelledTurn],
    *,
    embedder_name: str,
    k: int = 10,
    c_needs: float = 1.0,
    c_relevance: float = 1.0,
    lexical_weight: float | None = None,
    note: str = "",
) -> KnowledgeModel:
    """Fit both models on `examples` through the same search `kb search` runs; thresholds maximise F1 on
    them (needs knowledge: turn-level F1; selection: micro F1 over relevant facts)."""
    from cxstack.knowledge.search import search_conversation

    needs_rows: list[NDArray[np.float64]] = []
    needs_labels: list[int] = []
    relevance_rows: list[NDArray[np.float64]] = []
    relevance_labels: list[int] = []
    texts = [e.messages[-1] if e.messages else "" for e in examples]
    vectors = index.embedder.embed(texts)
    per_turn: list[tuple[NDArray[np.float64], list[bool], int]] = []
    for example, vector in zip(examples, vectors, strict=True):
        found = search_conversation(index, example.messages, k=k, lexical_weight=lexical_weight, model=None)
        newest = example.messages[-1] if example.messages else ""
        needs_rows.append(needs_features(vector, found.facts, found.subject, newest, index.embedder.dim))
        needs_labels.append(int(example.needs_knowledge))
        if example.needs_knowledge and example.relevant:
            rows = relevance_features(found.facts, found.subject, index.fact_similarity)
            labels = [f.fact.id in example.relevant for f in found.facts]
            relevance_rows.extend(rows)
            relevance_labels.extend(int(y) for y in labels)
            per_turn.append((rows, labels, len(example.relevant)))
    needs = Logistic.fit(np.array(needs_rows), needs_labels, c=c_needs)
    relevance = Logistic.fit(np.array(relevance_rows), relevance_labels, c=c_relevance)
    probabilities = [relevance.probability(rows).tolist() if len(rows) else [] for rows, _, _ in per_turn]
    threshold = _best_threshold(
        probabilities, [labels for _, labels, _ in per_turn], [t for *_, t in per_turn]
    )
    return KnowledgeModel(
        embedder=embedder_name,
        dim=index.embedder.dim,
        needs=needs,
        relevance=relevance,
        needs_threshold=0.5,
        select_threshold=threshold,
        lexical_weight=lexical_weight,
        fitted_on=note,
    )
