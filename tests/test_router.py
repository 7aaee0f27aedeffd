from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cxstack.domain.turn import IntentPrediction
from cxstack.integrations.embedders.hashing import HashingEmbedder
from cxstack.integrations.embedders.minilm_onnx import MiniLMOnnxEmbedder
from cxstack.integrations.embedders.registry import CachedEmbedder
from cxstack.orchestration.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)
from cxstack.orchestration.router import OUT_OF_SCOPE_LABEL, IntentRouter, RouterFitReport

N_INTENTS = 12
N_TRAIN = 15


def _clinc_path() -> Path:
    root = os.environ.get("CXSTACK_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return base / "clinc150" / "data_full.json"


@pytest.fixture(scope="module")
def clinc() -> dict[str, list[tuple[str, str]]]:
    path = _clinc_path()
    if not path.is_file():
        pytest.skip(f"CLINC150 not found at {path}")
    raw = json.loads(path.read_text())
    intents = sorted({label for _, label in raw["train"]})[::12][:N_INTENTS]  # spread over domains
    train: list[tuple[str, str]] = []
    for intent in intents:
        train += [(t, lab) for t, lab in raw["train"] if lab == intent][:N_TRAIN]
    return {
        "intents": [(i, i) for i in intents],
        "train": train,
        "test": [(t, lab) for t, lab in raw["test"] if lab in intents],
        "oos_train": [(t, lab) for t, lab in raw["oos_train"]][:40],
        "oos_test": [(t, lab) for t, lab in raw["oos_test"]][:200],
    }


@pytest.fixture(scope="module")
def embedder() -> Iterator[CachedEmbedder]:
    yield CachedEmbedder(MiniLMOnnxEmbedder())


@pytest.fixture(scope="module")
def fitted(
    clinc: dict[str, list[tuple[str, str]]], embedder: CachedEmbedder
) -> tuple[IntentRouter, RouterFitReport]:
    router = IntentRouter(embedder, seed=0)
    report = router.fit([t for t, _ in clinc["train"]], [lab for _, lab in clinc["train"]])
    return router, report


def test_fit_report(fitted: tuple[IntentRouter, RouterFitReport]) -> None:
    router, report = fitted
    assert report.n_examples == N_INTENTS * N_TRAIN
    assert report.n_intents == N_INTENTS == len(router.classes)
    assert report.cv_folds == 5
    assert report.cv_accuracy is not None and report.cv_accuracy > 0.9
    assert report.expected_calibration_error is not None and report.expected_calibration_error < 0.08
    assert sum(b.count for b in report.reliability) == report.n_examples
    assert report.temperature > 0


def test_held_out_accuracy_and_calibration(
    fitted: tuple[IntentRouter, RouterFitReport], clinc: dict[str, list[tuple[str, str]]]
) -> None:
    router, _ = fitted
    texts = [t for t, _ in clinc["test"]]
    gold = np.array([lab for _, lab in clinc["test"]])
    proba, classes = router.predict_proba(texts)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    predicted = np.array(classes)[proba.argmax(axis=1)]
    correct = predicted == gold
    assert correct.mean() > 0.93
    assert expected_calibration_error(proba.max(axis=1), correct) < 0.08


def test_out_of_scope_messages_get_low_confidence(
    fitted: tuple[IntentRouter, RouterFitReport], clinc: dict[str, list[tuple[str, str]]]
) -> None:
    router, _ = fitted
    in_scope = router.predict_many([t for t, _ in clinc["test"]], oos_threshold=0.5)
    out_of_scope = router.predict_many([t for t, _ in clinc["oos_test"]], oos_threshold=0.5)
    assert np.mean([p.out_of_scope for p in out_of_scope]) > 0.5
    assert np.mean([not p.out_of_scope for p in in_scope]) > 0.85
    flagged = next(p for p in out_of_scope if p.out_of_scope)
    assert flagged.intent is None
    assert flagged.confidence < 0.5
    assert len(flagged.alternatives) == 3  # the best in-scope candidates, for a human handoff


def test_explicit_out_of_scope_class(
    clinc: dict[str, list[tuple[str, str]]], embedder: CachedEmbedder
) -> None:
    data = clinc["train"] + clinc["oos_train"]
    router = IntentRouter(embedder, seed=0)
    report = router.fit([t for t, _ in data], [lab for _, lab in data])
    assert OUT_OF_SCOPE_LABEL in router.classes
    assert report.n_intents == N_INTENTS
    out_of_scope = router.predict_many([t for t, _ in clinc["oos_test"]], oos_threshold=0.3)
    in_scope = router.predict_many([t for t, _ in clinc["test"]], oos_threshold=0.3)
    assert np.mean([p.out_of_scope for p in out_of_scope]) > 0.6
    assert np.mean([p.intent == lab for p, (_, lab) in zip(in_scope, clinc["test"], strict=True)]) > 0.88
    assert all(p.intent != OUT_OF_SCOPE_LABEL for p in in_scope + out_of_scope)
    assert all(name != OUT_OF_SCOPE_LABEL for p in out_of_scope for name, _ in p.alternatives)


def test_prediction_alternatives_are_ordered(
    fitted: tuple[IntentRouter, RouterFitReport], clinc: dict[str, list[tuple[str, str]]]
) -> None:
    router, _ = fitted
    text, label = clinc["test"][0]
    prediction = router.predict(text, oos_threshold=0.0)
    assert isinstance(prediction, IntentPrediction)
    assert prediction.intent == label and not prediction.out_of_scope
    assert len(prediction.alternatives) == 3
    probabilities = [prediction.confidence] + [p for _, p in prediction.alternatives]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-9
    assert prediction.intent not in {name for name, _ in prediction.alternatives}


def test_deterministic_with_a_seed(clinc: dict[str, list[tuple[str, str]]]) -> None:
    texts = [t for t, _ in clinc["train"]]
    labels = [lab for _, lab in clinc["train"]]
    probe = [t for t, _ in clinc["test"][:20]]
    runs = []
    for _ in range(2):
        router = IntentRouter(HashingEmbedder(dim=256), seed=7)
        report = router.fit(texts, labels)
        runs.append((router.predict_proba(probe)[0], report.expected_calibration_error))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_svm_classifier_option(clinc: dict[str, list[tuple[str, str]]], embedder: CachedEmbedder) -> None:
    router = IntentRouter(embedder, seed=0, classifier="svm", similarity_gate_quantile=None)
    report = router.fit([t for t, _ in clinc["train"]], [lab for _, lab in clinc["train"]])
    assert report.expected_calibration_error is not None and report.expected_calibration_error < 0.1
    predicted = router.predict_many([t for t, _ in clinc["test"]], oos_threshold=0.0)
    assert np.mean([p.intent == lab for p, (_, lab) in zip(predicted, clinc["test"], strict=True)]) > 0.9


def test_similarity_gate_stops_nonsense_the_softmax_would_route(
    clinc: dict[str, list[tuple[str, str]]], embedder: CachedEmbedder
) -> None:
    texts, labels = [t for t, _ in clinc["train"]], [lab for _, lab in clinc["train"]]
    gated, plain = (
        IntentRouter(embedder, seed=0),
        IntentRouter(embedder, seed=0, similarity_gate_quantile=None),
    )
    report = gated.fit(texts, labels)
    plain.fit(texts, labels)
    assert report.similarity_floor is not None and 0.0 < report.similarity_floor < 1.0
    oos = [t for t, _ in clinc["oos_test"]]
    caught_gated = np.mean([p.out_of_scope for p in gated.predict_many(oos, oos_threshold=0.3)])
    caught_plain = np.mean([p.out_of_scope for p in plain.predict_many(oos, oos_threshold=0.3)])
    assert caught_gated > caught_plain + 0.1
    test = [t for t, _ in clinc["test"]]
    lost_gated = np.mean([p.out_of_scope for p in gated.predict_many(test, oos_threshold=0.3)])
    lost_plain = np.mean([p.out_of_scope for p in plain.predict_many(test, oos_threshold=0.3)])
    assert lost_gated - lost_plain < 0.06  # the price: a few in-scope messages get a clarifying question


def test_tiny_workspace_skips_cross_validation() -> None:
    router = IntentRouter(HashingEmbedder(dim=64))
    report = router.fit(["refund my order", "where is my parcel"], ["refund", "tracking"])
    assert report.cv_accuracy is None and report.expected_calibration_error is None
    assert report.temperature == 1.0
    assert router.predict("refund my order please", oos_threshold=0.0).intent == "refund"


def test_fit_and_predict_errors() -> None:
    router = IntentRouter(HashingEmbedder(dim=64))
    with pytest.raises(RuntimeError, match="fit"):
        router.predict("hello", oos_threshold=0.5)
    with pytest.raises(ValueError, match="two distinct"):
        router.fit(["a", "b"], ["x", "x"])
    with pytest.raises(ValueError, match="labels"):
        router.fit(["a", "b"], ["x"])


# ---- calibration functions ------------------------------------------------------------------------------


def test_ece_is_zero_for_perfect_calibration_and_measures_overconfidence() -> None:
    confidences = np.array([0.8] * 10)
    correct = np.array([1] * 8 + [0] * 2)
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.9] * 10), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.4)
    assert expected_calibration_error([], []) == 0.0


def test_reliability_bins_cover_unit_interval() -> None:
    bins = reliability_bins([0.05, 0.5, 1.0, 1.0], [0, 1, 1, 0], n_bins=10)
    assert len(bins) == 10 and bins[0].lower == 0.0 and bins[-1].upper == 1.0
    assert [b.count for b in bins] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[-1].accuracy == 0.5 and bins[-1].mean_confidence == 1.0
    with pytest.raises(ValueError):
        reliability_bins([0.5], [1, 0])


def test_fit_temperature_recovers_the_generating_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    true_probabilities = softmax(logits, 2.0)
    targets = np.array([rng.choice(5, p=row) for row in true_probabilities])
    assert fit_temperature(logits, targets) == pytest.approx(2.0, rel=0.1)


def test_fast_tfidf_transform_matches_sklearn(clinc: dict[str, list[tuple[str, str]]]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from cxstack.orchestration.router import _Tfidf

    texts = [t for t, _ in clinc["train"]]
    probe = [t for t, _ in clinc["test"][:50]] + ["", "zzzz qqqq"]
    for vectorizer in (
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2),
    ):
        vectorizer.fit(texts)
        expected = vectorizer.transform(probe).toarray()
        np.testing.assert_allclose(_Tfidf(vectorizer).transform(probe).toarray(), expected, atol=1e-12)
