"""Store fixtures shared by the store contract and the monitoring tests: a migrated SQLite copy per test and
a PostgreSQL schema per session (emptied before each test)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from cxstack.store.db import create_engine_for, migrate

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("CXSTACK_TEST_PG_URL", DEFAULT_PG_URL)


@contextmanager
def fresh_pg_schema(prefix: str) -> Iterator[tuple[str, Engine]]:
    """A new, empty PostgreSQL schema, dropped afterwards: the URL whose connections use it, and an admin
    engine on the database. Skips when CXSTACK_SKIP_PG=1."""
    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine_for(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}", admin
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


TABLES = (
    "email_messages",
    "handoff_events",
    "handoff_exports",
    "review_queue",
    "reviews",
    "judgements",
    "judge_versions",
    "conversation_outcomes",
    "fact_versions",
    "conversation_events",
    "api_keys",
    "escalations",
    "outbox",
    "traces",
    "messages",
    "conversations",
    "customers",
    "workspace_versions",
)


# ---- fixtures


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once; each test gets a copy (a file copy is much cheaper than running the migration)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "cxstack.db"
    engine = create_engine_for(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection closing checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_engine(tmp_path: Path, migrated_sqlite_file: Path) -> Iterator[Engine]:
    path = tmp_path / "cxstack.db"
    shutil.copyfile(migrated_sqlite_file, path)
    engine = create_engine_for(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_schema_engine() -> Iterator[Engine]:
    """A fresh schema for this test session, migrated with Alembic; dropped at the end."""
    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    url = os.environ.get("CXSTACK_TEST_PG_URL", DEFAULT_PG_URL)
    admin = create_engine_for(url)
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is unreachable at {url} ({error.orig}). Start it, point CXSTACK_TEST_PG_URL at "
            "a server, or set CXSTACK_SKIP_PG=1 to skip the PostgreSQL tests.",
            pytrace=False,
        )
    schema = f"cxstack_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine_for(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_engine(pg_schema_engine: Engine) -> Engine:
    with pg_schema_engine.begin() as connection:
        for table in TABLES:  # children first; DELETE is cheaper than TRUNCATE on a handful of rows
            connection.execute(text(f"DELETE FROM {table}"))
    return pg_schema_engine
