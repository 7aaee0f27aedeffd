"""The ABCD agent benchmark on a slice: the micro-agents written from guidelines.json execute, through the
service path and against the local back office, exactly the sequence kb.json requires; a broken agent and the
one-action mechanism are scored wrong; and the workspace is written from the guidelines alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from benchmarks import agent_actions_abcd as bench
from benchmarks._abcd_customers import asked
from benchmarks._abcd_workspace import WORKSPACE, abcd_data_dir, read_subflows, workspace_files

from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content

pytestmark = pytest.mark.skipif(
    not (abcd_data_dir() / "kb.json").exists(), reason="the ABCD files are not at ../shared/data/abcd"
)
# Five subflows whose guideline gives kb.json's sequence: a refund with a confirmation (5 actions over
# several turns), a password, a troubleshooting flow, an FAQ (every step in the first turn) and a
# subscription question (5 actions).
SLICE = ["refund_initiate", "recover_password", "shopping_cart", "boots", "status_due_date"]


def test_each_agent_executes_the_required_sequence_and_the_one_action_mechanism_does_not() -> None:
    result = bench.run(bench.DEV_SEED, 1, embedder="minilm", subflows=SLICE)
    agents = [r for r in result["results"] if r["mechanism"] == "agent"]
    assert [r["subflow"] for r in agents] == SLICE
    for r in agents:
        assert r["routed"], r["turns"]
        assert r["executed"] == r["required"], (r["id"], r["executed"], r["turns"][-1])
    assert result["agent"]["exact_on_routed"]["k"] == len(SLICE)
    actions = [r for r in result["results"] if r["mechanism"] == "action"]
    assert [r["executed"] for r in actions] == [[r["required"][-1]] for r in actions]
    assert result["action"]["exact_end_to_end"]["k"] == 0


def test_an_agent_with_two_steps_swapped_is_scored_wrong() -> None:
    workspace = load_workspace(WORKSPACE)
    content = canonical_content(workspace)
    agent = next(a for a in content["agents"] if a["name"] == "refund_initiate")
    steps = agent["actions"]
    steps[1], steps[2] = steps[2], steps[1]  # record the refund method before validating the purchase
    broken = workspace_from_content(content, root=workspace.root)
    result = bench.run(bench.DEV_SEED, 1, embedder="minilm", subflows=SLICE, workspace=broken, baseline=False)
    r, *others = result["results"]
    assert r["subflow"] == "refund_initiate" and r["routed"]
    assert r["executed"][:3] == ["pull-up-account", "record-reason", "validate-purchase"]
    assert not r["exact"] and r["why"] == "declared sequence differs from the key"
    assert all(o["exact"] for o in others)  # the agents left alone still do their job
    assert result["agent"]["exact_on_routed"]["k"] == len(SLICE) - 1


def test_the_workspace_is_written_from_the_guidelines_without_the_answer_key(tmp_path: Path) -> None:
    for name in ("guidelines.json", "ontology.json"):  # no kb.json here
        shutil.copy(abcd_data_dir() / name, tmp_path / name)
    files = workspace_files(read_subflows(tmp_path))
    for name, text in files.items():
        assert (WORKSPACE / name).read_text(encoding="utf-8") == text, f"{name} is stale: run the generator"


def test_the_customer_reads_the_question_not_the_news_around_it() -> None:
    assert asked("Thanks, your purchase checks out. What's the order ID? It has 10 digits.") == "order_id"
    assert asked("Got it. How would you like to get the refund: a gift card, ... or your credit card?") == (
        "refund_method"
    )
    assert asked("Just to confirm: I'll refund $40.00 to you. Shall I go ahead? (yes/no)") == "confirm"
    assert asked("I've updated your account.") is None
