"""WordLlama static token embeddings (l2_supercat), loaded strictly from the weights inside the wheel."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cxstack.integrations.embedders.minilm_onnx import EmbedderUnavailableError

SHIPPED_DIM = 256  # the only weights file the wheel carries (l2_supercat_256.safetensors)
TRUNCATIONS = (64, 128, 256)  # Matryoshka-trained: a prefix of the vector is itself an embedding


def _package_dir() -> Path:
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailableError(
            "The wordllama embedder needs the package: pip install wordllama==0.4.0.post1"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _import_wordllama() -> Any:
    # wordllama calls logging.basicConfig(level=INFO) on import, which would reconfigure the host
    # application's root logger; undo that.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        from wordllama import WordLlama
    except ImportError as exc:
        raise EmbedderUnavailableError(
            "The wordllama embedder needs the package: pip install wordllama==0.4.0.post1"
        ) from exc
    finally:
        root.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
    return WordLlama


class WordLlamaEmbedder:
    """Averaged static token vectors: very fast, weaker on paraphrase than minilm."""

    name = "wordllama"

    def __init__(self, *, dim: int = SHIPPED_DIM, batch_size: int = 256) -> None:
        if dim not in TRUNCATIONS:
            raise ValueError(f"wordllama dim must be one of {TRUNCATIONS}, got {dim}")
        WordLlama = _import_wordllama()
        package_dir = _package_dir()
        # cache_dir = the package folder: the loader finds weights/ and tokenizers/ there, and
        # disable_download turns a missing file into an error instead of a request to Hugging Face.
        self._model: Any = WordLlama.load(
            config="l2_supercat",
            cache_dir=package_dir,
            dim=SHIPPED_DIM,
            trunc_dim=None if dim == SHIPPED_DIM else dim,
            disable_download=True,
        )
        self.dim = dim
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(
            self._model.embed(list(texts), norm=False, batch_size=self.batch_size), dtype=np.float32
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
