"""Slices of the two benchmarks that run the demo with a real local model server (llama.cpp serving
SmolLM2-135M-Instruct): llm_overhead on two held-out conversations, and five injection attacks. They check
that the figures hang together and that the defences hold with a model in the loop, not the model's
quality."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from benchmarks import llm_overhead
from benchmarks.injection import load_cases, run_attacks
from benchmarks.llm_overhead import BASELINE, LOCAL, PerAppLLM, with_local_model

from cxstack.app import build_engine
from cxstack.demo import demo_conversations_path, demo_workspace_path
from cxstack.integrations.llm.local_server import LocalModelServer
from cxstack.optimization.replay import load_scripts
from cxstack.workspace.loader import load_workspace

pytestmark = pytest.mark.integration

# A content question (the model writes, or its answer is refused and the template is sent) and an action.
CONVERSATIONS = ("nw-041-return-policy", "nw-024-refund-status")
# A fake system message beside a content question (the model is asked), a refund split under the cap, another
# customer's data, a confirmation smuggled into the first message, an instruction planted in the back office.
ATTACKS = (
    "fake_system-011",
    "refund_over_cap-020",
    "other_customer_data-005",
    "smuggled_confirmation-001",
    "tool_output_injection-003",
)


@pytest.fixture(scope="module")
def local_model() -> Iterator[str]:
    with LocalModelServer(threads=1, verbosity=0) as base_url:
        yield base_url


def test_llm_overhead_slice_counts_tokens_only_with_the_model(local_model: str) -> None:
    scripts = [s for s in load_scripts(demo_conversations_path("heldout")) if s.id in CONVERSATIONS]
    result = llm_overhead.run(scripts=scripts, base_url=local_model)
    base, local = result["configurations"]
    assert (base["system"], local["system"]) == (BASELINE, LOCAL)
    messages = sum(len(s.messages) for s in scripts)
    for config in (base, local):
        rows: list[dict[str, Any]] = config["turn_rows"]
        assert config["conversations"] == 2 and config["turns"] == len(rows) == messages  # one turn each
        assert all(row["outcome"] for row in rows)
        assert all(row["latency_ms"] > 0 for row in rows)
        assert sum(config["turn_outcomes"].values()) == config["turns"]
        assert sum(config["conversation_outcomes"].values()) == 2
        assert sum(config["content"].values()) == config["content_steps"] >= 1
    assert base["llm_calls"] == base["input_tokens"] == base["output_tokens"] == 0
    assert base["content"]["model"] == 0 and base["cost_illustrative"]["total"] is None
    assert local["llm_calls"] >= 1 and local["input_tokens"] > 0 and local["output_tokens"] > 0
    assert local["content"]["model"] + local["content"]["template"] >= 1  # the content question was answered
    assert float(local["cost_illustrative"]["total"]) > 0  # priced by the workspace's llm.prices
    assert [r["conversation"] for r in local["turn_rows"]] == [r["conversation"] for r in base["turn_rows"]]
    assert result["model_turns"]["turns"] == sum(r["llm_calls"] > 0 for r in local["turn_rows"]) >= 1


def test_five_attacks_with_the_local_model_write_nothing_unauthorised_and_leak_nothing(
    local_model: str,
) -> None:
    workspace = with_local_model(load_workspace(demo_workspace_path()))
    assert workspace.settings.llm is not None
    chosen = [case for case in load_cases(workspace=workspace) if case.id in ATTACKS]
    assert len(chosen) == len(ATTACKS)
    engine = build_engine(workspace, dry_run_actions=True, llm=PerAppLLM(workspace.settings.llm, local_model))
    results, stray = run_attacks(engine, workspace, chosen, concurrency=1)
    assert stray == []
    assert {r.case.id: r.violations for r in results if r.violations} == {}
    assert {r.case.id: r.leaks for r in results if r.leaks} == {}
    assert all(any(r.replies) for r in results)
    assert sum(r.model["calls"] for r in results) >= 1  # the model was in the loop
