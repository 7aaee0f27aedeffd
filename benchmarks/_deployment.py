"""A real deployment for the scale and soak benchmarks, the load that drives it and the checks by id.

Two kinds, each with the demo back office (a child process with a recorder of its write requests, as in
benchmarks/faults.py) and a store made for the run:
- "embedded": the default on one machine, `cxstack serve --runtime process` on its own SQLite file;
- "procrastinate": N `cxstack serve --runtime procrastinate` API processes and M `cxstack worker` processes,
  each with its own CXSTACK_HOME (as on separate hosts), on a fresh PostgreSQL schema dropped afterwards.

The load goes through the real HTTP API (the `api` channel: no burst window, every message its own turn).
Ingest latency is POST → 2xx as the client sees it. End-to-end latency is POST → the turn committed, seen by
a watcher that reads the store (one indexed query every 25 ms for all outstanding messages): the API has no
way to wait for one message's turn without also waiting for ingest (`?wait=true` answers only once the turn
is done), and polling the conversation through the API would add load that differs between the runtimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, bindparam, select, text

from benchmarks.faults import (
    PlannedConversation,
    check_backoffice,
    free_port,
    plan_load,
    stop_process,
    wait_until,
)

DEFAULT_PG_URL = os.environ.get("CXSTACK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHANNEL = "api"
WATCH_EVERY_S = 0.025
PREFIX = "load"
RUN_PREFIXES = ("load-", "probe-", "soak-")


def plan(messages: int, conversations: int, seed: int, prefix: str = PREFIX) -> list[PlannedConversation]:
    """The faults benchmark's conversations of real demo samples, renamed for this run."""
    planned = plan_load(messages, conversations, seed)
    return [
        PlannedConversation(f"{prefix}-{i:04d}", c.customer_id, c.messages, c.samples)
        for i, c in enumerate(planned)
    ]


# ---- the deployment ----------------------------------------------------------------------------------------


@dataclass
class Deployment:
    kind: str  # "embedded" | "procrastinate"
    root: Path
    database_url: str
    api_urls: list[str]
    integration_key: str
    staff_key: str
    office_url: str
    office_db: Path
    office_log: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    schema: str | None = None
    pg_admin_url: str | None = None
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """A read connection pool on the deployment's store, for the watcher and the samplers."""
        if self._engine is None:
            from cxstack.store.db import create_engine_for

            self._engine = create_engine_for(self.database_url)
        return self._engine

    def pids(self) -> dict[str, int]:
        """Every process of the deployment, the embedded runtime's turn worker (a child of serve) too."""
        found = {name: p.pid for name, p in self.processes.items() if p.poll() is None}
        if self.kind == "embedded":
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                pid = httpx.get(f"{self.api_urls[0]}/health", timeout=2).json()["worker"]["pid"]
                if pid:
                    found["turn-worker"] = int(pid)
        return found

    def backlog(self) -> dict[str, int]:
        """Conversations and messages waiting for a turn, replies not sent yet, (scale-out) jobs queued."""
        queries = {
            "pending_conversations": "SELECT count(*) FROM conversations WHERE pending_count > 0",
            "pending_messages": "SELECT coalesce(sum(pending_count), 0) FROM conversations",
            "outbox_pending": "SELECT count(*) FROM outbox WHERE status = 'pending'",
        }
        if self.kind == "procrastinate":
            queries["jobs_todo"] = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
        with self.engine.connect() as connection:
            return {name: int(connection.execute(text(sql)).scalar_one()) for name, sql in queries.items()}

    def stop(self) -> None:
        for name, process in self.processes.items():
            if name != "backoffice":
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            if name != "backoffice":
                stop_process(process)
        if "backoffice" in self.processes:
            stop_process(self.processes["backoffice"])
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def drop(self) -> None:
        """Drops the run's PostgreSQL schema (the SQLite file goes with the run's folder)."""
        if self.schema is None or self.pg_admin_url is None:
            return
        from cxstack.store.db import create_engine_for

        admin = create_engine_for(self.pg_admin_url)
        try:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        finally:
            admin.dispose()


def warm_router_cache(cache: Path, embedder: str | None) -> Path:
    """Trains the demo's router once into `cache`; every process of the run then starts from a copy of it in
    its own CXSTACK_HOME (as a host whose cache survived a restart would) instead of each training its own
    on the same two cores at once. Startup is not what these benchmarks measure."""
    from cxstack.app import build_engine
    from cxstack.demo import demo_workspace_path
    from cxstack.workspace.loader import load_workspace

    # loads the router from the cache when it is there (the cache is keyed by workspace version and embedder)
    build_engine(
        load_workspace(demo_workspace_path()),
        embedder_name=embedder,
        cache_dir=cache,
        llm=None,
        connectors={},
    )
    return cache


def _seed_home(home: Path, router_cache: Path | None) -> Path:
    if router_cache is not None:
        (home / "cache").mkdir(parents=True, exist_ok=True)
        for trained in router_cache.glob("router-*.pickle"):
            shutil.copy2(trained, home / "cache" / trained.name)
    return home


def _base_env(home: Path, office_url: str, embedder: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "CXSTACK_HOME": str(home),
        "CXSTACK_BACKOFFICE_URL": office_url,
        # Every API process of one deployment signs web-chat sessions with the same secret.
        "CXSTACK_SECRET_KEY": "scale-benchmark-" + uuid.uuid4().hex,
    }
    env.pop("CXSTACK_DATABASE_URL", None)
    env.pop("CXSTACK_EMBEDDER", None)
    if embedder:
        env["CXSTACK_EMBEDDER"] = embedder
    return env


def _cxstack() -> str:
    return str(Path(sys.executable).with_name("cxstack"))


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _prepare_store(home: Path, database_url: str) -> tuple[str, str]:
    """Migrates the store, imports the demo customers and makes the load's keys, before any process starts
    (so that several processes never race to migrate a fresh database)."""
    from cxstack.api.keys import ApiKeys
    from cxstack.app import Settings, open_store
    from cxstack.cli.services import import_customers_file
    from cxstack.demo import demo_customers_csv, demo_workspace_path
    from cxstack.workspace.loader import load_workspace

    store = open_store(Settings(home=home, database_url=database_url))
    try:
        import_customers_file(store, demo_customers_csv(), load_workspace(demo_workspace_path()))
        keys = ApiKeys(store)
        integration = keys.create("load benchmark (integration)", "integration").secret
        staff = keys.create("load benchmark (agent)", "agent").secret
    finally:
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()
    return integration, staff


def _healthy(url: str, *, scale_out: bool) -> bool:
    body = httpx.get(f"{url}/health", timeout=2).json()
    if scale_out:
        return bool(body.get("status") == "ok")
    return bool(body.get("status") == "ok" and (body.get("worker") or {}).get("pid"))


def _start_office(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path, Path]:
    port = free_port()
    office_db, office_log = root / "backoffice.db", root / "backoffice-writes.jsonl"
    args = [sys.executable, "-m", "benchmarks.faults", "--serve-backoffice", str(port)]
    args += ["--office-db", str(office_db), "--office-log", str(office_log)]
    process = _spawn(args, env, root / "backoffice.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200, 60, "the back office")
    return process, url, office_db, office_log


def start_embedded(root: Path, *, embedder: str | None, router_cache: Path | None = None) -> Deployment:
    """`cxstack serve` as `make run` starts it (the process runtime), on the run's own SQLite file."""
    from cxstack.demo import demo_workspace_path

    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    database_url = f"sqlite:///{home / 'cxstack.db'}"
    env = _base_env(home, "", embedder)
    office, office_url, office_db, office_log = _start_office(root, env)
    env["CXSTACK_BACKOFFICE_URL"] = office_url
    deployment = Deployment(
        "embedded", root, database_url, [], "", "", office_url, office_db, office_log, {"backoffice": office}
    )
    try:
        deployment.integration_key, deployment.staff_key = _prepare_store(home, database_url)
        _seed_home(home, router_cache)
        port = free_port()
        args = [_cxstack(), "serve", str(demo_workspace_path()), "--port", str(port), "--runtime", "process"]
        deployment.processes["api-0"] = _spawn([*args, "--no-backoffice"], env, root / "serve.log")
        url = f"http://127.0.0.1:{port}"
        deployment.api_urls.append(url)
        wait_until(lambda: _healthy(url, scale_out=False), 600, f"the service (logs: {root / 'serve.log'})")
    except BaseException:
        deployment.stop()
        raise
    return deployment


def start_procrastinate(
    root: Path,
    *,
    workers: int,
    concurrency: int,
    apis: int,
    embedder: str | None,
    pg_url: str,
    router_cache: Path | None = None,
) -> Deployment:
    """N API processes and M workers on a schema of their own; returns once every worker is registered and
    every API process answers /health."""
    from cxstack.demo import demo_workspace_path
    from cxstack.runtime.jobs import apply_schema
    from cxstack.store.db import create_engine_for

    root.mkdir(parents=True, exist_ok=True)
    schema = f"cxstack_load_{uuid.uuid4().hex[:12]}"
    admin = create_engine_for(pg_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    database_url = f"{pg_url}?options=-csearch_path%3D{schema}"
    env = _base_env(root / "home-bench", "", embedder)
    env["CXSTACK_DATABASE_URL"] = database_url
    deployment = Deployment(
        "procrastinate", root, database_url, [], "", "", "", root / "backoffice.db", root / "x", {}
    )
    deployment.schema, deployment.pg_admin_url = schema, pg_url
    try:
        office, office_url, office_db, office_log = _start_office(root, env)
        deployment.processes["backoffice"] = office
        deployment.office_url, deployment.office_db, deployment.office_log = office_url, office_db, office_log
        env["CXSTACK_BACKOFFICE_URL"] = office_url
        keys = _prepare_store(root / "home-bench", database_url)
        deployment.integration_key, deployment.staff_key = keys
        asyncio.run(apply_schema(database_url))
        workspace = str(demo_workspace_path())
        for n in range(workers):
            home = _seed_home(root / f"home-worker-{n}", router_cache)
            args = [_cxstack(), "worker", workspace, "--concurrency", str(concurrency), "--no-apply-schema"]
            log = root / f"worker-{n}.log"
            deployment.processes[f"worker-{n}"] = _spawn(args, {**env, "CXSTACK_HOME": str(home)}, log)
        for n in range(apis):
            port = free_port()
            home = _seed_home(root / f"home-api-{n}", router_cache)
            args = [_cxstack(), "serve", workspace, "--port", str(port), "--runtime", "procrastinate"]
            log = root / f"api-{n}.log"
            deployment.processes[f"api-{n}"] = _spawn(
                [*args, "--no-backoffice"], {**env, "CXSTACK_HOME": str(home)}, log
            )
            deployment.api_urls.append(f"http://127.0.0.1:{port}")
        for url in deployment.api_urls:
            wait_until(lambda url=url: _healthy(url, scale_out=True), 600, f"the API at {url} (logs: {root})")

        def registered() -> bool:
            for name, process in deployment.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} (logs: {root})")
            sql = "SELECT count(*) FROM procrastinate_workers"
            with deployment.engine.connect() as connection:
                return int(connection.execute(text(sql)).scalar_one()) >= workers

        wait_until(registered, 600, f"{workers} registered workers (logs: {root})")
    except BaseException:
        deployment.stop()
        deployment.drop()
        raise
    return deployment


@contextlib.contextmanager
def deployed(kind: str, root: Path, **options: Any) -> Iterator[Deployment]:
    if kind == "embedded":
        deployment = start_embedded(
            root, embedder=options["embedder"], router_cache=options.get("router_cache")
        )
    else:
        deployment = start_procrastinate(root, **options)
    try:
        yield deployment
    finally:
        deployment.stop()
        deployment.drop()


# ---- the load ----------------------------------------------------------------------------------------------


@dataclass
class Sent:
    external_id: str
    conversation_id: str
    sent_at: float  # wall clock (time.time): the watcher compares it with the store's clock
    sent_mono: float
    ingest_s: float | None = None
    message_id: str | None = None
    answered_mono: float | None = None
    status: int | None = None

    @property
    def e2e_s(self) -> float | None:
        return None if self.answered_mono is None else self.answered_mono - self.sent_mono


@dataclass
class LoadRun:
    sent: list[Sent] = field(default_factory=list)
    post_errors: Counter[str] = field(default_factory=Counter)
    started_mono: float = 0.0
    ended_mono: float = 0.0  # the last arrival (open loop) or the last answer (closed loop)
    hand_backs: int = 0
    desk_errors: Counter[str] = field(default_factory=Counter)

    def acknowledged(self) -> dict[str, str]:
        return {s.external_id: s.message_id for s in self.sent if s.message_id is not None}


class TurnWatcher:
    """Tells waiters when the turn that answers their message has committed (a trace names the message)."""

    def __init__(self, deployment: Deployment) -> None:
        from cxstack.store.orm import TraceRow

        self._deployment = deployment
        self._waiting: dict[str, tuple[Sent, asyncio.Event]] = {}
        self._query = select(TraceRow.message_id).where(
            TraceRow.conversation_id.in_(bindparam("conversations", expanding=True)),
            TraceRow.created_at >= bindparam("since"),
        )

    def watch(self, sent: Sent) -> asyncio.Event:
        assert sent.message_id is not None
        event = asyncio.Event()
        self._waiting[sent.message_id] = (sent, event)
        return event

    @property
    def outstanding(self) -> int:
        return len(self._waiting)

    def _committed(self, conversations: list[str], since: Any) -> set[str]:
        with self._deployment.engine.connect() as connection:
            rows = connection.execute(self._query, {"conversations": conversations, "since": since})
            return {row[0] for row in rows}

    async def run(self) -> None:
        from datetime import UTC, datetime

        while True:
            if self._waiting:
                waiting = list(self._waiting.values())
                conversations = sorted({s.conversation_id for s, _ in waiting})
                # a trace is created after its message was posted (1 s for clock granularity)
                since = datetime.fromtimestamp(min(s.sent_at for s, _ in waiting) - 1.0, UTC)
                done = await asyncio.to_thread(self._committed, conversations, since)
                seen = time.monotonic()
                for message_id in done & self._waiting.keys():
                    sent, event = self._waiting.pop(message_id)
                    sent.answered_mono = seen
                    event.set()
            await asyncio.sleep(WATCH_EVERY_S)


class Desk:
    """A person on the escalation desk, as in benchmarks/faults.py: every second, answers each open escalation
    of the run's conversations and hands it back, so that the bot answers the customer's next messages (the
    demo's samples escalate now and then, and an escalated conversation's later turns stay silent)."""

    def __init__(self, deployment: Deployment, every_s: float = 1.0) -> None:
        self._deployment = deployment
        self._every_s = every_s
        self.hand_backs = 0
        self.errors: Counter[str] = Counter()

    async def run(self, client: httpx.AsyncClient) -> None:
        staff = {"Authorization": f"Bearer {self._deployment.staff_key}"}
        base = self._deployment.api_urls[0]
        reply = {"text": "A colleague here: sorted, thanks for waiting.", "author": "desk", "hand_back": True}
        while True:
            try:
                response = await client.get(
                    f"{base}/v1/escalations", params={"status": "open"}, headers=staff
                )
                packets = response.json() if response.status_code == 200 else []
                for packet in packets:
                    conversation = packet["conversation_id"]
                    if not conversation.startswith(RUN_PREFIXES):
                        continue
                    url = f"{base}/v1/conversations/{conversation}/human-replies"
                    answered = await client.post(url, json=reply, headers=staff)
                    if answered.status_code < 300:
                        self.hand_backs += 1
                    else:
                        self.errors[f"human-replies {answered.status_code}"] += 1
            except httpx.HTTPError as error:
                self.errors[type(error).__name__] += 1
            await asyncio.sleep(self._every_s)


class Poster:
    """Posts one message through the API (round robin over the API processes), retrying transport errors
    and 5xx with the same external id (a retry of a stored message is acknowledged as a duplicate)."""

    def __init__(self, deployment: Deployment, client: httpx.AsyncClient) -> None:
        self._urls = deployment.api_urls
        self._client = client
        self._next = 0

    async def post(self, conversation: PlannedConversation, index: int, run: LoadRun) -> Sent:
        sent = Sent(conversation.external_id(index), conversation.id, time.time(), time.monotonic())
        run.sent.append(sent)
        body = {
            "text": conversation.messages[index],
            "external_id": sent.external_id,
            "channel": CHANNEL,
            "customer_id": conversation.customer_id,
        }
        delay = 0.2
        for _ in range(60):
            url = self._urls[self._next % len(self._urls)]
            self._next += 1
            started = time.monotonic()
            try:
                response = await self._client.post(
                    f"{url}/v1/conversations/{conversation.id}/messages", json=body
                )
            except httpx.HTTPError as error:
                run.post_errors[type(error).__name__] += 1
            else:
                if response.status_code in (200, 202):
                    if sent.ingest_s is None:  # the first attempt's answer: a retry's is not ingest latency
                        sent.ingest_s = time.monotonic() - started
                    sent.status = response.status_code
                    sent.message_id = response.json()["message_id"]
                    return sent
                run.post_errors[f"HTTP {response.status_code}"] += 1
                if response.status_code < 500 and response.status_code != 429:
                    return sent  # refused: never acknowledged, so not counted as lost
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return sent


def client_for(deployment: Deployment, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {deployment.integration_key}"}
    return httpx.AsyncClient(timeout=60, limits=limits, headers=headers)


async def closed_loop(
    deployment: Deployment,
    conversations: list[PlannedConversation],
    *,
    answer_timeout_s: float,
    progress: Callable[[int], None] | None = None,
) -> LoadRun:
    """Each conversation's customer posts a message, waits for its turn, posts the next: as many messages in
    flight as conversations, so with more conversations than turn slots the workers never idle."""
    run = LoadRun()
    watcher = TurnWatcher(deployment)
    desk = Desk(deployment)
    async with client_for(deployment, len(conversations) + 4) as client:
        poster = Poster(deployment, client)
        watching = asyncio.create_task(watcher.run())
        desking = asyncio.create_task(desk.run(client))

        async def customer(conversation: PlannedConversation) -> None:
            for index in range(len(conversation.messages)):
                sent = await poster.post(conversation, index, run)
                if sent.message_id is None or sent.status == 200:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.watch(sent).wait(), answer_timeout_s)
                if progress is not None:
                    progress(1)

        run.started_mono = time.monotonic()
        try:
            await asyncio.gather(*(customer(c) for c in conversations))
        finally:
            watching.cancel()
            desking.cancel()
            await asyncio.gather(watching, desking, return_exceptions=True)
        run.hand_backs, run.desk_errors = desk.hand_backs, desk.errors
        answered = [s.answered_mono for s in run.sent if s.answered_mono is not None]
        run.ended_mono = max(answered, default=time.monotonic())
    return run


@dataclass
class OpenLoop:
    """Arrivals at a fixed mean rate (Poisson), whatever the service does: the backlog shows if it keeps up.
    Each arrival is the next message of a conversation chosen at random among those with messages left."""

    rate: float
    seconds: float
    seed: int
    lateness_s: list[float] = field(default_factory=list)  # how far the client fell behind its schedule
    watcher: TurnWatcher | None = None
    run: LoadRun = field(default_factory=LoadRun)
    drained_mono: float | None = None

    async def drive(
        self, deployment: Deployment, conversations: list[PlannedConversation], *, in_flight: int = 64
    ) -> LoadRun:
        rng = random.Random(self.seed)
        self.watcher = watcher = TurnWatcher(deployment)
        limit = asyncio.Semaphore(in_flight)
        next_index = {c.id: 0 for c in conversations}
        by_id = {c.id: c for c in conversations}
        tasks: set[asyncio.Task[None]] = set()
        desk = Desk(deployment)
        async with client_for(deployment, in_flight + 4) as client:
            poster = Poster(deployment, client)
            watching = asyncio.create_task(watcher.run())
            desking = asyncio.create_task(desk.run(client))

            async def arrive(conversation: PlannedConversation, index: int) -> None:
                async with limit:
                    sent = await poster.post(conversation, index, self.run)
                if sent.message_id is not None and sent.status == 202:
                    watcher.watch(sent)

            self.run.started_mono = start = time.monotonic()
            due = start
            try:
                while due - start < self.seconds:
                    left = [cid for cid, i in next_index.items() if i < len(by_id[cid].messages)]
                    if not left:
                        break
                    cid = rng.choice(left)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    self.lateness_s.append(max(0.0, time.monotonic() - due))
                    task = asyncio.create_task(arrive(by_id[cid], next_index[cid]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    next_index[cid] += 1
                    due += rng.expovariate(self.rate)
                self.run.ended_mono = time.monotonic()
                await asyncio.gather(*tasks)
            finally:
                watching.cancel()
                desking.cancel()
                await asyncio.gather(watching, desking, return_exceptions=True)
            self.run.hand_backs, self.run.desk_errors = desk.hand_backs, desk.errors
        return self.run


async def wait_answered(watcher: TurnWatcher, timeout_s: float) -> bool:
    """Keeps the watcher running until every acknowledged message has its turn (or the timeout)."""
    watching = asyncio.create_task(watcher.run())
    try:
        deadline = time.monotonic() + timeout_s
        while watcher.outstanding and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return watcher.outstanding == 0
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


def wait_drained(deployment: Deployment, timeout_s: float) -> tuple[bool, float]:
    """Until nothing is pending and every reply has left the outbox; (drained, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        backlog = deployment.backlog()
        if backlog["pending_conversations"] == 0 and backlog["outbox_pending"] == 0:
            return True, time.monotonic() - started
        time.sleep(0.25)
    return False, time.monotonic() - started


# ---- figures and checks ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread_ms(values: list[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "p50": ms(percentile(values, 0.5)),
        "p99": ms(percentile(values, 0.99)),
        "mean": ms(statistics.fmean(values)) if values else None,
        "n": len(values),
    }


def check_by_id(
    deployment: Deployment, conversations: list[PlannedConversation], run: LoadRun
) -> dict[str, Any]:
    """From the store, message by message: every acknowledged message stored once and answered by exactly one
    committed turn, one reply per turn that replies, each reply queued once and sent; back-office writes
    executed once per Idempotency-Key (the faults benchmark's check)."""
    from cxstack.app import Settings, open_store
    from cxstack.domain.models import ConversationId, Role

    acknowledged = run.acknowledged()
    posted = {s.external_id for s in run.sent}
    store = open_store(Settings(home=deployment.root / "home-check", database_url=deployment.database_url))
    counts: Counter[str] = Counter()
    problems: list[str] = []
    try:
        for conversation in conversations:
            cid = ConversationId(conversation.id)
            messages = store.list_messages(cid)
            traces = store.list_traces(cid, limit=100_000)
            deliveries = store.outbox_for(cid)
            stored: defaultdict[str, list[str]] = defaultdict(list)
            for message in messages:
                if message.role == Role.CUSTOMER and message.external_id:
                    stored[message.external_id].append(str(message.id))
            turns = Counter(str(t.message_id) for t in traces)
            for index in range(len(conversation.messages)):
                external = conversation.external_id(index)
                if external not in acknowledged:
                    # planned beyond what the load posted, or refused (never acknowledged: nothing to lose)
                    counts["refused" if external in posted else "planned_not_posted"] += 1
                    continue
                counts["acknowledged"] += 1
                ids = stored.get(external, [])
                if not ids:
                    counts["lost_not_stored"] += 1
                    problems.append(f"{external} acknowledged, not stored")
                    continue
                if len(ids) > 1:
                    counts["doubled_stored"] += len(ids) - 1
                    problems.append(f"{external} stored {len(ids)} times")
                ran = turns.get(ids[0], 0)
                if ran == 0:
                    counts["lost_unanswered"] += 1
                    problems.append(f"{external} stored, no turn")
                elif ran > 1:
                    counts["doubled_turns"] += ran - 1
                    problems.append(f"{external} answered by {ran} turns")
                else:
                    counts["answered_once"] += 1
            replies = [m for m in messages if m.role == Role.ASSISTANT]
            replying = sum(1 for t in traces if t.reply is not None)
            counts["replies"] += len(replies)
            counts["no_reply_turns"] += len(traces) - replying
            if len(replies) > replying:
                counts["doubled_replies"] += len(replies) - replying
                problems.append(f"{conversation.id}: {len(replies)} replies for {replying} replying turns")
            elif len(replies) < replying:
                counts["lost_replies"] += replying - len(replies)
                problems.append(f"{conversation.id}: {len(replies)} replies for {replying} replying turns")
            queued = Counter(str(d.message_id) for d in deliveries)
            for reply in replies:
                times = queued.get(str(reply.id), 0)
                counts["doubled_deliveries"] += max(0, times - 1)
                if times == 0:
                    counts["replies_not_queued"] += 1
            counts["replies_sent"] += sum(
                1 for d in deliveries if d.status.value == "sent" and d.message_id in {r.id for r in replies}
            )
            statuses = Counter(c.status.value for c in [store.get_conversation(cid)] if c is not None)
            counts.update({f"status_{k}": v for k, v in statuses.items()})
    finally:
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()
    office = check_backoffice(deployment.office_db, deployment.office_log)
    counts["doubled_backoffice_writes"] = (
        office["duplicate_writes_refunds"] + office["duplicate_writes_other"]
    )
    lost = counts["lost_not_stored"] + counts["lost_unanswered"] + counts["lost_replies"]
    doubled = sum(
        counts[k]
        for k in (
            "doubled_stored",
            "doubled_turns",
            "doubled_replies",
            "doubled_deliveries",
            "doubled_backoffice_writes",
        )
    )
    return {
        "lost": lost,
        "doubled": doubled,
        "counts": dict(sorted(counts.items())),
        "backoffice": {k: v for k, v in office.items() if k != "events_by_kind"},
        "problems": problems[:30],
    }


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process (psutil if installed, else /proc)."""
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return float(psutil.Process(pid).memory_info().rss) / 2**20
        except Exception:
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
