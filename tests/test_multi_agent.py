"""Multi-agent resolution: specialist agents one step each, one shared context passed whole at every handoff,
a verifier between steps, confidence tracked across them — and a message with two requests served the same
way, by two agents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SHOP, say_as_sam, start_shop, write_workspace

from cxstack.app import CxApp
from cxstack.domain.turn import Outcome
from cxstack.resolution.verifier import references, verify_step
from cxstack.testing.http_standin import ScriptedBackend
from cxstack.workspace.validate import validate_workspace

AGENTS = """\
version: 1
agents:
  - name: orders
    description: Finds an order and says where it is.
    actions: [get_order_status]
  - name: refunds
    description: Refunds an order.
    actions: [issue_refund]
    slots:
      amount: {type: number, exclusiveMinimum: 0}
"""
# A damaged order: the order agent looks it up, then the refunds agent refunds it.
DAMAGED = """\
  - name: damaged_item
    description: report an item that arrived damaged and get a refund
    mechanism: multi_agent
    agents: [orders, refunds]
    owner: billing@shop.test
    queue: billing
    examples:
      - my order arrived damaged
      - the item I got is broken
      - the package came crushed and the product is damaged
      - my order arrived broken, I want my money back
      - what I received is damaged
      - the box was smashed and the item inside is broken
"""
AS_AGENTS = (
    SHOP["intents.yaml"]
    .replace(
        "    mechanism: action\n    action: issue_refund\n", "    mechanism: agent\n    agent: refunds\n"
    )
    .replace(
        "    mechanism: action\n    action: get_order_status\n", "    mechanism: agent\n    agent: orders\n"
    )
)


async def make(tmp_path: Path, backoffice: str, running: list[CxApp], **files: str) -> CxApp:
    files = {"intents.yaml": AS_AGENTS + DAMAGED, "agents/specialists.yaml": AGENTS, **files}
    cx: CxApp = await start_shop(tmp_path, backoffice, running, **files)
    return cx


say = say_as_sam


def steps(trace: Any, name: str) -> list[Any]:
    return [s for s in trace.steps if s.name == name]


async def test_specialists_run_in_turn_with_the_context_handed_over_whole(
    tmp_path: Path, backoffice: tuple[str, ScriptedBackend], running: list[CxApp]
) -> None:
    base_url, backend = backoffice
    cx = await make(tmp_path, base_url, running)
    trace = await say(cx, "my order ORD-12345 arrived damaged. $30 back please")
    assert trace.intent == "damaged_item" and trace.mechanism == "multi_agent"
    assert trace.outcome == "automated"
    assert [(r.method, r.path) for r in backend.requests] == [
        ("GET", "/orders/ORD-12345"),
        ("POST", "/orders/ORD-12345/refunds"),
    ]
    assert "shipped" in trace.reply and "Refunded $30.00" in trace.reply
    [handoff] = steps(trace, "handoff")
    assert handoff.input == {"from": "damaged_item/orders", "to": "damaged_item/refunds"}
    # The refunds agent received what the order agent did: its step, its action result, the confidence.
    context = handoff.output["context"]
    assert [s["agent"] for s in context["steps"]] == ["orders"]
    assert context["actions"] == [{"action": "get_order_status", "ok": True}]
    assert context["confidence"] == 1.0
    [verify] = steps(trace, "verify")
    assert verify.output["passed"] is True
    assert "multi_agent" not in (cx.store.get_conversation("c1").state or {})  # type: ignore[union-attr]


async def test_a_step_waiting_for_the_customer_resumes_there_without_redoing_the_steps_before(
    tmp_path: Path, backoffice: tuple[str, ScriptedBackend], running: list[CxApp]
) -> None:
    base_url, backend = backoffice
    cx = await make(tmp_path, base_url, running)
    first = await say(cx, "my order ORD-12345 arrived damaged")
    assert "shipped" in first.reply and "How much?" in first.reply
    state = cx.store.get_conversation("c1").state  # type: ignore[union-attr]
    assert state["multi_agent"] == {"intent": "damaged_item", "index": 1}
    second = await say(cx, "$25")
    assert second.outcome == "automated" and "Refunded $25.00" in second.reply
    assert [(r.method, r.path) for r in backend.requests] == [
        ("GET", "/orders/ORD-12345"),
        ("POST", "/orders/ORD-12345/refunds"),
    ]


async def test_a_later_step_that_needs_a_person_keeps_what_the_earlier_ones_did(
    tmp_path: Path, backoffice: tuple[str, ScriptedBackend], running: list[CxApp]
) -> None:
    base_url, backend = backoffice
    cx = await make(tmp_path, base_url, running)
    trace = await say(cx, "my order ORD-12345 arrived damaged. $900 back please")  # over the $500 cap
    assert trace.outcome == "escalated" and trace.reason_code == "amount_over_cap"
    assert "shipped" in trace.reply  # the first step's answer was still given
    assert backend.requests_to("POST", "/orders/ORD-12345/refunds") == []
    [packet] = cx.store.list_escalations(status="open")
    assert [a.action for a in packet.actions_tried] == ["get_order_status"]
    assert "damaged_item by orders" in packet.summary


async def test_two_requests_in_one_message_are_served_by_two_agents(
    tmp_path: Path, backoffice: tuple[str, ScriptedBackend], running: list[CxApp]
) -> None:
    base_url, backend = backoffice
    cx = await make(tmp_path, base_url, running)
    trace = await say(cx, "Where is my order ORD-12345? Also I want a refund of $20 for ORD-54321.")
    agents = [s.output["detail"]["agent"]["name"] for s in steps(trace, "resolve:agent")]
    assert agents == ["orders", "refunds"]
    [handoff] = steps(trace, "handoff")
    assert handoff.input == {"from": "order_status/orders", "to": "refund_request"}
    assert handoff.output["reason"] == "second_request"
    assert handoff.output["context"]["actions"] == [{"action": "get_order_status", "ok": True}]
    assert [s.output["passed"] for s in steps(trace, "verify")] == [True, True]
    assert [(r.method, r.path) for r in backend.requests] == [
        ("GET", "/orders/ORD-12345"),
        ("POST", "/orders/ORD-54321/refunds"),
    ]


async def test_confidence_across_steps_below_the_threshold_sends_the_rest_to_a_person(
    tmp_path: Path, backoffice: tuple[str, ScriptedBackend], running: list[CxApp]
) -> None:
    base_url, _ = backoffice
    strict = SHOP["cxstack.yaml"].replace("thresholds:\n", "thresholds:\n  chain_min_confidence: 0.99\n")
    cx = await make(tmp_path, base_url, running, **{"cxstack.yaml": strict})
    trace = await say(cx, "Where is my order ORD-12345? And how many days do I have to return something?")
    # The order step is sure (a back-office answer); a knowledge answer is not, and the product falls.
    assert trace.outcome == "escalated" and trace.reason_code == "chain_low_confidence"
    assert "shipped" in trace.reply
    last = steps(trace, "verify")[-1].output
    assert last["passed"] is True and last["confidence_so_far"] < 0.99


def test_the_verifier_names_what_no_evidence_backs() -> None:
    reply = "Order ORD-77777 shipped; tracking 1Z999AA10123456784, receipt sent to eve@example.com."
    outcome = Outcome(kind="reply", confidence=0.9, reply=reply)
    assert references(reply) == ["ORD-77777", "1Z999AA10123456784", "eve@example.com"]
    evidence = ["where is ORD-77777", '{"tracking": "1Z999AA10123456784"}']
    check = verify_step(outcome, mechanism="agent", evidence=evidence, min_confidence=0.5)
    assert check.failed == ("unsupported_reference",) and check.unsupported == ("eve@example.com",)
    backed = verify_step(
        outcome, mechanism="agent", evidence=[*evidence, "eve@example.com"], min_confidence=0.5
    )
    assert backed.passed


@pytest.mark.parametrize(
    ("outcome", "mechanism", "failed"),
    [
        (Outcome(kind="reply", confidence=1.0), "agent", "empty_reply"),
        (Outcome(kind="reply", confidence=1.0, reply="word " * 1000), "agent", "over_long_reply"),
        (Outcome(kind="reply", confidence=0.9, reply="Returns take 30 days."), "content", "uncited_answer"),
        (Outcome(kind="reply", confidence=0.2, reply="Maybe."), "agent", "low_confidence"),
    ],
)
def test_the_verifier_stops_what_should_not_be_sent(outcome: Outcome, mechanism: str, failed: str) -> None:
    check = verify_step(outcome, mechanism=mechanism, evidence=[], min_confidence=0.5)
    assert check.failed == (failed,)


async def test_the_workspaces_own_texts_are_evidence(
    tmp_path: Path, backoffice: tuple[str, ScriptedBackend], running: list[CxApp]
) -> None:
    """A confirmation prompt that names a phone number is the team's text, not an invented reference."""
    base_url, _ = backoffice
    actions = SHOP["actions.yaml"].replace(
        "    amount_slot: amount\n",
        "    amount_slot: amount\n    requires_confirmation: true\n"
        '    confirmation_prompt: "Refund {amount} for {order_id}? Questions: 1-800-555-0100 (yes/no)"\n',
    )
    cx = await make(tmp_path, base_url, running, **{"actions.yaml": actions})
    trace = await say(cx, "I want a refund of $30 for ORD-12345")
    assert trace.outcome == "automated" and "1-800-555-0100" in trace.reply
    assert [s.output["passed"] for s in steps(trace, "verify")] == [True]


def test_a_multi_agent_intent_needs_two_known_agents(tmp_path: Path) -> None:
    one = DAMAGED.replace("agents: [orders, refunds]", "agents: [orders]")
    unknown = DAMAGED.replace("agents: [orders, refunds]", "agents: [orders, refundz]")
    for intents, expected in ((one, "names one agent"), (unknown, "unknown agent `refundz`")):
        files = {"intents.yaml": AS_AGENTS + intents, "agents/specialists.yaml": AGENTS}
        problems = validate_workspace(write_workspace(tmp_path / expected[:5], **files))
        assert [p for p in problems if expected in p.message and p.is_error], problems
