"""The REST / web chat channel: replies are read over the API; waiting clients are woken when one is sent."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from cxstack.domain.models import ConversationId
from cxstack.domain.ports import OutboxItem


class ReplyBroker:
    """Wakes clients (the web page, `cxstack chat`, long-polling API calls) when a conversation has news."""

    def __init__(self) -> None:
        self._events: defaultdict[ConversationId, asyncio.Event] = defaultdict(asyncio.Event)

    def publish(self, conversation_id: ConversationId) -> None:
        event = self._events.pop(conversation_id, None)
        if event is not None:
            event.set()

    def publish_all(self) -> None:
        """Wakes every waiter: news may have been missed (a notification channel reconnected)."""
        events, self._events = self._events, defaultdict(asyncio.Event)
        for event in events.values():
            event.set()

    async def wait(self, conversation_id: ConversationId, timeout: float) -> bool:
        event = self._events[conversation_id]
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            if self._events.get(conversation_id) is event and not event.is_set():
                # Dropped so idle conversations do not pile up; a concurrent waiter on it falls back to its
                # own timeout and polls again.
                del self._events[conversation_id]
            return False


class RestChannel:
    def __init__(self, name: str, broker: ReplyBroker) -> None:
        self.name = name
        self._broker = broker

    async def send(self, item: OutboxItem) -> str | None:
        self._broker.publish(item.conversation_id)
        return None
