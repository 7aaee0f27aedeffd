"""The loop a background sender runs: work through what is due, then sleep until woken or the time is up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def poll_until_stopped(
    step: Callable[[], Awaitable[object]],
    wake: asyncio.Event,
    interval_s: float,
    stopping: Callable[[], bool],
    what: str,
) -> None:
    """Runs `step` until `stopping()`; a failed step is logged and tried again at the next wake or interval
    (whatever went wrong, the loop itself never dies)."""
    while not stopping():
        try:
            await step()
        except Exception:
            log.exception("%s failed", what)
        try:
            async with asyncio.timeout(interval_s):
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()
