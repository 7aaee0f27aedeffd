"""Stores inbound messages from the event loop in batches, on one writer thread.

Under load many requests want the store's single writer at once. Each taking it in turn costs a transaction,
an fsync and a thread hand-off per message; here the requests that arrive while a batch is being written
wait in a queue and go into the next batch together (`Store.ingest_many`: one transaction, a savepoint per
message). A caller's future is resolved only after its batch committed, so an acknowledged message is stored.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cxstack.domain.models import InboundMessage
from cxstack.domain.ports import IngestResult, Store

log = logging.getLogger(__name__)

MAX_BATCH = 256
Outcome = IngestResult | Exception


@dataclass
class _Pending:
    inbound: InboundMessage
    future: asyncio.Future[IngestResult]
    loop: asyncio.AbstractEventLoop


class IngestBatcher:
    """`submit` from any event loop; `on_stored` runs on the writer thread for each newly stored message."""

    def __init__(self, store: Store, on_stored: Callable[[IngestResult], None]) -> None:
        self._store = store
        self._on_stored = on_stored
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.messages = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(target=self._run, name="cxstack-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Writes what is queued, then ends the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    async def submit(self, inbound: InboundMessage) -> IngestResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        self._queue.put(_Pending(inbound, future, loop))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._store.ingest_many([p.inbound for p in batch])
        except Exception as error:  # the batch's transaction failed: nothing of it is stored
            log.exception("storing %d inbound messages failed", len(batch))
            outcomes = [error] * len(batch)
        self.batches += 1
        self.messages += len(batch)
        # One notice per conversation that got new messages (a turn takes all that are pending).
        scheduled = set()
        for outcome in outcomes:
            if isinstance(outcome, IngestResult) and outcome.created:
                conversation_id = outcome.message.conversation_id
                if conversation_id in scheduled:
                    continue
                scheduled.add(conversation_id)
                try:
                    self._on_stored(outcome)
                except Exception:  # stored and acknowledged; recovery schedules it if the notice is lost
                    log.exception("could not schedule the turn of %s", conversation_id)
        # One wake-up per event loop for the whole batch.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[IngestResult], Outcome]]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, settled in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[IngestResult], Outcome]]) -> None:
    for future, outcome in settled:
        if future.done():  # the caller went away (request cancelled)
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
