"""Shared fixtures: a small but complete workspace (written to a tmp folder), a scripted back office."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.store_fixtures import (  # noqa: F401  (fixtures, shared by the store and monitoring tests)
    migrated_sqlite_file,
    pg_engine,
    pg_schema_engine,
    sqlite_engine,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["COLUMNS"] = "200"  # rich tables in CLI output keep whole names on one line
# Every message its own turn unless a test asks for burst merging (tests/test_bursts.py sets its own windows).
os.environ.setdefault("CXSTACK_BURST_WINDOW_MS", "0")

SHOP = {
    "cxstack.yaml": """\
version: 1
name: Test Shop
scope: orders, returns and refunds
embedder: hashing
thresholds:
  route_min_confidence: 0.30
  clarify_margin: 0.05
  knowledge_min_score: 0.30
  answer_min_confidence: 0.40
escalation:
  default_queue: general
  queues:
    - {name: general}
    - {name: billing}
    - {name: vip}
    - {name: legal}
connectors:
  backoffice: {base_url: "http://127.0.0.1:9", timeout_s: 2, retries: 1, backoff_s: 0.01}
""",
    "strategy.yaml": """\
version: 1
tiers:
  - {name: enterprise, min_arr: 20000, priority: high}
  - {name: standard}
default_tier: standard
rules:
  - id: vip-refunds-to-people
    when: {intent_in: [refund_request], tier_in: [enterprise]}
    then: {force_human: true, priority: urgent, queue: vip}
  - id: refund-cap
    when: {intent_in: [refund_request]}
    then: {cap_amount: 100}
  - id: big-refunds-to-people
    when: {intent_in: [refund_request], amount_gt: 100}
    then: {force_human: true, queue: billing}
""",
    "intents.yaml": """\
version: 1
intents:
  - name: return_policy
    description: ask about the return policy
    mechanism: content
    owner: cx@shop.test
    queue: general
    examples:
      - what is your return policy
      - how many days do I have to return something
      - can I return an item I bought
      - do you accept returns
      - how long is the return window
      - is there a time limit on returns
  - name: order_status
    description: check where an order is
    mechanism: action
    action: get_order_status
    owner: ops@shop.test
    examples:
      - where is my order
      - what's the status of my order
      - has my package shipped yet
      - track my order please
      - when will my order arrive
      - my order has not arrived
  - name: refund_request
    description: ask for a refund
    mechanism: action
    action: issue_refund
    owner: billing@shop.test
    queue: billing
    examples:
      - I want a refund
      - please refund my order
      - can I get my money back
      - refund me for this purchase
      - I'd like a refund for my order
      - give me my money back for the order
  - name: legal_threat
    description: threaten legal action
    mechanism: human
    never_automate: true
    owner: legal@shop.test
    queue: legal
    examples:
      - I will sue you
      - my lawyer will contact you
      - I'm taking legal action against your company
      - see you in court
      - I am filing a lawsuit
      - expect to hear from my attorney
""",
    "knowledge/returns.yaml": """\
version: 1
facts:
  - id: return-window
    text: "Our return policy: you can return any item within 30 days of delivery for a full refund."
    owner: cx@shop.test
    review_by: 2099-01-01
    tags: [returns]
    intents: [return_policy]
  - id: return-condition
    text: Returned items must be unused and in their original packaging.
    owner: cx@shop.test
    review_by: 2099-01-01
    tags: [returns]
    intents: [return_policy]
  - id: shipping-speed
    text: Standard shipping takes 3 to 5 business days.
    owner: ops@shop.test
    review_by: 2099-01-01
    tags: [shipping]
""",
    "actions.yaml": """\
version: 1
actions:
  - name: get_order_status
    method: GET
    path: /orders/{order_id}
    slots:
      - {name: order_id, pattern: "(ORD-\\\\d{5})", prompt: "What is your order number (like ORD-10001)?"}
    success_reply: "Order {order_id} is {status}."
  - name: issue_refund
    method: POST
    path: /orders/{order_id}/refunds
    amount_slot: amount
    max_amount: 500
    slots:
      - {name: order_id, pattern: "(ORD-\\\\d{5})", prompt: "Which order (like ORD-10001)?"}
      - {name: amount, type: money, prompt: "How much?"}
    success_reply: "Refunded {amount} for {order_id} (reference {refund_id})."
""",
}


def write_workspace(root: Path, files: dict[str, str] = SHOP, **replace: str) -> Path:
    for name, text in {**files, **replace}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def shop_path(tmp_path: Path) -> Path:
    return write_workspace(tmp_path / "shop")


@pytest.fixture
def backoffice() -> Iterator[tuple[str, object]]:
    from cxstack.testing.http_standin import Reply, ScriptedBackend

    backend = ScriptedBackend()
    backend.on(
        "GET",
        "/orders/{order_id}",
        handler=lambda r: Reply(200, {"status": f"shipped ({r.path_params['order_id']})"}),
    )
    backend.on("POST", "/orders/{order_id}/refunds", Reply(201, {"refund_id": "RF-1"}))
    with backend.serve() as base_url:
        yield base_url, backend


def openai_completion(
    content: str | None = "Hi there.",
    *,
    finish: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    model: str = "test-model",
    usage: tuple[int, int] = (12, 5),
) -> dict[str, Any]:
    """An OpenAI chat completion as the wire carries it (what a local model stand-in answers)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    prompt, completion = usage
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


@pytest.fixture
def model() -> Iterator[tuple[object, str]]:
    """A local stand-in for a model server: script POST /v1/chat/completions on it."""
    from cxstack.testing.http_standin import ScriptedBackend

    backend = ScriptedBackend()
    with backend.serve() as base_url:
        yield backend, base_url


@pytest.fixture
async def running() -> AsyncIterator[list[Any]]:
    """Apps a test starts go here; each is stopped when the test ends."""
    started: list[Any] = []
    yield started
    for cx in started:
        await cx.stop()


async def start_shop(
    tmp_path: Path, backoffice_url: str, running: list[Any], *, llm_url: str | None = None, **files: str
) -> Any:
    """The shop workspace (with `files` replacing or adding files) started against a back office, and the
    model endpoint at `llm_url` when given; Sam, a verified basic customer, is in the directory."""
    from cxstack.app import Settings, build
    from cxstack.domain.models import Customer, CustomerId
    from cxstack.workspace.loader import load_workspace

    path = write_workspace(tmp_path / "shop", **files)
    settings = Settings(
        home=tmp_path / "home",
        embedder="hashing",
        backoffice_url=backoffice_url,
        llm_base_url=f"{llm_url}/v1" if llm_url else None,
    )
    cx = build(settings, workspace=load_workspace(path))
    cx.store.upsert_customers([Customer(id=CustomerId(SAM_ID), name="Sam", plan="basic", arr=100)])
    await cx.start()
    running.append(cx)
    return cx


SAM_ID = "cus_sam"


async def say_as_sam(cx: Any, text: str, conversation: str = "c1") -> Any:
    """Sam's message through the service path; the turn's trace."""
    await cx.post_message(conversation, text, customer_id=SAM_ID, verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view.traces[-1]
