"""The one-machine PostgreSQL deployment as `make run-pg` starts it: circusd with deploy/circus.ini, the demo
workspace written by `cxstack init --demo`, 2 API processes behind one port and 2 `cxstack worker`s. Messages
posted over HTTP with the printed admin key are each answered once and in order while one API process and one
worker are killed with SIGKILL (both come back), and Ctrl-C (SIGINT to circusd) leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.processes import free_port
from tests.store_fixtures import fresh_pg_schema

from cxstack.app import Settings, open_store
from cxstack.domain.models import ConversationId, Role
from cxstack.domain.ports import OutboxStatus

pytest.importorskip("procrastinate")
psutil = pytest.importorskip("psutil")  # circus's own dependency

ROOT = Path(__file__).resolve().parents[1]
CONVERSATIONS = 10
PER_CONVERSATION = 4
DEADLINE_S = 150.0  # startup trains the router three times at once on a shared 2-core machine


@pytest.fixture
def pg_schema() -> Iterator[str]:
    with fresh_pg_schema("cxstack_deploy") as (url, _):
        yield url


def _until(check: Callable[[], Any], what: str, log: Path, deadline: float) -> Any:
    while True:
        try:
            found = check()
        except (httpx.HTTPError, psutil.Error):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-6000:]}")
        time.sleep(0.2)


def _tree(circusd: Any) -> dict[str, list[Any]]:
    """The deployment's live processes by role: the serve supervisor, its API processes, the workers."""
    roles: dict[str, list[Any]] = {"serve": [], "api": [], "worker": []}
    for process in circusd.children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if " serve " in command:
            roles["serve"].append(process)
        elif "spawn_main" in command:
            roles["api"].append(process)
        elif " worker " in command:
            roles["worker"].append(process)
    return roles


def _post(base: str, key: str, k: int, i: int) -> None:
    """One message; a request cut by a killed API process is sent again with the same external id (what a
    client does: the second one stores nothing if the first was stored)."""
    body = {"text": "what is your return policy?", "customer_id": "cus_1001", "external_id": f"m{k}-{i}"}
    for _ in range(20):
        try:
            answer = httpx.post(
                f"{base}/v1/conversations/deploy{k}/messages",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        assert answer.status_code in (200, 202), answer.text
        return
    raise AssertionError(f"message m{k}-{i} was never accepted")


@pytest.mark.postgres
def test_make_run_pg_deployment_answers_everything_once_and_survives_kills(
    pg_schema: str, tmp_path: Path
) -> None:
    workspace, home = tmp_path / "demo-workspace", tmp_path / "home"
    cxstack = Path(sys.executable).with_name("cxstack")
    subprocess.run([str(cxstack), "init", "--demo", str(workspace)], check=True, capture_output=True)
    home.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # what `make run-pg` sets
        "PATH": f"{cxstack.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CXSTACK_WORKSPACE": str(workspace),
        "CXSTACK_HOME": str(home),
        "CXSTACK_DATABASE_URL": pg_schema,
        "PORT": str(port),
        "CXSTACK_API_PROCESSES": "2",
        "CXSTACK_WORKERS": "2",
        "CXSTACK_SERVE_OPTIONS": f"--customers {workspace}/samples/customers.csv --bootstrap-admin",
        # this test's own: a free port for the demo back office, a fast embedder, one turn per message, and a
        # killed worker's conversations back in seconds rather than a minute
        "CXSTACK_BACKOFFICE_URL": f"http://127.0.0.1:{free_port()}",
        "CXSTACK_EMBEDDER": "hashing",
        "CXSTACK_BURST_WINDOW_MS": "0",
        "CXSTACK_MONITORING_SECONDS": "0",
        "CXSTACK_KNOWLEDGE_RELOAD_SECONDS": "0",
        "CXSTACK_SCALE_LEASE_SECONDS": "3",
        "CXSTACK_SCALE_STALLED_SECONDS": "3",
        "CXSTACK_SCALE_HEARTBEAT_SECONDS": "1",
    }
    log = tmp_path / "circusd.log"
    with log.open("wb") as out:
        circusd = subprocess.Popen(
            [str(cxstack.with_name("circusd")), "deploy/circus.ini"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    supervisor = psutil.Process(circusd.pid)
    seen: set[int] = set()
    deadline = time.monotonic() + DEADLINE_S
    try:
        key = _until(
            lambda: re.search(r"admin key \('make run demo', shown once\): (\S+)", log.read_text()),
            "the admin key",
            log,
            deadline,
        ).group(1)

        def ready() -> bool:
            answer = httpx.get(f"{base}/ready", timeout=5)
            return answer.status_code == 200 and "2 live workers" in answer.text

        _until(ready, "/ready with 2 live workers", log, deadline)

        def running() -> dict[str, list[Any]] | None:
            now = _tree(supervisor)
            return now if len(now["api"]) == 2 and len(now["worker"]) == 2 else None

        tree = _until(running, "2 API processes and 2 workers", log, deadline)
        assert len(tree["serve"]) == 1
        seen.update(p.pid for role in tree.values() for p in role)
        for k in range(CONVERSATIONS):
            _post(base, key, k, 0)

        # mid-run: one API process and one worker die with SIGKILL while messages come in
        api_victim, worker_victim = tree["api"][0].pid, tree["worker"][0].pid
        os.kill(worker_victim, signal.SIGKILL)
        for k in range(CONVERSATIONS):
            _post(base, key, k, 1)
        os.kill(api_victim, signal.SIGKILL)
        for i in range(2, PER_CONVERSATION):
            for k in range(CONVERSATIONS):
                _post(base, key, k, i)

        def respawned() -> dict[str, list[Any]] | None:
            now = running()
            pids = {p.pid for role in (now or {}).values() for p in role}
            return now if now and not pids & {api_victim, worker_victim} else None

        after = _until(respawned, "a new API process and a new worker", log, deadline)
        seen.update(p.pid for role in after.values() for p in role)
        assert after["serve"][0].pid == tree["serve"][0].pid, "the serve supervisor itself never died"

        store = open_store(Settings(database_url=pg_schema, home=home))
        total = CONVERSATIONS * PER_CONVERSATION

        def answered() -> bool:
            return (
                len(store.list_traces(limit=10_000)) >= total
                and not store.conversations_with_pending()
                and store.count_outbox(OutboxStatus.PENDING) == 0
            )

        _until(answered, "every message answered and sent", log, deadline)
        _until(ready, "/ready with 2 live workers after the kills", log, deadline)
    finally:
        seen.update(p.pid for p in supervisor.children(recursive=True) if p.is_running())
        circusd.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            circusd.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(circusd.pid, signal.SIGKILL)
            circusd.wait(10)
            raise AssertionError(f"circusd did not stop on SIGINT\n{log.read_text()[-4000:]}") from None

    assert circusd.returncode == 0, log.read_text()[-4000:]
    left = [pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not left, f"processes left running after Ctrl-C: {left}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free again

    traces = store.list_traces(limit=10_000)
    per_message = Counter(t.message_id for t in traces)
    for k in range(CONVERSATIONS):
        cid = ConversationId(f"deploy{k}")
        messages = store.list_messages(cid)
        inbound = [m for m in messages if m.role == Role.CUSTOMER]
        replies = [m for m in messages if m.role == Role.ASSISTANT]
        assert [m.external_id for m in inbound] == [f"m{k}-{i}" for i in range(PER_CONVERSATION)], "none lost"
        assert all(per_message[m.id] == 1 for m in inbound), "every message answered exactly once"
        assert len(replies) == PER_CONVERSATION, "no double replies"
        ordered = sorted(store.list_traces(cid), key=lambda t: t.created_at)
        assert [t.message_id for t in ordered] == [m.id for m in inbound], "turns ran in arrival order"
        sent = store.outbox_for(cid)
        assert len(sent) == PER_CONVERSATION and all(item.status == OutboxStatus.SENT for item in sent)
    log_text = log.read_text()
    assert re.search(r"^api +\d+ \| ", log_text, re.M) and re.search(r"^worker +\d+ \| ", log_text, re.M)
    assert "Traceback" not in log_text, log_text[-4000:]


def test_several_api_processes_need_the_scale_out_runtime(tmp_path: Path, shop_path: Path) -> None:
    from typer.testing import CliRunner

    from cxstack.cli.main import app

    result = CliRunner().invoke(
        app, ["serve", str(shop_path), "--home", str(tmp_path), "--runtime", "process", "--processes", "2"]
    )
    assert result.exit_code == 2, result.output
    assert "--processes 2 needs --runtime procrastinate: each process of the process runtime" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "cxstack.db").exists(), "refused before opening the store"


def test_circus_output_names_each_process_and_keeps_lines_whole() -> None:
    import io

    from cxstack.runtime.output import LabelledStream

    out = io.StringIO()
    stream = LabelledStream(label="worker", out=out)
    stream({"data": b"first line\nsecond ", "pid": 41, "name": "stdout"})
    stream({"data": b"half from another\n", "pid": 42, "name": "stdout"})
    stream({"data": b"half\r\nunfinished", "pid": 41, "name": "stdout"})
    stream.close()
    assert out.getvalue().splitlines() == [
        "worker      41 | first line",
        "worker      42 | half from another",
        "worker      41 | second half",
        "worker      41 | unfinished",
    ]


def test_several_processes_log_their_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import logging
    import logging.config

    from cxstack.logs import JsonFormatter, process_log_config

    monkeypatch.delenv("CXSTACK_LOG_FORMAT", raising=False)
    config = process_log_config()
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started", (), None)
    formatter = logging.Formatter(
        config["formatters"]["default"]["fmt"].replace("%(levelprefix)s", "%(levelname)s")
    )
    assert formatter.format(record) == f"INFO [{os.getpid()}] Started"
    assert config["handlers"]["warnings"]["level"] == "WARNING" and config["root"]["handlers"] == ["warnings"]
    monkeypatch.setenv("CXSTACK_LOG_FORMAT", "json")
    assert process_log_config()["formatters"]["json"]["()"] is JsonFormatter
    assert json.loads(JsonFormatter().format(record))["process"] == f"{socket.gethostname()}:{os.getpid()}"


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path, shop_path: Path) -> None:
    from typer.testing import CliRunner

    from cxstack.cli.main import app

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    env = {"CXSTACK_DATABASE_URL": url, "CXSTACK_EMBEDDER": "hashing"}
    for command in (
        ["serve", "--runtime", "procrastinate", "--processes", "2", "--no-backoffice"],
        ["worker"],
    ):
        result = CliRunner().invoke(
            app, [command[0], str(shop_path), *command[1:], "--home", str(tmp_path)], env=env
        )
        assert result.exit_code == 1, result.output
        assert "cannot start: the database did not answer: connection failed" in " ".join(
            result.output.split()
        )
        assert "Traceback" not in result.output
