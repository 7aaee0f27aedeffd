"""Exact money end to end: the issue's $1,500 refund, the cap that fails closed, a pound-sterling workspace,
and `validate` on caps no action can reach."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import SHOP, write_workspace
from cxstack.app import CxApp, Settings, build
from cxstack.demo import demo_workspace_path
from cxstack.domain.models import Customer, CustomerId, Role
from cxstack.domain.money import Money, MoneyMention, Refusal, money_to_json
from cxstack.resolution import money_policy
from cxstack.resolution.money_policy import check_amount
from cxstack.workspace.loader import WorkspaceInvalid, load_workspace
from cxstack.workspace.validate import Problem, check_workspace

SMALL = Customer(id=CustomerId("cus_small"), name="Sam Small", plan="basic", arr=12_000)

# The SHOP strategy without its refund rules: only the action's own max_amount (500) caps a refund.
NO_RULES = "version: 1\ntiers:\n  - {name: standard}\ndefault_tier: standard\nrules: []\n"
GBP_SETTINGS = SHOP["cxstack.yaml"].replace("scope:", "currency: GBP\nlocale: en_GB\nscope:")


async def started(tmp_path: Path, root: Path, base_url: str) -> CxApp:
    settings = Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=base_url)
    cx = build(settings, workspace=load_workspace(root))
    cx.store.upsert_customers([SMALL])
    await cx.start()
    return cx


@pytest.fixture
async def shop(tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any]) -> AsyncIterator[CxApp]:
    cx = await started(tmp_path, shop_path, backoffice[0])
    yield cx
    await cx.stop()


async def say(cx: CxApp, conversation: str, text: str) -> Any:
    await cx.post_message(conversation, text, customer_id=str(SMALL.id), verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view


def step(trace: Any, name: str) -> Any:
    return next(s for s in trace.steps if s.name == name)


def replies(view: Any) -> list[str]:
    return [m.text for m in view.messages if m.role == Role.ASSISTANT]


# --- the refund ------------------------------------------------------------------------------------


async def test_a_1500_refund_is_handed_to_billing_with_1500_in_the_trace(
    shop: CxApp, backoffice: tuple[str, Any]
) -> None:
    _, backend = backoffice
    view = await say(shop, "m1", "I want a refund of $1,500 for ORD-10001")
    trace = view.traces[-1]
    assert trace.outcome == "escalated"
    assess = step(trace, "assess")
    assert assess.input["amount"] == {"amount": "1500.00", "currency": "USD"}
    assert "big-refunds-to-people" in assess.output["fired_rules"]
    [packet] = shop.store.list_escalations(queue="billing")
    assert packet.conversation_id == "m1"
    assert backend.requests_to("POST", "/orders/ORD-10001/refunds") == []
    assert not any("$1 " in text or "$1?" in text or "$1." in text for text in replies(view))


async def test_without_rules_the_action_cap_hands_the_1500_refund_off(
    tmp_path: Path, backoffice: tuple[str, Any]
) -> None:
    _, backend = backoffice
    root = write_workspace(tmp_path / "shop", **{"strategy.yaml": NO_RULES})
    cx = await started(tmp_path, root, backoffice[0])
    try:
        asked = await say(cx, "m2", "please refund ORD-10001")
        assert replies(asked)[-1] == "How much?"
        view = await say(cx, "m2", "1,500")
        trace = view.traces[-1]
        assert trace.outcome == "escalated" and trace.reason_code == "amount_over_cap"
        check = step(trace, "resolve:action").output["detail"]["amount_check"]
        assert check["amount"] == {"amount": "1500.00", "currency": "USD"}
        assert check["cap"] == "500"
        [packet] = cx.store.list_escalations(queue="billing")
        assert packet.reason_code == "amount_over_cap"
        assert backend.requests_to("POST", "/orders/ORD-10001/refunds") == []

        done = await say(cx, "m3", "refund $35.50 for ORD-10002")
        assert done.traces[-1].outcome == "automated"
        assert replies(done)[-1] == "Refunded $35.50 for ORD-10002 (reference RF-1)."
        [call] = backend.requests_to("POST", "/orders/ORD-10002/refunds")
        assert call.json["amount"] == 35.5
    finally:
        await cx.stop()


# --- a pound-sterling business ------------------------------------------------------------------------------


async def test_a_gbp_workspace_shows_pounds_and_refuses_dollars(
    tmp_path: Path, backoffice: tuple[str, Any]
) -> None:
    _, backend = backoffice
    root = write_workspace(tmp_path / "shop", **{"cxstack.yaml": GBP_SETTINGS})
    cx = await started(tmp_path, root, backoffice[0])
    try:
        first = await say(cx, "g1", "refund $40 for ORD-10003")
        assert (
            replies(first)[-1]
            == "I can only take the amount in British pounds, for example £35.00. How much?"
        )
        again = await say(cx, "g1", "$40")
        assert again.traces[-1].reason_code == "amount_currency_mismatch"
        assert backend.requests_to("POST", "/orders/ORD-10003/refunds") == []

        view = await say(cx, "g2", "I want a refund of £1,500 for ORD-10004")
        assert step(view.traces[-1], "assess").input["amount"] == {"amount": "1500.00", "currency": "GBP"}
        packet = next(p for p in cx.store.list_escalations(queue="billing") if p.conversation_id == "g2")
        assert "ARR £12,000" in packet.summary and "$" not in packet.summary

        done = await say(cx, "g3", "refund £12.50 for ORD-10005")
        assert replies(done)[-1] == "Refunded £12.50 for ORD-10005 (reference RF-1)."
    finally:
        await cx.stop()


# --- the gate, case by case ---------------------------------------------------------------------------------


def usd(amount: str) -> dict[str, str]:
    return money_to_json(Money(Decimal(amount), "USD"))


def gate(value: Any, **kwargs: Any) -> money_policy.AmountCheck:
    args: dict[str, Any] = {
        "refusal": None,
        "max_amount": Decimal(500),
        "rule_cap": None,
        "currency": "USD",
        "rule_currency": "USD",
    }
    args.update(kwargs)
    return check_amount(value, **args)


def test_the_gate_fails_closed() -> None:
    assert (gate(usd("10"), max_amount=None).decision, gate(None, max_amount=None).reason) == (
        "handoff",
        "amount_cap_missing",
    )
    assert (gate(None).decision, gate(None).reason) == ("ask", "amount_missing")
    range_ = MoneyMention("$10-20", (0, 6), refusal=Refusal.RANGE, currency="USD")
    assert (gate(None, refusal=range_).decision, gate(None, refusal=range_).reason) == (
        "ask",
        "amount_refused",
    )
    assert gate(usd("0")).reason == "amount_not_positive"
    assert gate(1500.0).reason == "amount_not_money"  # a float in the slot is never trusted
    assert gate("1500").reason == "amount_not_money"


def test_the_effective_cap_is_the_lower_of_the_action_and_the_rule() -> None:
    assert gate(usd("500")).allowed
    assert gate(usd("500.01")).reason == "amount_over_cap"
    assert gate(usd("100"), rule_cap=Decimal(100)).allowed
    over = gate(usd("100.01"), rule_cap=Decimal(100))
    assert (over.decision, over.reason, over.cap) == ("handoff", "amount_over_cap", Decimal(100))
    assert gate(usd("10"), rule_cap=Decimal(100), rule_currency="EUR").reason == "cap_currency_mismatch"


def test_another_currency_is_asked_once_then_handed_off() -> None:
    euros = MoneyMention("€40", (0, 3), refusal=Refusal.OTHER_CURRENCY, currency="EUR")
    assert gate(None, refusal=euros).decision == "ask"
    assert gate(None, refusal=euros, currency_retries=1).decision == "handoff"
    eur_amount = money_to_json(Money(Decimal(40), "EUR"))
    assert gate(eur_amount).reason == "amount_currency_mismatch"


# --- validate -----------------------------------------------------------------------------------------------


def errors(root: Path) -> list[Problem]:
    return check_workspace(root).errors


def test_validate_flags_a_cap_on_a_content_intent(tmp_path: Path) -> None:
    strategy = SHOP["strategy.yaml"] + (
        "  - id: shipping-refund-cap\n    when: {intent_in: [return_policy]}\n    then: {cap_amount: 8}\n"
    )
    root = write_workspace(tmp_path / "shop", **{"strategy.yaml": strategy})
    [problem] = errors(root)
    assert problem.file == "strategy.yaml" and problem.line == 18  # the cap_amount key
    assert (
        "rule `shipping-refund-cap` caps amounts but none of its intents (return_policy)" in problem.message
    )
    assert "amount_slot" in problem.fix
    with pytest.raises(WorkspaceInvalid):
        load_workspace(root)


def test_validate_flags_a_cap_on_every_intent_when_no_action_moves_money(tmp_path: Path) -> None:
    actions = SHOP["actions.yaml"].split("  - name: issue_refund")[0]
    strategy = NO_RULES.replace("rules: []", "rules:\n  - {id: cap-all, then: {cap_amount: 50}}")
    root = write_workspace(tmp_path / "shop", **{"actions.yaml": actions, "strategy.yaml": strategy})
    messages = [p.message for p in errors(root)]
    assert any(
        "rule `cap-all` caps amounts but no intent it can match runs a money action" in m for m in messages
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    max_amount: 500\n", "", "moves money but declares no max_amount"),
        ("type: money, prompt", 'type: money, default: "40", prompt', "money slot `amount` has `default`"),
        ("type: money, prompt", "type: number, prompt", "amount_slot `amount` is a number slot"),
        (
            "type: money, prompt",
            'type: money, pattern: "(\\\\d+)", prompt',
            "money slot `amount` has `pattern`",
        ),
    ],
)
def test_validate_flags_money_actions_that_could_run_unchecked(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in SHOP["actions.yaml"]
    root = write_workspace(tmp_path / "shop", **{"actions.yaml": SHOP["actions.yaml"].replace(old, new)})
    found = [p for p in errors(root) if expected in p.message]
    assert found and found[0].file == "actions.yaml" and found[0].line and found[0].fix


@pytest.mark.parametrize(
    ("setting", "fix"),
    [("currency: usd", "ISO 4217"), ("currency: XYZ", "ISO 4217"), ("locale: xx_YY", "en_US")],
)
def test_validate_flags_an_invalid_currency_or_locale(tmp_path: Path, setting: str, fix: str) -> None:
    settings = SHOP["cxstack.yaml"].replace("scope:", f"{setting}\nscope:")
    root = write_workspace(tmp_path / "shop", **{"cxstack.yaml": settings})
    [problem] = errors(root)
    assert problem.file == "cxstack.yaml" and problem.line == 3 and fix in problem.fix


def test_the_demo_and_the_test_shop_validate_clean(shop_path: Path) -> None:
    assert errors(demo_workspace_path()) == []
    assert errors(shop_path) == []
    assert load_workspace(demo_workspace_path()).settings.currency == "USD"
