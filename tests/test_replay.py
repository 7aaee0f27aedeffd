"""Replay as a person uses it: scripted conversations through the service path, results per conversation,
kept for `cxstack trace` only when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.domain.models import (
    ConversationId,
    Decision,
    MessageId,
    Trace,
    TraceId,
    WorkspaceVersionId,
    new_id,
)
from cxstack.optimization.replay import ReplayedConversation, ReplayedTurn, ScriptError, parse_scripts

runner = CliRunner()

SCRIPTS: list[dict[str, Any]] = [
    {
        "id": "policy",
        "messages": ["what is your return policy?"],
        "expected": {"intent": "return_policy", "outcome": "automated"},
    },
    {
        "id": "status",
        "customer": {"id": "cus_1", "plan": "basic", "arr": 100, "vulnerable": True},
        "channel": "webchat",
        "messages": ["where is my order", "ORD-10001"],
        "expected": {"intent": "order_status", "outcome": "automated"},
    },
    {
        "id": "lawyer",
        "messages": ["I will sue you"],
        "expected": {"intent": "legal_threat", "outcome": "escalated"},
        "note": "never automated",
    },
]


def write_scripts(path: Path, scripts: list[dict[str, Any]] = SCRIPTS) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in scripts) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CXSTACK_HOME points at a fresh folder and no database URL is configured."""
    home = tmp_path / "configured-home"
    monkeypatch.setenv("CXSTACK_HOME", str(home))
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    return home


def replay_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["replay", *args, "--json"])
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def test_replay_json_has_every_conversation_turn_by_turn(
    shop_path: Path, tmp_path: Path, isolated_home: Path
) -> None:
    payload = replay_json(str(shop_path), str(write_scripts(tmp_path / "c.jsonl")))
    results = {r["id"]: r for r in payload["results"]}
    assert list(results) == ["policy", "status", "lawyer"]  # file order

    policy = results["policy"]
    assert policy["outcome"] == "automated"
    assert policy["expected"] == {"intent": "return_policy", "outcome": "automated"}
    (turn,) = policy["turns"]
    assert turn["text"] == "what is your return policy?"
    assert turn["intent"] == "return_policy" and turn["decision"] == "continue"
    assert 0.0 < turn["confidence"] <= 1.0
    assert "return-window" in turn["facts"] and "30 days" in turn["reply"]
    assert turn["actions"] == [] and turn["queue"] is None

    status = results["status"]
    first, second = status["turns"]
    assert first["text"] == "where is my order" and first["actions"] == []
    assert "order number" in first["reply"]  # the slot prompt the customer saw
    assert second["text"] == "ORD-10001" and second["intent"] == "order_status"
    assert second["actions"] == [
        {"name": "get_order_status", "arguments": {"order_id": "ORD-10001"}, "status": "dry_run"}
    ]
    assert status["outcome"] == "automated"

    lawyer = results["lawyer"]
    (turn,) = lawyer["turns"]
    assert lawyer["outcome"] == "escalated"
    assert turn["decision"] == "escalate" and turn["queue"] == "legal" and turn["reason"]
    assert turn["reply"]  # the customer is told what happens next

    # The rates and agreement keys are still there, computed from the same conversations.
    assert payload["conversations"] == 3 and payload["overall"]["escalated"] == 1
    assert payload["routing_accuracy"] == 1.0 and payload["outcome_agreement"] == 1.0
    assert payload["stored"] is None
    # Nothing was written to the configured store: the default is a throwaway one.
    assert not (isolated_home / "cxstack.db").exists()


def test_two_runs_give_the_same_results(shop_path: Path, tmp_path: Path, isolated_home: Path) -> None:
    scripts = str(write_scripts(tmp_path / "c.jsonl"))
    first = replay_json(str(shop_path), scripts)["results"]
    second = replay_json(str(shop_path), scripts)["results"]
    assert first == second


def test_store_keeps_conversations_for_trace(shop_path: Path, tmp_path: Path, isolated_home: Path) -> None:
    scripts = write_scripts(tmp_path / "c.jsonl")
    result = runner.invoke(app, ["replay", str(shop_path), str(scripts), "--store"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "cxstack trace replay_" in result.output
    assert (isolated_home / "cxstack.db").exists()

    payload = replay_json(str(shop_path), str(scripts), "--store")
    assert payload["stored"] and str(isolated_home) in payload["stored"]
    lawyer = next(r for r in payload["results"] if r["id"] == "lawyer")
    traced = runner.invoke(app, ["trace", lawyer["conversation_id"]], terminal_width=200)
    assert traced.exit_code == 0, traced.output
    assert "I will sue you" in traced.output and "legal" in traced.output
    # A second run into the same store started new conversations instead of appending to the first ones.
    again = replay_json(str(shop_path), str(scripts), "--store")
    assert {r["conversation_id"] for r in again["results"]}.isdisjoint(
        {r["conversation_id"] for r in payload["results"]}
    )
    assert [len(r["turns"]) for r in again["results"]] == [1, 2, 1]


def test_home_option_keeps_conversations_there(shop_path: Path, tmp_path: Path, isolated_home: Path) -> None:
    home = tmp_path / "elsewhere"
    payload = replay_json(str(shop_path), str(write_scripts(tmp_path / "c.jsonl")), "--home", str(home))
    assert (home / "cxstack.db").exists() and not (isolated_home / "cxstack.db").exists()
    conversation = payload["results"][0]["conversation_id"]
    traced = runner.invoke(app, ["trace", conversation, "--home", str(home)], terminal_width=200)
    assert traced.exit_code == 0 and "return policy" in traced.output


def test_store_with_unanswered_messages_is_refused(
    shop_path: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """Starting a worker on a live store would answer its customers with the replay's dry-run engine."""
    from cxstack.app import Settings, open_store
    from cxstack.domain.models import ConversationId, CustomerId, InboundMessage

    store = open_store(Settings())
    store.ingest(
        InboundMessage(
            channel="api",
            external_id="live-1",
            conversation_id=ConversationId("live_conversation"),
            customer_id=CustomerId("cus_live"),
            text="where is my order ORD-10001?",
        )
    )
    result = runner.invoke(
        app,
        ["replay", str(shop_path), str(write_scripts(tmp_path / "c.jsonl")), "--store"],
        terminal_width=200,
    )
    assert result.exit_code == 1
    assert "unanswered" in result.output and "live_conversation" in result.output
    assert [m.text for m in store.list_messages(ConversationId("live_conversation"))] == [
        "where is my order ORD-10001?"
    ]


def test_script_lines_are_checked_before_anything_runs() -> None:
    lines = [
        json.dumps({"id": "a", "messages": ["hi"], "note": "a greeting"}),
        json.dumps({"id": "a", "messages": ["again"]}),
        json.dumps({"id": "b", "messages": []}),
        json.dumps({"id": "c", "messages": ["x"], "expected": {"outcome": "solved"}}),
    ]
    with pytest.raises(ScriptError) as caught:
        parse_scripts(lines, source="f.jsonl")
    problems = str(caught.value).splitlines()
    assert any(p.startswith("f.jsonl:2:") and "already used on line 1" in p for p in problems)
    assert any(p.startswith("f.jsonl:3: messages") for p in problems)
    assert any(p.startswith("f.jsonl:4: expected.outcome") for p in problems)
    (ok,) = parse_scripts(lines[:1])
    assert ok.note == "a greeting" and ok.customer.id == "replay_a" and ok.channel == "api"


def test_replay_help_documents_the_file_format() -> None:
    result = runner.invoke(app, ["replay", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for key in ('"id"', '"customer"', '"channel"', '"messages"', '"expected"', "automated or escalated"):
        assert key in text, key


def _trace(intent: str | None, decision: Decision = Decision.CONTINUE, outcome: str = "automated") -> Trace:
    return Trace(
        id=TraceId(new_id("trc")),
        conversation_id=ConversationId("c"),
        message_id=MessageId(new_id("msg")),
        workspace_version=WorkspaceVersionId("ws_test"),
        steps=[],
        intent=intent,
        intent_confidence=0.9 if intent else None,
        mechanism="content" if intent else None,
        decision=decision,
        outcome=outcome,
        reply="ok",
    )


def test_a_greeting_before_the_request_does_not_make_it_a_greeting_conversation() -> None:
    (script,) = parse_scripts([json.dumps({"id": "x", "messages": ["hello there", "return policy?"]})])

    def outcome_of(*traces: Trace) -> tuple[str | None, str]:
        replayed = ReplayedConversation(script, "c", [ReplayedTurn("m", "ok", t) for t in traces])
        summary = replayed.outcome()
        return summary.intent, summary.outcome

    assert outcome_of(_trace("greeting"), _trace("return_policy")) == ("return_policy", "automated")
    assert outcome_of(_trace("return_policy"), _trace("thanks"), _trace("goodbye")) == (
        "return_policy",
        "automated",
    )
    assert outcome_of(_trace("greeting")) == ("greeting", "automated")
    assert outcome_of(_trace(None, Decision.CLARIFY)) == (None, "unresolved")
    assert outcome_of(_trace("greeting"), _trace("legal", Decision.ESCALATE, "escalated")) == (
        "legal",
        "escalated",
    )


def test_a_named_customer_is_posted_as_verified_unless_the_line_says_not(
    shop_path: Path, tmp_path: Path, isolated_home: Path
) -> None:
    from cxstack.app import Settings, open_store

    scripts = [
        {"id": "known", "customer": {"id": "cus_1"}, "messages": ["what is your return policy?"]},
        {"id": "claimed", "customer": {"id": "cus_2"}, "verified": False, "messages": ["return policy?"]},
        {"id": "anonymous", "messages": ["return policy?"]},
    ]
    parsed = parse_scripts(json.dumps(s) for s in scripts)
    assert [s.verified for s in parsed] == [True, False, False]
    payload = replay_json(str(shop_path), str(write_scripts(tmp_path / "c.jsonl", scripts)), "--store")
    store = open_store(Settings())
    verified = {
        r["id"]: store.get_conversation(ConversationId(r["conversation_id"])).verified  # type: ignore[union-attr]
        for r in payload["results"]
    }
    assert verified == {"known": True, "claimed": False, "anonymous": False}


def test_the_readme_replay_example_is_a_valid_script() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Replay", 1)[1]
    example = section.split("```json\n", 1)[1].split("```", 1)[0]
    (script,) = parse_scripts(example.splitlines())
    assert script.verified and script.expected_outcome in {"automated", "escalated"}


def test_replay_at_a_fixed_time_makes_time_rules_reproducible(tmp_path: Path) -> None:
    from tests.conftest import SHOP, write_workspace
    from typer.testing import CliRunner

    from cxstack.cli.main import app

    strategy = SHOP["strategy.yaml"] + (
        "  - id: weekend-returns-to-people\n"
        "    when: {intent_in: [return_policy], weekday_in: [sat, sun]}\n"
        "    then: {force_human: true, queue: general}\n"
    )
    root = write_workspace(tmp_path / "ws", **{"strategy.yaml": strategy})
    script = tmp_path / "s.jsonl"
    script.write_text(
        json.dumps({"id": "r1", "customer": {"id": "c1"}, "messages": ["what is your return policy?"]}) + "\n"
    )
    outcomes = {}
    for day, at in [("saturday", "2026-11-28T12:00"), ("tuesday", "2026-12-01T12:00")]:
        result = CliRunner().invoke(
            app, ["replay", str(root), str(script), "--json", "--embedder", "hashing", "--at", at]
        )
        assert result.exit_code == 0, result.output
        outcomes[day] = json.loads(result.output)["results"][0]["outcome"]
    assert outcomes == {"saturday": "escalated", "tuesday": "automated"}
