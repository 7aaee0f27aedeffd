"""A request body limit that answers 413 in JSON and never reads (or echoes) more than the limit."""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_detail(limit))


def too_large_detail(limit: int) -> str:
    return f"request body over the limit of {limit} bytes; nothing was stored"


class BodyLimitMiddleware:
    """A declared Content-Length over the limit is refused before the app runs; a body without one is counted
    as it is read, and the read fails with BodyTooLargeError (an HTTPException: the app's handler answers).

    A route module may raise the limit for its own paths: `app.state.body_limits` maps a path prefix to its
    limit (email webhooks carry whole mails)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_limited, send_tracking)
        except BodyTooLargeError:
            if started:
                raise
            await self._refuse(send, limit)

    def _limit_for(self, scope: Scope) -> int:
        state = getattr(scope.get("app"), "state", None)
        larger: dict[str, int] = getattr(state, "body_limits", None) or {}
        path = str(scope.get("path", ""))
        return max([self.max_body_bytes, *(n for prefix, n in larger.items() if path.startswith(prefix))])

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps({"detail": too_large_detail(limit)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
