from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from cxstack.domain.models import ActionResult
from cxstack.integrations.actions.http_connector import HttpActionConnector
from cxstack.testing.http_standin import Reply, ScriptedBackend
from cxstack.workspace.models import ActionConfig, ConnectorConfig, SlotConfig

T = TypeVar("T")

REFUND = ActionConfig(
    name="refund_order",
    method="POST",
    path="/orders/{order_id}/refunds",
    slots=[SlotConfig(name="order_id"), SlotConfig(name="amount", type="number")],
    success_reply="Refunded {amount}.",
)
STATUS = ActionConfig(
    name="order_status",
    method="GET",
    path="/orders/{order_id}",
    slots=[SlotConfig(name="order_id"), SlotConfig(name="fields", required=False)],
    success_reply="{status}",
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def base_url(backend: ScriptedBackend) -> Iterator[str]:
    with backend.serve() as url:
        yield url


def connector(base_url: str, **overrides: Any) -> HttpActionConnector:
    settings: dict[str, Any] = {"base_url": base_url, "timeout_s": 2.0, "retries": 2, "backoff_s": 0.01}
    settings.update(overrides)
    return HttpActionConnector(ConnectorConfig(**settings))


async def call(
    http: HttpActionConnector, action: ActionConfig, slots: dict[str, Any], key: str
) -> ActionResult:
    async with http:
        return await http.call(action, slots, key)


def test_retries_a_500_then_succeeds_with_the_same_idempotency_key(
    backend: ScriptedBackend, base_url: str
) -> None:
    backend.on(
        "POST", "/orders/{order_id}/refunds", Reply(500, {"error": "db"}), Reply(201, {"refund_id": "R-1"})
    )
    result = run(call(connector(base_url), REFUND, {"order_id": "ORD-1", "amount": 25}, "key-1"))
    assert result.ok and result.status_code == 201
    assert result.attempts == 2
    assert result.response == {"refund_id": "R-1"}
    received = backend.requests_to("POST", "/orders/ORD-1/refunds")
    assert len(received) == 2
    assert {r.headers["idempotency-key"] for r in received} == {"key-1"}
    assert received[0].json == {"amount": 25}


def test_timeout_is_retried_then_reported_as_failure(backend: ScriptedBackend, base_url: str) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(200, {"late": True}, delay_s=1.0))
    result = run(
        call(connector(base_url, timeout_s=0.2, retries=1), REFUND, {"order_id": "ORD-1", "amount": 5}, "k")
    )
    assert not result.ok
    assert result.attempts == 2
    assert result.status_code is None
    assert result.error is not None and "timeout" in result.error
    assert len(backend.requests) == 2


def test_4xx_is_not_retried(backend: ScriptedBackend, base_url: str) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(409, {"error": "already refunded"}))
    result = run(call(connector(base_url, retries=3), REFUND, {"order_id": "ORD-1", "amount": 5}, "k"))
    assert not result.ok
    assert result.status_code == 409
    assert result.attempts == 1
    assert result.response == {"error": "already refunded"}
    assert result.error == "HTTP 409"
    assert len(backend.requests) == 1


def test_5xx_until_retries_run_out(backend: ScriptedBackend, base_url: str) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(503, "maintenance"))
    result = run(call(connector(base_url, retries=2), REFUND, {"order_id": "ORD-1", "amount": 5}, "k"))
    assert not result.ok and result.status_code == 503
    assert result.attempts == 3
    assert result.response == {"text": "maintenance"}
    assert len(backend.requests) == 3


def test_non_idempotent_action_is_not_retried_after_a_500(backend: ScriptedBackend, base_url: str) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(500), Reply(200))
    action = REFUND.model_copy(update={"idempotent": False})
    result = run(call(connector(base_url, retries=2), action, {"order_id": "ORD-1", "amount": 5}, "k"))
    assert not result.ok and result.attempts == 1


def test_path_values_are_url_encoded(backend: ScriptedBackend, base_url: str) -> None:
    backend.on("GET", "/orders/{order_id}", Reply(200, {"status": "shipped"}))
    result = run(call(connector(base_url), STATUS, {"order_id": "A/B 1?x=2", "fields": "status,eta"}, "k"))
    assert result.ok
    received = backend.requests[0]
    assert received.raw_path == "/orders/A%2FB%201%3Fx%3D2"
    assert received.path_params == {"order_id": "A/B 1?x=2"}
    # GET carries the remaining slots as query parameters, not a body
    assert received.query == {"fields": "status,eta"}
    assert received.body == b""
    assert result.request["url"].endswith("/orders/A%2FB%201%3Fx%3D2")


def test_body_mapping_and_configured_headers(backend: ScriptedBackend, base_url: str) -> None:
    backend.on("POST", "/orders/{order_id}/refunds", Reply(200, ["ok"]))
    action = REFUND.model_copy(update={"body": {"refund_amount": "amount", "order": "order_id"}})
    http = connector(base_url, headers={"X-Api-Version": "2"})
    result = run(call(http, action, {"order_id": "ORD-9", "amount": 7.5}, "idem-9"))
    assert result.ok and result.response == {"data": ["ok"]}
    received = backend.requests[0]
    assert received.json == {"refund_amount": 7.5, "order": "ORD-9"}
    assert received.headers["x-api-version"] == "2"
    assert received.headers["idempotency-key"] == "idem-9"
    assert result.request["idempotency_key"] == "idem-9"


def test_dry_run_sends_nothing(backend: ScriptedBackend, base_url: str) -> None:
    http = HttpActionConnector(ConnectorConfig(base_url=base_url), dry_run=True)
    result = run(call(http, REFUND, {"order_id": "ORD-1", "amount": 5}, "k"))
    assert result.ok and result.dry_run and result.attempts == 0
    assert result.request["json"] == {"amount": 5}
    assert backend.requests == []


def test_missing_path_slot_fails_without_a_request(backend: ScriptedBackend, base_url: str) -> None:
    result = run(call(connector(base_url), REFUND, {"amount": 5}, "k"))
    assert not result.ok and result.attempts == 0
    assert result.error is not None and "order_id" in result.error
    assert backend.requests == []


def test_connection_refused_is_retried_and_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on `port` now
    result = run(
        call(connector(f"http://127.0.0.1:{port}", retries=1), REFUND, {"order_id": "O", "amount": 1}, "k")
    )
    assert not result.ok
    assert result.attempts == 2
    assert result.error is not None and "ConnectError" in result.error
