"""Database URL, engine and migrations: SQLite (WAL) under CXSTACK_HOME by default, PostgreSQL to scale."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

DATABASE_URL_ENV = "CXSTACK_DATABASE_URL"
HOME_ENV = "CXSTACK_HOME"
SQLITE_SYNCHRONOUS_ENV = "CXSTACK_SQLITE_SYNCHRONOUS"
SQLITE_SYNCHRONOUS_LEVELS = ("FULL", "EXTRA", "NORMAL")
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Several API or worker processes may start at once against one PostgreSQL; only one may run migrations.
_MIGRATION_LOCK_KEY = 0x63787374  # "cxst"
# Connection option read by the "begin" hook: writers take SQLite's write lock up front (see _sqlite_begin).
BEGIN_MODE_OPTION = "cxstack_sqlite_begin"


def cxstack_home(cwd: Path | None = None) -> Path:
    """Where state lives: $CXSTACK_HOME; else a `.cxstack` folder in the current directory or a parent (the
    one `make run` creates in the project, found again by `cxstack trace` run from anywhere inside it); else
    ~/.cxstack."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".cxstack"
        if candidate.is_dir():
            return candidate
    return Path.home() / ".cxstack"


def database_url(home: Path | None = None) -> str:
    """`CXSTACK_DATABASE_URL` if set, else the SQLite file `cxstack.db` in `home` (default CXSTACK_HOME)."""
    configured = os.environ.get(DATABASE_URL_ENV, "").strip()
    if configured:
        return normalize_url(configured)
    base = home if home is not None else cxstack_home()
    return f"sqlite:///{base.expanduser() / 'cxstack.db'}"


def normalize_url(url: str) -> str:
    """PostgreSQL URLs always go through the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sqlite_synchronous(level: str | None = None) -> str:
    """The SQLite `synchronous` level: `level`, else `CXSTACK_SQLITE_SYNCHRONOUS`, else FULL.

    FULL (the default) syncs the write-ahead log on every commit, so a message acknowledged to a channel
    survives a power cut or a kernel crash, not only a crash of cxstack. NORMAL syncs only at checkpoints:
    still safe when a process is killed, but an OS crash can lose the last commits. The price is in the
    comment where the pragma is set.
    """
    chosen = (level or os.environ.get(SQLITE_SYNCHRONOUS_ENV) or "FULL").strip().upper()
    if chosen not in SQLITE_SYNCHRONOUS_LEVELS:
        raise ValueError(
            f"{SQLITE_SYNCHRONOUS_ENV}={chosen!r} is not a synchronous level cxstack supports; "
            f"use one of {', '.join(SQLITE_SYNCHRONOUS_LEVELS)}"
        )
    return chosen


SQLITE_FULL = 13  # sqlite3's extended error code's primary part: "database or disk is full"
PG_DISK_FULL = "53100"


def storage_full(error: BaseException) -> bool:
    """Whether a store error (SQLAlchemy's, or the driver's under it) says the database's disk is full."""
    orig = getattr(error, "orig", error)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
        return True
    return getattr(orig, "sqlstate", None) == PG_DISK_FULL


def postgres_session_defaults(url: URL) -> dict[str, str]:
    """libpq parameters cxstack adds unless the URL sets them: a name per process, so pg_stat_activity tells
    which host and process holds a connection; and TCP keepalives with a user timeout, so a connection across
    a network that died (a host cut off, a failover) fails in about half a minute, not the kernel's quarter of
    an hour: the worker then rides through and another takes its jobs (Unix sockets ignore them)."""
    defaults = {
        "application_name": f"cxstack@{socket.gethostname()}:{os.getpid()}"[:63],
        "connect_timeout": "10",
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }
    return {name: value for name, value in defaults.items() if name not in url.query}


def database_error_line(error: BaseException) -> str:
    """The first line of the driver's error behind `error` (SQLAlchemy and procrastinate wrap psycopg's, and
    add hints and links on further lines): what a log line about an outage needs, repeated or not."""
    seen = 0
    found: BaseException = error
    while seen < 8:
        inner = getattr(found, "orig", None) or found.__cause__
        if inner is None:
            break
        found, seen = inner, seen + 1
    lines = str(found).strip().splitlines()
    return lines[0].strip() if lines else type(found).__name__


def create_engine_for(
    url: str, *, sqlite_synchronous_level: str | None = None, **engine_options: Any
) -> Engine:
    """An engine configured for cxstack. Extra keyword arguments go to `sqlalchemy.create_engine`.

    `sqlite_synchronous_level` overrides `CXSTACK_SQLITE_SYNCHRONOUS` (see `sqlite_synchronous`)."""
    url = normalize_url(url)
    parsed = make_url(url)
    options: dict[str, Any] = {"json_serializer": _json_dumps}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        options["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if in_memory:
            # One connection shared by every thread, or each would see its own empty database.
            options["poolclass"] = StaticPool
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = engine_options.pop("connect_args", {})
        options["connect_args"].update(connect_args)
        options.update(engine_options)
        engine = create_engine(url, **options)
        _configure_sqlite(engine, wal=not in_memory, synchronous=sqlite_synchronous(sqlite_synchronous_level))
        return engine
    options["pool_pre_ping"] = True
    if parsed.get_backend_name() == "postgresql":
        chosen = engine_options.pop("connect_args", {})
        options["connect_args"] = {**postgres_session_defaults(parsed), **chosen}
    options.update(engine_options)
    return create_engine(url, **options)


def _configure_sqlite(engine: Engine, *, wal: bool, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module so "begin" below decides (SQLAlchemy's
        # documented recipe); the module's own implicit BEGIN would defer the write lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                # FULL by default (see sqlite_synchronous): an acknowledged message must survive an OS crash.
                # Its price, `python -m benchmarks.sqlite_synchronous` (store ingest, one commit per
                # message, WAL, ext4 on the 2-core dev VM, median of 3): 1 thread 1,884 msgs/s FULL vs
                # 3,470 NORMAL (54%); 4 threads 1,769 vs 2,680 (66%). CXSTACK_SQLITE_SYNCHRONOUS=NORMAL
                # buys that back where losing the last commits on a power cut is acceptable; PostgreSQL is
                # the way to scale writes.
                cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes cannot wait for the write lock (SQLite returns
        # SQLITE_BUSY at once to avoid a deadlock), so write transactions start IMMEDIATE and queue instead.
        mode = connection.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# How a migration declares what it does to code of the revision before it (module attribute
# `compatibility`, checked for every migration by tests/test_migrations.py):
# - ADDITIVE (expand): new tables, nullable columns or columns with a server default, new non-unique
#   indexes. Code of the previous revision keeps working on the new schema, and the new code reads what the
#   previous one keeps writing.
# - BREAKING (contract, or a data rewrite): anything else. Code older than the migration refuses the
#   database, unless the migration names in `compatible_since` the oldest revision whose code no longer uses
#   what it removes (the release that stopped using a column, before the one that drops it).
ADDITIVE = "additive"
BREAKING = "breaking"
COMPATIBILITY_KINDS = (ADDITIVE, BREAKING)
# One row per database, written by every migration run (migrations/env.py): the revision the database is at
# and the oldest revision whose code may run on it. Code that does not know the database's revision reads
# it to decide whether it may run anyway.
SCHEMA_COMPAT_TABLE = "schema_compat"

log = logging.getLogger(__name__)


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer cxstack that is not compatible with this code: this code does not
    know its schema and must not touch it (never an automatic downgrade, which would drop the newer release's
    columns and tables and their data)."""

    def __init__(self, database: str, known: str | None, oldest_compatible: str | None = None) -> None:
        self.database = database
        self.known = known
        self.oldest_compatible = oldest_compatible
        if oldest_compatible is None:
            why = "the database does not say that code of an earlier release may run on it"
        else:
            why = f"the database allows code at {oldest_compatible} or newer only"
        super().__init__(
            f"database schema is at {database}, this cxstack knows up to {known}: {why}; upgrade cxstack "
            "(or point CXSTACK_DATABASE_URL at this version's database); nothing was changed"
        )


def migration_compatibility(script: Script) -> str:
    """The migration's declared kind; a migration that declares none counts as breaking."""
    kind = getattr(script.module, "compatibility", BREAKING)
    return kind if kind in COMPATIBILITY_KINDS else BREAKING


def oldest_compatible_revision(scripts: ScriptDirectory, revision: str) -> str:
    """The oldest revision whose code may run on a database at `revision`: back through the additive
    migrations to the last breaking one, or to the revision a breaking one names in `compatible_since` (but
    never past what the migrations before it allow)."""
    chain = [script.revision for script in scripts.walk_revisions(base="base", head=revision)]
    age = {name: n for n, name in enumerate(chain)}  # 0 is `revision`, larger is older
    oldest = revision
    for name in reversed(chain):  # from the first migration up to `revision`
        script = scripts.get_revision(name)
        assert script is not None
        if migration_compatibility(script) == ADDITIVE and isinstance(script.down_revision, str):
            continue  # the code that could run before this step still can
        since = getattr(script.module, "compatible_since", None)
        if isinstance(since, str) and since in age and age[since] > age[name]:
            # Code older than `oldest` could not run before this step either.
            oldest = since if age[since] <= age[oldest] else oldest
        else:
            oldest = name
    return oldest


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database stands against this code: empty, behind (to migrate), current, newer but declared
    compatible with this code (run, never migrate), or too new."""

    database: str | None
    code: str | None
    state: Literal["empty", "behind", "current", "compatible", "too_new"]
    oldest_compatible: str | None = None

    def error(self) -> SchemaTooNewError:
        assert self.database is not None
        return SchemaTooNewError(self.database, self.code, self.oldest_compatible)


def schema_status(connection: Connection, config: Config | None = None) -> SchemaStatus:
    scripts = ScriptDirectory.from_config(config or alembic_config())
    head = scripts.get_current_head()
    current = MigrationContext.configure(connection).get_current_revision()
    known = {script.revision for script in scripts.walk_revisions()}
    if current is None:
        return SchemaStatus(None, head, "empty")
    oldest = recorded_oldest_compatible(connection, current)
    if current in known:
        return SchemaStatus(current, head, "current" if current == head else "behind", oldest)
    state: Literal["compatible", "too_new"] = "compatible" if oldest in known else "too_new"
    return SchemaStatus(current, head, state, oldest)


def recorded_oldest_compatible(connection: Connection, revision: str) -> str | None:
    """What the database says about `revision`: the oldest revision whose code may run on it, if recorded."""
    if not inspect(connection).has_table(SCHEMA_COMPAT_TABLE):
        return None
    found = connection.execute(
        text(f"SELECT oldest_compatible FROM {SCHEMA_COMPAT_TABLE} WHERE revision = :revision"),
        {"revision": revision},
    ).scalar_one_or_none()
    return None if found is None else str(found)


def record_compatibility(connection: Connection, scripts: ScriptDirectory, revision: str | None) -> None:
    """Writes the database's compatibility row for `revision` (the migration run's end), when the table
    exists at that revision. Called by migrations/env.py, so the alembic command line writes it too."""
    if revision is None or not inspect(connection).has_table(SCHEMA_COMPAT_TABLE):
        return
    oldest = oldest_compatible_revision(scripts, revision)
    rows = connection.execute(text(f"SELECT revision, oldest_compatible FROM {SCHEMA_COMPAT_TABLE}")).all()
    if [tuple(row) for row in rows] == [(revision, oldest)]:
        return
    connection.execute(text(f"DELETE FROM {SCHEMA_COMPAT_TABLE}"))
    connection.execute(
        text(f"INSERT INTO {SCHEMA_COMPAT_TABLE} (revision, oldest_compatible) VALUES (:revision, :oldest)"),
        {"revision": revision, "oldest": oldest},
    )


def check_schema_known(connection: Connection, config: Config | None = None) -> SchemaStatus:
    """Where the database stands; raises SchemaTooNewError when it is newer than this code and does not
    allow this code to run on it."""
    status = schema_status(connection, config)
    if status.state == "too_new":
        raise status.error()
    return status


def migrate(engine: Engine, config: Config | None = None) -> None:
    """Upgrade the database to the newest schema (alembic upgrade head), in one transaction. A database of a
    newer schema is left as it is: used when the release that migrated it declared this code compatible
    (see ADDITIVE), refused with both versions named otherwise (SchemaTooNewError). `config` is for tests
    that add migrations of a release to come."""
    config = config or alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        raw: Any = None
        if sqlite:
            connection = connection.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
            # SQLite changes a column by copying the table and dropping the old one, and with foreign keys
            # enforced that DROP fails as soon as other rows point at the table (SQLite's documented
            # procedure). Enforcement can only be switched outside a transaction; the check below stands in.
            raw = connection.connection.driver_connection
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                status = check_schema_known(connection, config)
                if status.state == "compatible":
                    # A newer release migrated it and declared this code compatible: run on it as it is,
                    # never downgrade it (that would drop the newer release's columns and their data). A
                    # warning: fine during a rolling upgrade, a process to replace after it.
                    log.warning(
                        "database schema is at %s, newer than this cxstack (%s) and compatible with it "
                        "(code at %s or newer may run on it): running on it, not migrating; upgrade this "
                        "process",
                        status.database,
                        status.code,
                        status.oldest_compatible,
                    )
                    return
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if sqlite:
                    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if dangling:
                        raise RuntimeError(
                            f"migrating left {len(dangling)} row(s) whose foreign keys point nowhere, "
                            f"e.g. {[tuple(row) for row in dangling[:3]]}; nothing was changed"
                        )
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = ON")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
