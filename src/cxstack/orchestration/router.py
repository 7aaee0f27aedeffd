"""L4 intent router: which intent is this message, with a calibrated probability, or is it out of scope.

Features are a sentence embedding (semantics, paraphrase) beside TF-IDF word and character n-grams (exact
product words, typos); one multinomial logistic regression reads them all. Its probabilities are then
temperature-scaled on cross-validated predictions, so that "0.8" means right about 80% of the time — the
confidence policy and the out-of-scope threshold depend on that.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.utils.parallel import Parallel, delayed

from cxstack.domain.turn import IntentPrediction
from cxstack.knowledge.ports import Embedder
from cxstack.orchestration.calibration import (
    ReliabilityBin,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)

OUT_OF_SCOPE_LABEL = "oos"  # a training label with this name becomes an explicit out-of-scope class
N_ALTERNATIVES = 3
# "logistic": multinomial logistic regression, the better probabilities and out-of-scope class;
# "svm": one-vs-rest linear SVM on the same features, several times faster to fit on thousands of examples.
ClassifierKind = Literal["logistic", "svm"]
# Above this many examples x classes, "auto" picks the SVM: newton-cg logistic regression on CLINC150
# (15k examples, 151 classes) takes minutes on 2 cores, the SVM about 20 s at equal accuracy.
AUTO_SVM_ABOVE = 100_000


@dataclass(frozen=True, slots=True)
class RouterFitReport:
    n_examples: int
    n_intents: int  # in-scope intents (an explicit out-of-scope class is not counted)
    fit_seconds: float
    cv_accuracy: float | None  # out-of-fold accuracy; None when an intent has too few examples for CV
    expected_calibration_error: float | None  # on the out-of-fold predictions, after temperature scaling
    reliability: tuple[ReliabilityBin, ...]
    temperature: float
    cv_folds: int
    classifier: str
    similarity_floor: float | None = None  # below this nearest-example cosine a message is out of scope


class _Tfidf:
    """The transform of a fitted sublinear, L2-normalised TfidfVectorizer without sklearn's per-call input
    validation, which costs about 1 ms per message — most of a routing decision."""

    def __init__(self, fitted: TfidfVectorizer) -> None:
        self._analyze = fitted.build_analyzer()
        self._vocabulary: dict[str, int] = {str(k): int(v) for k, v in fitted.vocabulary_.items()}
        self._idf = np.asarray(fitted.idf_, dtype=np.float64)
        self.n_features = len(self._idf)

    def transform(self, texts: Sequence[str]) -> Any:
        indptr = [0]
        indices: list[int] = []
        values: list[float] = []
        for text in texts:
            counts = Counter(
                i for i in (self._vocabulary.get(t) for t in self._analyze(text)) if i is not None
            )
            if counts:
                columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
                weights = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * self._idf[columns]
                weights /= np.linalg.norm(weights)
                indices.extend(columns.tolist())
                values.extend(weights.tolist())
            indptr.append(len(indices))
        return sparse.csr_matrix(
            (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(texts), self.n_features),
        )


@dataclass(frozen=True, slots=True)
class _FeatureSpace:
    words: _Tfidf
    chars: _Tfidf


class IntentRouter:
    def __init__(
        self,
        embedder: Embedder,
        *,
        seed: int = 0,
        regularization_c: float = 10.0,
        embedding_weight: float = 2.0,
        lexical_features: bool = True,
        max_char_features: int = 20_000,
        cv_folds: int = 5,
        n_jobs: int = 1,
        max_iter: int = 300,
        classifier: ClassifierKind | Literal["auto"] = "auto",
        min_temperature: float | None = None,
        similarity_gate_quantile: float | None = 0.02,
        similarity_gate_margin: float = 0.7,
    ) -> None:
        self.embedder = embedder
        self.seed = seed
        self.regularization_c = regularization_c
        self.embedding_weight = embedding_weight
        self.lexical_features = lexical_features
        self.max_char_features = max_char_features
        self.cv_folds = cv_folds
        self.n_jobs = n_jobs
        self.max_iter = max_iter
        self.classifier = classifier
        self.min_temperature = min_temperature
        self.similarity_gate_quantile = similarity_gate_quantile
        self.similarity_gate_margin = similarity_gate_margin
        self._examples: NDArray[np.float32] | None = None
        self._similarity_floor: float | None = None
        self._classes: list[str] = []
        self._features: _FeatureSpace | None = None
        self._model: Any = None
        self._temperature = 1.0
        self._oos_index: int | None = None
        self._classifier: ClassifierKind | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The embedder (an ONNX session, a model file) is not state: whoever loads a saved router attaches
        # its own (`with_embedder`), which must be the same model the router was trained with.
        state = {name: getattr(self, name) for name in self.__dict__}
        state["embedder"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def with_embedder(self, embedder: Embedder) -> IntentRouter:
        self.embedder = embedder
        return self

    @property
    def classes(self) -> list[str]:
        """Class labels in the column order of `predict_proba` (may include the out-of-scope label)."""
        return list(self._classes)

    @property
    def temperature(self) -> float:
        return self._temperature

    # ---- training -------------------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        embeddings: NDArray[np.float32] | None = None,
    ) -> RouterFitReport:
        """Train on example utterances. `embeddings` may pass precomputed vectors of `texts` (benchmarks)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if len(set(labels)) < 2:
            raise ValueError("an intent router needs at least two distinct labels")
        started = time.perf_counter()
        dense = self.embedder.embed(list(texts)) if embeddings is None else embeddings
        classes = sorted(set(labels))
        column = {label: i for i, label in enumerate(classes)}
        targets = np.array([column[label] for label in labels], dtype=np.int64)

        if self.classifier == "auto":
            self._classifier = "svm" if len(texts) * len(classes) > AUTO_SVM_ABOVE else "logistic"
        else:
            self._classifier = self.classifier
        hyper = self._hyperparameters()
        folds = min(self.cv_folds, min(Counter(labels).values()))
        logits: NDArray[np.float64] | None = None
        if folds >= 2:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            splits = list(splitter.split(np.zeros(len(targets)), targets))
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_fold_logits)(hyper, texts, dense, targets, train, held_out, len(classes))
                for train, held_out in splits
            )
            logits = np.zeros((len(targets), len(classes)), dtype=np.float64)
            for (_, held_out), part in zip(splits, parts, strict=True):
                logits[held_out] = part

        self._features, self._model = _train(hyper, texts, dense, targets)
        self._classes = classes
        self._oos_index = classes.index(OUT_OF_SCOPE_LABEL) if OUT_OF_SCOPE_LABEL in classes else None
        self._fit_similarity_gate(dense, targets)

        cv_accuracy: float | None = None
        ece: float | None = None
        bins: tuple[ReliabilityBin, ...] = ()
        self._temperature = 1.0
        if logits is not None:
            # Cross-validation sees only in-scope examples: when they separate perfectly the NLL drives T to 0
            # and every message, out-of-scope ones included, would get probability 1. Sharpening is capped.
            # SVM margins live on a scale about 10x smaller than log-probabilities.
            floor = self.min_temperature or (0.05 if self._classifier == "svm" else 0.5)
            self._temperature = fit_temperature(logits, targets, bounds=(floor, 100.0))
            proba = softmax(logits, self._temperature)
            correct = proba.argmax(axis=1) == targets
            confidence = proba.max(axis=1)
            cv_accuracy = float(correct.mean())
            ece = expected_calibration_error(confidence, correct)
            bins = tuple(reliability_bins(confidence, correct))
        return RouterFitReport(
            n_examples=len(texts),
            n_intents=len([c for c in classes if c != OUT_OF_SCOPE_LABEL]),
            fit_seconds=time.perf_counter() - started,
            cv_accuracy=cv_accuracy,
            expected_calibration_error=ece,
            reliability=bins,
            temperature=self._temperature,
            cv_folds=folds if folds >= 2 else 0,
            classifier=self._classifier,
            similarity_floor=self._similarity_floor,
        )

    def _fit_similarity_gate(self, dense: NDArray[np.float32], targets: NDArray[np.int64]) -> None:
        """The softmax spreads all probability over known intents, so nonsense can still look confident.
        A second, independent signal: how close a message is to any training example. The floor is set from
        the examples themselves — a low quantile of each example's nearest other example — with a margin.
        Defaults measured on CLINC150 val (40 intents x 15 examples, MiniLM): 0.7% of in-scope messages fall
        below the floor (they get a clarifying question), 45% of out-of-scope ones do. Conservative because
        customers phrase things further from the examples than the examples are from each other."""
        self._examples, self._similarity_floor = None, None
        if self.similarity_gate_quantile is None or self._oos_index is not None:
            return  # with explicit out-of-scope examples the classifier itself learns the boundary
        in_scope = targets != self._oos_index if self._oos_index is not None else np.ones(len(targets), bool)
        examples = np.asarray(dense[in_scope], dtype=np.float32)
        if len(examples) < 3:
            return
        nearest = np.empty(len(examples), dtype=np.float64)
        for start in range(0, len(examples), 2048):  # blocks keep a 15k-example fit within memory
            block = examples[start : start + 2048] @ examples.T
            np.fill_diagonal(block[:, start : start + 2048], -1.0)
            nearest[start : start + 2048] = block.max(axis=1)
        self._examples = examples
        self._similarity_floor = (
            float(np.quantile(nearest, self.similarity_gate_quantile)) * self.similarity_gate_margin
        )

    def nearest_example_similarity(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64] | None:
        if self._examples is None:
            return None
        return np.asarray((embeddings @ self._examples.T).max(axis=1), dtype=np.float64)

    def _hyperparameters(self) -> _Hyperparameters:
        if self._classifier is None:
            raise RuntimeError("IntentRouter.fit must be called before predicting")
        return _Hyperparameters(
            regularization_c=self.regularization_c,
            embedding_weight=self.embedding_weight,
            lexical_features=self.lexical_features,
            max_char_features=self.max_char_features,
            max_iter=self.max_iter,
            seed=self.seed,
            classifier=self._classifier,
        )

    # ---- prediction -----------------------------------------------------------------------------------

    def predict_proba(
        self, texts: Sequence[str], *, embeddings: NDArray[np.float32] | None = None
    ) -> tuple[NDArray[np.float64], list[str]]:
        """Calibrated probabilities, shape (len(texts), len(classes)), and the class of each column."""
        if self._model is None or self._features is None:
            raise RuntimeError("IntentRouter.fit must be called before predicting")
        dense = self.embedder.embed(list(texts)) if embeddings is None else embeddings
        matrix = _matrix(self._hyperparameters(), self._features, texts, dense)
        logits = np.full((len(texts), len(self._classes)), -1e4, dtype=np.float64)
        logits[:, self._model.classes_] = _raw_logits(self._model, matrix)
        return softmax(logits, self._temperature), self.classes

    def in_scope_confidence(
        self, proba: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Best in-scope class per row and its probability; 0.0 where the out-of-scope class wins outright.

        A message is out of scope exactly when this confidence is below the threshold (any threshold > 0).
        """
        scores = proba.copy()
        if self._oos_index is not None:
            scores[:, self._oos_index] = -1.0
        best = scores.argmax(axis=1)
        confidence = np.take_along_axis(proba, best[:, None], axis=1)[:, 0]
        if self._oos_index is not None:
            confidence = np.where(proba.argmax(axis=1) == self._oos_index, 0.0, confidence)
        return best.astype(np.int64), confidence

    def predict(self, text: str, *, oos_threshold: float) -> IntentPrediction:
        return self.predict_many([text], oos_threshold=oos_threshold)[0]

    def predict_many(self, texts: Sequence[str], *, oos_threshold: float) -> list[IntentPrediction]:
        """For an out-of-scope message, `confidence` is the probability of the best in-scope intent and
        `alternatives` lists the best in-scope intents, so a human handoff still sees the candidates."""
        if not texts:
            return []
        dense = self.embedder.embed(list(texts))
        proba, classes = self.predict_proba(texts, embeddings=dense)
        best, confidence = self.in_scope_confidence(proba)
        similarity = self.nearest_example_similarity(dense)
        floor = self._similarity_floor
        predictions: list[IntentPrediction] = []
        for index, (row, top, conf) in enumerate(zip(proba, best, confidence, strict=True)):
            ranked = [int(i) for i in np.argsort(-row, kind="stable") if int(i) != self._oos_index]
            top_probability = float(row[top])
            unlike_any_example = similarity is not None and floor is not None and similarity[index] < floor
            if conf < oos_threshold or unlike_any_example:
                alternatives = tuple((classes[i], float(row[i])) for i in ranked[:N_ALTERNATIVES])
                predictions.append(
                    IntentPrediction(
                        intent=None, confidence=top_probability, alternatives=alternatives, out_of_scope=True
                    )
                )
            else:
                alternatives = tuple((classes[i], float(row[i])) for i in ranked[1 : 1 + N_ALTERNATIVES])
                predictions.append(
                    IntentPrediction(
                        intent=classes[int(top)], confidence=top_probability, alternatives=alternatives
                    )
                )
        return predictions


@dataclass(frozen=True, slots=True)
class _Hyperparameters:
    regularization_c: float
    embedding_weight: float
    lexical_features: bool
    max_char_features: int
    max_iter: int
    seed: int
    classifier: ClassifierKind


def _fold_logits(
    hyper: _Hyperparameters,
    texts: Sequence[str],
    dense: NDArray[np.float32],
    targets: NDArray[np.int64],
    train: NDArray[np.int64],
    held_out: NDArray[np.int64],
    n_classes: int,
) -> NDArray[np.float64]:
    features, model = _train(hyper, [texts[i] for i in train], dense[train], targets[train])
    matrix = _matrix(hyper, features, [texts[i] for i in held_out], dense[held_out])
    # A class absent from a training fold gets no column; give it a very low logit.
    logits = np.full((len(held_out), n_classes), -1e4, dtype=np.float64)
    logits[:, model.classes_] = _raw_logits(model, matrix)
    return logits


def _raw_logits(model: Any, matrix: Any) -> NDArray[np.float64]:
    """Linear scores per class. For the multinomial logistic regression these differ from its
    log-probabilities by a per-row constant, which the (temperature-scaled) softmax ignores; computed
    directly because sklearn's per-call validation costs more than the product itself on one message."""
    scores: NDArray[np.float64] = np.asarray(matrix @ model.coef_.T + model.intercept_, dtype=np.float64)
    if scores.shape[1] == 1:  # two classes: one score for the second class
        return np.column_stack([-scores[:, 0] / 2.0, scores[:, 0] / 2.0]).astype(np.float64)
    return scores


def _train(
    hyper: _Hyperparameters, texts: Sequence[str], dense: NDArray[np.float32], targets: NDArray[np.int64]
) -> tuple[_FeatureSpace, Any]:
    lowered = [t.lower() for t in texts]
    features = _FeatureSpace(
        words=_Tfidf(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(lowered)),
        chars=_Tfidf(
            TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=(3, 5),
                sublinear_tf=True,
                min_df=2,
                max_features=hyper.max_char_features,
            ).fit(lowered)
        ),
    )
    model: Any
    if hyper.classifier == "svm":
        # hinge-loss margins are on another scale than log-probabilities: a smaller C suits them
        model = LinearSVC(C=hyper.regularization_c / 20.0, random_state=hyper.seed)
    else:
        # newton-cg: several times faster than lbfgs here (few, exact steps on a smooth convex loss).
        model = LogisticRegression(
            C=hyper.regularization_c, solver="newton-cg", max_iter=hyper.max_iter, random_state=hyper.seed
        )
    model.fit(_matrix(hyper, features, texts, dense), targets)
    return features, model


def _matrix(
    hyper: _Hyperparameters, features: _FeatureSpace, texts: Sequence[str], dense: NDArray[np.float32]
) -> Any:
    blocks: list[Any] = [sparse.csr_matrix(np.asarray(dense, dtype=np.float64) * hyper.embedding_weight)]
    if hyper.lexical_features:
        lowered = [t.lower() for t in texts]
        blocks += [features.words.transform(lowered), features.chars.transform(lowered)]
    return sparse.hstack(blocks, format="csr")
