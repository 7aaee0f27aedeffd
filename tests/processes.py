"""Helpers for tests that run cxstack as real processes: free ports, `cxstack worker` subprocesses, a query in
a test's PostgreSQL schema, and waiting for a condition with the processes' logs in the failure."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# A killed or cut-off worker's conversations and jobs come back in seconds, not a minute.
FAST_RECOVERY = {
    "CXSTACK_SCALE_LEASE_SECONDS": "3",
    "CXSTACK_SCALE_STALLED_SECONDS": "3",
    "CXSTACK_SCALE_HEARTBEAT_SECONDS": "1",
}


def turn_env(database_url: str, home: Path, backoffice_url: str, **extra: str) -> dict[str, str]:
    """The environment of a cxstack process in these tests: the database, its own state folder, the back
    office; each message its own turn (reply i answers message i), nothing periodic, finished jobs kept
    (with the worker that ran them); `extra` adds or overrides."""
    return {
        **os.environ,
        "CXSTACK_DATABASE_URL": database_url,
        "CXSTACK_HOME": str(home),
        "CXSTACK_EMBEDDER": "hashing",
        "CXSTACK_BACKOFFICE_URL": backoffice_url,
        "CXSTACK_BURST_WINDOW_MS": "0",
        "CXSTACK_MONITORING_SECONDS": "0",
        "CXSTACK_KNOWLEDGE_RELOAD_SECONDS": "0",
        "CXSTACK_SCALE_KEEP_JOBS": "1",
        **extra,
    }


def slow_order_lookup(delay_s: float) -> Callable[[Any], Any]:
    """A back-office order lookup that answers after `delay_s`, so a turn lasts long enough for a fault to
    land inside one. The wait is the stand-in's own (out of its event loop): concurrent lookups overlap, as
    on a real back office."""
    from cxstack.testing.http_standin import Reply

    def lookup(request: Any) -> Any:
        return Reply(200, {"status": f"shipped ({request.path_params['order_id']})"}, delay_s=delay_s)

    return lookup


def start_worker(workspace: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cxstack worker WORKSPACE --concurrency 2`, its output in `log`."""
    cxstack = Path(sys.executable).with_name("cxstack")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(cxstack), "worker", str(workspace), "--concurrency", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def schema_scalar(admin: Engine, schema_url: str, sql: str) -> Any:
    """One value from `sql` run in the schema of a `fresh_pg_schema` URL."""
    schema = schema_url.rsplit("%3D", 1)[1]
    with admin.connect() as connection:
        connection.execute(text(f'SET search_path TO "{schema}"'))
        return connection.execute(text(sql)).scalar()


def registered_workers(admin: Engine, schema_url: str) -> int:
    if not schema_scalar(admin, schema_url, "SELECT to_regclass('procrastinate_workers') IS NOT NULL"):
        return 0  # no worker has created procrastinate's tables yet
    return int(schema_scalar(admin, schema_url, "SELECT count(*) FROM procrastinate_workers"))


async def until(check: Callable[[], Any], what: str, logs: list[Path], deadline: float) -> None:
    """Polls `check` (in a thread) until it holds; past `deadline` fails with the tail of every log."""
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        await asyncio.sleep(0.1)
