"""Faults on the PostgreSQL deployment: every fault of issue 11, each its own run, checked message by message.

    python -m benchmarks.faults_pg [--json PATH] [--quick] [--kills 100] [--api-kills 5]
                                   [--outage-seconds 60] [--conversations 30] [--only NAME ...] [--keep DIR]

The deployment is the scale-out one: `cxstack serve --runtime procrastinate` API processes (2) and
`cxstack worker` processes (2), each with its own CXSTACK_HOME, on a PostgreSQL instance of the benchmark's
own (initdb in a temporary folder, a free port, trust auth; run as the postgres user when we are root), since
one scenario restarts it. Each scenario gets a fresh database, a fresh demo back office (with the recorder of
`benchmarks.faults` around it) and a local LLM stand-in speaking OpenAI's chat-completions wire format, which
the workspace is configured to use (`llm:` with `on_failure: escalate`): the demo's policy answers go through
the LLM answer writer, so "LLM provider down" is a real outage on the turn path.

Scenarios (each a row): the same load with no fault (the baseline); `kill -9` of a worker inside a turn
(`--kills` times, alternating between the two, each restarted at once); `kill -9` of an API process while
requests to it are in flight (`--api-kills` times, restarted; the client retries on the other API process with
the same external id); PostgreSQL restarted twice under load (`pg_ctl restart -m fast`, then `-m immediate`);
the back office down for `--outage-seconds` (its process stopped, then started again on its port); the LLM
provider down as long; and the SQLite default (`cxstack serve`, embedded runtime) with its home on a small
tmpfs filled to the last byte for a while, then freed.

The load: `--conversations` customers post the demo's sample conversations in order on the `api` channel,
with a pause between messages, for as long as the scenario's fault takes plus a lead and a tail. A post that
fails (a connection refused, a 503 while PostgreSQL restarts, a 507 while the disk is full) is retried with
the same external id until it is acknowledged; every failed answer is counted as a client error by kind.

The checks are those of `benchmarks.faults`, by id from the databases: every acknowledged message stored
once and processed by exactly one committed turn, every reply stored once and sent, and each back-office write
executed once per Idempotency-Key. Recovery time: from the end of the fault until every message stored before
it was processed (per kill for the kill rounds: median / max).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks._deployment import write_json
from benchmarks.faults import (
    CHANNEL,
    PlannedConversation,
    check_backoffice,
    check_service,
    desk_loop,
    free_port,
    plan_load,
    stop_process,
    wait_until,
)
from cxstack.testing.pg_server import PgServer

console = Console(width=None if sys.stdout.isatty() else 140)

LLM_MODEL = "standin-chat"
SCALE_ENV = {
    # Test-like timings (as tests/test_scale_runtime.py): a dead worker's conversation and jobs come back in
    # seconds rather than the production minute, so 100 kills fit in a run.
    "CXSTACK_SCALE_LEASE_SECONDS": "3",
    "CXSTACK_SCALE_STALLED_SECONDS": "3",
    "CXSTACK_SCALE_HEARTBEAT_SECONDS": "1",
}


# ---- the LLM stand-in --------------------------------------------------------------------------------------


def serve_llm(port: int, log: Path) -> None:
    """A chat-completions endpoint (the child process's main): answers with the first fact it was given,
    cited, as the answer writer's JSON asks; a call log line per request."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    sink = log.open("a", buffering=1, encoding="utf-8")
    fact_line = re.compile(r"^\[([^\]]+)\] (.+)$", re.MULTILINE)

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
        facts = fact_line.findall(text)
        if facts:
            fact_id, fact_text = facts[0]
            answer = {"answerable": True, "sentences": [{"text": fact_text[:290], "cites": [fact_id]}]}
        else:
            answer = {"answerable": False, "sentences": []}
        sink.write(json.dumps({"at": time.time(), "facts": len(facts)}) + "\n")
        content = json.dumps(answer)
        return JSONResponse(
            {
                "id": f"chatcmpl-{random.getrandbits(48):x}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", LLM_MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": len(text) // 4,
                    "completion_tokens": len(content) // 4,
                    "total_tokens": (len(text) + len(content)) // 4,
                },
            }
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/health", health)]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def workspace_with_llm(root: Path, llm_url: str) -> Path:
    """The demo workspace, copied, with the stand-in as its LLM provider (escalate when it fails)."""
    from cxstack.demo import demo_workspace_path

    target = root / "workspace"
    if not target.exists():
        shutil.copytree(demo_workspace_path(), target)
        settings = target / "cxstack.yaml"
        settings.write_text(
            settings.read_text("utf-8").rstrip("\n")
            + f"\nllm:\n  provider: openai\n  model: {LLM_MODEL}\n  api_key: ${{FAULTS_LLM_KEY}}\n"
            f"  base_url: {llm_url}/v1\n  on_failure: escalate\n",
            "utf-8",
        )
    return target


# ---- child processes ---------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process that can be killed and started again with the same command."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        return self.process

    def kill(self) -> int:
        assert self.process is not None
        pid = self.process.pid
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return pid

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@dataclass
class Deployment:
    """One scenario's deployment: back office, LLM stand-in, API processes and workers (or one embedded
    serve)."""

    root: Path
    database_url: str
    office_port: int
    llm_port: int
    office: Child
    llm: Child
    apis: list[Child] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)

    @property
    def office_url(self) -> str:
        return f"http://127.0.0.1:{self.office_port}"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    def stop(self) -> None:
        for child in [*self.apis, *self.workers, self.llm, self.office]:
            child.stop()


def start_side_services(root: Path, env: dict[str, str], llm_port: int) -> tuple[Child, Child, int, int]:
    office_port = free_port()
    office = Child(
        "backoffice",
        _python(
            "benchmarks.faults",
            "--serve-backoffice",
            str(office_port),
            "--office-db",
            str(root / "backoffice.db"),
            "--office-log",
            str(root / "backoffice-writes.jsonl"),
        ),
        env,
        root / "backoffice.log",
    )
    llm = Child(
        "llm",
        _python(
            "benchmarks.faults_pg", "--serve-llm", str(llm_port), "--llm-log", str(root / "llm-calls.jsonl")
        ),
        env,
        root / "llm.log",
    )
    office.start()
    llm.start()
    wait_until(lambda: wait_http(f"http://127.0.0.1:{office_port}/health"), 60, "the back office")
    wait_until(lambda: wait_http(f"http://127.0.0.1:{llm_port}/health"), 60, "the LLM stand-in")
    return office, llm, office_port, llm_port


def copy_cache(source: Path, target: Path) -> None:
    """The router cache of one home into another (same workspace, same embedder: the same key)."""
    if (source / "cache").is_dir():
        shutil.copytree(source / "cache", target / "cache", dirs_exist_ok=True)


def wait_http(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def api_ok(url: str) -> bool:
    return bool(httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok")


def base_env(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "FAULTS_LLM_KEY": "sk-standin",
        "CXSTACK_MONITORING_SECONDS": "0",
        "CXSTACK_KNOWLEDGE_RELOAD_SECONDS": "0",
        **SCALE_ENV,
    }
    env.pop("CXSTACK_DATABASE_URL", None)
    env.pop("CXSTACK_LLM_BASE_URL", None)
    return env


def start_pg_deployment(
    root: Path, database_url: str, embedder: str, shared: Path, llm_port: int
) -> Deployment:
    """Homes (`shared`/homes) and the workspace (`shared`/workspace) are the run's, not the scenario's: the
    router trained by the first process is cached there, so the others (and restarts) start in seconds."""
    from cxstack.demo import demo_customers_csv

    root.mkdir(parents=True, exist_ok=True)
    env = base_env(root)
    office, llm, office_port, llm_port = start_side_services(root, env, llm_port)
    deployment = Deployment(root, database_url, office_port, llm_port, office, llm)
    workspace = workspace_with_llm(shared, f"http://127.0.0.1:{llm_port}")
    homes = shared / "homes"
    env = {**env, "CXSTACK_DATABASE_URL": database_url, "CXSTACK_BACKOFFICE_URL": deployment.office_url}
    for n in range(2):
        home = homes / f"worker-{n}"
        deployment.workers.append(
            Child(
                f"worker-{n}",
                [
                    str(Path(sys.executable).with_name("cxstack")),
                    "worker",
                    str(workspace),
                    *("--concurrency", "2", "--home", str(home), "--embedder", embedder),
                ],
                {**env, "CXSTACK_HOME": str(home)},
                root / f"worker-{n}.log",
            )
        )

    def api_command(n: int, port: int, *extra: str) -> list[str]:
        return [
            *_python("cxstack.cli.main", "serve", str(workspace), "--port", str(port)),
            "--runtime",
            "procrastinate",
            "--no-backoffice",
            "--home",
            str(homes / f"api-{n}"),
            "--embedder",
            embedder,
            *extra,
        ]

    for n in range(2):
        port = free_port()
        deployment.api_ports.append(port)
        deployment.apis.append(
            Child(
                f"api-{n}",
                api_command(n, port),
                {**env, "CXSTACK_HOME": str(homes / f"api-{n}")},
                root / f"api-{n}.log",
            )
        )
    # The first API process migrates the database and imports the customers before the others start.
    first = deployment.apis[0]
    first.command = api_command(0, deployment.api_ports[0], "--customers", str(demo_customers_csv()))
    first.start()
    wait_until(lambda: api_ok(deployment.api_urls[0]), 600, "the first API process")
    for name in ("api-1", "worker-0", "worker-1"):
        copy_cache(homes / "api-0", homes / name)
    first.command = api_command(0, deployment.api_ports[0])  # a restart imports nothing again
    deployment.apis[1].start()
    for worker in deployment.workers:
        worker.start()
    wait_until(lambda: api_ok(deployment.api_urls[1]), 600, "the second API process")
    wait_until(lambda: live_workers(database_url) == 2, 600, "two workers")
    return deployment


def live_workers(database_url: str) -> int:
    import psycopg

    from cxstack.runtime.jobs import conninfo

    try:
        with psycopg.connect(conninfo(database_url), autocommit=True) as connection:
            found = connection.execute(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat >= NOW() - interval '3 s'"
            ).fetchone()
    except psycopg.Error:
        return 0
    return int(found[0]) if found else 0


def new_key(database_url: str, role: str) -> str:
    from cxstack.api.keys import ApiKeys
    from cxstack.app import Settings, open_store

    store = open_store(Settings(database_url=database_url))
    secret = ApiKeys(store).create(f"faults_pg benchmark ({role})", role).secret
    _dispose(store)
    return secret


def _dispose(store: Any) -> None:
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()


# ---- the load ----------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    posted: dict[str, str] = field(default_factory=dict)
    client_errors: Counter[str] = field(default_factory=Counter)
    duplicate_acks: int = 0
    hand_backs: int = 0
    desk_errors: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    drain_seconds: float = 0.0
    drained: bool = False
    fault: dict[str, Any] = field(default_factory=dict)


class Load:
    """Customers posting in order through the API processes; the fault runs beside them."""

    def __init__(
        self,
        urls: list[str],
        headers: dict[str, str],
        plan: list[PlannedConversation],
        think_s: tuple[float, float],
        seed: int,
    ) -> None:
        self.urls = urls
        self.headers = headers
        self.plan = plan
        self.think_s = think_s
        self.rng = random.Random(seed)
        self.result = LoadResult()
        self.stop = asyncio.Event()
        self.in_flight: Counter[int] = Counter()  # API index -> requests waiting for an answer
        self.clients: list[httpx.AsyncClient] = []
        self.planned = sum(len(conversation.messages) for conversation in plan)

    async def post(self, conversation: PlannedConversation, index: int) -> None:
        body = {
            "text": conversation.messages[index],
            "external_id": conversation.external_id(index),
            "channel": CHANNEL,
            "customer_id": conversation.customer_id,
        }
        api = hash(conversation.id) % len(self.clients)
        delay = 0.2
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            self.in_flight[api] += 1
            try:
                response = await self.clients[api].post(
                    f"/v1/conversations/{conversation.id}/messages", json=body
                )
            except httpx.HTTPError as error:
                response = None
                self.result.client_errors[type(error).__name__] += 1
            finally:
                self.in_flight[api] -= 1
            if response is not None:
                if response.status_code in (200, 202):
                    if response.status_code == 200:
                        self.result.duplicate_acks += 1
                    self.result.posted[conversation.external_id(index)] = response.json()["message_id"]
                    return
                self.result.client_errors[f"HTTP {response.status_code}"] += 1
            api = (api + 1) % len(self.clients)  # the client tries the other API process
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise RuntimeError(f"{conversation.external_id(index)} was never acknowledged")

    async def customer(self, conversation: PlannedConversation) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.think_s[1]))
        for index in range(len(conversation.messages)):
            if self.stop.is_set():
                return
            await self.post(conversation, index)
            await asyncio.sleep(self.rng.uniform(*self.think_s))

    async def run(
        self,
        fault: Callable[[Load], Awaitable[dict[str, Any]]],
        staff_headers: dict[str, str],
        desk_every_s: float,
    ) -> LoadResult:
        limits = httpx.Limits(max_connections=len(self.plan) + 10)
        self.clients = [
            httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=self.headers)
            for url in self.urls
        ]
        try:

            def handed_back() -> None:
                self.result.hand_backs += 1

            desk = asyncio.create_task(
                desk_loop(self.clients[0], staff_headers, desk_every_s, handed_back, self.result.desk_errors)
            )
            started = time.monotonic()

            async def faulting() -> None:
                try:
                    self.result.fault = await fault(self)
                finally:
                    self.stop.set()

            await asyncio.gather(faulting(), *(self.customer(c) for c in self.plan))
            self.result.load_seconds = round(time.monotonic() - started, 1)
            desk.cancel()
            await asyncio.gather(desk, return_exceptions=True)
        finally:
            for client in self.clients:
                await client.aclose()
        return self.result


_stores: dict[str, Any] = {}


def shared_store(database_url: str) -> Any:
    """One store per database for the benchmark's own polling (an engine per poll would cost more than the
    poll); `dispose_stores` closes them."""
    from cxstack.app import Settings, open_store

    if database_url not in _stores:
        _stores[database_url] = open_store(Settings(database_url=database_url))
    return _stores[database_url]


def dispose_stores() -> None:
    for store in _stores.values():
        _dispose(store)
    _stores.clear()


def pending_before(database_url: str, moment: datetime) -> int:
    """Messages stored before `moment` that no committed turn processed yet."""
    store = shared_store(database_url)
    return sum(
        1
        for cid in store.conversations_with_pending()
        for message in store.pending_messages(cid)
        if message.created_at <= moment
    )


async def time_to_recover(
    database_url: str, since: datetime, started: float, timeout: float = 600
) -> float | None:
    """Seconds from `started` (monotonic) until every message stored before `since` was processed."""
    while time.monotonic() - started < timeout:
        try:
            if await asyncio.to_thread(pending_before, database_url, since) == 0:
                return round(time.monotonic() - started, 2)
        except Exception:  # the database restarting: try again
            pass
        await asyncio.sleep(0.5)
    return None


def drained(database_url: str) -> bool:
    from cxstack.domain.ports import OutboxStatus

    store = shared_store(database_url)
    return not store.conversations_with_pending() and store.count_outbox(OutboxStatus.PENDING) == 0


async def drain(database_url: str, result: LoadResult, timeout: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if await asyncio.to_thread(drained, database_url):
                result.drained = True
                break
        await asyncio.sleep(0.5)
    result.drain_seconds = round(time.monotonic() - started, 1)


# ---- the faults --------------------------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def no_fault(seconds: float) -> Callable[[Load], Awaitable[dict[str, Any]]]:
    async def fault(load: Load) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {}

    return fault


WORKER_UP = "jobs at once"  # what `cxstack worker` prints once it runs


def worker_up(child: Child) -> bool:
    return child.log.read_text("utf-8", errors="replace").count(WORKER_UP) >= child.starts


def kill_workers(
    deployment: Deployment, kills: int, lead_s: float, settle_s: float
) -> Callable[[Load], Awaitable[dict[str, Any]]]:
    async def fault(load: Load) -> dict[str, Any]:
        await asyncio.sleep(lead_s)
        store = shared_store(deployment.database_url)
        host = socket.gethostname()
        recoveries: list[asyncio.Task[float | None]] = []
        mid_turn = 0
        done = kills
        for number in range(kills):
            # Both workers up again and given `settle_s` to work (or the backlog worked off): a kill right
            # after a restart would test nothing but the restart, and the backlog would never move.
            waited = time.monotonic()
            while not all(worker_up(w) for w in deployment.workers) and time.monotonic() - waited < 300:
                await asyncio.sleep(0.1)
            up_at = time.monotonic()
            while time.monotonic() - up_at < settle_s:
                if not await asyncio.to_thread(store.conversations_with_pending):
                    break
                await asyncio.sleep(0.1)
            worker = deployment.workers[number % 2]
            waited = time.monotonic()
            leased: list[Any] = []
            # Inside a turn: a worker holds a conversation's lease (it has started up and took a job).
            # Whichever does, this round's first: the other may still be starting after its own kill.
            while not leased and time.monotonic() - waited < 60:
                for offset in range(2):
                    candidate = deployment.workers[(number + offset) % 2]
                    pid = candidate.pid
                    if pid is None:
                        continue
                    owner = f"{host}:{pid}:procrastinate"
                    leased = await asyncio.to_thread(store.conversations_leased_to, owner)
                    if leased:
                        worker = candidate
                        break
                else:
                    await asyncio.sleep(0.02)
            if not leased and len(load.result.posted) >= load.planned:
                # Every planned message was posted and answered: a kill now would hit an idle worker.
                console.print(
                    f"[yellow]the load ran out of messages after {number} kills: raise "
                    "--messages-per-conversation for more[/]"
                )
                done = number
                break
            mid_turn += bool(leased)
            killed_at, since = time.monotonic(), now()
            worker.kill()
            worker.start()
            recoveries.append(asyncio.create_task(time_to_recover(deployment.database_url, since, killed_at)))
            if (number + 1) % 10 == 0:
                console.print(f"[dim]  {number + 1}/{kills} kills, {len(load.result.posted)} posted[/]")
        load.stop.set()  # the load ends with the last kill; the recoveries are still timed
        recovered = [r for r in await asyncio.gather(*recoveries) if r is not None]
        return {
            "kills": done,
            "kills_mid_turn": mid_turn,
            "not_recovered": done - len(recovered),
            "recovery_s": _median_max(recovered),
        }

    return fault


def kill_apis(
    deployment: Deployment, kills: int, lead_s: float
) -> Callable[[Load], Awaitable[dict[str, Any]]]:
    async def fault(load: Load) -> dict[str, Any]:
        await asyncio.sleep(lead_s)
        recoveries: list[float] = []
        mid_request = 0
        for number in range(kills):
            index = number % 2
            waited = time.monotonic()
            while load.in_flight[index] == 0 and time.monotonic() - waited < 30:
                await asyncio.sleep(0.005)
            mid_request += load.in_flight[index] > 0
            killed_at = time.monotonic()
            deployment.apis[index].kill()
            await asyncio.sleep(1.0)  # a supervisor's restart delay
            deployment.apis[index].start()
            url = deployment.api_urls[index]
            await asyncio.to_thread(wait_until, lambda url=url: api_ok(url), 600, f"API {index} back")
            recoveries.append(round(time.monotonic() - killed_at, 2))
            await asyncio.sleep(3.0)
        return {"kills": kills, "kills_mid_request": mid_request, "recovery_s": _median_max(recoveries)}

    return fault


def restart_pg(
    pg: PgServer, deployment: Deployment, lead_s: float, gap_s: float
) -> Callable[[Load], Awaitable[dict[str, Any]]]:
    async def fault(load: Load) -> dict[str, Any]:
        restarts: list[dict[str, Any]] = []
        for mode in ("fast", "immediate"):
            await asyncio.sleep(lead_s if not restarts else gap_s)
            started = time.monotonic()
            took = await asyncio.to_thread(pg.restart, mode)
            since = now()
            recovered = await time_to_recover(deployment.database_url, since, started)
            restarts.append({"mode": mode, "restart_s": round(took, 2), "recovered_s": recovered})
        await asyncio.sleep(gap_s)
        back = [float(r["recovered_s"]) for r in restarts if r["recovered_s"] is not None]
        return {"restarts": restarts, "recovery_s": _median_max(back)}

    return fault


def outage(
    child: Child, deployment: Deployment, lead_s: float, seconds: float, tail_s: float
) -> Callable[[Load], Awaitable[dict[str, Any]]]:
    """The child (back office or LLM stand-in) stopped for `seconds`, then started again on its port."""

    async def fault(load: Load) -> dict[str, Any]:
        await asyncio.sleep(lead_s)
        child.kill()
        await asyncio.sleep(seconds)
        child.start()
        port = deployment.office_port if child is deployment.office else deployment.llm_port
        await asyncio.to_thread(
            wait_until, lambda: wait_http(f"http://127.0.0.1:{port}/health"), 60, f"{child.name} back"
        )
        started, since = time.monotonic(), now()
        recovered = await time_to_recover(deployment.database_url, since, started)
        await asyncio.sleep(tail_s)
        return {"down_s": seconds, "recovery_s": _median_max([recovered] if recovered is not None else [])}

    return fault


def _median_max(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}


# ---- a scenario on PostgreSQL ------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    label: str


async def _run_load(
    deployment: Deployment,
    plan: list[PlannedConversation],
    fault: Callable[[Load], Awaitable[dict[str, Any]]],
    args: argparse.Namespace,
) -> LoadResult:
    headers = {"Authorization": f"Bearer {new_key(deployment.database_url, 'integration')}"}
    staff = {"Authorization": f"Bearer {new_key(deployment.database_url, 'agent')}"}
    load = Load(deployment.api_urls, headers, plan, (args.think_min, args.think_max), args.seed)
    result = await load.run(fault, staff, args.desk_every)
    # The desk keeps answering while the backlog drains (an escalated conversation is silent until then).
    desk_client = httpx.AsyncClient(base_url=deployment.api_urls[0], timeout=30, headers=staff)

    def handed_back() -> None:
        result.hand_backs += 1

    desk = asyncio.create_task(
        desk_loop(desk_client, staff, args.desk_every, handed_back, result.desk_errors)
    )
    try:
        await drain(deployment.database_url, result, args.drain_timeout)
    finally:
        desk.cancel()
        await asyncio.gather(desk, return_exceptions=True)
        await desk_client.aclose()
    return result


def run_pg_scenario(
    name: str, pg: PgServer, root: Path, plan: list[PlannedConversation], args: argparse.Namespace
) -> dict[str, Any]:
    started = time.monotonic()
    scenario_root = root / name
    database_url = pg.create_database(f"faults_{name}")
    console.print(f"[bold]{name}[/]: starting 2 API processes and 2 workers (logs in {scenario_root})")
    deployment = start_pg_deployment(scenario_root, database_url, args.embedder, root, args.llm_port)
    lead, tail = args.lead, args.tail
    faults: dict[str, Callable[[Load], Awaitable[dict[str, Any]]]] = {
        "baseline": no_fault(lead + args.outage_seconds + tail),
        "worker_kill": kill_workers(deployment, args.kills, lead, args.settle),
        "api_kill": kill_apis(deployment, args.api_kills, lead),
        "pg_restart": restart_pg(pg, deployment, lead, max(tail, 5.0)),
        "backoffice_down": outage(deployment.office, deployment, lead, args.outage_seconds, tail),
        "llm_down": outage(deployment.llm, deployment, lead, args.outage_seconds, tail),
    }
    try:
        load = asyncio.run(_run_load(deployment, plan, faults[name], args))
    finally:
        deployment.stop()
        dispose_stores()
    result = summarize(name, plan, load, database_url, scenario_root)
    result["total_seconds"] = round(time.monotonic() - started, 1)
    return result


def llm_calls(root: Path) -> int:
    log = root / "llm-calls.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def summarize(
    name: str, plan: list[PlannedConversation], load: LoadResult, database_url: str, root: Path
) -> dict[str, Any]:
    service = check_service(database_url, plan, load.posted)
    office_db = root / "backoffice.db"
    office = check_backoffice(office_db, root / "backoffice-writes.jsonl") if office_db.exists() else {}
    return {
        "scenario": name,
        "load_seconds": load.load_seconds,
        "drain_seconds": load.drain_seconds,
        "drained": load.drained,
        "client_errors": dict(load.client_errors),
        "duplicate_acks": load.duplicate_acks,
        "hand_backs": load.hand_backs,
        "desk_errors": {"count": len(load.desk_errors), "first": load.desk_errors[:5]},
        "fault": load.fault,
        "llm_calls": llm_calls(root),
        "service": service,
        "backoffice": office,
    }


# ---- disk full on the SQLite default -----------------------------------------------------------------------


def fill(path: Path) -> int:
    """Writes `path` until the file system has no byte left; the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    out.write(block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
                written += chunk
    return written


def run_disk_full(root: Path, plan: list[PlannedConversation], args: argparse.Namespace) -> dict[str, Any]:
    from cxstack.demo import demo_customers_csv

    started = time.monotonic()
    scenario_root = root / "disk_full"
    scenario_root.mkdir(parents=True, exist_ok=True)
    mount = scenario_root / "tmpfs"
    mount.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mb}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip() or "mount failed"
        console.print(f"[yellow]disk_full skipped: cannot mount a tmpfs ({reason})[/]")
        return {"scenario": "disk_full", "skipped": reason}
    home = mount / "home"
    copy_cache(root / "homes" / "api-0", home)  # the same workspace as the PostgreSQL scenarios
    env = base_env(scenario_root)
    try:
        office, llm, office_port, llm_port = start_side_services(scenario_root, env, args.llm_port)
        api_port = free_port()
        workspace = workspace_with_llm(root, f"http://127.0.0.1:{llm_port}")
        serve = Child(
            "serve",
            [
                *_python("cxstack.cli.main", "serve", str(workspace), "--port", str(api_port)),
                *("--no-backoffice", "--home", str(home), "--embedder", args.embedder),
                "--customers",
                str(demo_customers_csv()),
            ],
            {**env, "CXSTACK_HOME": str(home), "CXSTACK_BACKOFFICE_URL": f"http://127.0.0.1:{office_port}"},
            scenario_root / "serve.log",
        )
        deployment = Deployment(
            scenario_root,
            f"sqlite:///{home / 'cxstack.db'}",
            office_port,
            llm_port,
            office,
            llm,
            [serve],
            [api_port],
        )
        console.print(
            f"[bold]disk_full[/]: `cxstack serve` (embedded) with its home on a {args.tmpfs_mb} MB tmpfs"
        )
        serve.start()
        wait_until(lambda: api_ok(deployment.api_urls[0]), 600, "the embedded service")
        filler = mount / "filler"

        async def fault(load: Load) -> dict[str, Any]:
            await asyncio.sleep(args.lead)
            errors_before = sum(load.result.client_errors.values())
            filled = await asyncio.to_thread(fill, filler)
            full_at = time.monotonic()
            await asyncio.sleep(args.full_seconds)
            refused = sum(load.result.client_errors.values()) - errors_before
            filler.unlink()
            full_s = time.monotonic() - full_at
            started, since = time.monotonic(), now()
            recovered = await time_to_recover(deployment.database_url, since, started)
            await asyncio.sleep(args.tail)
            return {
                "filled_bytes": filled,
                "full_s": round(full_s, 1),
                "posts_refused_while_full": refused,
                "recovery_s": _median_max([recovered] if recovered is not None else []),
            }

        try:
            load = asyncio.run(_run_load(deployment, plan, fault, args))
        finally:
            deployment.stop()
            dispose_stores()
        log_text = (scenario_root / "serve.log").read_text("utf-8", errors="replace")
        with sqlite3.connect(home / "cxstack.db") as connection:
            integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        result = summarize("disk_full", plan, load, deployment.database_url, scenario_root)
        result["integrity_check"] = ", ".join(integrity)[:200]
        result["disk_full_log_lines"] = sum(1 for line in log_text.splitlines() if "disk is full" in line)
        first = next((line for line in log_text.splitlines() if "disk is full" in line), None)
        result["disk_full_log_example"] = first[:300] if first else None
    finally:
        for name in ("cxstack.db", "cxstack.db-wal"):  # kept for a look after the run (--keep)
            if (home / name).exists():
                shutil.copy2(home / name, scenario_root / name)
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
    result["total_seconds"] = round(time.monotonic() - started, 1)
    return result


# ---- report ------------------------------------------------------------------------------------------------

SCENARIOS = {
    "baseline": "no fault (baseline)",
    "worker_kill": "kill -9 of a worker mid-turn",
    "api_kill": "kill -9 of an API process mid-request",
    "pg_restart": "PostgreSQL restarted (fast, immediate)",
    "backoffice_down": "back office down",
    "llm_down": "LLM provider down",
    "disk_full": "disk full, SQLite default",
}


RUN_ORDER = ["baseline", "api_kill", "pg_restart", "backoffice_down", "llm_down", "disk_full", "worker_kill"]


def row(result: dict[str, Any]) -> list[str]:
    if "skipped" in result:
        return [SCENARIOS[result["scenario"]], "skipped", result["skipped"], *["-"] * 7]
    counts = result["service"]["counts"]
    office = result["backoffice"]
    fault = result["fault"]
    posted = counts.get("posted", 0)
    answered = counts.get("processed", 0)
    errors = ", ".join(f"{k} x{v}" for k, v in sorted(result["client_errors"].items())) or "0"
    recovery = fault.get("recovery_s") or {}
    if recovery.get("median") is None:
        recovered = "-"
    elif recovery["median"] == recovery["max"]:
        recovered = f"{recovery['max']}"
    else:
        recovered = f"{recovery['median']} / {recovery['max']}"
    detail = {
        "worker_kill": f"{fault.get('kills')} kills ({fault.get('kills_mid_turn')} mid-turn)",
        "api_kill": f"{fault.get('kills')} kills ({fault.get('kills_mid_request')} mid-request)",
        "pg_restart": ", ".join(f"{r['mode']} {r['restart_s']} s" for r in fault.get("restarts", [])),
        "backoffice_down": f"{fault.get('down_s')} s down",
        "llm_down": f"{fault.get('down_s')} s down",
        "disk_full": f"{fault.get('full_s')} s full; integrity {result.get('integrity_check')}",
    }.get(result["scenario"], "")
    return [
        f"{SCENARIOS[result['scenario']]}" + (f"\n[dim]{detail}[/]" if detail else ""),
        str(posted),
        str(answered),
        str(counts.get("losses", 0)),
        str(counts.get("duplicates", 0) + counts.get("reply_mismatch", 0)),
        str(office.get("duplicate_writes_refunds", 0) + office.get("duplicate_writes_other", 0)),
        str(counts.get("escalated", 0)),
        errors,
        recovered,
        "yes" if result["drained"] else "NO",
    ]


def report(results: dict[str, Any]) -> None:
    table = Table(
        title=f"faults_pg: {results['conversations']} conversations, 2 API processes + 2 workers on "
        f"PostgreSQL (the SQLite row: embedded serve); baseline = the same load, no fault"
    )
    for name, justify in (
        ("scenario", "left"),
        ("posted", "right"),
        ("answered", "right"),
        ("lost", "right"),
        ("doubled replies", "right"),
        ("doubled back-office writes", "right"),
        ("escalated", "right"),
        ("client errors seen (retried)", "left"),
        ("recovery s (median / max)", "right"),
        ("drained", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    order = list(SCENARIOS)
    for result in sorted(results["scenarios"], key=lambda r: order.index(r["scenario"])):
        table.add_row(*row(result))
    console.print(table)
    for result in results["scenarios"]:
        if "skipped" in result:
            continue
        problems = result["service"]["problems"]
        extra = ""
        if result["scenario"] == "disk_full":
            extra = (
                f"; 'disk is full' log lines {result['disk_full_log_lines']}: "
                f"{result['disk_full_log_example']}"
            )
        console.print(
            f"[dim]{result['scenario']}: load {result['load_seconds']} s, drain {result['drain_seconds']} s, "
            f"LLM calls {result['llm_calls']}, hand-backs {result['hand_backs']}, duplicate acks "
            f"{result['duplicate_acks']}, no reply by design "
            f"{result['service']['no_reply_reasons'] or 'none'}, "
            f"back-office writes {result['backoffice'].get('writes_executed_once', 0)} once / "
            f"{result['backoffice'].get('writes_failed_5xx_or_timeout', 0)} failed{extra}[/]"
        )
        for problem in problems[:10]:
            console.print(f"  [red]{problem}[/]")


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    keep = args.keep
    tmp = tempfile.TemporaryDirectory(prefix="cxstack-faults-pg-") if keep is None else None
    root = Path(tmp.name) if tmp is not None else keep
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    # The longest last: a run cut short still has the other rows (the JSON is written after each scenario).
    names = sorted(args.only or list(SCENARIOS), key=RUN_ORDER.index)
    results: list[dict[str, Any]] = []
    pg = PgServer(root / "postgres")
    # One for the run: the workspace (and so its cached router) is the same in every scenario.
    args.llm_port = args.llm_port or free_port()
    try:
        if any(n != "disk_full" for n in names):
            pg.start()
            console.print(f"[dim]own PostgreSQL on port {pg.port} (data in {pg.data})[/]")
        for number, name in enumerate(names):
            plan = plan_load(
                args.messages_per_conversation * args.conversations, args.conversations, args.seed
            )
            try:
                if name == "disk_full":
                    results.append(run_disk_full(root, plan, args))
                else:
                    results.append(run_pg_scenario(name, pg, root, plan, args))
            except Exception as error:  # one broken scenario does not lose the others' figures
                console.print_exception()
                results.append(
                    {"scenario": name, "skipped": f"failed: {type(error).__name__}: {error}"[:200]}
                )
            done = results[-1]
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(
                    json.dumps({"partial": results}, indent=2, default=str), encoding="utf-8"
                )
            if "service" in done:
                counts = done["service"]["counts"]
                console.print(
                    f"[dim]  {number + 1}/{len(names)} {name}: posted {counts.get('posted', 0)}, lost "
                    f"{counts.get('losses', 0)}, doubled {counts.get('duplicates', 0)}, "
                    f"{done['total_seconds']} s[/]"
                )
    finally:
        if keep is None:
            pg.remove()
        else:
            pg.stop("immediate", check=False)
        if tmp is not None:
            tmp.cleanup()
    return {
        "conversations": args.conversations,
        "kills": args.kills,
        "api_kills": args.api_kills,
        "outage_seconds": args.outage_seconds,
        "embedder": args.embedder,
        "seed": args.seed,
        "scenarios": results,
        "total_seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 10 kills, 10 s outages, 10 customers"
    )
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument(
        "--messages-per-conversation",
        type=int,
        default=800,  # 100 worker kills take ~15 min of load at 20 conversations' pace: room to spare
        help="planned; posted as long as the fault lasts",
    )
    parser.add_argument("--kills", type=int, default=100, help="kill -9 rounds of a worker")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="after a worker is back, seconds of work before the next kill",
    )
    parser.add_argument("--api-kills", type=int, default=5, help="kill -9 rounds of an API process")
    parser.add_argument(
        "--outage-seconds", type=float, default=60.0, help="back office and LLM down this long"
    )
    parser.add_argument(
        "--full-seconds", type=float, default=20.0, help="how long the SQLite disk stays full"
    )
    parser.add_argument("--tmpfs-mb", type=int, default=48)
    parser.add_argument("--lead", type=float, default=15.0, help="load before a fault")
    parser.add_argument("--tail", type=float, default=15.0, help="load after a fault")
    parser.add_argument("--embedder", default="hashing")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--think-min", type=float, default=2.0)
    parser.add_argument("--think-max", type=float, default=5.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--desk-every", type=float, default=1.0)
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run these scenarios only")
    parser.add_argument("--keep", type=Path, help="keep databases and logs in this folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--llm-port",
        type=int,
        default=0,
        help="the LLM stand-in's port (the same port keeps a --keep folder's cache)",
    )
    parser.add_argument("--serve-llm", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--llm-log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_llm:
        serve_llm(args.serve_llm, args.llm_log)
        return
    if args.quick:
        args.kills, args.api_kills, args.outage_seconds = min(args.kills, 10), min(args.api_kills, 2), 10.0
        args.conversations, args.lead, args.tail, args.full_seconds = 10, 8.0, 8.0, 8.0
    results = run(args)
    report(results)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
