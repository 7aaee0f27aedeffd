"""Operations: liveness and readiness probes, per-process queue gauges on /metrics, JSON log lines that carry
the conversation id, and the refusal to open a database of a newer schema."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session
from tests.db_fixtures import empty_engine_fixture, pg_schema_url_fixture  # noqa: F401  (fixtures)
from tests.processes import free_port, start_worker
from typer.testing import CliRunner

from cxstack.api.app import create_api
from cxstack.app import Settings, build
from cxstack.cli.main import app as cli
from cxstack.domain.models import utcnow
from cxstack.logs import JsonFormatter, log_format
from cxstack.store.db import (
    SchemaTooNewError,
    alembic_config,
    create_engine_for,
    current_revision,
    head_revision,
    migrate,
)
from cxstack.store.orm import ConversationRow, OutboxRow
from cxstack.testing.authz import make_role_keys
from cxstack.testing.store_contract import inbound, make_commit
from cxstack.workspace.loader import load_workspace

FUTURE = "0099_from_the_next_release"

# ---- the schema guard


def test_a_database_of_a_newer_schema_is_refused_with_both_versions_named(empty_engine: Engine) -> None:
    migrate(empty_engine)
    with empty_engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    head = head_revision()
    with pytest.raises(SchemaTooNewError) as refused:
        migrate(empty_engine)
    assert str(refused.value) == (
        f"database schema is at {FUTURE}, this cxstack knows up to {head}: the database does not say that "
        "code of an earlier release may run on it; upgrade cxstack (or point CXSTACK_DATABASE_URL at this "
        "version's database); nothing was changed"
    )
    assert (refused.value.database, refused.value.known) == (FUTURE, head)
    assert current_revision(empty_engine) == FUTURE  # never downgraded, nothing touched
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM handoff_exports")).scalar_one() == 0


def test_an_older_database_is_still_migrated(empty_engine: Engine) -> None:
    config = alembic_config()
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0011_outbox_content")
    migrate(empty_engine)
    assert current_revision(empty_engine) == head_revision()


def test_a_process_building_the_service_on_a_newer_database_refuses(tmp_path: Path, shop_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", embedder="hashing")
    build(settings, workspace=load_workspace(shop_path))
    raw = create_engine_for(settings.resolved_database_url())
    with raw.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    raw.dispose()
    with pytest.raises(SchemaTooNewError, match=f"database schema is at {FUTURE}, this cxstack knows up to"):
        build(settings, workspace=load_workspace(shop_path))


# ---- probes


def test_health_and_ready_when_all_is_well(tmp_path: Path, shop_path: Path) -> None:
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    with TestClient(create_api(cx)) as client:
        health = client.get("/health")
        ready = client.get("/ready")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["db_ok"] is True
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["failing"] == []
    states = {check["name"]: check["state"] for check in body["checks"]}
    assert states == {"store": "ok", "schema": "ok", "engine": "ok", "worker": "ok"}
    assert "/ready" in client.get("/openapi.json").json()["paths"]


def test_ready_names_a_schema_behind_the_code_and_a_worker_not_running(
    tmp_path: Path, shop_path: Path
) -> None:
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    engine: Engine = cx.store.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0011_outbox_content'"))
    client = TestClient(create_api(cx))  # no lifespan: the turn worker never started
    ready = client.get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready" and body["failing"] == ["schema", "worker"]
    detail = {check["name"]: check["detail"] for check in body["checks"]}
    assert detail["schema"] == (
        f"database schema is at 0011_outbox_content, this cxstack is at {head_revision()}: run the migrations"
    )
    assert detail["worker"] == "turn worker not started"
    assert client.get("/health").status_code == 200  # liveness: still answering


def test_ready_says_not_applicable_for_a_process_that_runs_no_turns(tmp_path: Path, shop_path: Path) -> None:
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    cx.runtime.runs_turns = False  # type: ignore[union-attr]  # what an API-only runtime declares
    ready = TestClient(create_api(cx)).get("/ready")
    assert ready.status_code == 200, ready.text
    [worker] = [check for check in ready.json()["checks"] if check["name"] == "worker"]
    assert worker == {"name": "worker", "state": "not_applicable", "detail": "this process runs no turns"}


# ---- /metrics


def _gauge(text_format: str, name: str) -> tuple[str, float]:
    [line] = [row for row in text_format.splitlines() if row.startswith(name + "{")]
    labels, value = line.rsplit(" ", 1)
    return labels, float(value)


def test_metrics_carry_queue_depth_ages_and_leases_per_process(tmp_path: Path, shop_path: Path) -> None:
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    store = cx.store
    for n, conversation in enumerate(("c-1", "c-2", "c-3")):
        message = store.ingest(inbound(f"m-{n}", conversation=conversation)).message
        store.commit_turn(make_commit(conversation, message.id, reply=f"reply {n}"))
    store.ingest(inbound("waiting", conversation="c-4"))
    engine: Engine = store.engine  # type: ignore[attr-defined]
    an_hour_ago = utcnow() - timedelta(hours=1)
    with Session(engine) as session, session.begin():  # through the ORM: timestamps in the store's form
        session.execute(
            update(OutboxRow).where(OutboxRow.conversation_id == "c-1").values(created_at=an_hour_ago)
        )
        session.execute(update(OutboxRow).where(OutboxRow.conversation_id == "c-2").values(status="dead"))
        session.execute(
            update(ConversationRow)
            .where(ConversationRow.id == "c-3")
            .values(lease_owner="worker-that-died", lease_until=utcnow() - timedelta(minutes=5))
        )
    viewer = make_role_keys(store)["viewer"]
    scraped = TestClient(create_api(cx)).get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert scraped.status_code == 200
    body = scraped.text
    labels, pending = _gauge(body, "cxstack_outbox_pending")
    assert pending == 2 and 'role="api"' in labels and 'process="' in labels
    assert _gauge(body, "cxstack_outbox_dead")[1] == 1
    assert 3590 < _gauge(body, "cxstack_outbox_oldest_pending_seconds")[1] < 3700
    assert _gauge(body, "cxstack_pending_conversations")[1] == 1
    assert _gauge(body, "cxstack_leases_held")[1] == 1
    assert 290 < _gauge(body, "cxstack_lease_overdue_seconds")[1] < 400
    assert _gauge(body, "cxstack_handoff_dead")[1] == 0


# ---- JSON logs


def test_log_format_is_human_by_default_and_refuses_an_unknown_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXSTACK_LOG_FORMAT", raising=False)
    assert log_format() == "human"
    monkeypatch.setenv("CXSTACK_LOG_FORMAT", "JSON")
    assert log_format() == "json"
    with pytest.raises(
        ValueError, match="CXSTACK_LOG_FORMAT='xml' is not a log format; use one of human, json"
    ):
        log_format("xml")


async def test_a_turns_log_lines_carry_its_conversation_id(tmp_path: Path, shop_path: Path) -> None:
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("cxstack")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    try:
        await cx.start()
        try:
            for conversation in ("conv-a", "conv-b"):
                await cx.post_message(conversation, "what is your return policy?", customer_id="cus_1")
            await cx.wait_idle()
            logging.getLogger("cxstack.test").info("outside any turn")
        finally:
            await cx.stop()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    turns = [line for line in lines if line["logger"] == "cxstack.orchestration.orchestrator"]
    assert {line["conversation_id"] for line in turns} == {"conv-a", "conv-b"}
    for line in turns:
        assert set(line) >= {"time", "level", "logger", "message", "conversation_id"}
        assert line["level"] == "INFO" and line["message"].startswith("turn ")
    [outside] = [line for line in lines if line["message"] == "outside any turn"]
    assert "conversation_id" not in outside  # the turns' ids did not spill over


def test_an_explicit_conversation_id_wins_over_the_bound_one() -> None:
    record = logging.LogRecord("cxstack.x", logging.WARNING, __file__, 1, "sent %s", ("r-1",), None)
    record.conversation_id = "given"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["conversation_id"] == "given" and entry["message"] == "sent r-1"


# ---- a real `cxstack serve`


def test_serve_with_json_logs_is_ready_and_its_worker_process_logs_the_conversation_id(
    tmp_path: Path, shop_path: Path
) -> None:
    home = tmp_path / "home"
    created = CliRunner().invoke(
        cli, ["keys", "create", "--role", "integration", "--name", "ops", "--home", str(home)]
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    port = free_port()
    command = [
        *(sys.executable, "-m", "cxstack.cli.main", "serve", str(shop_path), "--port", str(port)),
        *("--no-backoffice", "--runtime", "process", "--home", str(home), "--embedder", "hashing"),
    ]
    paths = [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "CXSTACK_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }
    stderr_path = tmp_path / "stderr.log"
    base = f"http://127.0.0.1:{port}"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        try:
            ready = None
            for _ in range(600):  # the router trains first (hashing embedder: seconds)
                assert proc.poll() is None, stderr_path.read_text()
                try:
                    ready = httpx.get(f"{base}/ready", timeout=5)
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            assert ready is not None and ready.status_code == 200, stderr_path.read_text()
            reply = httpx.post(
                f"{base}/v1/conversations/e2e-1/messages?wait=true",
                json={"text": "what is your return policy?", "customer": "cus_1"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            assert reply.status_code == 202 and reply.json()["completed"], reply.text
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lines = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e["logger"] == "uvicorn.error" and "Uvicorn running" in e["message"] for e in entries)
    turns = [e for e in entries if e["logger"] == "cxstack.orchestration.orchestrator"]
    assert [e["conversation_id"] for e in turns] == ["e2e-1"], entries


def test_serve_on_a_newer_database_says_so_in_one_line_and_exits(tmp_path: Path, shop_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "list", "--home", str(home)]).exit_code == 0  # creates the database
    engine = create_engine_for(f"sqlite:///{home / 'cxstack.db'}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    engine.dispose()
    serve = runner.invoke(
        cli, ["serve", str(shop_path), "--home", str(home), "--no-backoffice", "--embedder", "hashing"]
    )
    assert serve.exit_code == 1
    assert f"cannot start: database schema is at {FUTURE}, this cxstack knows up to" in " ".join(
        serve.output.split()
    )
    assert "Traceback" not in serve.output


def test_health_answers_in_time_while_the_database_hangs_and_ready_names_the_store(
    tmp_path: Path, shop_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Queries give up after 3 s instead of 30, so the threads left waiting on the lock end with the test.
    monkeypatch.setattr("cxstack.store.db.SQLITE_BUSY_TIMEOUT_MS", 3000)
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    with TestClient(create_api(cx)) as client:
        assert client.get("/health").json()["db_ok"] is True
        cx.store.engine.dispose()  # type: ignore[attr-defined]  # no connection left that already reads
        blocker = sqlite3.connect(tmp_path / "home" / "cxstack.db", isolation_level=None)
        try:
            # Another process holding SQLite's exclusive lock: every query here waits for it.
            blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
            blocker.execute("BEGIN EXCLUSIVE")
            health = client.get("/health")
            again = client.get("/health")  # waits on the same database check, still hanging
            ready = client.get("/ready")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    assert health.status_code == again.status_code == 200
    assert again.json()["db_ok"] is False
    body = health.json()
    assert body["db_ok"] is False and body["status"] == "degraded"
    # answered from the time limit, before the database itself gave up (3 s)
    assert body["reasons"][0] == "database unreachable: no answer within 0.8 s"
    assert ready.status_code == 503 and ready.json()["failing"][:2] == ["store", "schema"]
    [store] = [check for check in ready.json()["checks"] if check["name"] == "store"]
    assert "database is locked" in store["detail"]


# ---- readiness of a scale-out API process


@pytest.mark.postgres
def test_ready_counts_the_scale_out_workers_and_fails_when_none_is_alive(
    pg_schema_url: str,
    tmp_path: Path,
    shop_path: Path,
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("procrastinate")
    from tests.test_scale_runtime import _env  # the scale-out tests' worker settings

    database_url = pg_schema_url
    monkeypatch.setenv("CXSTACK_SCALE_STALLED_SECONDS", "3")  # read by this API process's readiness check
    env = _env(database_url, tmp_path / "worker-home", backoffice[0])
    settings = Settings(
        home=tmp_path / "api-home",
        database_url=database_url,
        embedder="hashing",
        backoffice_url=backoffice[0],
        monitoring_seconds=0,
        knowledge_reload_seconds=0,
        runtime="procrastinate",
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    log = tmp_path / "worker.log"
    worker = start_worker(shop_path, env, log)
    try:
        with TestClient(create_api(cx)) as client:
            for _ in range(600):
                ready = client.get("/ready")
                if ready.status_code == 200:
                    break
                assert worker.poll() is None, log.read_text()
                time.sleep(0.1)
            assert ready.status_code == 200, (ready.text, log.read_text()[-3000:])
            [check] = [c for c in ready.json()["checks"] if c["name"] == "worker"]
            assert check == {
                "name": "worker",
                "state": "ok",
                "detail": "this process runs no turns; 1 live workers",
            }

            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
            for _ in range(600):  # its heartbeat goes stale after 3 s
                ready = client.get("/ready")
                if ready.status_code == 503:
                    break
                time.sleep(0.1)
            assert ready.status_code == 503 and ready.json()["failing"] == ["worker"], ready.text
            [check] = [c for c in ready.json()["checks"] if c["name"] == "worker"]
            assert "no turn worker has a fresh heartbeat" in check["detail"]
            assert client.get("/health").status_code == 200  # still storing messages: alive
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
