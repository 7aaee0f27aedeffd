"""A dependency-light lexical embedder: hashed word and character n-grams. Instant to load; for tests,
tiny machines and as the lexical half of nothing-else-installed deployments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize


class HashingEmbedder:
    name = "hashing"

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim
        self._words = HashingVectorizer(
            n_features=dim, analyzer="word", ngram_range=(1, 2), alternate_sign=False, norm=None
        )
        self._chars = HashingVectorizer(
            n_features=dim, analyzer="char_wb", ngram_range=(3, 4), alternate_sign=False, norm=None
        )

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        lowered = [t.lower() for t in texts]
        words = self._words.transform(lowered)
        chars = self._chars.transform(lowered)
        dense = normalize(words).toarray() + 0.5 * normalize(chars).toarray()
        return np.asarray(normalize(dense), dtype=np.float32)
