"""The worker process under supervision: killed, it is restarted; while it is down /health says why and
ingest keeps storing messages, which are answered once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cxstack.api.app import create_api
from cxstack.app import Settings, build
from cxstack.domain.models import ConversationId, Role
from cxstack.runtime.process import ProcessRuntime, describe_exit, restart_delay
from cxstack.testing.authz import make_role_keys
from cxstack.testing.http_standin import Reply
from cxstack.testing.memory_store import InMemoryStore
from cxstack.workspace.loader import load_workspace
from worker_stubs import flaky_worker

CUSTOMER = "cus_small"  # sent by the integration, so the conversation's customer is verified


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_killed_worker_is_restarted_and_health_is_degraded_until_it_is_back(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    settings = Settings(
        home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0], runtime="process"
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    keys = make_role_keys(cx.store)
    integration, viewer = keys["integration"], {"Authorization": f"Bearer {keys['viewer']}"}
    with TestClient(create_api(cx), headers={"Authorization": f"Bearer {integration}"}) as client:
        first = client.post(
            "/v1/conversations/k1/messages?wait=true",
            json={"text": "where is my order ORD-10001?", "customer_id": CUSTOMER},
        )
        assert first.json()["completed"] and "ORD-10001" in first.json()["reply"]
        before = client.get("/health").json()
        assert before["status"] == "ok" and before["worker"]["state"] == "running"
        pid = before["worker"]["pid"]

        # Killed in the middle of a turn: it holds k0's lease and waits for the back office.
        backend = backoffice[1]
        order = {"status": "packed (ORD-10009)"}
        backend.on("GET", "/orders/ORD-10009", Reply(200, order, delay_s=1.5), Reply(200, order))
        client.post(
            "/v1/conversations/k0/messages",
            json={"text": "where is my order ORD-10009?", "customer_id": CUSTOMER},
        )
        wait_for(
            lambda: backend.requests_to("GET", "/orders/ORD-10009"), 30, "the turn to call the back office"
        )
        os.kill(pid, signal.SIGKILL)
        down = wait_for(
            lambda: (h := client.get("/health").json())["status"] == "degraded" and h,
            timeout=10,
            what="/health to notice the dead worker",
        )
        assert not cx.store.claim_conversation(ConversationId("k0"), "another-worker", 60)  # still leased
        # Posted while the worker is down: acknowledged and stored, nothing lost.
        posted = client.post(
            "/v1/conversations/k2/messages",
            json={"text": "what is your return policy", "customer_id": CUSTOMER},
        )
        assert posted.status_code == 202
        assert down["worker"]["state"] == "restarting" and down["worker"]["last_exit"] == -signal.SIGKILL
        assert down["reasons"] == [down["worker"]["reason"]]
        assert down["worker"]["reason"].startswith("turn worker restarting after exit -9/SIGKILL (1 restart)")
        assert client.get("/health").status_code == 200  # still taking messages: not out of rotation
        message_id = posted.json()["message_id"]
        assert [m.id for m in cx.store.pending_messages(ConversationId("k2"))] == [message_id]

        back = wait_for(
            lambda: (h := client.get("/health").json())["status"] == "ok" and h,
            timeout=120,
            what="the restarted worker",
        )
        assert back["worker"]["restarts"] == 1 and back["worker"]["pid"] not in (None, pid)
        assert back["reasons"] == []

        wait_for(lambda: not cx.store.pending_messages(ConversationId("k2")), 30, "the pending message")
        conversation = client.get("/v1/conversations/k2", headers=viewer).json()
        assert [t["message_id"] for t in conversation["traces"]] == [message_id]  # processed exactly once
        replies = [m for m in conversation["messages"] if m["role"] == Role.ASSISTANT.value]
        assert len(replies) == 1 and "30 days" in replies[0]["text"]

        # The interrupted turn ran again under the same worker id, so the dead worker's lease did not
        # hold k0 back for its 60 s; the back office saw the same idempotency key both times.
        wait_for(lambda: not cx.store.pending_messages(ConversationId("k0")), 20, "the interrupted turn")
        interrupted = client.get("/v1/conversations/k0", headers=viewer).json()
        assert len(interrupted["traces"]) == 1
        [reply] = [m for m in interrupted["messages"] if m["role"] == Role.ASSISTANT.value]
        assert "packed (ORD-10009)" in reply["text"]
        calls = backend.requests_to("GET", "/orders/ORD-10009")
        assert len(calls) == 2 and len({c.headers["idempotency-key"] for c in calls}) == 1
        assert client.get("/health").json()["status"] == "ok"


def test_a_message_that_kills_the_worker_every_time_is_set_aside_for_a_person(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]
) -> None:
    settings = Settings(
        home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0], runtime="process"
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    keys = make_role_keys(cx.store)
    integration, viewer = keys["integration"], {"Authorization": f"Bearer {keys['viewer']}"}
    backend = backoffice[1]
    order = {"status": "packed (ORD-10007)"}
    backend.on("GET", "/orders/ORD-10007", *[Reply(200, order, delay_s=30) for _ in range(5)])
    with TestClient(create_api(cx), headers={"Authorization": f"Bearer {integration}"}) as client:
        client.post(
            "/v1/conversations/p1/messages",
            json={"text": "where is my order ORD-10007?", "customer_id": CUSTOMER},
        )
        # Each incarnation dies while the turn waits for the back office (as a native crash would).
        for attempt in range(1, 4):
            wait_for(
                lambda n=attempt: len(backend.requests_to("GET", "/orders/ORD-10007")) == n,  # type: ignore[misc]
                120,
                f"turn attempt {attempt}",
            )
            pid = client.get("/health").json()["worker"]["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: client.get("/health").json()["status"] == "ok", 120, "the restarted worker")

        wait_for(lambda: not cx.store.pending_messages(ConversationId("p1")), 60, "the message set aside")
        conversation = client.get("/v1/conversations/p1", headers=viewer).json()
        assert len(backend.requests_to("GET", "/orders/ORD-10007")) == 3  # not a fourth time
        [packet] = cx.store.list_escalations()
        assert packet.reason_code == "internal_error"
        [trace] = conversation["traces"]
        assert trace["reason_code"] == "internal_error"
        replies = [m for m in conversation["messages"] if m["role"] == Role.ASSISTANT.value]
        assert len(replies) == 1
        # The worker lives on and answers the next conversation.
        answered = client.post(
            "/v1/conversations/p2/messages?wait=true",
            json={"text": "what is your return policy", "customer_id": CUSTOMER},
        )
        assert "30 days" in answered.json()["reply"]


# ---- the supervisor on its own, with a worker that does nothing but start --------------------------------


async def _wait_async(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_worker_that_keeps_failing_to_start_is_retried_until_it_starts(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    runtime = ProcessRuntime(
        InMemoryStore(),
        flaky_worker,
        {"broken": str(broken), "burst_window_ms": {}},
        restart_first_delay_s=0.05,
        restart_max_delay_s=0.2,
    )
    await runtime.start()
    try:
        first = runtime.health()
        assert first.ok and first.pid is not None
        broken.touch()
        os.kill(first.pid, signal.SIGKILL)

        await _wait_async(lambda: runtime.restarts >= 3, 60, "three failed restarts")
        failing = runtime.health()
        assert failing.state == "restarting" and not failing.ok
        assert failing.reason is not None and "after exit 3" in failing.reason

        broken.unlink()
        await _wait_async(lambda: runtime.health().ok, 60, "a successful restart")
        assert runtime.health().pid not in (None, first.pid)
    finally:
        await runtime.stop()
    assert runtime.health().state == "stopped"


async def test_a_worker_that_stops_sending_heartbeats_is_replaced(tmp_path: Path) -> None:
    # The worker beats once a second; a supervisor that expects one every 0.3 s takes it for hung.
    runtime = ProcessRuntime(
        InMemoryStore(),
        flaky_worker,
        {"broken": str(tmp_path / "never"), "burst_window_ms": {}},
        unresponsive_after_s=0.3,
        restart_first_delay_s=30.0,
    )
    await runtime.start()
    try:
        pid = runtime.health().pid
        await _wait_async(lambda: runtime.restarts >= 1, 30, "the silent worker to be replaced")
        health = runtime.health()
        assert health.reason is not None and "no heartbeat for" in health.reason
        assert health.last_exit == -signal.SIGKILL
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the old worker is gone, not left running beside a new one
    finally:
        await runtime.stop()


def test_the_restart_delay_doubles_and_is_capped() -> None:
    assert [restart_delay(n, 0.5, 30.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert restart_delay(0, 0.5, 30.0) == 0.5
    assert restart_delay(10_000, 0.5, 30.0) == 30.0


def test_exits_are_described_with_their_signal() -> None:
    assert describe_exit(-9) == "exit -9/SIGKILL"
    assert describe_exit(3) == "exit 3"
    assert describe_exit(None) == "exit (code unknown)"


async def test_a_worker_that_dies_before_reading_its_options_never_blocks_the_supervisor(
    tmp_path: Path,
) -> None:
    # Options far larger than a pipe buffer: a writer waiting for a dead reader would wait for good.
    options = {"broken": str(tmp_path / "never"), "padding": "x" * 1_000_000}
    runtime = ProcessRuntime(InMemoryStore(), flaky_worker, options, start_timeout_s=60)
    worker = runtime._spawn()
    worker.process.kill()
    worker.process.join(10)
    with pytest.raises(RuntimeError, match="ended before it read its options"):
        await asyncio.wait_for(runtime._hand_over_options(worker), 30)
    worker.conn.close()
