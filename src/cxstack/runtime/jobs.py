"""The scale-out runtime: turns and periodic work as procrastinate jobs on the deployment's PostgreSQL.

`cxstack serve --runtime procrastinate` runs API processes only: a stored message defers a `run_turns` job for
its conversation. `cxstack worker` processes (any number, on any machine that reaches the database) run those
jobs with the same `TurnWorker` the embedded runtimes use, so the store's lease and fenced commits stay the
safety net: a job run twice (a worker killed after its commit) finds nothing pending and answers nothing.

Order and exclusion per conversation come from procrastinate's `lock` (jobs with the same lock run one at a
time, oldest first, across every worker); its `queueing_lock` keeps a burst of messages to one waiting job.
Periodic work (resuming what no job announced, retrying the jobs of a dead worker, the outbox and the help
desk exports, IMAP polling, review sampling, removing old jobs) is procrastinate's periodic tasks: one job per
tick per deployment, whatever the number of workers, and each behind a lock of its own so two runs never
overlap. An API process runs none of it; it only keeps its own knowledge files in step.

A worker announces each commit with `NOTIFY cxstack_commits, '<conversation id>'` right after it; every API
process LISTENs on that channel and wakes the requests and web-chat streams waiting on the conversation, so a
reply reaches them without polling. A notification lost (the listener reconnecting) costs only latency: they
also look again every `wait_poll_seconds`, and a reconnected listener wakes every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import procrastinate
import procrastinate.builtin_tasks
import procrastinate.schema
import psycopg
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from cxstack.channels.rest import ReplyBroker
from cxstack.domain.models import ConversationId
from cxstack.domain.ports import Store
from cxstack.runtime.health import WorkerHealth
from cxstack.runtime.owner import RuntimeClaim
from cxstack.runtime.worker import TurnWorker, count_interrupted_turn
from cxstack.store.db import database_error_line, normalize_url, postgres_session_defaults

if TYPE_CHECKING:
    from cxstack.app import CxApp
    from cxstack.channels.email import ImapPoller

log = logging.getLogger(__name__)

NAMESPACE = "cxstack"
TURNS_QUEUE = "cxstack_turns"
PERIODIC_QUEUE = "cxstack_periodic"
RUN_TURNS = f"{NAMESPACE}:run_turns"
DELIVER = f"{NAMESPACE}:deliver"
IMAP = f"{NAMESPACE}:imap"
COMMITS_CHANNEL = "cxstack_commits"  # LISTEN/NOTIFY: a worker committed a turn of the conversation named
EVERY_2_S = "* * * * * */2"  # the 6th column: seconds
CONTEXT_KEY = "cxstack"
SCHEMA_LOCK = 872364501  # the advisory lock workers take to create procrastinate's tables


class ScaleSettings(BaseSettings):
    """Timings of the scale-out runtime (CXSTACK_SCALE_*): production defaults; tests shorten them."""

    model_config = SettingsConfigDict(env_prefix="CXSTACK_SCALE_", extra="ignore")

    # A conversation's lease: how long a dead worker's conversation waits before another worker takes it.
    lease_seconds: float = 60.0
    # A worker whose heartbeat is older than this is dead: its running jobs are retried elsewhere.
    stalled_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    # Finished jobs are deleted; kept, procrastinate_jobs records which worker ran what (tests, debugging).
    keep_jobs: bool = False
    # How long a stopping worker lets its running jobs finish (SIGTERM) before cancelling them.
    shutdown_seconds: float = 30.0
    # Failed, cancelled and aborted jobs (and their events) are removed this long after they ended.
    keep_failed_hours: int = 72
    # An API process waiting for a turn (?wait=true) looks at the store this often besides the commit
    # notifications (a notification lost while its listener reconnects costs this much latency, no more).
    wait_poll_seconds: float = 1.0


class ScaleRuntimeUnavailableError(ValueError):
    """The configured database cannot host the scale-out runtime (it needs PostgreSQL)."""


def conninfo(database_url: str) -> str:
    """The libpq URI of a SQLAlchemy database URL; refuses anything but PostgreSQL."""
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() != "postgresql":
        raise ScaleRuntimeUnavailableError(
            f"the procrastinate runtime needs PostgreSQL, not {url.get_backend_name()}: set "
            "CXSTACK_DATABASE_URL=postgresql+psycopg://… (or use --runtime process on one machine)"
        )
    url = url.update_query_dict(postgres_session_defaults(url))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# ---- logs while the database is away ----------------------------------------------------------------------


def _database_error(error: BaseException | None) -> BaseException | None:
    """The connection error behind `error` (procrastinate wraps psycopg's), if that is what it is."""
    import psycopg_pool

    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, (psycopg.OperationalError, psycopg_pool.PoolTimeout)):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


class OneLineDatabaseErrors(logging.Filter):
    """procrastinate logs every failed heartbeat, fetch and poll while the database is away (a restart, a
    failover, a host cut off) with a full traceback: dozens of screens that bury what an operator needs. A
    record whose exception is a connection error keeps its message and gains the error's first line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = _database_error(record.exc_info[1] if record.exc_info else None)
        if error is not None:
            said = " ".join(record.getMessage().split())  # procrastinate's own messages span lines
            record.msg, record.args = f"{said} ({database_error_line(error)})", ()
            record.exc_info = record.exc_text = None
        return True


def quiet_database_tracebacks(worker: str | None = None) -> None:
    """Puts OneLineDatabaseErrors on procrastinate's loggers (a filter holds for its own logger only): those
    made so far, those of the modules it imports only when a worker starts, and the worker's own."""
    names = {
        n for n in logging.root.manager.loggerDict if n == "procrastinate" or n.startswith("procrastinate.")
    }
    names.update(f"procrastinate.{module}" for module in _LOGGING_MODULES)
    if worker is not None:
        names.add(f"procrastinate.worker.{worker}")  # made when the worker starts
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineDatabaseErrors) for f in logger.filters):
            logger.addFilter(OneLineDatabaseErrors())


_LOGGING_MODULES = ("worker", "manager", "periodic", "psycopg_connector", "utils", "app", "job_context")


def _released_job_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A job this worker was still running when it lost the database was released meanwhile (its heartbeat
    stopped, so `resume` handed the job to another worker) and procrastinate's attempt to record its end
    fails in a task nobody awaits. That is the safety net working, not an error: one line, not a traceback."""
    error = context.get("exception")
    if error is not None and 'not in "doing" or "todo" status' in str(error.__cause__ or error):
        future = context.get("future")
        name = future.get_name() if isinstance(future, asyncio.Task) else "a job"
        log.warning("%s: released while this worker was away from the database; it ran elsewhere", name)
        return
    loop.default_exception_handler(context)


# ---- tasks ---------------------------------------------------------------------------------------------


@dataclass
class WorkerComponents:
    """What a worker process builds once and every job in it shares."""

    cx: CxApp
    worker: TurnWorker
    monitoring_seconds: float
    imap: ImapPoller | None = None


def _components(context: procrastinate.JobContext) -> WorkerComponents:
    components = context.additional_context.get(CONTEXT_KEY)
    if not isinstance(components, WorkerComponents):
        raise RuntimeError("a cxstack job ran outside `cxstack worker` (no worker components)")
    return components


async def run_turns(context: procrastinate.JobContext, conversation_id: str) -> None:
    """Answers the conversation's pending messages in order (see `answer_pending`)."""
    await answer_pending(_components(context), ConversationId(conversation_id))


async def answer_pending(components: WorkerComponents, conversation_id: ConversationId) -> bool:
    """Runs the conversation's pending messages through the worker's TurnWorker; False when the
    conversation no longer exists (the job is dropped with a log line). A lease held elsewhere leaves the
    messages pending for the periodic resume, once the lease expires."""
    if await asyncio.to_thread(components.cx.store.get_conversation, conversation_id) is None:
        log.warning("run_turns: conversation %s no longer exists; job dropped", conversation_id)
        return False
    components.worker.notify(conversation_id)
    await components.worker.wait_idle(conversation_id)
    return True


async def _deliver(cx: CxApp) -> None:
    await cx.outbox.flush()
    if cx.handoff is not None:
        await cx.handoff.flush()


# The outbox is not claimed item by item, so two concurrent flushes would send a reply twice: every
# delivery job takes the same lock, so one runs at a time in the deployment.
DELIVER_LOCK = "cxstack:deliver"


async def deliver(context: procrastinate.JobContext) -> None:
    """Sends the outbox and exports escalations to the help desk, after a turn committed."""
    await _deliver(_components(context).cx)


async def deliver_tick(context: procrastinate.JobContext, timestamp: int) -> None:
    """Retries whatever is due (a failed send's back-off ended, an escalation not exported yet)."""
    await _deliver(_components(context).cx)


async def resume(context: procrastinate.JobContext, timestamp: int) -> None:
    """Releases the jobs of dead workers, then defers a job for every conversation with due pending messages
    (a failed turn whose back-off ended, a defer lost with its API process, a lease that expired)."""
    components = _components(context)
    settings = ScaleSettings()
    manager = context.app.job_manager
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=settings.stalled_seconds):
        # Failed, not retried: its lock is released and the pending messages defer a fresh job just below
        # (a retry would collide with the job already waiting behind it on the same queueing lock).
        log.warning("job %s (%s) died with its worker; releasing its lock", job.id, job.task_name)
        try:
            await manager.finish_job(job, procrastinate.jobs.Status.FAILED, delete_job=False)
        except procrastinate.exceptions.ConnectorException:
            log.info("job %s was released meanwhile (by another resume)", job.id)
            continue
        conversation_id = job.task_kwargs.get("conversation_id")
        if job.task_name == RUN_TURNS and isinstance(conversation_id, str):
            # Counted once, by the resume that released it: a poison message is set aside after N deaths.
            await asyncio.to_thread(
                count_interrupted_turn,
                components.cx.store,
                ConversationId(conversation_id),
                f"worker of job {job.id} stopped its heartbeat",
            )
    pending = await asyncio.to_thread(components.cx.store.conversations_with_pending)
    for conversation_id in pending:
        await defer_turns(context.app, conversation_id)


async def monitor(context: procrastinate.JobContext, timestamp: int) -> None:
    """Review sampling and judging, every five minutes per deployment (off when monitoring_seconds is 0)."""
    components = _components(context)
    if components.monitoring_seconds > 0 and hasattr(components.cx.store, "record_offers"):
        await asyncio.to_thread(components.cx.monitor_once)


async def imap_poll(context: procrastinate.JobContext, timestamp: int) -> None:
    """Polls the mailbox (CXSTACK_IMAP_*) once for the deployment: the mails become pending messages, whose
    turns are deferred at once (this process's own runtime is not started: it would not defer them)."""
    components = _components(context)
    if components.imap is not None and await components.imap.poll_once():
        for conversation_id in await asyncio.to_thread(components.cx.store.conversations_with_pending):
            await defer_turns(context.app, conversation_id)


async def clean(context: procrastinate.JobContext, timestamp: int) -> None:
    """Removes the jobs that ended more than `keep_failed_hours` ago, failed ones too, with their events
    (successful ones are deleted as they finish unless CXSTACK_SCALE_KEEP_JOBS)."""
    await procrastinate.builtin_tasks.remove_old_jobs(
        context,
        max_hours=ScaleSettings().keep_failed_hours,
        remove_failed=True,
        remove_cancelled=True,
        remove_aborted=True,
    )


def imap_cron(poll_seconds: float) -> str:
    """The cron of the IMAP poll nearest `poll_seconds` (procrastinate's cron has a seconds column)."""
    seconds = max(1, round(poll_seconds))
    if seconds < 60:
        return f"* * * * * */{seconds}"
    return f"*/{min(59, max(1, round(seconds / 60)))} * * * *"


async def defer_turns(app: procrastinate.App, conversation_id: str) -> bool:
    """Defers `run_turns` for the conversation; False when a job for it is already waiting (it will see the
    new message: it reads the pending messages when it runs)."""
    task = app.tasks[RUN_TURNS]
    try:
        lock = f"conversation:{conversation_id}"  # never the same as the periodic jobs' cxstack:… locks
        await task.configure(lock=lock, queueing_lock=lock).defer_async(conversation_id=conversation_id)
    except procrastinate.exceptions.AlreadyEnqueued:
        return False
    return True


def job_app(database_url: str) -> procrastinate.App:
    """A procrastinate App on the deployment's database, with cxstack's tasks (not opened yet)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(database_url)))
    app.task(name=RUN_TURNS, queue=TURNS_QUEUE, pass_context=True)(run_turns)
    every = PERIODIC_QUEUE
    app.task(name=DELIVER, queue=every, pass_context=True, lock=DELIVER_LOCK, queueing_lock=DELIVER)(deliver)
    # Made periodic by the workers that poll a mailbox (run_worker): its cadence is theirs to set.
    app.task(name=IMAP, queue=every, pass_context=True, lock=IMAP)(imap_poll)
    # resume takes no lock: it is what releases the locks of jobs that died with their worker (overlapping
    # runs are harmless: the queueing lock keeps their defers to one waiting job per conversation).
    for name, function, cron, lock in (
        ("deliver_tick", deliver_tick, EVERY_2_S, DELIVER_LOCK),
        ("resume", resume, EVERY_2_S, None),
        ("monitor", monitor, "*/5 * * * *", f"{NAMESPACE}:monitor"),
        ("clean", clean, "17 * * * *", f"{NAMESPACE}:clean"),
    ):
        task = app.task(name=f"{NAMESPACE}:{name}", queue=every, pass_context=True, lock=lock)(function)
        app.periodic(cron=cron, periodic_id="tick")(task)
    return app


async def apply_schema(database_url: str) -> bool:
    """Creates procrastinate's tables in the database (the first schema of its search_path) unless they are
    there; True when it created them. Idempotent and safe when several workers start at once: they take turns
    on an advisory lock held by one connection, and the later ones find the tables."""
    query = "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"
    async with await psycopg.AsyncConnection.connect(conninfo(database_url), autocommit=True) as connection:
        await connection.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:
            found = await (await connection.execute(query)).fetchone()
            if found is not None and found[0]:
                return False
            async with connection.transaction():
                await connection.execute(procrastinate.schema.SchemaManager.get_schema())
            return True
        finally:
            await connection.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


# ---- the API side --------------------------------------------------------------------------------------


class ProcrastinateRuntime:
    """The runtime of an API process in a scale-out deployment: it runs no turns; it defers them, and hears
    of their commits (LISTEN cxstack_commits) to wake whoever waits on `broker`.

    `notify` may be called from any thread (the ingest batcher's writer); a defer that fails (the database
    unreachable for a moment) loses nothing: the message is stored pending and a worker's periodic resume
    defers its job.
    """

    def __init__(self, database_url: str, store: Store, broker: ReplyBroker | None = None) -> None:
        self.app = job_app(database_url)
        self.broker = broker or ReplyBroker()
        self._conninfo = conninfo(database_url)
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self._deferring: set[asyncio.Task[bool]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while the commit listener is connected
        self.listener_pid: int | None = None  # its PostgreSQL backend (tests cut it)

    async def start(self) -> int:
        """Opens the connection pool, starts listening for commits and defers a job for every conversation
        left pending."""
        if not self._opened:
            quiet_database_tracebacks()
            await self.app.open_async()
            self._opened = True
        self._loop = asyncio.get_running_loop()
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="cxstack-commit-listener")
        pending = await asyncio.to_thread(self._store.conversations_with_pending)
        for conversation_id in pending:
            await defer_turns(self.app, conversation_id)
        return len(pending)

    async def _listen(self) -> None:
        """LISTENs until cancelled; reconnects (0.5 s doubling to 10 s) when the connection or the server goes
        away, then wakes every waiter: what was committed meanwhile was not announced to this process."""
        delay, connected_before = 0.5, False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {COMMITS_CHANNEL}")
                    self.listener_pid = connection.info.backend_pid
                    self.listening.set()
                    if connected_before:
                        log.info("listening for commits again")
                        self.broker.publish_all()
                    connected_before, delay = True, 0.5
                    async for notice in connection.notifies():
                        self.broker.publish(ConversationId(notice.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("commit listener lost its connection (%s); again in %.1f s", exc, delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def announce(self, conversation_id: ConversationId) -> None:
        """Tells every API process that the conversation has news (a person's reply made here, say)."""
        await notify_commit(self.app, conversation_id)

    async def request_delivery(self) -> None:
        """Defers a delivery job now instead of waiting for the next tick (a person's reply to send)."""
        await defer_delivery(self.app)

    def notify(self, conversation_id: ConversationId) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started: start() defers every pending conversation
        loop.call_soon_threadsafe(self._defer, conversation_id)

    def _defer(self, conversation_id: ConversationId) -> None:
        task = asyncio.create_task(defer_turns(self.app, conversation_id))
        self._deferring.add(task)
        task.add_done_callback(self._deferred)

    def _deferred(self, task: asyncio.Task[bool]) -> None:
        self._deferring.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not defer a turn job (a worker's resume will): %s", task.exception())

    def health(self) -> WorkerHealth:
        if not self._opened:
            return WorkerHealth("stopped", reason="job queue not opened")
        return WorkerHealth("running")

    async def live_workers(self) -> int:
        """Workers with a fresh heartbeat (readiness: an API process with none defers jobs no one runs)."""
        stalled = ScaleSettings().stalled_seconds
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_workers "
            "WHERE last_heartbeat >= NOW() - make_interval(secs => %(stalled)s)",
            stalled=stalled,
        )
        return int(row["n"])

    async def wait_idle(self, conversation_id: ConversationId | None = None) -> None:
        """Until the conversation (or every conversation) has nothing pending: the turns run elsewhere, and
        their commits' notifications wake this (the store is read again at least every wait_poll_seconds)."""
        while self._deferring:
            await asyncio.gather(*self._deferring, return_exceptions=True)
        poll = ScaleSettings().wait_poll_seconds
        while True:
            # Registered before reading, so a commit between the read and the wait still wakes this.
            waiter = None
            if conversation_id is not None:
                waiter = asyncio.create_task(self.broker.wait(conversation_id, poll))
                await asyncio.sleep(0)
            try:
                if conversation_id is None:
                    busy = bool(await asyncio.to_thread(self._store.conversations_with_pending))
                else:
                    busy = bool(await asyncio.to_thread(self._store.pending_messages, conversation_id))
                if not busy:
                    return
                if waiter is None:
                    await asyncio.sleep(min(poll, 0.05))
                else:
                    await waiter
            finally:
                if waiter is not None:
                    waiter.cancel()

    async def stop(self, *, on_runtime_loop: Callable[[], Awaitable[None]] | None = None) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._deferring:
            await asyncio.gather(*self._deferring, return_exceptions=True)
        if on_runtime_loop is not None:
            await on_runtime_loop()
        if self._opened:
            await self.app.close_async()
            self._opened = False


# ---- the worker side -----------------------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(cx: CxApp, *, concurrency: int, schema: bool = True) -> None:
    """Runs a procrastinate worker in this process until SIGTERM/SIGINT (running jobs finish first).
    Raises RuntimeTakenError when an embedded `serve` runs turns on the database."""
    settings = ScaleSettings()
    app = job_app(cx.settings.resolved_database_url())
    imap = _imap_poller(cx)
    if imap is not None:
        task = app.tasks[IMAP]
        app.periodic(cron=imap_cron(imap.settings.poll_seconds), periodic_id="tick")(task)
    claim = (
        cx.claim if cx.claim is not None else RuntimeClaim(cx.settings.resolved_database_url(), "scale-out")
    )
    await asyncio.to_thread(claim.acquire)
    keeping = asyncio.create_task(claim.keep(), name="cxstack-runtime-lock")
    try:
        await _run_worker(cx, app, settings, concurrency=concurrency, schema=schema, imap=imap)
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await asyncio.to_thread(claim.release)


def _imap_poller(cx: CxApp) -> ImapPoller | None:
    """The deployment's mailbox poller, when the workspace lists email and CXSTACK_IMAP_HOST is set."""
    from cxstack.channels import email

    settings = cx.email
    if settings is None or not settings.imap_host or email.CHANNEL not in cx.workspace.settings.channels:
        return None
    return email.ImapPoller(settings, cx.store, email.poster(cx), cx.undelivered)


async def _run_worker(
    cx: CxApp,
    app: procrastinate.App,
    settings: ScaleSettings,
    *,
    concurrency: int,
    schema: bool,
    imap: ImapPoller | None,
) -> None:
    async with app.open_async():
        if schema and await apply_schema(cx.settings.resolved_database_url()):
            log.info("procrastinate's tables created")
        await asyncio.to_thread(_record_workspace, cx)
        name = worker_name()
        worker = TurnWorker(
            cx.store,
            cx.engine.orchestrator,
            cx.reloader.current,
            on_commit=_committed(app),
            burst_window_ms=cx.settings.burst_windows(cx.engine.workspace),
            lease_seconds=settings.lease_seconds,
            worker_id=f"{name}:procrastinate",
        )
        components = WorkerComponents(
            cx=cx, worker=worker, monitoring_seconds=cx.settings.monitoring_seconds, imap=imap
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_released_job_handler)
        quiet_database_tracebacks(name)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await _ride_through(
                lambda: app.run_worker_async(
                    name=name,
                    concurrency=concurrency,
                    queues=[TURNS_QUEUE, PERIODIC_QUEUE],
                    additional_context={CONTEXT_KEY: components},
                    update_heartbeat_interval=settings.heartbeat_seconds,
                    stalled_worker_timeout=settings.stalled_seconds,
                    shutdown_graceful_timeout=settings.shutdown_seconds,
                    delete_jobs="never" if settings.keep_jobs else "successful",
                    install_signal_handlers=False,  # ours: a stop must be told from a lost database
                ),
                stop,
            )
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await worker.stop()
            with contextlib.suppress(Exception):
                await cx.engine.aclose()


async def _ride_through(
    run: Callable[[], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    *,
    first_delay: float = 0.5,
    max_delay: float = 5.0,
) -> None:
    """Runs the procrastinate worker until `stop` is set (SIGTERM/SIGINT: running jobs finish first), and
    again whenever it ends on its own. It does when the database goes away (a restart, a failover): a failed
    heartbeat stops it, a failed fetch raises. Its jobs are safe meanwhile: a turn that could not commit stays
    pending, and a job left running under the old registration is released as a dead worker's by `resume`."""
    delay = first_delay
    while not stop.is_set():
        started = asyncio.get_running_loop().time()
        running = asyncio.create_task(run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            running.cancel()  # procrastinate then stops gracefully, as on its own signal handlers
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running
            return
        stopping.cancel()
        error = running.exception() if not running.cancelled() else None
        if asyncio.get_running_loop().time() - started > 60:
            delay = first_delay  # it ran a good while: this is a new outage
        log.warning(
            "the job worker stopped (%s); starting it again in %.1f s",
            database_error_line(error) if error is not None else "it lost the database",
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay)


def _record_workspace(cx: CxApp) -> None:
    """The versions this worker's traces will name (a worker may start before any API process has)."""
    from cxstack.optimization.experiments import variant_workspaces
    from cxstack.workspace.loader import canonical_content

    ws = cx.engine.workspace
    cx.store.save_workspace_version(ws.version, ws.settings.name, canonical_content(ws))
    for variant in variant_workspaces(ws).values():
        cx.store.save_workspace_version(variant.version, ws.settings.name, canonical_content(variant))


async def notify_commit(app: procrastinate.App, conversation_id: ConversationId) -> None:
    """NOTIFY cxstack_commits: the API processes listening wake what waits on the conversation. A failure
    is only logged: they look at the store again within wait_poll_seconds."""
    try:
        await app.connector.execute_query_async(
            "SELECT pg_notify(%(channel)s, %(conversation)s)",
            channel=COMMITS_CHANNEL,
            conversation=str(conversation_id),
        )
    except Exception as exc:
        log.warning("could not announce the commit of %s: %s", conversation_id, exc)


async def defer_delivery(app: procrastinate.App) -> None:
    # A burst of commits queues one delivery job, which sends them all.
    with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):
        await app.tasks[DELIVER].defer_async()


def _committed(app: procrastinate.App) -> Callable[[ConversationId], Awaitable[None]]:
    async def committed(conversation_id: ConversationId) -> None:
        # Right after the fenced commit: whoever waits for the reply first, then one delivery job for the
        # deployment sends it (the reply is in the outbox).
        await notify_commit(app, conversation_id)
        await defer_delivery(app)

    return committed
