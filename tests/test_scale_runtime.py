"""The scale-out runtime on one PostgreSQL: an API process (in this test process) defers turns; two
`cxstack worker` processes, each with its own state folder, run them. Every message is answered exactly once
and in order, both workers take jobs, and a worker killed with SIGKILL mid-run loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from tests.conftest import SAM_ID
from tests.store_fixtures import fresh_pg_schema

from cxstack.app import CxApp, Settings, build
from cxstack.domain.models import ConversationId, Role
from cxstack.domain.ports import OutboxStatus
from cxstack.testing import pg_server
from cxstack.workspace.loader import load_workspace

pytest.importorskip("procrastinate")

CONVERSATIONS = 10
PER_CONVERSATION = 4
DEADLINE_S = 45.0


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, Engine]]:
    """A fresh schema for the test: cxstack's and procrastinate's tables both live there."""
    with fresh_pg_schema("cxstack_scale") as found:
        yield found


def _env(database_url: str, home: Path, backoffice_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CXSTACK_DATABASE_URL": database_url,
        "CXSTACK_HOME": str(home),
        "CXSTACK_EMBEDDER": "hashing",
        "CXSTACK_BACKOFFICE_URL": backoffice_url,
        "CXSTACK_BURST_WINDOW_MS": "0",  # each message its own turn: reply i answers message i
        "CXSTACK_MONITORING_SECONDS": "0",
        "CXSTACK_KNOWLEDGE_RELOAD_SECONDS": "0",
        # a killed worker's conversations and jobs come back in seconds, not a minute
        "CXSTACK_SCALE_LEASE_SECONDS": "3",
        "CXSTACK_SCALE_STALLED_SECONDS": "3",
        "CXSTACK_SCALE_HEARTBEAT_SECONDS": "1",
        "CXSTACK_SCALE_KEEP_JOBS": "1",
    }


def _start_worker(workspace: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cxstack = Path(sys.executable).with_name("cxstack")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(cxstack), "worker", str(workspace), "--concurrency", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _scalar(engine: Engine, schema_url: str, sql: str) -> Any:
    schema = schema_url.rsplit("%3D", 1)[1]
    with engine.connect() as connection:
        connection.execute(text(f'SET search_path TO "{schema}"'))
        return connection.execute(text(sql)).scalar()


async def _until(check: Any, what: str, logs: list[Path], deadline: float) -> None:
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        await asyncio.sleep(0.1)


async def _post(cx: CxApp, rounds: range) -> None:
    for i in rounds:
        for k in range(CONVERSATIONS):
            await cx.post_message(
                f"scale{k}",
                f"where is my order ORD-{k + 1:02d}{i:03d}?",
                external_id=f"m{k}-{i}",
                customer_id=SAM_ID,
                verified=True,
            )


def _answered(cx: CxApp, upto: int) -> bool:
    """`upto` turns ran, nothing is pending and every reply left the outbox (the workers' delivery job)."""
    traces = cx.store.list_traces(limit=10_000)
    return (
        len(traces) >= upto
        and not cx.store.conversations_with_pending()
        and cx.store.count_outbox(OutboxStatus.PENDING) == 0
    )


def test_the_scale_out_runtime_refuses_sqlite_with_a_clear_message(tmp_path: Path, shop_path: Path) -> None:
    from typer.testing import CliRunner

    from cxstack.cli.main import app
    from cxstack.runtime.jobs import ScaleRuntimeUnavailableError

    settings = Settings(home=tmp_path, embedder="hashing", runtime="procrastinate")
    with pytest.raises(ScaleRuntimeUnavailableError, match="needs PostgreSQL, not sqlite"):
        build(settings, workspace=load_workspace(shop_path))
    result = CliRunner().invoke(
        app, ["worker", str(shop_path), "--home", str(tmp_path)], env={"CXSTACK_DATABASE_URL": ""}
    )
    assert result.exit_code == 1
    assert "needs PostgreSQL, not sqlite" in result.output


@pytest.mark.postgres
async def test_workers_share_turns_keep_order_and_survive_a_kill(
    pg_schema: tuple[str, Engine], tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    database_url, admin = pg_schema
    url, backend = backoffice

    def slow_lookup(request: Any) -> Any:
        from cxstack.testing.http_standin import Reply

        time.sleep(0.1)  # a turn lasts long enough for the kill below to land inside one
        return Reply(200, {"status": f"shipped ({request.path_params['order_id']})"})

    backend.on("GET", "/orders/{order_id}", handler=slow_lookup)
    env = _env(database_url, tmp_path / "api-home", url)
    settings = Settings(
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
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [
        _start_worker(shop_path, {**env, "CXSTACK_HOME": str(tmp_path / f"home-{n}")}, log)
        for n, log in zip("ab", logs, strict=True)
    ]
    deadline = time.monotonic() + DEADLINE_S
    try:
        await _until(
            lambda: (
                _scalar(admin, database_url, "SELECT to_regclass('procrastinate_workers') IS NOT NULL")
                and _scalar(admin, database_url, "SELECT count(*) FROM procrastinate_workers") == 2
            ),
            "two registered workers",
            logs,
            deadline,
        )
        await cx.start()
        from cxstack.runtime.jobs import ProcrastinateRuntime

        assert isinstance(cx.runtime, ProcrastinateRuntime) and await cx.runtime.live_workers() == 2
        half = PER_CONVERSATION // 2
        await _post(cx, range(half))
        await _until(lambda: _answered(cx, CONVERSATIONS * half), "the first half answered", logs, deadline)
        ran = _scalar(
            admin,
            database_url,
            "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs "
            "WHERE task_name = 'cxstack:run_turns' AND status = 'succeeded'",
        )
        assert ran == 2, "both workers ran turn jobs"

        # the second half: worker a dies with SIGKILL inside a turn
        await _post(cx, range(half, PER_CONVERSATION))
        lease_of_a = f"{socket.gethostname()}:{workers[0].pid}:procrastinate"  # its TurnWorker's lease owner
        await _until(
            lambda: cx.store.conversations_leased_to(lease_of_a), "a turn in worker a", logs, deadline
        )
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        total = CONVERSATIONS * PER_CONVERSATION
        await _until(lambda: _answered(cx, total), "every message answered", logs, deadline)
        released = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'"
        assert _scalar(admin, database_url, released) >= 1, "the dead worker's job was released"
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        await cx.stop()

    assert workers[1].returncode == 0, "SIGTERM stops a worker cleanly"
    traces = cx.store.list_traces(limit=10_000)
    per_message = Counter(t.message_id for t in traces)
    for k in range(CONVERSATIONS):
        cid = ConversationId(f"scale{k}")
        messages = cx.store.list_messages(cid)
        inbound = [m for m in messages if m.role == Role.CUSTOMER]
        replies = [m for m in messages if m.role == Role.ASSISTANT]
        assert [m.external_id for m in inbound] == [f"m{k}-{i}" for i in range(PER_CONVERSATION)]
        assert all(per_message[m.id] == 1 for m in inbound), "every message answered exactly once"
        assert len(replies) == PER_CONVERSATION, "no double replies"
        sent = cx.store.outbox_for(cid)
        assert len(sent) == PER_CONVERSATION and all(item.status == OutboxStatus.SENT for item in sent)
        ordered = sorted(cx.store.list_traces(cid), key=lambda t: t.created_at)
        assert [t.message_id for t in ordered] == [m.id for m in inbound], "turns ran in arrival order"
        for i, reply in enumerate(sorted(replies, key=lambda m: m.created_at)):
            assert f"ORD-{k + 1:02d}{i:03d}" in reply.text, "reply i answers message i"


async def test_a_job_answers_what_is_pending_and_drops_a_deleted_conversation(
    tmp_path: Path, shop_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cxstack.runtime.jobs import WorkerComponents, answer_pending
    from cxstack.runtime.worker import TurnWorker

    cx = build(
        Settings(home=tmp_path, embedder="hashing", burst_window_ms=0), workspace=load_workspace(shop_path)
    )
    worker = TurnWorker(cx.store, cx.engine.orchestrator, cx.reloader.current, burst_window_ms={})
    components = WorkerComponents(cx=cx, worker=worker, monitoring_seconds=0)
    await cx.post_message("j1", "what is your return policy", customer_id=SAM_ID, verified=True)

    assert await answer_pending(components, ConversationId("j1"))
    assert await answer_pending(components, ConversationId("j1")), "a job run twice finds nothing to answer"
    assert [t.outcome for t in cx.store.list_traces(ConversationId("j1"))] == ["automated"]
    assert not await answer_pending(components, ConversationId("gone"))
    assert "conversation gone no longer exists; job dropped" in caplog.text
    await cx.stop()


@pytest.mark.postgres
@pytest.mark.skipif(not pg_server.available(), reason="needs the PostgreSQL server binaries (initdb)")
async def test_a_worker_rides_through_a_postgresql_restart(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    """PostgreSQL stopped for a few seconds (a server of the test's own) and started again: procrastinate's
    worker stops on its failed heartbeat; `cxstack worker` starts it again and answers what comes next, and
    the API process stores and defers through its own reconnects."""
    url, _ = backoffice
    pg = pg_server.PgServer(tmp_path / "pg")
    pg.start()
    try:
        database_url = pg.create_database("ride")
        await _ride_through(pg, database_url, tmp_path, shop_path, url)
    finally:
        pg.remove()


async def _ride_through(
    pg: pg_server.PgServer, database_url: str, tmp_path: Path, shop_path: Path, backoffice_url: str
) -> None:
    settings = Settings(
        home=tmp_path / "api-home",
        database_url=database_url,
        embedder="hashing",
        backoffice_url=backoffice_url,
        burst_window_ms=0,
        monitoring_seconds=0,
        knowledge_reload_seconds=0,
        runtime="procrastinate",
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    log = tmp_path / "worker.log"
    worker = _start_worker(shop_path, _env(database_url, tmp_path / "home-w", backoffice_url), log)
    deadline = time.monotonic() + 3 * DEADLINE_S  # a worker's start on a busy machine

    def registered() -> bool:
        from cxstack.runtime.jobs import conninfo

        with psycopg.connect(conninfo(database_url), autocommit=True) as connection:
            row = connection.execute("SELECT to_regclass('procrastinate_workers') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return False
            found = connection.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
            return bool(found and found[0] == 1)

    try:
        await _until(registered, "a registered worker", [log], deadline)
        await cx.start()
        await _post(cx, range(1))
        await _until(lambda: _answered(cx, CONVERSATIONS), "the first round answered", [log], deadline)
        await asyncio.to_thread(pg.stop, "fast")
        await asyncio.sleep(3)  # past the worker's 1 s heartbeat: it notices
        await asyncio.to_thread(pg.start_again)
        await _post(cx, range(1, 2))
        await _until(lambda: _answered(cx, 2 * CONVERSATIONS), "the second round answered", [log], deadline)
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        await cx.stop()
    assert worker.returncode == 0, "SIGTERM still stops it cleanly"
    assert "starting it again" in log.read_text()
    per_message = Counter(t.message_id for t in cx.store.list_traces(limit=10_000))
    assert len(per_message) == 2 * CONVERSATIONS and set(per_message.values()) == {1}
