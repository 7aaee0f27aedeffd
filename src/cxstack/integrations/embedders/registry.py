"""Find embedders by name through the ``cxstack.embedders`` entry point group; memoise repeated texts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cxstack.knowledge.ports import Embedder

ENTRY_POINT_GROUP = "cxstack.embedders"


class UnknownEmbedderError(LookupError):
    pass


def available_embedders() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_embedder(name: str, **options: Any) -> Embedder:
    """Instantiate the embedder registered as ``name``; ``options`` go to its constructor."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        raise UnknownEmbedderError(
            f"No embedder named {name!r}. Available: {', '.join(available_embedders()) or '(none)'}"
        )
    factory = matches[0].load()
    embedder: Embedder = factory(**options)
    return embedder


class CachedEmbedder:
    """Wraps an embedder with an LRU cache of single-text vectors (customer queries repeat a lot)."""

    def __init__(self, inner: Embedder, maxsize: int = 4096) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.maxsize = maxsize
        self._cache: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            cached = self._cache.get(text)
            if cached is None:
                missing.setdefault(text, []).append(i)
            else:
                self._cache.move_to_end(text)
                result[i] = cached
                self.hits += 1
        if missing:
            unique = list(missing)
            vectors = self.inner.embed(unique)
            self.misses += len(unique)
            for text, vector in zip(unique, vectors, strict=True):
                result[missing[text]] = vector
                self._remember(text, vector)
        return result

    def clear(self) -> None:
        self._cache.clear()

    def _remember(self, text: str, vector: NDArray[np.float32]) -> None:
        self._cache[text] = vector.copy()
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
