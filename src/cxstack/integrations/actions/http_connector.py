"""The HTTP action connector: calls a back-office endpoint described by an ActionConfig."""

from __future__ import annotations

import asyncio
import string
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from cxstack.domain.models import ActionResult
from cxstack.domain.secrets import Secret, resolve, reveal
from cxstack.workspace.models import ActionConfig, ConnectorConfig

_MAX_TEXT = 2000


def path_fields(path: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]


def render_path(path: str, slots: dict[str, Any]) -> str:
    """The path with every {slot} replaced by its URL-encoded value ('/' in a value stays in its segment)."""
    return path.format_map({name: quote(str(slots[name]), safe="") for name in path_fields(path)})


def _payload(action: ActionConfig, slots: dict[str, Any]) -> dict[str, Any]:
    if action.body is not None:
        return {field: slots[slot] for field, slot in action.body.items() if slot in slots}
    used = set(path_fields(action.path))
    return {name: value for name, value in slots.items() if name not in used}


def _response_body(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        return {"text": response.text[:_MAX_TEXT]} if response.text else {}
    return parsed if isinstance(parsed, dict) else {"data": parsed}


class HttpActionConnector:
    """Retries a timeout, a connection error or a 5xx `config.retries` times, waiting `backoff_s * 2**n`
    before retry n (n = 0, 1, …); a 4xx is the back office saying no and is returned at once. Every attempt
    carries the same Idempotency-Key, so a retried request that did reach the server is not executed twice.
    An action marked `idempotent: false` is only retried when the request never left (connection refused)."""

    name = "http"

    def __init__(
        self,
        config: ConnectorConfig,
        *,
        name: str = "http",
        client: httpx.AsyncClient | None = None,
        dry_run: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        # ${ENV} references are resolved now, so a missing secret stops the start, not the first call. A dry
        # run sends nothing anywhere and needs no secret.
        self._headers: dict[str, str | Secret] = (
            {}
            if dry_run
            else {
                header: resolve(value, where=f"connector {name!r}, header {header!r}")
                for header, value in config.headers.items()
            }
        )
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s))

    async def call(
        self,
        action: ActionConfig,
        slots: dict[str, Any],
        idempotency_key: str,
        *,
        customer_id: str | None = None,
    ) -> ActionResult:
        missing = [name for name in path_fields(action.path) if slots.get(name) in (None, "")]
        url = self.config.base_url.rstrip("/") + (action.path if missing else render_path(action.path, slots))
        payload = _payload(action, slots)
        as_query = action.method in ("GET", "DELETE")
        request: dict[str, Any] = {
            "method": action.method,
            "url": url,
            "params" if as_query else "json": payload,
            "idempotency_key": idempotency_key,
        }
        if missing:
            return ActionResult(
                action=action.name,
                ok=False,
                status_code=None,
                request=request,
                response={},
                attempts=0,
                error=f"missing path slot(s): {', '.join(missing)}",
            )
        if self.dry_run:
            return ActionResult(
                action=action.name,
                ok=True,
                status_code=None,
                request=request,
                response={},
                attempts=0,
                dry_run=True,
            )
        headers = {header: reveal(value) for header, value in self._headers.items()}
        headers.update({"Idempotency-Key": idempotency_key, "Accept": "application/json"})
        if customer_id is not None and self.config.identity_header:
            headers[self.config.identity_header] = customer_id
        attempts = 0
        error: str | None = None
        status_code: int | None = None
        response_body: dict[str, Any] = {}
        for attempt in range(self.config.retries + 1):
            if attempt > 0:
                await self._sleep(self.config.backoff_s * 2 ** (attempt - 1))
            attempts += 1
            try:
                response = await self._client.request(
                    action.method,
                    url,
                    params={k: str(v) for k, v in payload.items()} if as_query else None,
                    json=None if as_query else payload,
                    headers=headers,
                    timeout=self.config.timeout_s,
                )
            except httpx.TimeoutException as exc:
                status_code, response_body, error = (
                    None,
                    {},
                    f"timeout after {self.config.timeout_s}s ({type(exc).__name__})",
                )
                if not action.idempotent:
                    break
                continue
            except httpx.TransportError as exc:
                status_code, response_body, error = None, {}, f"{type(exc).__name__}: {exc}"
                if not action.idempotent and not isinstance(exc, httpx.ConnectError):
                    break
                continue
            status_code, response_body = response.status_code, _response_body(response)
            if response.is_success:
                return ActionResult(
                    action=action.name,
                    ok=True,
                    status_code=status_code,
                    request=request,
                    response=response_body,
                    attempts=attempts,
                )
            error = f"HTTP {status_code}"
            if status_code < 500 or not action.idempotent:
                break
        return ActionResult(
            action=action.name,
            ok=False,
            status_code=status_code,
            request=request,
            response=response_body,
            attempts=attempts,
            error=error,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpActionConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
