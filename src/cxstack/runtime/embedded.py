"""The embedded runtime: the turn worker on its own thread and event loop.

Turns are CPU work (embedding, routing, retrieval) of several milliseconds; on the API's event loop they would
queue every webhook behind them. On their own loop the API keeps acknowledging messages while turns run, and
the embedding model (which releases the GIL) uses the second core.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import Store
from cxstack.orchestration.orchestrator import Orchestrator
from cxstack.runtime.health import WorkerHealth
from cxstack.runtime.worker import TurnWorker
from cxstack.workspace.workspace import Workspace

T = TypeVar("T")
log = logging.getLogger(__name__)
RECOVER_EVERY_S = 1.0


async def _call(factory: Callable[[], Awaitable[None]]) -> None:
    await factory()


class EmbeddedRuntime:
    def __init__(
        self,
        store: Store,
        orchestrator: Orchestrator,
        workspace: Workspace | Callable[[], Workspace],
        *,
        on_commit: Callable[[ConversationId], None] | None = None,
        burst_window_ms: Mapping[str, int] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._on_commit = on_commit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="cxstack-runtime", daemon=True)
        self.worker = TurnWorker(
            store,
            orchestrator,
            workspace,
            on_commit=self._committed,
            burst_window_ms=burst_window_ms,
            clock=clock,
        )
        self._started = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _committed(self, conversation_id: ConversationId) -> None:
        if self._on_commit is not None:
            self._on_commit(conversation_id)

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> Awaitable[T]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def start(self) -> int:
        """Starts the thread and resumes every conversation with unprocessed messages."""
        if not self._started:
            self._thread.start()
            self._started = True
            self._loop.call_soon_threadsafe(self._start_ticker)
        return await self._submit(self.worker.recover())

    def _start_ticker(self) -> None:
        self._stopping = asyncio.Event()
        self._ticker = self._loop.create_task(self.worker.keep_resuming(RECOVER_EVERY_S, self._stopping))

    def notify(self, conversation_id: ConversationId) -> None:
        self._loop.call_soon_threadsafe(self.worker.notify, conversation_id)

    def health(self) -> WorkerHealth:
        if not self._started:
            return WorkerHealth("stopped", reason="turn worker not started")
        if not self._thread.is_alive() or not self._loop.is_running():
            return WorkerHealth("stopped", reason="turn worker thread is not running")
        return WorkerHealth("running")

    async def wait_idle(self, conversation_id: ConversationId | None = None) -> None:
        await self._submit(self._settled(conversation_id))

    async def _stop_ticker(self) -> None:
        ticker = getattr(self, "_ticker", None)
        if ticker is not None:
            self._stopping.set()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _settled(self, conversation_id: ConversationId | None) -> None:
        # A notice sent with call_soon_threadsafe is queued on this loop; yield once so it has been handled.
        await asyncio.sleep(0)
        await self.worker.wait_idle(conversation_id)

    async def stop(self, *, on_runtime_loop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stops the worker; `on_runtime_loop` runs there last (clients bound to that loop close on it)."""
        if not self._started:
            self._loop.close()
            return
        await self._submit(self._stop_ticker())
        await self._submit(self.worker.stop())
        if on_runtime_loop is not None:
            await self._submit(_call(on_runtime_loop))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        self._loop.close()
        self._started = False
