"""Does a turn need knowledge, and how likely is each retrieved fact to be relevant: a `KnowledgeModel`.

Two logistic regressions (scikit-learn fits them; numpy applies them), fitted from labelled conversations and
saved in the workspace as `models/knowledge.json` (`fit_model(...).save(workspace)`; the DSTC11 benchmark
does so on its development half):

* **needs knowledge** over the newest message's sentence embedding (the workspace's embedder) plus what the
  search found: the best fact's fused, lexical and semantic scores, the mean of the best three, whether a
  subject is named or carried over, a question mark, the length. The embedding tells "book a table for two"
  (a task) from "is the food there any good?" (a question the facts answer); the scores tell whether the facts
  can answer it. Its threshold maximises F1 on out-of-fold probabilities (folds by conversation).
* **relevance** of each of the `candidates` best facts (50; the output keeps the k most probable): its fused,
  lexical and semantic scores; where it stands against the best fact and the best fact of its own subject
  (rank, ratio, z-score); the share of the question's words it holds; how alike it is to the best and top
  three facts; its length and tags; and learned word **associations** (`Associations`: how often a fact
  holding word w was relevant when the question held word q — "sanitized" → "clean", "wifi" → "internet").
  Its probability is the fact's calibrated score; the facts at or above `select_threshold` are the ones
  selected, and a turn that needs knowledge always has its most probable fact selected.

Why this and not a fine-tuned transformer: it fits in seconds on a few thousand examples on 2 cores, needs no
GPU or download, and its outputs are probabilities the confidence policy can compare with one threshold.
Without a fitted model (or one fitted with another embedder) `search.py` falls back to the fused score.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
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
    "rank_share",
    "subject_ratio",
    "subject_rank",
    "subject_z",
    "subject_semantic_gap",
    "subject_lexical_gap",
    "coverage",
    "overlaps",
    "like_best",
    "like_top3",
    "length",
    "second_gap",
    "several_subjects",
    "named",
    "association_max",
    "association_lift",
    "association_mean",
)
MAX_TAGS = 16  # one feature per tag among the most common tags of the facts the model was fitted on
CANDIDATES = 50  # facts scored by the relevance model per turn (the output keeps the best k of them)
FOLDS = 4  # association tables for the training rows come from the other folds' conversations


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
class Associations:
    """Which words of a fact go with which words of a question, learned from labelled conversations: for a
    question word q and a fact word w, the share of the retrieved facts holding w that were relevant when the
    question held q (smoothed towards `prior`, the share of relevant facts overall). "sanitized" in a question
    and "clean" in a fact, "wifi" and "internet", "noise" and "quiet": what the words of the question ask
    about, in the words the facts use. Only pairs seen with a relevant fact at least once are kept."""

    prior: float
    pairs: dict[str, dict[str, float]]  # question word -> fact word -> smoothed share relevant

    @classmethod
    def count(
        cls, turns: Sequence[tuple[set[str], Sequence[tuple[set[str], bool]]]], *, smoothing: float = 1.0
    ) -> Associations:
        """`turns`: (question words, [(fact words, relevant) per retrieved fact])."""
        seen: dict[tuple[str, str], int] = {}
        relevant: dict[tuple[str, str], int] = {}
        n_facts = n_relevant = 0
        for question, facts in turns:
            for words, label in facts:
                n_facts += 1
                n_relevant += int(label)
                for q in question:
                    for w in words:
                        seen[q, w] = seen.get((q, w), 0) + 1
                        if label:
                            relevant[q, w] = relevant.get((q, w), 0) + 1
        prior = n_relevant / n_facts if n_facts else 0.0
        pairs: dict[str, dict[str, float]] = {}
        for (q, w), hits in relevant.items():
            share = (hits + smoothing * prior) / (seen[q, w] + smoothing)
            pairs.setdefault(q, {})[w] = round(share, 4)
        return cls(prior, pairs)

    def features(self, question: set[str], words: set[str]) -> tuple[float, float, float]:
        """The strongest association of the fact's words with the question's, its lift over the prior, the
        mean over the associated pairs (the prior when none is)."""
        values = [
            share for q in question if (row := self.pairs.get(q)) for w in words if (share := row.get(w))
        ]
        if not values:
            return self.prior, 0.0, self.prior
        strongest = max(values)
        return strongest, float(np.log((strongest + 1e-3) / (self.prior + 1e-3))), float(np.mean(values))

    def to_json(self) -> dict[str, Any]:
        return {"prior": self.prior, "pairs": self.pairs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Associations:
        return cls(float(data["prior"]), {q: dict(row) for q, row in data["pairs"].items()})


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
    associations: Associations | None = None
    tags: tuple[str, ...] = ()  # the tags that are relevance features, in order
    candidates: int = CANDIDATES

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
            "relevance_features": [*RELEVANCE_FEATURES, *(f"tag:{t}" for t in self.tags)],
            "relevance": self.relevance.to_json(),
            "needs_threshold": self.needs_threshold,
            "select_threshold": self.select_threshold,
            "lexical_weight": self.lexical_weight,
            "fitted_on": self.fitted_on,
            "tags": list(self.tags),
            "candidates": self.candidates,
            "associations": None if self.associations is None else self.associations.to_json(),
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
            associations=None
            if data.get("associations") is None
            else Associations.from_json(data["associations"]),
            tags=tuple(data.get("tags", ())),
            candidates=int(data.get("candidates", CANDIDATES)),
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
    facts: Sequence[ScoredFact],
    resolution: SubjectResolution,
    vectors: NDArray[np.float32],
    query: str,
    *,
    associations: Associations | None = None,
    tags: Sequence[str] = (),
) -> NDArray[np.float64]:
    """Per fact (`vectors`: their embeddings, row by row): its scores; where it stands against the best fact
    and against the best fact *of its own subject* (a comparison retrieves several subjects' facts); how many
    of the question's words it holds; how alike it is to the best fact and the top three (the facts that
    answer one question say alike things); its length; the learned word associations; its tags."""
    if not facts:
        return np.zeros((0, len(RELEVANCE_FEATURES) + len(tags)))
    from cxstack.knowledge.retrieval import tokenize

    scores = np.array([f.score for f in facts])
    lexical = np.array([f.lexical for f in facts])
    semantic = np.array([f.semantic for f in facts])
    best = scores[0]
    second = scores[1] if len(facts) > 1 else 0.0
    alike = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    top = min(3, len(facts))
    groups: dict[str, list[int]] = {}
    for rank, fact in enumerate(facts):
        groups.setdefault((fact.fact.subject or "").lower(), []).append(rank)
    question = set(tokenize(query))
    rows = []
    for rank, f in enumerate(facts):
        group = groups[(f.fact.subject or "").lower()]
        own = scores[group]
        words = set(tokenize(f.fact.text))
        coverage = len(question & words) / len(question) if question else 0.0
        associated = associations.features(question, words) if associations else (0.0, 0.0, 0.0)
        rows.append(
            [
                f.score,
                f.lexical,
                f.semantic,
                f.score / best if best > 0 else 0.0,
                best - f.score,
                1.0 / (rank + 1),
                rank / len(facts),
                f.score / own.max() if own.max() > 0 else 0.0,
                1.0 / (group.index(rank) + 1),
                (f.score - own.mean()) / (own.std() + 1e-6),
                f.semantic - semantic[group].max(),
                f.lexical - lexical[group].max(),
                coverage,
                float(coverage > 0),
                1.0 if rank == 0 else float(alike[rank, 0]),
                float((alike[rank, :top].sum() - (1.0 if rank < top else 0.0)) / max(1, top - (rank < top))),
                min(len(f.fact.text.split()), 40) / 40,
                best - second,
                float(len(groups) > 1),
                float(resolution.via == "named"),
                *associated,
                *(float(t in f.fact.tags) for t in tags),
            ]
        )
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
    """The selection threshold with the best micro F1 over the turns (a missed relevant fact counts), the most
    probable fact of each turn being selected whatever the threshold, as `search_conversation` does."""
    best, best_f1 = 0.5, -1.0
    for threshold in np.arange(0.05, 0.96, 0.01):
        tp = fp = 0
        for probs, labels in zip(probabilities, relevant, strict=True):
            if not probs:
                continue
            top = int(np.argmax(probs))
            for rank, (p, y) in enumerate(zip(probs, labels, strict=True)):
                if p >= threshold or rank == top:
                    tp += int(y)
                    fp += int(not y)
        fn = sum(totals) - tp
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return round(best, 2)


def _needs_threshold(probabilities: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    """The needs-knowledge threshold with the best turn-level F1 (0.5 on ties)."""
    best, best_f1 = 0.5, -1.0
    for threshold in sorted(np.arange(0.2, 0.81, 0.05), key=lambda t: abs(t - 0.5)):
        predicted = probabilities >= threshold
        tp = int((predicted & (labels == 1)).sum())
        f1 = 2 * tp / (tp + int(predicted.sum()) + int((labels == 1).sum())) if tp else 0.0
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(threshold), f1
    return round(best, 2)


@dataclass
class _Retrieved:
    facts: list[ScoredFact]
    resolution: SubjectResolution
    query: str
    labels: list[bool]
    total: int  # relevant facts of the turn, retrieved or not
    fold: int

    def words(self) -> tuple[set[str], list[tuple[set[str], bool]]]:
        from cxstack.knowledge.retrieval import tokenize

        return set(tokenize(self.query)), [
            (set(tokenize(f.fact.text)), y) for f, y in zip(self.facts, self.labels, strict=True)
        ]


def _common_tags(turns: Sequence[_Retrieved]) -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for turn in turns:
        for f in turn.facts:
            for tag in f.fact.tags:
                counts[tag] = counts.get(tag, 0) + 1
    return tuple(sorted(counts, key=lambda t: (-counts[t], t))[:MAX_TAGS])


def fit_model(
    index: KnowledgeIndex,
    examples: Sequence[LabelledTurn],
    *,
    embedder_name: str,
    k: int = CANDIDATES,
    c_needs: float = 1.0,
    c_relevance: float = 1.0,
    lexical_weight: float | None = None,
    note: str = "",
) -> KnowledgeModel:
    """Fit both models on `examples` through the same search `kb search` runs (`k` candidates per turn);
    thresholds maximise F1 on them (needs knowledge: turn-level F1; selection: micro F1 over relevant facts).

    The word associations are learned from the same examples; the rows the relevance model is fitted on get
    theirs from the *other* conversations' examples (`FOLDS` folds by first message), as an unseen
    conversation will, so that the model does not learn to trust them more than they deserve."""
    import zlib

    from cxstack.knowledge.search import search_conversation

    needs_rows: list[NDArray[np.float64]] = []
    needs_labels: list[int] = []
    texts = [e.messages[-1] if e.messages else "" for e in examples]
    vectors = index.embedder.embed(texts)
    retrieved: list[_Retrieved] = []
    for example, vector in zip(examples, vectors, strict=True):
        found = search_conversation(index, example.messages, k=k, lexical_weight=lexical_weight, model=None)
        newest = example.messages[-1] if example.messages else ""
        needs_rows.append(needs_features(vector, found.facts, found.subject, newest, index.embedder.dim))
        needs_labels.append(int(example.needs_knowledge))
        if example.needs_knowledge and example.relevant:
            first = example.messages[0] if example.messages else ""
            retrieved.append(
                _Retrieved(
                    list(found.facts),
                    found.subject,
                    found.query,
                    [f.fact.id in example.relevant for f in found.facts],
                    len(example.relevant),
                    zlib.crc32(first.strip().lower().encode()) % FOLDS,
                )
            )
    needs_matrix = np.array(needs_rows)
    needs = Logistic.fit(needs_matrix, needs_labels, c=c_needs)
    # The needs threshold from out-of-fold probabilities: in-sample ones are overconfident.
    folds = np.array(
        [zlib.crc32((e.messages[0] if e.messages else "").strip().lower().encode()) % FOLDS for e in examples]
    )
    held_out = np.zeros(len(examples))
    labels_array = np.array(needs_labels)
    for fold in range(FOLDS):
        inside = folds != fold
        if inside.all() or not inside.any() or len(set(labels_array[inside])) < 2:
            held_out[~inside] = needs.probability(needs_matrix[~inside])
            continue
        part = Logistic.fit(needs_matrix[inside], labels_array[inside].tolist(), c=c_needs)
        held_out[~inside] = part.probability(needs_matrix[~inside])
    needs_threshold = _needs_threshold(held_out, labels_array)
    tags = _common_tags(retrieved)
    words = [turn.words() for turn in retrieved]
    per_turn: list[tuple[NDArray[np.float64], list[bool], int]] = []
    for fold in range(FOLDS):
        others = Associations.count([w for w, t in zip(words, retrieved, strict=True) if t.fold != fold])
        for turn in retrieved:
            if turn.fold == fold:
                rows = relevance_features(
                    turn.facts,
                    turn.resolution,
                    index.fact_vectors([f.fact.id for f in turn.facts]),
                    turn.query,
                    associations=others,
                    tags=tags,
                )
                per_turn.append((rows, turn.labels, turn.total))
    relevance_rows = [row for rows, _, _ in per_turn for row in rows]
    relevance_labels = [int(y) for _, labels, _ in per_turn for y in labels]
    width = len(RELEVANCE_FEATURES) + len(tags)
    relevance = Logistic.fit(np.array(relevance_rows).reshape(-1, width), relevance_labels, c=c_relevance)
    probabilities = [relevance.probability(rows).tolist() if len(rows) else [] for rows, _, _ in per_turn]
    threshold = _best_threshold(
        probabilities, [labels for _, labels, _ in per_turn], [t for *_, t in per_turn]
    )
    return KnowledgeModel(
        embedder=embedder_name,
        dim=index.embedder.dim,
        needs=needs,
        relevance=relevance,
        needs_threshold=needs_threshold,
        select_threshold=threshold,
        lexical_weight=lexical_weight,
        fitted_on=note,
        associations=Associations.count(words),
        tags=tags,
        candidates=k,
    )


def read_labelled_turns(lines: Sequence[str], known_facts: Collection[str]) -> list[LabelledTurn]:
    """`{"messages": [texts, oldest first], "needs_knowledge": bool, "facts": [relevant fact ids]}` per
    line. Every line is checked first; any problem raises ValueError naming each bad line, so a model is
    never fitted on half a file."""
    turns: list[LabelledTurn] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(item, dict):
            problems.append(f"line {number}: expected an object")
            continue
        messages = item.get("messages")
        needs = item.get("needs_knowledge")
        facts = item.get("facts", [])
        if not isinstance(messages, list) or not messages or not all(isinstance(m, str) for m in messages):
            problems.append(f'line {number}: "messages" must be a non-empty list of texts')
            continue
        if not isinstance(needs, bool):
            problems.append(f'line {number}: "needs_knowledge" must be true or false')
            continue
        if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
            problems.append(f'line {number}: "facts" must be a list of fact ids')
            continue
        unknown = [f for f in facts if f not in known_facts]
        if unknown:
            problems.append(f"line {number}: unknown fact(s) {', '.join(unknown)}")
            continue
        turns.append(LabelledTurn(tuple(messages), needs, frozenset(facts)))
    if problems:
        raise ValueError("\n".join(problems))
    if len({t.needs_knowledge for t in turns}) < 2 or not any(t.relevant for t in turns):
        raise ValueError(
            "need turns that need knowledge (with their facts) and turns that do not, to fit both models"
        )
    return turns
