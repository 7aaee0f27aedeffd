"""A real cxstack server on a local port and a host site on another origin that embeds the widget: what the
widget's browser tests and benchmark run against.

`LiveServer` runs uvicorn in a thread and can be stopped and started again on the same port and store (a
restart as the widget sees it). `HostSite` serves plain pages embedding the widget, and, like a shop's own
backend, a session endpoint that opens a web-chat session for its logged-in customer with an integration key.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from cxstack.api.widget import host_page
from cxstack.app import CxApp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`make_app()` builds a fresh CxApp for every start (a restart is a new process's worth of state)."""

    def __init__(self, make_app: Callable[[], CxApp], port: int | None = None) -> None:
        self._make_app = make_app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cx: CxApp | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        from cxstack.api.app import api_server

        self.cx = self._make_app()
        self._server = api_server(self.cx, port=self.port, log_level="warning")
        # Open streams would hold a graceful shutdown for their whole lifetime; a restart cuts them after 1 s.
        self._server.config.timeout_graceful_shutdown = 1
        self._thread = threading.Thread(target=self._server.run, name=f"cxstack-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"cxstack did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(30)
        self._server = self._thread = None

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class HostSite:
    """Pages on another origin: `/` embeds the widget anonymously, `/account` for the logged-in customer
    `customer_id` (its session endpoint `/session` opens the session with `integration_key`), `/forged` with a
    session endpoint that answers a tampered token. `hostile=True` adds CSS that would break an unshielded
    widget."""

    def __init__(
        self, cx_url: str, *, integration_key: str = "", customer_id: str = "", hostile: bool = False
    ) -> None:
        self.cx_url = cx_url
        self.integration_key = integration_key
        self.customer_id = customer_id
        self.hostile = hostile
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sessions_opened = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _answer(self, status: int, body: str, content_type: str) -> None:
                raw = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                pages = {"/": None, "/account": "/session", "/forged": "/forged-session"}
                if self.path not in pages:
                    self._answer(404, "not found", "text/plain")
                    return
                page = host_page(site.cx_url, session_url=pages[self.path], hostile_css=site.hostile)
                self._answer(200, page, "text/html; charset=utf-8")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                asked = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/session":
                    status, body = site.open_session(asked.get("conversation_id"))
                    self._answer(status, json.dumps(body), "application/json")
                elif self.path == "/forged-session":
                    status, body = site.open_session(None)
                    if status == 201:
                        head, claims, signature = body["token"].split(".")
                        body["token"] = f"{head}.{claims}.{signature[::-1]}"
                    self._answer(status, json.dumps(body), "application/json")
                else:
                    self._answer(404, "{}", "application/json")

        return Handler

    def open_session(self, conversation_id: str | None) -> tuple[int, dict[str, Any]]:
        """What a shop's backend does: who is logged in comes from its own login, never from the page; the
        conversation the page remembers is resumed only if cxstack finds it is that customer's."""
        self.sessions_opened += 1
        headers = {"Authorization": f"Bearer {self.integration_key}"}
        body: dict[str, Any] = {"customer_id": self.customer_id}
        if conversation_id:
            body["conversation_id"] = conversation_id
        url = f"{self.cx_url}/v1/webchat/sessions"
        response = httpx.post(url, json=body, headers=headers, timeout=10)
        if response.status_code == 409:  # not theirs (another login in this tab): a new conversation
            response = httpx.post(url, json={"customer_id": self.customer_id}, headers=headers, timeout=10)
        return response.status_code, response.json()

    def __enter__(self) -> HostSite:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
