"""The embeddable web-chat widget: its script, the live stream of a session's conversation, CORS for both, and
an example host page. Routes only parse, call and format; the stream's events are built by pure functions.

The stream is Server-Sent Events read by the widget with `fetch`, not `EventSource`: the session token then
travels in the Authorization header like on every other /v1/webchat route (never in a URL, where proxies and
access logs keep it), and the widget needs its own reconnect loop anyway, to refresh an expired token before
reconnecting, which `EventSource` cannot do. Any SSE client that can set headers reads it as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from cxstack.api.deps import Cx
from cxstack.api.security import Principal, requires
from cxstack.api.security import Scope as AuthScope
from cxstack.app import CxApp
from cxstack.domain.models import Conversation, ConversationId, ConversationStatus, Message, Role

SCRIPT = Path(__file__).parent / "static" / "widget.js"
STREAM_PATH = "/v1/webchat/stream"
# What a customer sees of a conversation: never system notes, traces or state.
VISIBLE_ROLES = (Role.CUSTOMER, Role.ASSISTANT, Role.HUMAN_AGENT)
HANDOFF_STATUSES = (ConversationStatus.WAITING, ConversationStatus.PERSON)


class WidgetSettings(BaseSettings):
    """`CXSTACK_WIDGET_*` from the environment."""

    model_config = SettingsConfigDict(env_prefix="CXSTACK_WIDGET_", extra="ignore")

    # Sites allowed to call the web-chat routes from a browser, comma-separated ("*": any). The routes are
    # authenticated by bearer tokens, never cookies, so "*" hands a foreign page nothing it could not get
    # with curl.
    origins: str = "*"
    # Seconds between heartbeats on an idle stream: proxies close connections idle for 30–60 s.
    heartbeat_seconds: float = Field(15.0, gt=0, le=300)

    def origin_list(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.origins.split(",") if origin.strip()]


# --- the stream's events: pure functions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamState:
    """What the widget shows around the transcript."""

    status: str
    handoff: bool  # escalated or owned by a person: "A person will reply here"
    awaiting_reply: bool  # the customer's last message has no answer yet and the bot has it


def visible(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if m.role in VISIBLE_ROLES]


def stream_state(conversation: Conversation | None, messages: Sequence[Message]) -> StreamState:
    status_ = conversation.status if conversation is not None else ConversationStatus.BOT
    handoff = status_ in HANDOFF_STATUSES
    last = messages[-1] if messages else None
    awaiting = last is not None and last.role == Role.CUSTOMER and status_ == ConversationStatus.BOT
    return StreamState(status=status_.value, handoff=handoff, awaiting_reply=awaiting)


def client_id(message: Message) -> str | None:
    """The page's own id for a customer message (what it sent as external_id), so it can match its echo."""
    if message.role != Role.CUSTOMER or not message.external_id:
        return None
    prefix = f"{message.conversation_id}:"
    return message.external_id.removeprefix(prefix) if message.external_id.startswith(prefix) else None


def message_event(position: int, message: Message) -> str:
    """One message as an SSE event whose id is its position in the customer's view of the conversation: a
    client resuming with `Last-Event-ID: N` gets exactly the messages after the N it has."""
    data = {
        "id": str(message.id),
        "role": message.role.value,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "client_id": client_id(message),
    }
    return sse("message", data, event_id=position)


def state_event(state: StreamState) -> str:
    data = {"status": state.status, "handoff": state.handoff, "awaiting_reply": state.awaiting_reply}
    return sse("state", data)


def sse(event: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    # json.dumps escapes newlines, so the data is always one `data:` line.
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


HEARTBEAT = ": heartbeat\n\n"
RETRY = "retry: 1000\n\n"  # for EventSource-style clients; the widget keeps its own backoff


# --- the stream ---------------------------------------------------------------------------------------------


def _read(cx: CxApp, conversation_id: ConversationId) -> tuple[Conversation | None, list[Message]]:
    return cx.store.get_conversation(conversation_id), visible(cx.store.list_messages(conversation_id))


async def conversation_stream(
    cx: CxApp,
    conversation_id: ConversationId,
    *,
    after: int,
    heartbeat: float,
    lifetime: float,
) -> AsyncIterator[str]:
    """Every message after the `after` first, then each new one as it is committed, and the state whenever it
    changes; a heartbeat comment when idle; ends after `lifetime` seconds (the client resumes from its last
    id). Starlette cancels it when the client goes away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    sent, shown_state = after, None
    yield RETRY
    while True:
        remaining = deadline - loop.time()
        # Registered before reading, so a commit between the read and the wait still wakes this stream.
        waiter = asyncio.create_task(cx.broker.wait(conversation_id, max(min(heartbeat, remaining), 0.0)))
        await asyncio.sleep(0)
        try:
            conversation, messages = await asyncio.to_thread(_read, cx, conversation_id)
            for position, message in enumerate(messages[sent:], start=sent + 1):
                yield message_event(position, message)
            sent = max(sent, len(messages))
            state = stream_state(conversation, messages)
            if state != shown_state:
                yield state_event(state)
                shown_state = state
            if remaining <= 0:
                return
            if not await waiter:
                yield HEARTBEAT
        finally:
            waiter.cancel()


def _last_event_id(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    # ASCII digits only: "²" (a latin-1 header byte) is a digit to str.isdigit() but not to int()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "Last-Event-ID: must be a message position (0 or up)"
        )
    return int(raw)


# --- the script and the example page ------------------------------------------------------------------------


@cache
def _script() -> tuple[bytes, str]:
    body = SCRIPT.read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:16]


def embed_line(cx_url: str, *, session_url: str | None = None) -> str:
    """The one line a site adds to its pages."""
    url = html.escape(cx_url.rstrip("/"), quote=True)
    session = f' data-session-url="{html.escape(session_url, quote=True)}"' if session_url else ""
    return f'<script src="{url}/widget.js" data-cxstack-url="{url}"{session} defer></script>'


def host_page(cx_url: str, *, session_url: str | None = None, hostile_css: bool = False) -> str:
    """A plain page that embeds the widget. `hostile_css`: styles a careless host might have, which the
    widget's shadow DOM must shrug off."""
    line = embed_line(cx_url, session_url=session_url)
    hostile = (
        "<style>* { font-size: 30px !important; color: #e00 !important; } button { display: none; }"
        " textarea { width: 10px; } section { background: yellow; }</style>"
        if hostile_css
        else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Northwind Outfitters — help</title>
{hostile}
</head>
<body>
<main style="max-width: 40rem; margin: 2rem auto; padding: 0 1rem; font-family: sans-serif">
<h1>Northwind Outfitters</h1>
<p>This page embeds the cxstack chat widget with one line:</p>
<pre style="white-space: pre-wrap; overflow-wrap: anywhere">{html.escape(line)}</pre>
</main>
{line}
</body>
</html>
"""


# --- CORS, only where the widget calls ----------------------------------------------------------------------


class WidgetCors:
    """Starlette's CORS for the web-chat routes and the script; every other route stays same-origin."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self._app = app
        self._cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/v1/webchat/") or path == "/widget.js":
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)


# --- routes -------------------------------------------------------------------------------------------------


def add_widget_routes(api: FastAPI, settings: WidgetSettings | None = None) -> None:
    settings = settings or WidgetSettings()
    api.add_middleware(WidgetCors, origins=settings.origin_list())
    api.state.widget = settings

    @api.get("/widget.js", include_in_schema=False)
    async def widget_script(request: Request) -> Response:
        body, version = _script()
        headers = {
            "ETag": f'"{version}"',
            # Short: a site's pages pick up a new widget within the hour without changing their embed line.
            "Cache-Control": "public, max-age=3600",
            "X-Widget-Version": version,
            "Cross-Origin-Resource-Policy": "cross-origin",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    @api.get("/widget/demo", response_class=HTMLResponse, include_in_schema=False)
    async def widget_demo(request: Request) -> HTMLResponse:
        return HTMLResponse(host_page(str(request.base_url)))

    @api.get(
        STREAM_PATH,
        tags=["web chat"],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "message and state events"},
            400: {"description": "Last-Event-ID is not a message position of this conversation"},
            401: {"description": "no, an expired or a tampered session token"},
            403: {"description": "a credential that is not a web-chat session (an API key)"},
        },
    )
    async def webchat_stream(
        cx: Cx,
        principal: Annotated[Principal, requires(AuthScope.WEBCHAT_CONVERSE)],
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", description="the last message position seen")
        ] = None,
        timeout: Annotated[
            float,
            Query(ge=0, le=3600, description="seconds before the stream ends (then resume)"),
        ] = 300.0,
    ) -> StreamingResponse:
        """The session's conversation as its customer sees it, live (Server-Sent Events): `message` events
        (id = the message's position, so `Last-Event-ID` resumes without loss or repeats) and `state` events
        (`handoff` when a person has it or will; `awaiting_reply`), heartbeats when idle."""
        assert principal.session is not None
        cid = ConversationId(principal.session.conversation_id)
        after = _last_event_id(last_event_id)
        _, messages = await asyncio.to_thread(_read, cx, cid)
        if after > len(messages):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"Last-Event-ID: {after} is past this conversation's {len(messages)} messages",
            )
        events = conversation_stream(
            cx, cid, after=after, heartbeat=settings.heartbeat_seconds, lifetime=timeout
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
