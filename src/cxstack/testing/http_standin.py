"""A real HTTP server on 127.0.0.1 for tests: the far end of a connector, a webhook target, a fake provider.

    backend = ScriptedBackend()
    backend.on("POST", "/orders/{order_id}/refunds", Reply(500), Reply(200, {"refund_id": "R1"}))
    with backend.serve() as base_url:
        ...                      # call base_url + "/orders/ORD-1/refunds"
    backend.requests             # what the server received, in order

Or serve any ASGI app: `with LocalHttpServer(app) as base_url: ...`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp


class LocalHttpServer:
    """Runs an ASGI app with uvicorn in a background thread on a free port of `host` (loopback by default)."""

    def __init__(self, app: ASGIApp, *, startup_timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> str:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=0,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="local-http-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("local HTTP server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._thread = server, thread
        self.base_url = f"http://{self.host}:{port}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted response: status, JSON body (a str body is sent as text), delay before answering."""

    status: int = 200
    body: Any = field(default_factory=dict)  # JSON; a str is sent as text and bytes as they are
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    # Server-sent events: each item is one `data:` event (a dict as JSON), in order; `body` is unused
    events: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # decoded
    raw_path: str  # as sent on the wire, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    path_params: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Handler = Callable[[RecordedRequest], Reply]


class _Route:
    def __init__(self, method: str, template: str, replies: list[Reply] | Handler) -> None:
        self.method = method.upper()
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.regex = re.compile(f"^{pattern}$")
        self.replies = replies

    def next_reply(self, request: RecordedRequest) -> Reply:
        if callable(self.replies):
            return self.replies(request)
        # The last scripted reply repeats once the others are used up.
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


class ScriptedBackend:
    """A back office whose answers a test scripts per route, recording every request it receives.
    Unscripted routes answer 404."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    def on(self, method: str, path: str, *replies: Reply, handler: Handler | None = None) -> ScriptedBackend:
        """Script `method path` (a template: /orders/{order_id}, matched against the still-encoded path, so a
        parameter is one segment); the latest script for a route wins."""
        if handler is None and not replies:
            raise ValueError("give at least one Reply or a handler")
        with self._lock:
            self._routes.insert(0, _Route(method, path, handler or list(replies)))
        return self

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and path in (r.path, r.raw_path)]

    @contextmanager
    def serve(self, host: str = "127.0.0.1") -> Iterator[str]:
        with LocalHttpServer(self.app, host=host) as base_url:
            yield base_url

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0] or request.url.path
        with self._lock:
            route, params = None, {}
            for candidate in self._routes:
                match = candidate.regex.match(raw_path)
                if candidate.method == request.method and match:
                    route, params = candidate, {k: unquote(v) for k, v in match.groupdict().items()}
                    break
            recorded = RecordedRequest(
                method=request.method,
                path=request.url.path,
                raw_path=raw_path,
                query=dict(request.query_params),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                path_params=params,
            )
            self.requests.append(recorded)
            reply = route.next_reply(recorded) if route else Reply(404, {"error": "not scripted"})
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.events is not None:
            return StreamingResponse(
                _events(reply.events), status_code=reply.status, media_type="text/event-stream"
            )
        if isinstance(reply.body, bytes):
            # Sent as given: a Content-Length header larger than the body makes a reply cut short.
            return Response(reply.body, status_code=reply.status, headers=reply.headers)
        if isinstance(reply.body, str):
            return PlainTextResponse(reply.body, status_code=reply.status, headers=reply.headers)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


async def _events(events: tuple[Any, ...]) -> AsyncIterator[bytes]:
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        yield f"data: {data}\n\n".encode()
