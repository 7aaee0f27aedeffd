"""Worker factories for the supervision tests, in a module of their own: a spawned worker imports the module
that defines its factory, and this one imports little."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxstack.testing.memory_store import InMemoryStore


class IdleOrchestrator:
    async def handle_turn(self, ctx: Any) -> Any:  # pragma: no cover - no message reaches it
        raise AssertionError("no turns in these tests")


def flaky_worker(options: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Starts while `options["broken"]` does not exist; exits with 3 on start while it does."""
    if Path(options["broken"]).exists():
        raise SystemExit(3)

    async def close() -> None:
        return None

    return InMemoryStore(), IdleOrchestrator(), None, close
