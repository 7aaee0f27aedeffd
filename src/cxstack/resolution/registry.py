"""Resolvers by mechanism name. Built-ins and plug-ins register the same way: entry point group
`cxstack.resolvers`, each entry a class (or factory) called with one `ResolverDeps`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol

from cxstack.knowledge.retrieval import KnowledgeIndex
from cxstack.resolution.ports import ActionConnector, Resolver

ENTRY_POINT_GROUP = "cxstack.resolvers"


@dataclass(frozen=True)
class ResolverDeps:
    """Everything a resolver may need; a resolver takes what it uses and ignores the rest."""

    knowledge: KnowledgeIndex | None = None
    connectors: Mapping[str, ActionConnector] = field(default_factory=dict)


class ResolverFactory(Protocol):
    def __call__(self, deps: ResolverDeps) -> Resolver: ...


class UnknownMechanismError(LookupError):
    def __init__(self, mechanism: str, registered: Iterable[str]) -> None:
        self.mechanism = mechanism
        self.registered = sorted(registered)
        super().__init__(
            f"no resolver registered for mechanism {mechanism!r}; "
            f"registered: {', '.join(self.registered) or 'none'}"
            f" (plug-ins register under the entry point group {ENTRY_POINT_GROUP!r})"
        )


class ResolverRegistry:
    def __init__(self, resolvers: Mapping[str, Resolver] | None = None) -> None:
        self._resolvers: dict[str, Resolver] = dict(resolvers or {})

    @classmethod
    def from_entry_points(
        cls, deps: ResolverDeps, *, only: Iterable[str] | None = None, group: str = ENTRY_POINT_GROUP
    ) -> ResolverRegistry:
        """Instantiate every resolver registered under `group` (or just the names in `only`) with `deps`."""
        wanted = set(only) if only is not None else None
        registry = cls()
        for entry in entry_points(group=group):
            if wanted is not None and entry.name not in wanted:
                continue
            factory: ResolverFactory = entry.load()
            registry.register(entry.name, factory(deps))
        return registry

    def register(self, mechanism: str, resolver: Resolver) -> None:
        self._resolvers[mechanism] = resolver

    def get(self, mechanism: str) -> Resolver:
        try:
            return self._resolvers[mechanism]
        except KeyError:
            raise UnknownMechanismError(mechanism, self._resolvers) from None

    def __contains__(self, mechanism: object) -> bool:
        return mechanism in self._resolvers

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._resolvers))
