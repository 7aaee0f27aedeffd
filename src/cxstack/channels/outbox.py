"""Sends replies from the outbox until each channel confirms; never loses one.

The store owns the retry schedule (`Store.send_retry`): it hands out only items that are due, earliest first,
moves a failed item's next attempt back, and takes an item that failed too often out of the queue as dead
(listed by `GET /v1/outbox?status=dead` and counted by /health, where a person can requeue it). So an item
that keeps failing waits on its own clock and can never hold back a newer reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from cxstack.channels.base import Channel
from cxstack.domain.ports import OutboxItem, OutboxStatus, PermanentSendError, Store
from cxstack.runtime.poll import poll_until_stopped

log = logging.getLogger(__name__)

# How long the dispatcher sleeps when nothing wakes it: the longest a retry waits past its due time.
POLL_INTERVAL_S = 1.0
BATCH = 100


class OutboxDispatcher:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        on_undelivered: Callable[[OutboxItem], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        # Told of every item that went dead: the customer is waiting for an answer that will not come.
        self._on_undelivered = on_undelivered
        self._channels = channels
        self._poll_interval_s = poll_interval_s
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
        """Sends every item that is due now, in batches; returns how many were confirmed."""
        sent = 0
        tried: set[str] = set()
        while not self._stopping:
            due = self._store.pending_outbox(limit=BATCH)
            fresh = [item for item in due if item.id not in tried]
            for item in fresh:
                tried.add(item.id)
                channel = self._channels.get(item.channel)
                if channel is None:
                    await self._failed(item.id, item.channel, f"no channel named {item.channel!r}")
                    continue
                try:
                    provider_id = await channel.send(item)
                except PermanentSendError as exc:
                    await self._failed(item.id, item.channel, str(exc), permanent=True)
                    continue
                except Exception as exc:
                    await self._failed(item.id, item.channel, f"{type(exc).__name__}: {exc}")
                    continue
                self._store.mark_sent(item.id, provider_id)
                sent += 1
            # A sent item leaves the queue and a failed one is rescheduled, so a full batch may hide more
            # due items behind it; each is tried at most once per flush.
            if len(due) < BATCH or not fresh:
                return sent
        return sent

    async def _failed(self, outbox_id: str, channel: str, error: str, *, permanent: bool = False) -> None:
        item = self._store.mark_send_failed(outbox_id, error, permanent=permanent)
        if item.status == OutboxStatus.DEAD:
            log.error(
                "outbox %s: send on %s failed %d times (%s); it is dead: GET /v1/outbox?status=dead lists it",
                outbox_id,
                channel,
                item.attempts,
                error,
            )
            if self._on_undelivered is not None:
                try:
                    await self._on_undelivered(item)
                except Exception:
                    log.exception("outbox %s: could not hand the undelivered reply to a person", outbox_id)
        else:
            log.warning(
                "outbox %s: send on %s failed (%s); attempt %d of %d at %s",
                outbox_id,
                channel,
                error,
                item.attempts + 1,
                self._store.send_retry.max_attempts,
                item.next_attempt_at.isoformat(timespec="seconds"),
            )

    async def _run(self) -> None:
        await poll_until_stopped(
            self.flush, self._wake, self._poll_interval_s, lambda: self._stopping, "outbox flush"
        )
