"""The Store contract on every adapter (memory, SQLite, PostgreSQL), plus schema and engine checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from tests.store_fixtures import TABLES

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import Store
from cxstack.store.db import (
    alembic_config,
    create_engine_for,
    current_revision,
    database_url,
    head_revision,
    is_up_to_date,
    migrate,
    normalize_url,
)
from cxstack.store.orm import Base
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.memory_store import InMemoryStore
from cxstack.testing.store_contract import StoreContract, inbound, make_commit

# ---- the contract on each adapter


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Store:
        return InMemoryStore()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, sqlite_engine: Engine) -> Store:
        return SqlAlchemyStore(sqlite_engine)


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, pg_engine: Engine) -> Store:
        return SqlAlchemyStore(pg_engine)


# ---- schema and migrations


def _schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_sqlite_migrations_produce_exactly_the_orm_schema(sqlite_engine: Engine) -> None:
    assert _schema_differences(sqlite_engine) == []
    assert current_revision(sqlite_engine) == head_revision()
    assert is_up_to_date(sqlite_engine)


@pytest.mark.postgres
def test_postgres_migrations_produce_exactly_the_orm_schema(pg_schema_engine: Engine) -> None:
    assert _schema_differences(pg_schema_engine) == []
    assert is_up_to_date(pg_schema_engine)
    columns = {c["name"]: c["type"] for c in inspect(pg_schema_engine).get_columns("traces")}
    assert type(columns["steps"]).__name__ == "JSONB"


def test_schema_comparison_sees_a_missing_index(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_traces_intent"))
    assert _schema_differences(sqlite_engine) != []


def test_migrate_is_idempotent_and_downgrade_removes_everything(sqlite_engine: Engine) -> None:
    migrate(sqlite_engine)
    assert set(TABLES) <= set(inspect(sqlite_engine).get_table_names())

    config = alembic_config()
    with sqlite_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(sqlite_engine).get_table_names()) <= {"alembic_version"}

    migrate(sqlite_engine)
    assert _schema_differences(sqlite_engine) == []


def test_data_survives_a_new_engine_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'home' / 'cxstack.db'}"
    first = create_engine_for(url)
    migrate(first)
    message = SqlAlchemyStore(first).ingest(inbound("wa-1")).message
    first.dispose()

    # A restarted process finds the pending message and can finish the turn.
    second = create_engine_for(url)
    migrate(second)
    store = SqlAlchemyStore(second)
    assert store.conversations_with_pending() == ["conv-1"]
    assert store.pending_messages(ConversationId("conv-1")) == [message]
    store.commit_turn(make_commit("conv-1", message.id))
    assert store.conversations_with_pending() == []
    second.dispose()


# ---- engine and URL


def test_sqlite_engine_uses_wal_foreign_keys_and_busy_timeout(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_in_memory_sqlite_url_works_across_threads() -> None:
    engine = create_engine_for("sqlite://")
    migrate(engine)
    store = SqlAlchemyStore(engine)
    store.ingest(inbound("wa-1"))
    assert len(store.list_messages(ConversationId("conv-1"))) == 1
    engine.dispose()


def test_database_url_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    monkeypatch.setenv("CXSTACK_HOME", str(tmp_path / "home"))
    assert database_url() == f"sqlite:///{tmp_path / 'home' / 'cxstack.db'}"
    assert database_url(tmp_path / "other") == f"sqlite:///{tmp_path / 'other' / 'cxstack.db'}"

    monkeypatch.setenv("CXSTACK_DATABASE_URL", "postgresql://u:p@db:5432/cx")
    assert database_url(tmp_path) == "postgresql+psycopg://u:p@db:5432/cx"


def test_database_url_defaults_to_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    monkeypatch.delenv("CXSTACK_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert database_url() == f"sqlite:///{Path.home() / '.cxstack' / 'cxstack.db'}"


def test_a_project_state_folder_is_found_from_inside_the_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`make run` keeps state in ./.cxstack; `cxstack trace` run in the project (or below) must look there."""
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    monkeypatch.delenv("CXSTACK_HOME", raising=False)
    (tmp_path / "project" / ".cxstack").mkdir(parents=True)
    (tmp_path / "project" / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project" / "src" / "deep")
    assert database_url() == f"sqlite:///{(tmp_path / 'project' / '.cxstack' / 'cxstack.db').resolve()}"
    monkeypatch.setenv("CXSTACK_HOME", str(tmp_path / "elsewhere"))
    assert database_url() == f"sqlite:///{tmp_path / 'elsewhere' / 'cxstack.db'}"


def test_postgres_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://h/db") == "postgresql+psycopg://h/db"
    assert normalize_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert normalize_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    assert create_engine_for("postgresql://postgres@127.0.0.1:1/none").dialect.driver == "psycopg"
