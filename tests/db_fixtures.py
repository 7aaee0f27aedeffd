"""An empty database on each backend (no migrations run): a SQLite file, or a fresh PostgreSQL schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cxstack.store.db import create_engine_for

PG_URL = os.environ.get("CXSTACK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(
    name="empty_engine", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def empty_engine_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_engine_for(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    admin = create_engine_for(PG_URL)
    schema = f"cxstack_ops_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine_for(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(name="pg_schema_url")
def pg_schema_url_fixture() -> Iterator[str]:
    """A database URL whose connections use a fresh, empty PostgreSQL schema (dropped afterwards)."""
    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    schema = f"cxstack_ops_{uuid.uuid4().hex[:12]}"
    admin = create_engine_for(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
