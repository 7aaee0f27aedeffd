"""Root cause by layer: each trace signal lands in its layer, two windows are compared with noise kept apart,
workspace changes are tied to the conversations they touched, and `cxstack diagnose` finds a planted fault
end to end (two real replays of the test shop into one store)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SHOP, write_workspace
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.domain.models import (
    ConversationId,
    Decision,
    Layer,
    MessageId,
    Trace,
    TraceId,
    TraceStep,
    WorkspaceVersionId,
)
from cxstack.domain.quality import Review, ReviewReason
from cxstack.optimization.diagnose import (
    ConversationDiagnosis,
    DiagnoseError,
    FaultLayer,
    QualityNote,
    compare,
    diagnose_conversation,
    newcombe_interval,
    parse_window,
    quality_notes,
    workspace_changes,
)
from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content

runner = CliRunner()
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
_counter = iter(range(1_000_000))


def step(layer: Layer, name: str, input: dict[str, Any], output: dict[str, Any]) -> TraceStep:
    return TraceStep(layer=layer, name=name, input=input, output=output)


def route(text: str, intent: str | None, confidence: float, decided_by: str = "router") -> TraceStep:
    return step(
        Layer.ORCHESTRATION,
        "route",
        {"text": text},
        {
            "intent": intent,
            "confidence": confidence,
            "router_confidence": confidence,
            "out_of_scope": intent is None,
            "decided_by": decided_by,
        },
    )


def escalate(reason: str) -> TraceStep:
    return step(Layer.ORCHESTRATION, "escalate", {"reason": reason}, {"queue": "general"})


def trace(
    conversation: str,
    steps: list[TraceStep],
    *,
    outcome: str = "automated",
    intent: str | None = "order_status",
    mechanism: str | None = "action",
    version: str = "v1",
    at: datetime = T0,
) -> Trace:
    n = next(_counter)
    return Trace(
        id=TraceId(f"tr_{n}"),
        conversation_id=ConversationId(conversation),
        message_id=MessageId(f"m_{n}"),
        workspace_version=WorkspaceVersionId(version),
        steps=steps,
        intent=intent,
        intent_confidence=0.9,
        mechanism=mechanism,
        decision=Decision.ESCALATE if outcome == "escalated" else Decision.CONTINUE,
        outcome=outcome,
        reply="…",
        reason_code=None,
        created_at=at,
    )


def resolve(mechanism: str, **output: Any) -> TraceStep:
    return step(Layer.RESOLUTION, f"resolve:{mechanism}", {"intent": "x"}, output)


# --- one conversation, one layer ----------------------------------------------------------------------------


CASES: list[tuple[str, list[TraceStep], str, str | None, FaultLayer, str]] = [
    (
        "clarification exhausted",
        [route("hmm", None, 0.1), escalate("clarification_exhausted")],
        "escalated",
        None,
        FaultLayer.ROUTING,
        "clarification_exhausted",
    ),
    (
        "retrieval miss",
        [
            route("is it waterproof", "product_question", 0.9),
            resolve("content", kind="handoff", handoff_reason="no_grounded_answer", facts=[]),
            escalate("no_grounded_answer"),
        ],
        "escalated",
        "content",
        FaultLayer.KNOWLEDGE,
        "retrieval_miss",
    ),
    (
        "grounding failure",
        [
            route("how long do returns take", "return_policy", 0.9),
            step(Layer.ORCHESTRATION, "verify", {}, {"passed": False, "failed": ["unsupported_reference"]}),
            escalate("unverified:unsupported_reference"),
        ],
        "escalated",
        "content",
        FaultLayer.KNOWLEDGE,
        "grounding_failure",
    ),
    (
        "agent out of turns",
        [route("refund ORD-10001", "refund_request", 0.9), escalate("agent_max_turns")],
        "escalated",
        "agent",
        FaultLayer.AGENTS,
        "agent_max_turns",
    ),
    (
        "action error",
        [
            route("where is ORD-10001", "order_status", 0.9),
            resolve(
                "action",
                kind="handoff",
                handoff_reason="action_failed",
                actions=[{"action": "get_order_status", "ok": False, "error": "HTTP 404"}],
            ),
            escalate("action_failed"),
        ],
        "escalated",
        "action",
        FaultLayer.ACTIONS,
        "action_error",
    ),
    (
        "policy rule",
        [
            route("refund please", "refund_request", 0.9),
            step(Layer.STRATEGY, "assess", {}, {"fired_rules": ["vip"], "force_human": True}),
            escalate("policy_rule:vip"),
        ],
        "escalated",
        "human",
        FaultLayer.POLICY,
        "policy_override",
    ),
    (
        "customer asked for a person",
        [route("a human please", "speak_to_human", 0.9), escalate("customer_requested")],
        "escalated",
        None,
        FaultLayer.ORCHESTRATION,
        "customer_requested",
    ),
]


@pytest.mark.parametrize(("label", "steps", "outcome", "mechanism", "layer", "signal"), CASES)
def test_each_signal_lands_in_its_layer(
    label: str, steps: list[TraceStep], outcome: str, mechanism: str | None, layer: FaultLayer, signal: str
) -> None:
    result = diagnose_conversation([trace(f"c-{label}", steps, outcome=outcome, mechanism=mechanism)])
    assert result.failing and result.outcome == outcome
    assert result.layer is layer, result.signals
    assert result.cause is not None and result.cause.name == signal
    assert result.cause.trace_id.startswith("tr_") and result.cause.step


def test_an_automated_conversation_is_not_failing_but_keeps_its_signals() -> None:
    guessed = diagnose_conversation([trace("c", [route("eh order?", "order_status", 0.42)])])
    assert not guessed.failing and guessed.layer is None and guessed.cause is None
    assert [(s.layer, s.name) for s in guessed.signals] == [(FaultLayer.ROUTING, "low_confidence")]


def test_a_clarifying_question_left_unanswered_is_an_unresolved_routing_failure() -> None:
    last = trace(
        "c",
        [
            route("blah", None, 0.12),
            step(Layer.ORCHESTRATION, "decide", {}, {"decision": "clarify", "reason": "out_of_scope"}),
        ],
        intent=None,
    )
    result = diagnose_conversation([replace_decision(last, Decision.CLARIFY)])
    assert result.outcome == "unresolved" and result.layer is FaultLayer.ROUTING


def replace_decision(t: Trace, decision: Decision) -> Trace:
    from dataclasses import replace

    return replace(t, decision=decision, outcome="clarified")


def test_a_customer_asking_for_a_person_while_the_bot_carries_on_is_a_missed_escalation() -> None:
    turns = [
        trace("c", [route("this is useless, get me a real person", "order_status", 0.8)]),
        trace("c", [route("hello??", "greeting", 0.9)], at=T0 + timedelta(minutes=1)),
    ]
    result = diagnose_conversation(turns)
    names = {(s.layer, s.name) for s in result.signals}
    assert (FaultLayer.ORCHESTRATION, "missed_escalation") in names
    assert not result.failing  # nobody flagged it yet: the signal is counted, not a failure


def test_two_escalations_in_one_conversation_are_an_escalation_loop() -> None:
    turns = [
        trace("c", [escalate("low_confidence")], outcome="escalated", mechanism="content"),
        trace("c", [escalate("low_confidence")], outcome="escalated", at=T0 + timedelta(minutes=5)),
    ]
    names = {s.name for s in diagnose_conversation(turns).signals}
    assert "escalation_loop" in names


def test_a_low_review_score_makes_an_automated_conversation_fail_in_the_criterion_layer() -> None:
    review = Review(
        id="r1",
        conversation_id="c",
        reviewer="ana",
        rubric_version="1",
        scores={"correctness": 2, "groundedness": 5, "tone": 5},
        passed=False,
        reason=ReviewReason.SAMPLE,
    )
    notes = quality_notes([review], [])
    assert notes["c"] == QualityNote(False, ("correctness",), "review")
    result = diagnose_conversation([trace("c", [route("x", "order_status", 0.9)])], quality=notes["c"])
    assert result.failing and result.low_quality and result.layer is FaultLayer.KNOWLEDGE
    assert result.cause is not None and result.cause.name == "review:correctness"


# --- two windows --------------------------------------------------------------------------------------------


def window(prefix: str, n: int, failures: dict[str, int], version: str) -> list[ConversationDiagnosis]:
    """`n` conversations; `failures` many of them failing per kind."""
    kinds = {
        "knowledge": ([resolve("content", kind="handoff", handoff_reason="no_grounded_answer")], "content"),
        "routing": ([route("?", None, 0.1), escalate("clarification_exhausted")], None),
        "actions": ([escalate("action_failed")], "action"),
    }
    out = []
    index = 0
    for kind, count in failures.items():
        steps, mechanism = kinds[kind]
        for _ in range(count):
            extra = [escalate("no_grounded_answer")] if kind == "knowledge" else []
            t = trace(
                f"{prefix}{index}",
                [*steps, *extra],
                outcome="escalated",
                mechanism=mechanism,
                version=version,
            )
            out.append(diagnose_conversation([t]))
            index += 1
    while index < n:
        t = trace(f"{prefix}{index}", [route("where is ORD-10001", "order_status", 0.9)], version=version)
        out.append(diagnose_conversation([t]))
        index += 1
    return out


def test_a_real_rise_ranks_above_noise_with_examples_from_the_new_window() -> None:
    a = window("a", 200, {"knowledge": 4, "routing": 10, "actions": 2}, "v1")
    b = window("b", 200, {"knowledge": 30, "routing": 13, "actions": 2}, "v2")
    result = compare(a, b, window_a="v1", window_b="v2")
    top = result.layers[0]
    assert top.layer is FaultLayer.KNOWLEDGE and top.significant and top.delta == pytest.approx(0.13)
    assert top.low > 0 and top.p_value < 0.001
    assert top.example_conversations and all(c.startswith("b") for c in top.example_conversations)
    assert top.examples[0].step in ("escalate", "resolve:content")
    routing = next(c for c in result.layers if c.layer is FaultLayer.ROUTING)
    assert routing.delta > 0 and not routing.significant  # 10 → 13 of 200 is what chance does
    assert top.contribution == pytest.approx(26 / 29)  # of the rise in failing conversations
    assert result.failing.b_count - result.failing.a_count == 29


def test_a_small_window_is_called_insufficient() -> None:
    result = compare(window("a", 5, {"knowledge": 1}, "v1"), window("b", 5, {"knowledge": 3}, "v2"))
    assert result.insufficient and any("insufficient" in n for n in result.notes)
    assert not any(c.significant for c in result.layers)


def test_newcombe_interval_matches_newcombe_1998_and_statsmodels() -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    # Newcombe, Statistics in Medicine 17 (1998), table II, example (a): 56/70 − 48/80, method 10.
    low, high = newcombe_interval(48, 80, 56, 70)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    for a, a_n, b, b_n in [
        (48, 80, 56, 70),
        (5, 80, 0, 80),
        (0, 10, 10, 10),
        (3, 200, 30, 200),
        (7, 9, 1, 12),
    ]:
        expected = confint_proportions_2indep(b, b_n, a, a_n, method="newcomb", compare="diff")
        assert newcombe_interval(a, a_n, b, b_n) == pytest.approx(tuple(map(float, expected)), abs=1e-9)


# --- workspace changes --------------------------------------------------------------------------------------


def test_each_workspace_change_gets_its_layer_and_the_conversations_it_touched(tmp_path: Path) -> None:
    old = load_workspace(write_workspace(tmp_path / "old"))
    content = canonical_content(old)
    content["facts"][0]["text"] = "Broken."  # facts are sorted by id: return-condition
    content["settings"]["thresholds"]["route_min_confidence"] = 0.6
    content["strategy"]["rules"].append(
        {"id": "returns-to-people", "when": {"intent_in": ["return_policy"]}, "then": {"force_human": True}}
    )
    content["actions"][0]["path"] = "/v2/orders/{order_id}"
    new = workspace_from_content(content)
    changes = {c.name: c for c in workspace_changes(old, new)}
    assert changes["return-condition"].layer is FaultLayer.KNOWLEDGE
    assert "return_policy" in changes["return-condition"].intents  # the intent the fact serves
    assert changes["thresholds.route_min_confidence"].layer is FaultLayer.ROUTING
    assert changes["returns-to-people"].layer is FaultLayer.POLICY
    assert changes["get_order_status"].layer is FaultLayer.ACTIONS

    near = diagnose_conversation([trace("near", [route("x", "order_status", 0.5)])])
    far = diagnose_conversation([trace("far", [route("x", "order_status", 0.95)])])
    threshold = changes["thresholds.route_min_confidence"]
    assert threshold.touches(near) and not threshold.touches(far)
    fired = diagnose_conversation(
        [trace("fired", [step(Layer.STRATEGY, "assess", {}, {"fired_rules": ["returns-to-people"]})])]
    )
    assert changes["returns-to-people"].touches(fired) and not changes["returns-to-people"].touches(far)


# --- windows and the command line ---------------------------------------------------------------------------


def test_windows_parse_periods_and_version_prefixes() -> None:
    period = parse_window("2026-11-01..2026-11-07", [])
    assert period.start == datetime(2026, 11, 1, tzinfo=UTC) and period.end == datetime(
        2026, 11, 8, tzinfo=UTC
    )
    assert parse_window("ws_ab", ["ws_abc123", "ws_def"]).version == "ws_abc123"
    for bad, message in [
        ("ws_zz", "not a workspace version"),
        ("ws_", "matches several"),
        ("2026-13-01..2026-13-02", "not a date"),
        ("2026-11-07..2026-11-01", "ends before it starts"),
        ("  ", "empty window"),
    ]:
        with pytest.raises(DiagnoseError, match=message):
            parse_window(bad, ["ws_abc123", "ws_def"])


def test_cli_bad_input_says_why_and_exits_1(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    unknown = runner.invoke(app, ["diagnose", "--from", "ws_nope", "--to", "ws_nada", "--home", home])
    assert unknown.exit_code == 1 and "not a workspace version" in unknown.output
    empty = runner.invoke(
        app,
        ["diagnose", "--from", "2026-01-01..2026-01-02", "--to", "2026-01-03..2026-01-04", "--home", home],
    )
    assert empty.exit_code == 1 and "no conversations in 2026-01-01..2026-01-02" in empty.output


SCRIPTS = [
    {"id": f"policy-{i}", "messages": [text]}
    for i, text in enumerate(
        [
            "what is your return policy?",
            "how many days do I have to return something",
            "can I return an item I bought",
            "do you accept returns",
            "how long is the return window",
            "is there a time limit on returns",
        ]
    )
] + [{"id": "lawyer", "messages": ["I will sue you"]}]


def replay(workspace: Path, scripts: Path, home: Path) -> str:
    result = runner.invoke(app, ["replay", str(workspace), str(scripts), "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["workspace_version"])


def test_diagnose_finds_a_planted_policy_rule_between_two_replayed_versions(tmp_path: Path) -> None:
    scripts = tmp_path / "s.jsonl"
    scripts.write_text("\n".join(json.dumps(s) for s in SCRIPTS) + "\n", encoding="utf-8")
    home = tmp_path / "home"
    planted = SHOP["strategy.yaml"] + (
        "  - id: returns-to-people\n    when: {intent_in: [return_policy]}\n    then: {force_human: true}\n"
    )
    v1 = replay(write_workspace(tmp_path / "v1"), scripts, home)
    v2 = replay(write_workspace(tmp_path / "v2", **{"strategy.yaml": planted}), scripts, home)
    assert v1 != v2

    result = runner.invoke(app, ["diagnose", "--from", v1[:12], "--to", v2, "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["conversations"] == {"a": 7, "b": 7}
    top = payload["layers"][0]
    assert top["layer"] == "policy" and top["b"]["count"] > top["a"]["count"]
    assert top["examples"][0]["conversation_id"].startswith("replay_")
    assert top["examples"][0]["step"] == "escalate"
    assert payload["changes"][0]["name"] == "returns-to-people"
    assert payload["changes"][0]["failing"]["b"] >= 1

    page = tmp_path / "d.html"
    shown = runner.invoke(
        app,
        ["diagnose", "--from", v1, "--to", v2, "--home", str(home), "--html", str(page)],
        terminal_width=200,
    )
    assert shown.exit_code == 0, shown.output
    assert "layers, ranked" in shown.output and "returns-to-people" in shown.output
    assert "returns-to-people" in page.read_text(encoding="utf-8")

    # The same store by period: both windows hold both replays, so nothing changed and no version is ranked.
    days = (
        f"{(datetime.now(UTC) - timedelta(days=1)).date()}..{(datetime.now(UTC) + timedelta(days=1)).date()}"
    )
    same = runner.invoke(app, ["diagnose", "--from", days, "--to", days, "--home", str(home), "--json"])
    assert same.exit_code == 0, same.output
    by_period = json.loads(same.stdout)
    assert by_period["conversations"] == {"a": 14, "b": 14}
    assert all(layer["delta"] == 0 for layer in by_period["layers"]) and by_period["changes"] == []
    assert any("both windows ran mostly on version" in note for note in by_period["notes"])


def test_a_judgement_is_read_with_the_rubric_scales() -> None:
    from cxstack.demo import demo_workspace_path
    from cxstack.domain.quality import Judgement

    rubric = load_workspace(demo_workspace_path()).rubric
    judged = Judgement(
        conversation_id="c",
        judge_version="offline-1",
        rubric_version="1",
        scores={"correctness": 5, "groundedness": 4, "policy_compliance": 0, "tone": 1, "resolution": 4},
        overall=0.4,
        passed=False,
    )
    fine = Judgement("d", "offline-1", "1", {"policy_compliance": 1, "correctness": 4}, 0.9, True)
    notes = quality_notes([], [judged, fine], rubric)
    # tone is tracked, not a gate; pass/fail is 0 or 1, the others 1 to 5 with 4 to pass
    assert notes["c"] == QualityNote(False, ("policy_compliance",), "judge")
    assert notes["d"] == QualityNote(True, (), "judge")
    result = diagnose_conversation([trace("c", [route("x", "refund_request", 0.9)])], quality=notes["c"])
    assert result.layer is FaultLayer.POLICY
