"""Every migration, up and down, on SQLite and PostgreSQL, with rows in every table: rows written before a
step are still there after it (counts, keys and key fields). And the contract that lets workers of two
releases share one database during a rolling upgrade: every migration declares itself additive or breaking,
and additive ones only add (checked on their source and on the schema they produce).
tests/test_rolling_upgrade.py runs this code on the schema of the release to come."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Boolean, DateTime, Engine, Float, Integer, MetaData, Numeric, Table, inspect
from sqlalchemy.engine import Connection
from tests.db_fixtures import empty_engine_fixture  # noqa: F401  (the empty_engine fixture)
from tests.next_release import BREAKING_DOWNGRADE, BREAKING_UPGRADE, next_release_config, write_migration

from cxstack.store.db import (
    ADDITIVE,
    BEGIN_MODE_OPTION,
    COMPATIBILITY_KINDS,
    SCHEMA_COMPAT_TABLE,
    alembic_config,
    migration_compatibility,
)

# Columns whose values no migration may change; the others (status names, derived flags) some data
# migrations rewrite on purpose (0002 renames conversation statuses, 0003 outbox ones).
KEY_COLUMNS = ("conversation_id", "message_id", "customer_id", "channel", "text", "created_at", "external_id")
# Rows some data migrations parse, so these hold what the code writes rather than filler.
REALISTIC: dict[tuple[str, str], Any] = {
    ("traces", "steps"): [],
    ("traces", "decision"): "continue",
    ("traces", "outcome"): "automated",
    ("conversations", "state"): {},
}
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


@contextmanager
def _migration(engine: Engine) -> Iterator[Connection]:
    """A connection as `cxstack.store.db.migrate` sets it up: SQLite's foreign keys off while a table is
    copied, PostgreSQL in one transaction."""
    with engine.connect() as connection:
        raw: Any = None
        if engine.dialect.name == "sqlite":
            connection = connection.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
            raw = connection.connection.driver_connection
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                yield connection
                if raw is not None:
                    assert connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = ON")


def _step(engine: Engine, direction: str, target: str) -> None:
    config = alembic_config()
    with _migration(engine) as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, target)


def _tables(engine: Engine) -> MetaData:
    metadata = MetaData()
    metadata.reflect(engine)
    for bookkeeping in ("alembic_version", SCHEMA_COMPAT_TABLE):  # written by the migration run itself
        if bookkeeping in metadata.tables:
            metadata.remove(metadata.tables[bookkeeping])
    return metadata


def _value(table: Table, column: Any, n: int, tag: str, rows: dict[str, dict[str, Any]]) -> Any:
    if (table.name, column.name) in REALISTIC:
        return REALISTIC[(table.name, column.name)]
    for key in column.foreign_keys:
        parent = rows.get(key.column.table.name)
        if parent is not None:
            return parent[key.column.name]
    kind = column.type
    if isinstance(kind, Boolean):
        return n % 2 == 0
    if isinstance(kind, DateTime):
        return T0 + timedelta(minutes=n)
    if isinstance(kind, Integer):
        return n
    if isinstance(kind, Float | Numeric):
        return 0.5
    if isinstance(kind, JSON) or type(kind).__name__ in ("JSONB", "JSONType"):
        return {"step": tag}
    return f"{table.name}.{column.name}.{tag}"


def _insert_rows(engine: Engine, tag: str, n: int) -> None:
    """One row in every table, children pointing at this step's parents."""
    metadata = _tables(engine)
    rows: dict[str, dict[str, Any]] = {}
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            row = {column.name: _value(table, column, n, tag, rows) for column in table.columns}
            connection.execute(table.insert().values(**row))
            rows[table.name] = row


def _snapshot(engine: Engine) -> Snapshot:
    snapshot: Snapshot = {}
    metadata = _tables(engine)
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            key = [column.name for column in table.primary_key.columns] or [c.name for c in table.columns]
            kept = [name for name in KEY_COLUMNS if name in table.columns]
            snapshot[table.name] = {
                tuple(row[name] for name in key): {name: row[name] for name in kept}
                for row in connection.execute(table.select()).mappings()
            }
    return snapshot


def _assert_kept(before: Snapshot, after: Snapshot, step: str) -> None:
    for table, rows in before.items():
        if table not in after:
            continue  # the step created it (going down) or the step drops it with its rows (going down)
        assert after[table].keys() == rows.keys(), f"{step}: rows of {table} changed"
        for key, fields in rows.items():
            kept = {name: after[table][key][name] for name in fields if name in after[table][key]}
            assert kept == {name: fields[name] for name in kept}, f"{step}: {table} {key}"


def test_every_migration_keeps_the_rows_up_and_down(empty_engine: Engine) -> None:
    revisions = _revisions()
    assert revisions[0] == "0001" and len(revisions) >= 11
    counts: list[int] = []
    for n, revision in enumerate(revisions):
        before = _snapshot(empty_engine)
        _step(empty_engine, "upgrade", revision)
        _assert_kept(before, _snapshot(empty_engine), f"up to {revision}")
        _insert_rows(empty_engine, revision, n)
        counts.append(sum(len(rows) for rows in _snapshot(empty_engine).values()))
    at_head = _snapshot(empty_engine)
    assert all(len(rows) >= 1 for rows in at_head.values()), "every table holds a row at head"
    assert len(at_head["conversations"]) == len(revisions)

    for revision in reversed(revisions[:-1]):  # down, one step at a time, to the first revision
        before = _snapshot(empty_engine)
        _step(empty_engine, "downgrade", revision)
        _assert_kept(before, _snapshot(empty_engine), f"down to {revision}")
    assert len(_snapshot(empty_engine)["conversations"]) == len(revisions)

    for revision in revisions[1:]:  # and up again over the same rows
        before = _snapshot(empty_engine)
        _step(empty_engine, "upgrade", revision)
        _assert_kept(before, _snapshot(empty_engine), f"up again to {revision}")
    again = _snapshot(empty_engine)
    for table in ("conversations", "messages", "traces", "outbox", "escalations"):
        assert again[table].keys() == at_head[table].keys(), table
    assert counts == sorted(counts)

    _step(empty_engine, "downgrade", "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}


# ---- side by side: additive migrations only -------------------------------------------------------------

# Operations that break code of the previous release while both run on one database.
_BREAKING = {"drop_column", "drop_table", "rename_table", "drop_constraint"}
_BREAKING_SQL = ("DROP COLUMN", "DROP TABLE", "RENAME ")


def _breaking_calls(source: str) -> list[str]:
    tree = ast.parse(source)
    [upgrade] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"]
    problems: list[str] = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        keywords = {kw.arg: kw.value for kw in node.keywords}
        sql = " ".join(
            arg.value.upper()
            for arg in node.args
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
        )
        if name == "execute" and any(words in sql for words in _BREAKING_SQL):
            problems.append(f"execute() of a dropping or renaming statement at line {node.lineno}")
        elif name in _BREAKING:
            problems.append(f"{name}() at line {node.lineno}")
        elif name == "alter_column" and ({"new_column_name", "type_"} & set(keywords) or _false(keywords)):
            problems.append(f"alter_column() renaming, retyping or making NOT NULL at line {node.lineno}")
        elif name == "add_column":
            column = next((arg for arg in node.args if isinstance(arg, ast.Call)), None)
            column_keywords = {kw.arg: kw.value for kw in column.keywords} if column is not None else {}
            nullable = column_keywords.get("nullable")
            if (
                isinstance(nullable, ast.Constant)
                and nullable.value is False
                and "server_default" not in column_keywords
            ):
                problems.append(f"add_column() NOT NULL without a server default at line {node.lineno}")
    return problems


def _false(keywords: dict[str | None, ast.expr]) -> bool:
    nullable = keywords.get("nullable")
    return isinstance(nullable, ast.Constant) and nullable.value is False


@pytest.mark.parametrize("revision", _revisions())
def test_every_migration_declares_whether_it_is_additive_or_breaking(revision: str) -> None:
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    assert script is not None
    declared = getattr(script.module, "compatibility", None)
    assert declared in COMPATIBILITY_KINDS, f"{revision}: compatibility = {declared!r}"
    since = getattr(script.module, "compatible_since", None)
    if since is not None:
        assert declared != ADDITIVE and since in _revisions()[: _revisions().index(revision)], revision
    if declared == ADDITIVE:
        assert _breaking_calls(Path(script.path).read_text()) == [], revision


def test_the_additive_check_catches_a_breaking_upgrade() -> None:
    source = """
def upgrade():
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("text")
        batch.alter_column("channel", new_column_name="via")
        batch.add_column(sa.Column("must", sa.String(), nullable=False))
        batch.add_column(sa.Column("fine", sa.String(), nullable=False, server_default="x"))
        batch.add_column(sa.Column("also_fine", sa.String(), nullable=True))
    op.execute("ALTER TABLE outbox RENAME COLUMN text TO body")
    op.execute("UPDATE outbox SET status = 'dead' WHERE status = 'failed'")
"""
    found = sorted(_breaking_calls(source), key=lambda problem: int(problem.rsplit(" ", 1)[1]))
    assert [problem.split("(")[0] for problem in found] == [
        "drop_column",
        "alter_column",
        "add_column",
        "execute",
    ]


@pytest.mark.parametrize("revision", _revisions())
def test_every_migration_has_a_downgrade(revision: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    module = script.get_revision(revision).module
    source = ast.parse(Path(module.__file__).read_text())
    [downgrade] = [
        node for node in source.body if isinstance(node, ast.FunctionDef) and node.name == "downgrade"
    ]
    assert not (len(downgrade.body) == 1 and isinstance(downgrade.body[0], ast.Pass | ast.Raise)), revision


# ---- additive steps, checked on the schema they produce ------------------------------------------------

Schema = dict[str, dict[str, Any]]


def _schema(engine: Engine) -> Schema:
    """What code of an earlier revision depends on, per table: columns (type, nullable, server default),
    primary key, unique sets, foreign keys and checks."""
    inspector = inspect(engine)
    schema: Schema = {}
    for table in inspector.get_table_names():
        if table in ("alembic_version", SCHEMA_COMPAT_TABLE):
            continue
        unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
        unique |= {tuple(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]}
        schema[table] = {
            "columns": {
                c["name"]: (type(c["type"]).__name__, c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            },
            "primary key": tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            "unique": unique,
            "foreign key": {tuple(fk["constrained_columns"]) for fk in inspector.get_foreign_keys(table)},
            "check": {str(ck["sqltext"]) for ck in inspector.get_check_constraints(table)},
        }
    return schema


def schema_breaks(before: Schema, after: Schema) -> list[str]:
    """What a step did that code of the revision before it may trip on (empty for an additive step)."""
    problems: list[str] = []
    for table, old in before.items():
        new = after.get(table)
        if new is None:
            problems.append(f"drops table {table}")
            continue
        for column, (kind, nullable, _) in old["columns"].items():
            if column not in new["columns"]:
                problems.append(f"drops {table}.{column}")
                continue
            new_kind, new_nullable, _ = new["columns"][column]
            if new_kind != kind:
                problems.append(f"retypes {table}.{column} from {kind} to {new_kind}")
            if nullable and not new_nullable:
                problems.append(f"makes {table}.{column} NOT NULL")
        for column, (_, nullable, default) in new["columns"].items():
            if column not in old["columns"] and not nullable and default is None:
                problems.append(f"adds {table}.{column} NOT NULL without a server default")
        if new["primary key"] != old["primary key"]:
            problems.append(f"changes the primary key of {table}")
        for kind in ("unique", "foreign key"):
            for columns in new[kind] - old[kind]:
                # On new columns only, older code writes NULL there, which neither constraint refuses.
                if set(columns) & set(old["columns"]):
                    problems.append(f"adds a {kind} on {table}{columns}")
        problems.extend(f"adds a check on {table}: {check}" for check in new["check"] - old["check"])
    return problems


def test_additive_migrations_only_add_to_the_schema(empty_engine: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    before = _schema(empty_engine)
    checked = []
    for revision in _revisions():
        _step(empty_engine, "upgrade", revision)
        after = _schema(empty_engine)
        migration = script.get_revision(revision)
        assert migration is not None
        if migration_compatibility(migration) == ADDITIVE:
            assert schema_breaks(before, after) == [], revision
            checked.append(revision)
        before = after
    assert len(checked) >= 7


def test_the_schema_check_catches_a_step_that_says_additive_but_is_not(
    empty_engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "next"
    # The source check does not see this one (a default added, then removed): the schema check does.
    lying = write_migration(
        folder, "0099_not_additive", kind=ADDITIVE, upgrade=BREAKING_UPGRADE, downgrade=BREAKING_DOWNGRADE
    )
    assert _breaking_calls((folder / f"{lying}.py").read_text()) == []
    _step(empty_engine, "upgrade", "heads")
    before = _schema(empty_engine)
    config = next_release_config(folder)
    with _migration(empty_engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, lying)
    assert schema_breaks(before, _schema(empty_engine)) == [
        "adds messages.language NOT NULL without a server default"
    ]
