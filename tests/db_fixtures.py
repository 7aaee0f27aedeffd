"""An empty database on each backend (no migrations run): a SQLite file, or a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from tests.store_fixtures import fresh_pg_schema

from cxstack.store.db import create_engine_for


@pytest.fixture(
    name="empty_engine", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def empty_engine_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_engine_for(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_pg_schema("cxstack_ops") as (url, _):
        engine = create_engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(name="pg_schema_url")
def pg_schema_url_fixture() -> Iterator[str]:
    """A database URL whose connections use a fresh, empty PostgreSQL schema (dropped afterwards)."""
    with fresh_pg_schema("cxstack_ops") as (url, _):
        yield url
