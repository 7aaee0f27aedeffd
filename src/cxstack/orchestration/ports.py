from __future__ import annotations

from typing import Protocol

from cxstack.domain.turn import IntentPrediction
from cxstack.resolution.ports import Resolver


class Router(Protocol):
    def predict(self, text: str, *, oos_threshold: float) -> IntentPrediction: ...


class ResolverLookup(Protocol):
    def get(self, mechanism: str) -> Resolver: ...
