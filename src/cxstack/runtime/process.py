"""The turn worker in a child process, for `serve` on a small machine.

A turn is milliseconds of Python and model CPU. On a thread beside the API it holds the GIL, and every webhook
then waits for it: measured here, acknowledgements fell from ~470/s to ~75/s. In its own process the worker
gets a core of its own while the API keeps acknowledging. Both sides share only the store (the source of
truth: a crash of either loses nothing) and a pipe of small notices: "conversation X has input" one way,
"conversation X committed a turn" the other.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import Store

log = logging.getLogger(__name__)

# Builds (store, orchestrator, workspace, close) inside the child; must be importable (pickled by reference).
WorkerFactory = Callable[[dict[str, Any]], Any]


def _child_main(factory: WorkerFactory, options: dict[str, Any], conn: Connection) -> None:
    # Acknowledging a webhook is what a channel times out on; a turn can wait a few milliseconds more.
    os.nice(int(options.get("niceness", 10)))
    asyncio.run(_child(factory, options, conn))


async def _child(factory: WorkerFactory, options: dict[str, Any], conn: Connection) -> None:
    from cxstack.runtime.worker import TurnWorker

    store, orchestrator, workspace, close = factory(options)
    loop = asyncio.get_running_loop()
    send_lock = threading.Lock()
    stopped = asyncio.Event()

    def send(message: tuple[str, str]) -> None:
        with send_lock:
            conn.send(message)

    async def committed(conversation_id: ConversationId) -> None:
        send(("committed", str(conversation_id)))

    worker = TurnWorker(
        store, orchestrator, workspace, on_commit=committed, burst_window_ms=options.get("burst_window_ms")
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
    while not stopped.is_set():
        try:
            async with asyncio.timeout(1.0):
                await stopped.wait()
        except TimeoutError:
            await worker.recover()  # a notice lost in a crash of the API still gets processed
    await worker.stop()
    await close()


class ProcessRuntime:
    def __init__(
        self,
        store: Store,
        factory: WorkerFactory,
        options: dict[str, Any],
        *,
        on_commit: Callable[[ConversationId], None] | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        self._store = store
        self._factory = factory
        self._options = options
        self._on_commit = on_commit
        self._start_timeout_s = start_timeout_s
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._ready = threading.Event()
        self._send_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_seen = asyncio.Event()

    async def start(self) -> int:
        """Starts the worker, which first resumes every conversation left pending; returns how many."""
        resumed = len(self._store.conversations_with_pending())
        self._loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._conn = parent
        self._process = context.Process(
            target=_child_main, args=(self._factory, self._options, child), name="cxstack-worker", daemon=True
        )
        self._process.start()
        threading.Thread(target=self._read_pipe, name="cxstack-runtime-pipe", daemon=True).start()
        started = time.monotonic()
        while not self._ready.is_set():
            if not self._process.is_alive():
                raise RuntimeError(f"the worker process exited with code {self._process.exitcode}")
            if time.monotonic() - started > self._start_timeout_s:
                raise RuntimeError("the worker process did not become ready")
            await asyncio.sleep(0.05)
        return resumed

    def _read_pipe(self) -> None:
        assert self._conn is not None
        while True:
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                return
            if kind == "ready":
                self._ready.set()
            elif kind == "committed":
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._announce_commit)
                if self._on_commit is not None:
                    self._on_commit(ConversationId(value))

    def _announce_commit(self) -> None:
        # A fresh event per commit: every waiter holding the old one wakes, none can clear it for the others.
        seen, self._commit_seen = self._commit_seen, asyncio.Event()
        seen.set()

    def notify(self, conversation_id: ConversationId) -> None:
        if self._conn is None:
            return  # not started: the worker recovers pending messages from the store when it starts
        try:
            with self._send_lock:
                self._conn.send(("notify", str(conversation_id)))
        except (BrokenPipeError, OSError):
            log.warning("worker process unreachable; %s stays pending until it restarts", conversation_id)

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
        if on_runtime_loop is not None:
            await on_runtime_loop()  # this side's clients (the child closes its own)
        if self._conn is not None:
            try:
                with self._send_lock:
                    self._conn.send(("stop", ""))
            except (BrokenPipeError, OSError):
                pass
        if self._process is not None:
            await asyncio.to_thread(self._process.join, 15)
            if self._process.is_alive():
                self._process.terminate()
        if self._conn is not None:
            self._conn.close()
