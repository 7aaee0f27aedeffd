from __future__ import annotations

from typing import Protocol

from cxstack.domain.ports import OutboxItem


class Channel(Protocol):
    """Delivers a reply to the customer. Must be idempotent on `item.id` (the dispatcher may resend)."""

    name: str

    async def send(self, item: OutboxItem) -> None: ...
