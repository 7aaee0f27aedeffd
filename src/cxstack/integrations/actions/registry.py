"""Action connectors by type: the built-in `http` and plug-ins register under the entry point group
`cxstack.action_connectors`; each entry is a class (or factory) called as
`factory(config, name=..., dry_run=...)`."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol

from cxstack.resolution.ports import ActionConnector
from cxstack.workspace.models import ConnectorConfig

ENTRY_POINT_GROUP = "cxstack.action_connectors"


class ConnectorFactory(Protocol):
    def __call__(self, config: ConnectorConfig, *, name: str, dry_run: bool) -> ActionConnector: ...


class UnknownConnectorTypeError(LookupError):
    pass


def connector_types() -> dict[str, str]:
    return {e.name: e.value for e in entry_points(group=ENTRY_POINT_GROUP)}


def load_connector(name: str, config: ConnectorConfig, *, dry_run: bool = False) -> ActionConnector:
    found = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == config.type]
    if not found:
        registered = ", ".join(sorted(connector_types())) or "none"
        raise UnknownConnectorTypeError(
            f"connector {name!r} has type {config.type!r}, but no action connector of that type is "
            f"registered (registered: {registered}; plug-ins register under {ENTRY_POINT_GROUP!r})"
        )
    factory: ConnectorFactory = found[0].load()
    return factory(config, name=name, dry_run=dry_run)
