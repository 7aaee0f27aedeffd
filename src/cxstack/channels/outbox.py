"""Sends replies from the outbox until each channel confirms, with backoff; never loses one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from cxstack.channels.base import Channel
from cxstack.domain.ports import Store

log = logging.getLogger(__name__)


class OutboxDispatcher:
    def __init__(self, store: Store, channels: Mapping[str, Channel], *, max_attempts: int = 8) -> None:
        self._store = store
        self._channels = channels
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        # A flag as well as cancel(): on Python 3.11 a cancel that lands as wait_for completes can be lost.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def flush(self) -> int:
        """Sends what is due now; returns how many were confirmed."""
        sent = 0
        for item in self._store.pending_outbox():
            if item.attempts >= self._max_attempts:
                continue
            channel = self._channels.get(item.channel)
            if channel is None:
                self._store.mark_send_failed(item.id, f"no channel named {item.channel!r}")
                continue
            try:
                await channel.send(item)
            except Exception as exc:
                log.warning("outbox %s: send on %s failed: %s", item.id, item.channel, exc)
                self._store.mark_send_failed(item.id, f"{type(exc).__name__}: {exc}")
                continue
            self._store.mark_sent(item.id)
            sent += 1
        return sent

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            try:
                pending = await self.flush()
                delay = 0.5 if pending else min(delay * 2, 30.0)
            except Exception:
                log.exception("outbox flush failed")
                delay = min(delay * 2, 30.0)
