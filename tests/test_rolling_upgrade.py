"""A rolling upgrade: the next release migrates the database, and this release's processes keep running on it
(or start on it) while the next one's replace them, when every step between is additive; a breaking step makes
this release refuse with both revisions named. "The next release" is this code plus a migration in an extra
Alembic folder (tests/next_release.py)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text
from tests.conftest import SAM_ID
from tests.db_fixtures import empty_engine_fixture  # noqa: F401  (the empty_engine fixture)
from tests.next_release import (
    ADDITIVE_DOWNGRADE,
    ADDITIVE_UPGRADE,
    BREAKING_DOWNGRADE,
    BREAKING_UPGRADE,
    next_release_config,
    next_release_env,
    write_migration,
)
from tests.processes import registered_workers, schema_scalar, start_worker, turn_env, until
from tests.store_fixtures import TABLES, fresh_pg_schema

from cxstack.api.app import create_api
from cxstack.app import CxApp, Settings, build
from cxstack.domain.models import ConversationId, Role
from cxstack.domain.ports import OutboxStatus, Store
from cxstack.store.db import (
    ADDITIVE,
    BREAKING,
    SchemaTooNewError,
    create_engine_for,
    current_revision,
    head_revision,
    migrate,
    schema_status,
)
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.store_contract import StoreContract
from cxstack.workspace.loader import load_workspace

NEXT = "0100_next_release"
CONTRACT = "0101_next_release_contract"


def _next_additive(folder: Path) -> Config:
    """The next release's configuration, whose one more step is additive."""
    write_migration(folder, NEXT, kind=ADDITIVE, upgrade=ADDITIVE_UPGRADE, downgrade=ADDITIVE_DOWNGRADE)
    return next_release_config(folder)


def _marker(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT revision, oldest_compatible FROM schema_compat")).all()
    return [(row[0], row[1]) for row in rows]


# ---- the rule, in one process


def test_this_release_runs_on_a_database_an_additive_step_ahead_and_never_migrates_it(
    empty_engine: Engine, tmp_path: Path
) -> None:
    migrate(empty_engine)
    ours = head_revision()
    assert ours is not None
    [(at, oldest)] = _marker(empty_engine)
    assert at == ours
    migrate(empty_engine, _next_additive(tmp_path))
    assert current_revision(empty_engine) == NEXT
    assert _marker(empty_engine) == [(NEXT, oldest)], "an additive step keeps the oldest compatible revision"

    migrate(empty_engine)  # what every process of this release does on start
    assert current_revision(empty_engine) == NEXT, "never downgraded"
    with empty_engine.connect() as connection:
        status = schema_status(connection)
    assert (status.state, status.database, status.code, status.oldest_compatible) == (
        "compatible",
        NEXT,
        ours,
        oldest,
    )
    assert "language_hint" in {c["name"] for c in inspect(empty_engine).get_columns("messages")}


def test_a_breaking_step_makes_this_release_refuse_with_both_revisions_named(
    empty_engine: Engine, tmp_path: Path
) -> None:
    _next_additive(tmp_path)  # then a breaking one
    write_migration(
        tmp_path, CONTRACT, kind=BREAKING, upgrade=BREAKING_UPGRADE, downgrade=BREAKING_DOWNGRADE, down=NEXT
    )
    migrate(empty_engine, next_release_config(tmp_path))
    assert _marker(empty_engine) == [(CONTRACT, CONTRACT)]
    with pytest.raises(SchemaTooNewError) as refused:
        migrate(empty_engine)
    assert str(refused.value) == (
        f"database schema is at {CONTRACT}, this cxstack knows up to {head_revision()}: the database allows "
        f"code at {CONTRACT} or newer only; upgrade cxstack (or point CXSTACK_DATABASE_URL at this version's "
        "database); nothing was changed"
    )
    assert current_revision(empty_engine) == CONTRACT


def test_a_contract_step_names_the_release_that_stopped_using_what_it_removes(
    empty_engine: Engine, tmp_path: Path
) -> None:
    """Expand, release, contract: the release that stopped using a column (here: this one) keeps running
    while the next one drops it; anything older refuses."""
    ours = head_revision()
    write_migration(
        tmp_path,
        CONTRACT,
        kind=BREAKING,
        upgrade=BREAKING_UPGRADE,
        downgrade=BREAKING_DOWNGRADE,
        compatible_since=ours,
    )
    migrate(empty_engine, next_release_config(tmp_path))
    assert _marker(empty_engine) == [(CONTRACT, ours)]
    migrate(empty_engine)
    assert current_revision(empty_engine) == CONTRACT


def test_compatible_since_cannot_reach_past_an_earlier_breaking_step(
    empty_engine: Engine, tmp_path: Path
) -> None:
    migrate(empty_engine)
    [(_, ours_oldest)] = _marker(empty_engine)
    write_migration(
        tmp_path,
        CONTRACT,
        kind=BREAKING,
        upgrade=BREAKING_UPGRADE,
        downgrade=BREAKING_DOWNGRADE,
        compatible_since="0004_api_keys",  # older than the breaking steps after it
    )
    migrate(empty_engine, next_release_config(tmp_path))
    assert _marker(empty_engine) == [(CONTRACT, ours_oldest)]


def test_going_back_down_rewrites_the_record(empty_engine: Engine, tmp_path: Path) -> None:
    from alembic import command

    migrate(empty_engine)
    [(_, oldest)] = _marker(empty_engine)
    config = _next_additive(tmp_path)
    migrate(empty_engine, config)
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    assert _marker(empty_engine) == [(head_revision(), oldest)]
    with empty_engine.connect() as connection:
        assert schema_status(connection).state == "current"


def test_ready_stays_green_on_a_compatible_newer_schema_and_names_both_revisions(
    tmp_path: Path, shop_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", embedder="hashing")
    cx = build(settings, workspace=load_workspace(shop_path))
    engine = create_engine_for(settings.resolved_database_url())
    migrate(engine, _next_additive(tmp_path / "next"))
    engine.dispose()
    with TestClient(create_api(cx)) as client:
        ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    [schema] = [check for check in ready.json()["checks"] if check["name"] == "schema"]
    assert schema["state"] == "ok"
    assert schema["detail"].startswith(
        f"database schema is at {NEXT}, newer than this cxstack ({head_revision()}) and compatible with it"
    )


# ---- the store contract of this release, on the schema of the next one


@pytest.fixture(scope="module")
def next_schema_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("next-release")
    path = folder / "cxstack.db"
    engine = create_engine_for(f"sqlite:///{path}")
    migrate(engine, _next_additive(folder / "versions"))
    engine.dispose()
    return path


class TestThisReleasesStoreOnTheNextSchemaSqlite(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path, next_schema_sqlite_file: Path) -> Iterator[Store]:
        path = tmp_path / "cxstack.db"
        shutil.copyfile(next_schema_sqlite_file, path)
        engine = create_engine_for(f"sqlite:///{path}")
        migrate(engine)  # as a process of this release starts: leaves it at the next revision
        assert current_revision(engine) == NEXT
        yield SqlAlchemyStore(engine)
        engine.dispose()


@pytest.fixture(scope="module")
def next_schema_pg_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("next-release-pg")
    with fresh_pg_schema("cxstack_next") as (url, _):
        engine = create_engine_for(url)
        migrate(engine, _next_additive(folder))
        migrate(engine)
        assert current_revision(engine) == NEXT
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.mark.postgres
class TestThisReleasesStoreOnTheNextSchemaPostgres(StoreContract):
    @pytest.fixture
    def store(self, next_schema_pg_engine: Engine) -> Store:
        with next_schema_pg_engine.begin() as connection:
            for table in ("conversation_tags", *TABLES):
                connection.execute(text(f"DELETE FROM {table}"))
        return SqlAlchemyStore(next_schema_pg_engine)


def test_this_releases_store_does_trip_on_a_breaking_schema(empty_engine: Engine, tmp_path: Path) -> None:
    """What the refusal above prevents: a NOT NULL column this code does not fill."""
    from sqlalchemy.exc import IntegrityError

    from cxstack.testing.store_contract import inbound

    write_migration(tmp_path, CONTRACT, kind=BREAKING, upgrade=BREAKING_UPGRADE, downgrade=BREAKING_DOWNGRADE)
    migrate(empty_engine, next_release_config(tmp_path))
    with pytest.raises(IntegrityError, match="language"):
        SqlAlchemyStore(empty_engine).ingest(inbound("wa-1"))


# ---- side by side: a worker of this release and one of the next on one PostgreSQL

CONVERSATIONS = 8
PER_CONVERSATION = 3
DEADLINE_S = 90.0


def _env(database_url: str, home: Path, backoffice_url: str) -> dict[str, str]:
    return turn_env(database_url, home, backoffice_url, CXSTACK_LOG_FORMAT="json")


def _answered(cx: CxApp, upto: int) -> bool:
    return (
        len(cx.store.list_traces(limit=10_000)) >= upto
        and not cx.store.conversations_with_pending()
        and cx.store.count_outbox(OutboxStatus.PENDING) == 0
    )


def _problems(log: Path) -> list[str]:
    """Lines at ERROR or above, and tracebacks, in a worker's JSON log (other lines: the console's)."""
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line:
                found.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL"):
            found.append(line)
    return found


@pytest.mark.postgres
async def test_workers_of_this_and_the_next_release_share_one_database_then_a_breaking_step_is_refused(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    pytest.importorskip("procrastinate")
    url, backend = backoffice

    def slow_lookup(request: Any) -> Any:
        from cxstack.testing.http_standin import Reply

        time.sleep(0.05)  # turns last long enough for both workers to take some
        return Reply(200, {"status": f"shipped ({request.path_params['order_id']})"})

    backend.on("GET", "/orders/{order_id}", handler=slow_lookup)
    folder = tmp_path / "next-release"
    _next_additive(folder)
    with fresh_pg_schema("cxstack_rolling") as (database_url, admin):
        logs = [tmp_path / "worker-next.log", tmp_path / "worker-this.log"]
        next_env = next_release_env(
            folder, tmp_path / "shim", _env(database_url, tmp_path / "home-next", url)
        )
        this_env = _env(database_url, tmp_path / "home-this", url)
        deadline = time.monotonic() + DEADLINE_S
        # The next release's worker starts first and migrates; this release's starts on the migrated database.
        workers = [start_worker(shop_path, next_env, logs[0])]
        revision = "SELECT version_num FROM alembic_version"
        try:
            await until(
                lambda: registered_workers(admin, database_url) == 1, "the next worker", logs, deadline
            )
            assert schema_scalar(admin, database_url, revision) == NEXT
            workers.append(start_worker(shop_path, this_env, logs[1]))
            await until(lambda: registered_workers(admin, database_url) == 2, "this worker", logs, deadline)
            settings = Settings(  # an API process of this release
                home=tmp_path / "api-home",
                database_url=database_url,
                embedder="hashing",
                backoffice_url=url,
                burst_window_ms=0,
                monitoring_seconds=0,
                knowledge_reload_seconds=0,
                runtime="procrastinate",
            )
            cx = build(settings, workspace=load_workspace(shop_path))
            await cx.start()
            try:
                for i in range(PER_CONVERSATION):
                    for k in range(CONVERSATIONS):
                        await cx.post_message(
                            f"roll{k}",
                            f"where is my order ORD-{k + 1:02d}{i:03d}?",
                            external_id=f"m{k}-{i}",
                            customer_id=SAM_ID,
                            verified=True,
                        )
                total = CONVERSATIONS * PER_CONVERSATION
                await until(lambda: _answered(cx, total), "every message answered", logs, deadline)
                ran = schema_scalar(
                    admin,
                    database_url,
                    "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs "
                    "WHERE task_name = 'cxstack:run_turns' AND status = 'succeeded'",
                )
                assert ran == 2, "both releases' workers ran turns"
                per_message = Counter(t.message_id for t in cx.store.list_traces(limit=10_000))
                for k in range(CONVERSATIONS):
                    cid = ConversationId(f"roll{k}")
                    messages = cx.store.list_messages(cid)
                    inbound = [m for m in messages if m.role == Role.CUSTOMER]
                    replies = sorted(
                        (m for m in messages if m.role == Role.ASSISTANT), key=lambda m: m.created_at
                    )
                    assert [m.external_id for m in inbound] == [f"m{k}-{i}" for i in range(PER_CONVERSATION)]
                    assert all(per_message[m.id] == 1 for m in inbound), "every message answered exactly once"
                    assert len(replies) == PER_CONVERSATION, "no double replies"
                    for i, reply in enumerate(replies):
                        assert f"ORD-{k + 1:02d}{i:03d}" in reply.text, "reply i answers message i, in order"
                    sent = cx.store.outbox_for(cid)
                    assert len(sent) == PER_CONVERSATION and {item.status for item in sent} == {
                        OutboxStatus.SENT
                    }
            finally:
                await cx.stop()
        finally:
            for process in workers:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in workers:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
        assert [process.returncode for process in workers] == [0, 0], "SIGTERM stops both cleanly"
        assert {log.name: _problems(log) for log in logs} == {log.name: [] for log in logs}
        assert (
            f"database schema is at {NEXT}, newer than this cxstack ({head_revision()})"
            in logs[1].read_text()
        )
        assert schema_scalar(admin, database_url, revision) == NEXT, "never downgraded"

        # The release after: a breaking step. A worker of this release now refuses at start, in one line.
        write_migration(
            folder, CONTRACT, kind=BREAKING, upgrade=BREAKING_UPGRADE, downgrade=BREAKING_DOWNGRADE, down=NEXT
        )
        engine = create_engine_for(database_url)
        migrate(engine, next_release_config(folder))
        engine.dispose()
        refused = subprocess.run(
            [str(Path(sys.executable).with_name("cxstack")), "worker", str(shop_path)],
            env=this_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode == 1, output
        assert (
            f"cannot start: database schema is at {CONTRACT}, this cxstack knows up to {head_revision()}: "
            f"the database allows code at {CONTRACT} or newer only" in output
        )
        assert "Traceback" not in output
        assert schema_scalar(admin, database_url, revision) == CONTRACT


# ---- `cxstack migrate`, the first step of an upgrade


def test_the_migrate_command_says_where_the_database_stands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxstack.cli.main import app as cli

    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    env = {"CXSTACK_DATABASE_URL": ""}
    ours = head_revision()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["migrate", *args, *home], env=env)
        return result.exit_code, " ".join(result.output.split())

    assert run("--check") == (
        1,
        f"database schema at nothing (empty), this cxstack is at {ours}: run `cxstack migrate`",
    )
    assert run() == (0, f"database schema at {ours} (was empty); processes of an older release refuse it")
    assert run("--check") == (0, f"database schema at {ours}; processes of an older release refuse it")

    engine = create_engine_for(f"sqlite:///{tmp_path / 'home' / 'cxstack.db'}")
    migrate(engine, _next_additive(tmp_path / "next"))
    assert run() == (
        0,
        f"database schema is at {NEXT}, newer than this cxstack ({ours}) and compatible with it; "
        "nothing to do: upgrade this cxstack",
    )
    write_migration(
        tmp_path / "next",
        CONTRACT,
        kind=BREAKING,
        upgrade=BREAKING_UPGRADE,
        downgrade=BREAKING_DOWNGRADE,
        down=NEXT,
    )
    migrate(engine, next_release_config(tmp_path / "next"))
    engine.dispose()
    code, output = run()
    assert code == 1
    assert output.startswith(
        f"cannot migrate: database schema is at {CONTRACT}, this cxstack knows up to {ours}"
    )
    assert run("--check")[0] == 1
    assert current_revision(create_engine_for(f"sqlite:///{tmp_path / 'home' / 'cxstack.db'}")) == CONTRACT
