from __future__ import annotations

from typing import Protocol

from cxstack.domain.ports import OutboxItem


class Channel(Protocol):
    """Delivers a reply to the customer. Must be idempotent on `item.id` (the dispatcher may resend).

    Returns the provider's id for the message, if it gives one (its delivery reports name it). Raises
    `PermanentSendError` for a send that retrying cannot fix; any other exception is retried."""

    name: str

    async def send(self, item: OutboxItem) -> str | None: ...
