"""The scale-out runtime on one PostgreSQL: an API process (in this test process) defers turns; two
`cxstack worker` processes, each with its own state folder, run them. Every message is answered exactly once
and in order, both workers take jobs, and a worker killed with SIGKILL mid-run loses nothing."""

from __future__ import annotations

import asyncio
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
from tests.processes import (
    FAST_RECOVERY,
    free_port,
    schema_scalar,
    slow_order_lookup,
    start_worker,
    turn_env,
    until,
)
from tests.store_fixtures import fresh_pg_schema

from cxstack.app import CxApp, Settings, build
from cxstack.domain.models import ConversationId, Role
from cxstack.domain.ports import OutboxStatus
from cxstack.testing import pg_server
from cxstack.workspace.loader import load_workspace

pytest.importorskip("procrastinate")

CONVERSATIONS = 10
PER_CONVERSATION = 4
DEADLINE_S = 120.0  # a safety net against a hang, not a timing: CI machines are busy


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, Engine]]:
    """A fresh schema for the test: cxstack's and procrastinate's tables both live there."""
    with fresh_pg_schema("cxstack_scale") as found:
        yield found


def _env(database_url: str, home: Path, backoffice_url: str) -> dict[str, str]:
    return turn_env(database_url, home, backoffice_url, **FAST_RECOVERY)


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

    backend.on("GET", "/orders/{order_id}", handler=slow_order_lookup(0.1))  # a kill lands in a turn
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
        start_worker(shop_path, {**env, "CXSTACK_HOME": str(tmp_path / f"home-{n}")}, log)
        for n, log in zip("ab", logs, strict=True)
    ]
    deadline = time.monotonic() + DEADLINE_S
    try:
        await until(
            lambda: (
                schema_scalar(admin, database_url, "SELECT to_regclass('procrastinate_workers') IS NOT NULL")
                and schema_scalar(admin, database_url, "SELECT count(*) FROM procrastinate_workers") == 2
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
        await until(lambda: _answered(cx, CONVERSATIONS * half), "the first half answered", logs, deadline)
        ran = schema_scalar(
            admin,
            database_url,
            "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs "
            "WHERE task_name = 'cxstack:run_turns' AND status = 'succeeded'",
        )
        assert ran == 2, "both workers ran turn jobs"

        # the second half: worker a dies with SIGKILL inside a turn
        await _post(cx, range(half, PER_CONVERSATION))
        lease_of_a = f"{socket.gethostname()}:{workers[0].pid}:procrastinate"  # its TurnWorker's lease owner
        await until(
            lambda: cx.store.conversations_leased_to(lease_of_a), "a turn in worker a", logs, deadline
        )
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        total = CONVERSATIONS * PER_CONVERSATION
        await until(lambda: _answered(cx, total), "every message answered", logs, deadline)
        released = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'"
        assert schema_scalar(admin, database_url, released) >= 1, "the dead worker's job was released"
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


# ---- commits reach the API processes (LISTEN/NOTIFY) ------------------------------------------------------


def _start_api(workspace: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    cxstack = Path(sys.executable).with_name("cxstack")
    command = [str(cxstack), "serve", str(workspace), "--runtime", "procrastinate", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen([*command, "--no-backoffice"], env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.postgres
def test_a_procrastinate_api_process_hears_the_workers_commits(
    pg_schema: tuple[str, Engine], tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    """`?wait=true` and the widget's stream, through a `serve --runtime procrastinate` process, get the reply
    a worker committed. The API process reads the store only once a minute on its own and the stream's
    heartbeat is two minutes away: only the commit's notification can bring the reply in time."""
    import json

    import httpx

    database_url, _ = pg_schema
    env = {
        **_env(database_url, tmp_path / "api-home", backoffice[0]),
        "CXSTACK_SCALE_WAIT_POLL_SECONDS": "60",
        "CXSTACK_WIDGET_HEARTBEAT_SECONDS": "120",
    }
    logs = [tmp_path / "api.log", tmp_path / "worker.log"]
    port = free_port()
    api = _start_api(shop_path, env, port, logs[0])
    worker = start_worker(shop_path, {**env, "CXSTACK_HOME": str(tmp_path / "worker-home")}, logs[1])
    base = f"http://127.0.0.1:{port}"

    def tails() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)

    try:
        deadline = time.monotonic() + 120
        while True:  # ready: the API process listens and sees a live worker
            assert api.poll() is None and worker.poll() is None, tails()
            assert time.monotonic() < deadline, tails()
            try:
                if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        session = httpx.post(f"{base}/v1/webchat/sessions", json={}, timeout=10).json()
        auth = {"Authorization": f"Bearer {session['token']}"}
        posted = httpx.post(
            f"{base}/v1/webchat/messages?wait=true",
            json={"text": "what is your return policy", "external_id": "m0"},
            headers=auth,
            timeout=30,
        )
        assert posted.status_code == 202, posted.text
        assert posted.json()["completed"] and "30 days" in posted.json()["reply"], (posted.text, tails())

        received: list[dict[str, Any]] = []
        with httpx.stream(
            "GET",
            f"{base}/v1/webchat/stream",
            params={"timeout": 300},
            headers={**auth, "Last-Event-ID": "2"},
            timeout=httpx.Timeout(10, read=45),  # a read waiting past the heartbeat's time fails the test
        ) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")  # the stream is open and waiting
            second = httpx.post(
                f"{base}/v1/webchat/messages",
                json={"text": "how many days do I have to return something", "external_id": "m1"},
                headers=auth,
                timeout=10,
            )
            assert second.status_code == 202, second.text
            for line in lines:
                if line.startswith("data:"):
                    event = json.loads(line.removeprefix("data:"))
                    received.append(event)
                    if event.get("role") == "assistant":
                        break
        assert [e.get("role") for e in received if "role" in e][-1] == "assistant", (received, tails())
        assert "30 days" in received[-1]["text"]
    finally:
        for process in (api, worker):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (api, worker):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


# ---- periodic work once per deployment ---------------------------------------------------------------------


class CountingImap:
    """A mailbox that is always empty and counts the sessions that log in to it: just enough IMAP for
    imaplib's login, select, UID SEARCH and logout."""

    def __init__(self) -> None:
        import socketserver
        import threading

        self.logins = 0
        counter = self
        lock = threading.Lock()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"* OK [CAPABILITY IMAP4rev1] counting stand-in ready\r\n")
                for raw in self.rfile:
                    tag, _, rest = raw.decode().strip().partition(" ")
                    command = rest.split(" ", 1)[0].upper()
                    if command == "CAPABILITY":
                        self.wfile.write(b"* CAPABILITY IMAP4rev1\r\n")
                    elif command == "LOGIN":
                        with lock:
                            counter.logins += 1
                    elif command == "SELECT":
                        self.wfile.write(b"* 0 EXISTS\r\n* 0 RECENT\r\n")
                    elif command == "UID":
                        self.wfile.write(b"* SEARCH\r\n")
                    elif command == "LOGOUT":
                        self.wfile.write(b"* BYE\r\n" + f"{tag} OK done\r\n".encode())
                        return
                    self.wfile.write(f"{tag} OK done\r\n".encode())

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _ran_jobs(admin: Engine, database_url: str, task: str = "cxstack:imap") -> int:
    if not schema_scalar(admin, database_url, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
        return 0  # the worker has not created procrastinate's tables yet
    ran = f"SELECT count(*) FROM procrastinate_jobs WHERE task_name = '{task}' AND status <> 'todo'"
    return int(schema_scalar(admin, database_url, ran))


@pytest.mark.postgres
async def test_two_api_processes_and_a_worker_poll_the_mailbox_once_per_tick(
    pg_schema: tuple[str, Engine],
    tmp_path: Path,
    backoffice: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IMAP polling is a periodic job in a scale-out deployment: the mailbox sees exactly one session per job
    that ran, none from the API processes."""
    from tests.conftest import SHOP, write_workspace

    database_url, admin = pg_schema
    mailbox = CountingImap()
    email_env = {
        "CXSTACK_EMAIL_ADDRESS": "support@shop.test",
        "CXSTACK_SMTP_HOST": "127.0.0.1",
        "CXSTACK_IMAP_HOST": "127.0.0.1",
        "CXSTACK_IMAP_PORT": str(mailbox.port),
        "CXSTACK_IMAP_USER": "support",
        "CXSTACK_IMAP_PASSWORD": "secret",
        "CXSTACK_IMAP_SSL": "false",
        "CXSTACK_IMAP_POLL_SECONDS": "1",
    }
    for name, value in email_env.items():
        monkeypatch.setenv(name, value)  # the API processes below read them as `serve` would
    root = write_workspace(
        tmp_path / "ws", **{"cxstack.yaml": SHOP["cxstack.yaml"] + "channels: [api, email]\n"}
    )
    workspace = load_workspace(root)
    apis = [
        build(
            Settings(
                home=tmp_path / f"api-{n}",
                database_url=database_url,
                embedder="hashing",
                monitoring_seconds=0,
                knowledge_reload_seconds=0,
                runtime="procrastinate",
            ),
            workspace=workspace,
        )
        for n in range(2)
    ]
    log = tmp_path / "worker.log"
    worker = start_worker(root, {**_env(database_url, tmp_path / "w", backoffice[0]), **email_env}, log)
    try:
        for cx in apis:
            await cx.start()
        deadline = time.monotonic() + DEADLINE_S
        await until(lambda: _ran_jobs(admin, database_url) >= 3, "three poll jobs", [log], deadline)
    finally:
        worker.send_signal(signal.SIGTERM)  # running jobs finish first
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        for cx in apis:
            await cx.stop()
        mailbox.close()
    assert worker.returncode == 0, log.read_text()[-3000:]
    ran = _ran_jobs(admin, database_url)
    assert mailbox.logins == ran, f"{mailbox.logins} mailbox sessions for {ran} poll jobs"


# ---- job hygiene -------------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_the_clean_job_removes_old_ended_jobs_with_their_events(pg_schema: tuple[str, Engine]) -> None:
    """Failed, cancelled and aborted jobs older than CXSTACK_SCALE_KEEP_FAILED_HOURS (72) go, events too;
    recent ones and waiting ones stay."""
    from procrastinate.job_context import JobContext
    from procrastinate.jobs import Job

    from cxstack.runtime.jobs import apply_schema, clean, defer_turns, job_app

    database_url, admin = pg_schema
    assert await apply_schema(database_url)
    app = job_app(database_url)
    ended = {"old-failed": "failed", "old-cancelled": "cancelled", "old-aborted": "aborted", "new": "failed"}
    async with app.open_async():
        for name in [*ended, "waiting"]:
            assert await defer_turns(app, name)
        schema = database_url.rsplit("%3D", 1)[1]
        with admin.begin() as connection:
            connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
            for name, status in ended.items():
                connection.execute(
                    text(
                        "UPDATE procrastinate_jobs SET status = CAST(:status AS procrastinate_job_status) "
                        "WHERE args->>'conversation_id' = :name"
                    ),
                    {"status": status, "name": name},
                )
            connection.execute(
                text(
                    "UPDATE procrastinate_events SET at = now() - interval '100 hours' WHERE job_id IN "
                    "(SELECT id FROM procrastinate_jobs WHERE args->>'conversation_id' LIKE 'old-%')"
                )
            )
        job = Job(queue="cxstack_periodic", lock=None, queueing_lock=None, task_name="cxstack:clean")
        context = JobContext(app=app, job=job, start_timestamp=time.time(), abort_reason=lambda: None)
        await clean(context, timestamp=int(time.time()))
    left = "SELECT string_agg(args->>'conversation_id', ',' ORDER BY id) FROM procrastinate_jobs"
    assert schema_scalar(admin, database_url, left) == "new,waiting"
    orphans = (
        "SELECT count(*) FROM procrastinate_events WHERE job_id NOT IN (SELECT id FROM procrastinate_jobs)"
    )
    assert schema_scalar(admin, database_url, orphans) == 0


@pytest.mark.postgres
async def test_the_commit_listener_reconnects_and_wakes_every_waiter(
    pg_schema: tuple[str, Engine], tmp_path: Path
) -> None:
    """Its connection cut (what a PostgreSQL restart does), the listener connects again, wakes whoever was
    waiting (a commit may have gone unannounced meanwhile) and hears the next notifications."""
    from cxstack.app import open_store
    from cxstack.runtime.jobs import COMMITS_CHANNEL, ProcrastinateRuntime

    database_url, admin = pg_schema
    runtime = ProcrastinateRuntime(
        database_url, open_store(Settings(home=tmp_path, database_url=database_url))
    )
    await runtime.start()
    try:
        await asyncio.wait_for(runtime.listening.wait(), 30)
        first = runtime.listener_pid
        waiting = asyncio.create_task(runtime.broker.wait(ConversationId("c-missed"), 60))
        await asyncio.sleep(0)
        with admin.begin() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        assert await asyncio.wait_for(waiting, 30), "the reconnected listener woke the waiter"
        assert runtime.listening.is_set() and runtime.listener_pid != first

        heard = asyncio.create_task(runtime.broker.wait(ConversationId("c-next"), 30))
        await asyncio.sleep(0)
        with admin.begin() as connection:
            connection.execute(text("SELECT pg_notify(:channel, 'c-next')"), {"channel": COMMITS_CHANNEL})
        assert await heard
    finally:
        await runtime.stop()


@pytest.mark.postgres
async def test_a_message_whose_worker_dies_three_times_is_set_aside_for_a_person(
    pg_schema: tuple[str, Engine], tmp_path: Path, shop_path: Path
) -> None:
    """The resume that releases a dead worker's turn job counts that turn as failed (as `serve`'s supervisor
    does for its worker process): a poison message is escalated after three deaths, not retried forever."""
    from procrastinate.job_context import JobContext
    from procrastinate.jobs import Job

    from cxstack.runtime.jobs import CONTEXT_KEY, WorkerComponents, answer_pending, apply_schema, job_app
    from cxstack.runtime.jobs import resume as resume_task
    from cxstack.runtime.worker import TurnWorker

    database_url, admin = pg_schema
    settings = Settings(
        home=tmp_path,
        database_url=database_url,
        embedder="hashing",
        burst_window_ms=0,
        runtime="procrastinate",
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    worker = TurnWorker(cx.store, cx.engine.orchestrator, cx.reloader.current, burst_window_ms={})
    components = WorkerComponents(cx=cx, worker=worker, monitoring_seconds=0)
    await cx.post_message("poison", "what is your return policy", customer_id=SAM_ID, verified=True)
    cid = ConversationId("poison")
    await apply_schema(database_url)
    app = job_app(database_url)
    schema = database_url.rsplit("%3D", 1)[1]
    async with app.open_async():
        job = Job(queue="cxstack_periodic", lock=None, queueing_lock=None, task_name="cxstack:resume")
        context = JobContext(
            app=app,
            job=job,
            start_timestamp=time.time(),
            abort_reason=lambda: None,
            additional_context={CONTEXT_KEY: components},
        )
        for death in range(1, 4):
            with admin.begin() as connection:  # a worker took the conversation's job, then went silent
                connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
                connection.execute(
                    text(
                        "WITH dead AS (INSERT INTO procrastinate_workers (last_heartbeat) "
                        "VALUES (now() - interval '1 hour') RETURNING id) "
                        "INSERT INTO procrastinate_jobs "
                        "(queue_name, task_name, lock, args, status, worker_id) "
                        "SELECT 'cxstack_turns', 'cxstack:run_turns', 'conversation:poison', "
                        "'{\"conversation_id\": \"poison\"}', 'doing', id FROM dead"
                    )
                )
            await resume_task(context, int(time.time()))
            [pending] = cx.store.pending_messages(cid)
            assert pending.turn_failures == death
        doing = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
        assert schema_scalar(admin, database_url, doing) == 0, "every dead worker's job released"
    assert await answer_pending(components, cid)
    [trace] = cx.store.list_traces(cid)
    assert trace.reason_code == "internal_error" and not cx.store.pending_messages(cid)
    await worker.stop()
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
    worker = start_worker(shop_path, _env(database_url, tmp_path / "home-w", backoffice_url), log)
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
        await until(registered, "a registered worker", [log], deadline)
        await cx.start()
        await _post(cx, range(1))
        await until(lambda: _answered(cx, CONVERSATIONS), "the first round answered", [log], deadline)
        await asyncio.to_thread(pg.stop, "fast")
        await asyncio.sleep(3)  # past the worker's 1 s heartbeat: it notices
        await asyncio.to_thread(pg.start_again)
        await _post(cx, range(1, 2))
        await until(lambda: _answered(cx, 2 * CONVERSATIONS), "the second round answered", [log], deadline)
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
