"""The turn worker in a child process, for `serve` on a small machine.

A turn is milliseconds of Python and model CPU. On a thread beside the API it holds the GIL, and every webhook
then waits for it: measured here, acknowledgements fell from ~470/s to ~75/s. In its own process the worker
gets a core of its own while the API keeps acknowledging. Both sides share only the store (the source of
truth: a crash of either loses nothing) and a pipe of small notices: "conversation X has input" one way,
"conversation X committed a turn" the other.

A supervisor on the API's event loop watches the worker. When it exits (a crash, an out-of-memory kill,
`kill -9`) or stops sending its heartbeat, the supervisor starts a new one after a pause that doubles with
each failed start (0.5 s up to 30 s) and drops back once a worker has been up a minute or committed a turn;
the new worker resumes every conversation left pending. Meanwhile ingest keeps storing and acknowledging
messages, and `health()` (hence /health) says why the worker is not running.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import Store
from cxstack.runtime.health import WorkerHealth

log = logging.getLogger(__name__)

# Builds (store, orchestrator, workspace, close) inside the child; must be importable (pickled by reference).
WorkerFactory = Callable[[dict[str, Any]], Any]

# The worker's loop wakes this often to look for pending work and to tell the supervisor it is alive.
HEARTBEAT_S = 1.0


def _child_main(factory: WorkerFactory, conn: Connection) -> None:
    # The options (with the whole workspace) come over the pipe, not as Process arguments: those are written
    # to the new process before start() returns, and if it died while reading them the writer would block
    # for good. A send over the pipe fails instead (see ProcessRuntime._spawn).
    try:
        options: dict[str, Any] = conn.recv()
    except (EOFError, OSError):
        return
    asyncio.run(_child(factory, options, conn))


async def _child(factory: WorkerFactory, options: dict[str, Any], conn: Connection) -> None:
    from cxstack.runtime.worker import TurnWorker

    store, orchestrator, workspace, close = factory(options)
    # Acknowledging a webhook is what a channel times out on; a turn can wait a few milliseconds more. Only
    # once built: a restart (training the router) at low priority on a busy machine takes minutes.
    os.nice(int(options.get("niceness", 10)))
    loop = asyncio.get_running_loop()
    send_lock = threading.Lock()
    stopped = asyncio.Event()

    def send(message: tuple[str, str]) -> None:
        with send_lock:
            conn.send(message)

    async def committed(conversation_id: ConversationId) -> None:
        send(("committed", str(conversation_id)))

    worker = TurnWorker(
        store,
        orchestrator,
        workspace,
        on_commit=committed,
        burst_window_ms=options.get("burst_window_ms"),
        worker_id=options.get("worker_id"),
    )

    def read_pipe() -> None:
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                kind, value = "stop", ""
            if kind == "stop":
                loop.call_soon_threadsafe(stopped.set)
                return
            loop.call_soon_threadsafe(worker.notify, ConversationId(value))

    threading.Thread(target=read_pipe, name="cxstack-worker-pipe", daemon=True).start()
    await worker.recover()
    send(("ready", ""))
    await worker.keep_resuming(HEARTBEAT_S, stopped, beat=lambda: send(("alive", "")))
    await worker.stop()
    await close()


@dataclass(eq=False)
class _Worker:
    """One worker process and this side's end of its pipe."""

    process: BaseProcess
    conn: Connection
    started_at: float
    ready: threading.Event = field(default_factory=threading.Event)
    ready_at: float | None = None
    last_heartbeat: float = 0.0
    commits: int = 0


def restart_delay(failures_in_a_row: int, first_s: float, max_s: float) -> float:
    """Seconds to wait before starting a worker again: `first_s`, doubled per failure in a row, capped."""
    return float(min(max_s, first_s * 2 ** min(max(failures_in_a_row, 1) - 1, 30)))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit (code unknown)"
    if code < 0:
        try:
            return f"exit {code}/{signal.Signals(-code).name}"
        except ValueError:
            return f"exit {code}"
    return f"exit {code}"


class ProcessRuntime:
    def __init__(
        self,
        store: Store,
        factory: WorkerFactory,
        options: dict[str, Any],
        *,
        on_commit: Callable[[ConversationId], None] | None = None,
        start_timeout_s: float = 300.0,
        restart_first_delay_s: float = 0.5,
        restart_max_delay_s: float = 30.0,
        healthy_after_s: float = 60.0,
        unresponsive_after_s: float = 60.0,
    ) -> None:
        self._store = store
        self._factory = factory
        self._options = options
        self._on_commit = on_commit
        self._start_timeout_s = start_timeout_s
        self._restart_first_delay_s = restart_first_delay_s
        self._restart_max_delay_s = restart_max_delay_s
        self._healthy_after_s = healthy_after_s
        self._unresponsive_after_s = unresponsive_after_s
        self._worker: _Worker | None = None
        self._send_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_seen = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._restarts = 0
        self._health = WorkerHealth("stopped", reason="turn worker not started")
        # Every incarnation of the worker works under this one id, and a new one starts only once the old
        # one has exited: so it takes over the conversation leases its predecessor held when it died,
        # instead of waiting for them to expire.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:worker-{uuid.uuid4().hex[:8]}"

    @property
    def _process(self) -> BaseProcess | None:
        """The current worker process (tests kill it)."""
        return None if self._worker is None else self._worker.process

    @property
    def restarts(self) -> int:
        return self._restarts

    def health(self) -> WorkerHealth:
        return self._health

    async def start(self) -> int:
        """Starts the worker, which first resumes every conversation left pending; returns how many.

        Raises RuntimeError if the first worker cannot start: that is a configuration error, not a crash."""
        resumed = len(self._store.conversations_with_pending())
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._health = WorkerHealth("starting", reason="turn worker starting")
        worker = self._spawn()
        try:
            await self._hand_over_options(worker)
            await self._until_ready(worker)
        except RuntimeError:
            if worker.process.is_alive():
                worker.process.kill()
            raise
        self._health = WorkerHealth("running", pid=worker.process.pid)
        self._supervisor = asyncio.create_task(self._supervise(), name="cxstack-worker-supervisor")
        return resumed

    def _spawn(self) -> _Worker:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_child_main, args=(self._factory, child), name="cxstack-worker", daemon=True
        )
        process.start()
        # Only the worker holds its end now: when it dies, reads here end and sends fail instead of blocking.
        child.close()
        worker = _Worker(process=process, conn=parent, started_at=time.monotonic())
        with self._send_lock:
            self._worker = worker
        threading.Thread(
            target=self._read_pipe, args=(worker,), name="cxstack-runtime-pipe", daemon=True
        ).start()
        return worker

    async def _hand_over_options(self, worker: _Worker) -> None:
        """Sends the worker its options (the workspace is ~100 KB) off the event loop; the worker reads them
        first thing. Raises RuntimeError if it died before reading them."""
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await asyncio.to_thread(worker.conn.send, {**self._options, "worker_id": self.worker_id})
        except TimeoutError:
            worker.process.kill()  # which also ends the blocked send
            raise RuntimeError("the worker process did not read its options") from None
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise RuntimeError(
                f"the worker process ended before it read its options ({type(exc).__name__})"
            ) from exc

    async def _until_ready(self, worker: _Worker) -> None:
        while not worker.ready.is_set():
            if not worker.process.is_alive():
                raise RuntimeError(
                    f"the worker process ended while starting ({describe_exit(worker.process.exitcode)})"
                )
            if time.monotonic() - worker.started_at > self._start_timeout_s:
                raise RuntimeError(f"the worker process was not ready after {self._start_timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        failures_in_a_row = 0
        while not self._stopping:
            worker = self._worker
            assert worker is not None
            cause = await self._watch(worker)
            if self._stopping:
                return
            healthy = worker.commits > 0 or (
                worker.ready_at is not None and time.monotonic() - worker.ready_at >= self._healthy_after_s
            )
            failures_in_a_row = 1 if healthy else failures_in_a_row + 1
            await asyncio.to_thread(self._count_interrupted_turns, cause)
            self._restarts += 1
            delay = restart_delay(failures_in_a_row, self._restart_first_delay_s, self._restart_max_delay_s)
            plural = "" if self._restarts == 1 else "s"
            reason = f"turn worker restarting after {cause} ({self._restarts} restart{plural})"
            self._health = WorkerHealth("restarting", self._restarts, None, worker.process.exitcode, reason)
            log.error("%s; next start in %.1f s, pending conversations resume then", reason, delay)
            worker.conn.close()
            await asyncio.sleep(delay)
            if self._stopping:
                return
            replacement = self._spawn()
            self._health = WorkerHealth(
                "restarting", self._restarts, replacement.process.pid, worker.process.exitcode, reason
            )
            try:
                await self._hand_over_options(replacement)
                await self._until_ready(replacement)
            except RuntimeError as exc:
                log.error("turn worker restart %d failed: %s", self._restarts, exc)
                if replacement.process.is_alive():
                    await self._kill(replacement)
                continue  # the watch sees it has exited and schedules the next try, later
            self._health = WorkerHealth(
                "running", self._restarts, replacement.process.pid, worker.process.exitcode
            )
            log.warning(
                "turn worker running again (pid %s, restart %d)", replacement.process.pid, self._restarts
            )

    def _count_interrupted_turns(self, cause: str) -> None:
        """The dead worker's leases mark the conversations it was working on: see count_interrupted_turn."""
        from cxstack.runtime.worker import count_interrupted_turn

        try:
            for conversation_id in self._store.conversations_leased_to(self.worker_id):
                count_interrupted_turn(self._store, conversation_id, cause)
        except Exception:  # the store may be what failed; the restart matters more than the count
            log.exception("could not count the turns the dead worker was running")

    async def _watch(self, worker: _Worker) -> str:
        """Returns, as words, why the worker is gone: it exited, or it stopped sending heartbeats."""
        while not self._stopping:
            code = worker.process.exitcode
            if code is not None:
                return describe_exit(code)
            silent_for = time.monotonic() - max(worker.last_heartbeat, worker.ready_at or worker.started_at)
            if worker.ready.is_set() and silent_for > self._unresponsive_after_s:
                log.error(
                    "turn worker %s sent no heartbeat for %.0f s; killing it", worker.process.pid, silent_for
                )
                await self._kill(worker)
                return f"no heartbeat for {silent_for:.0f} s"
            await asyncio.sleep(0.1)
        return "stop"

    async def _kill(self, worker: _Worker) -> None:
        """SIGKILL, then wait until it has exited: a successor takes over its id and leases."""
        worker.process.kill()
        while worker.process.exitcode is None:
            await asyncio.to_thread(worker.process.join, 5)
            if worker.process.exitcode is None:
                log.error("turn worker %s has not exited 5 s after SIGKILL", worker.process.pid)

    def _read_pipe(self, worker: _Worker) -> None:
        while True:
            try:
                kind, value = worker.conn.recv()
            except (EOFError, OSError):
                return
            now = time.monotonic()
            worker.last_heartbeat = now
            if kind == "ready":
                worker.ready_at = now
                worker.ready.set()
            elif kind == "committed":
                worker.commits += 1
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._announce_commit)
                if self._on_commit is not None:
                    self._on_commit(ConversationId(value))

    def _announce_commit(self) -> None:
        # A fresh event per commit: every waiter holding the old one wakes, none can clear it for the others.
        seen, self._commit_seen = self._commit_seen, asyncio.Event()
        seen.set()

    def notify(self, conversation_id: ConversationId) -> None:
        worker = self._worker
        if worker is None or not worker.ready.is_set():
            # Not started, or restarting: the message is in the store and a worker resumes every pending
            # conversation when it is ready (and re-checks each second), so nothing waits on this notice.
            return
        try:
            with self._send_lock:
                worker.conn.send(("notify", str(conversation_id)))
        except (BrokenPipeError, OSError):
            log.debug("worker process unreachable; %s stays pending until it restarts", conversation_id)

    async def wait_idle(self, conversation_id: ConversationId | None = None) -> None:
        def pending() -> bool:
            if conversation_id is None:
                return bool(self._store.conversations_with_pending())
            return bool(self._store.pending_messages(conversation_id))

        while True:
            next_commit = self._commit_seen  # taken before looking: a commit right after still wakes us
            if not pending():
                return
            # The timeout covers a notice lost with a crashed worker.
            try:
                async with asyncio.timeout(0.2):
                    await next_commit.wait()
            except TimeoutError:
                pass

    async def stop(self, *, on_runtime_loop: Callable[[], Awaitable[None]] | None = None) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if on_runtime_loop is not None:
            await on_runtime_loop()  # this side's clients (the child closes its own)
        worker = self._worker
        if worker is not None:
            if worker.ready.is_set():  # a worker still starting has nothing to finish (and may be reading)
                try:
                    with self._send_lock:
                        worker.conn.send(("stop", ""))
                except (BrokenPipeError, OSError):
                    pass
                await asyncio.to_thread(worker.process.join, 15)
            if worker.process.is_alive():
                worker.process.terminate()
                await asyncio.to_thread(worker.process.join, 5)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5)
            worker.conn.close()
        self._health = WorkerHealth(
            "stopped", self._restarts, None, None if worker is None else worker.process.exitcode, "stopped"
        )
