from __future__ import annotations

from decimal import Decimal

import pytest

from cxstack.domain.models import Customer, CustomerId
from cxstack.domain.money import Money, Refusal, money_to_json
from cxstack.resolution.slots import fill_slots, parse_yes_no, prompt_for
from cxstack.workspace.models import SlotConfig

CUSTOMER = Customer(
    id=CustomerId("cus_1"),
    name="Ada",
    email="ada@example.com",
    plan="pro",
    attributes={"account_no": "AC-77"},
)
ORDER = SlotConfig(name="order_id", pattern=r"\b(ORD-\d{5})\b", prompt="What is your order number?")
AMOUNT = SlotConfig(name="amount", type="money", description="Refund amount")
MONTHS = SlotConfig(name="months", type="number", prompt="For how many months?")
REASON = SlotConfig(name="reason", required=False, default="not given")


def usd(amount: str, said: str | None = None) -> dict[str, str]:
    return money_to_json(Money(Decimal(amount), "USD"), said=said)


def test_pattern_and_money_from_one_message() -> None:
    fill = fill_slots(
        [AMOUNT, ORDER],
        "Please refund €25.50 for ORD-10002",
        customer=CUSTOMER,
        currency="EUR",
        locale="de_DE",
    )
    assert fill.values == {
        "order_id": "ORD-10002",
        "amount": {"amount": "25.50", "currency": "EUR", "said": "€25.50"},
    }
    assert fill.complete and fill.prompt is None


def test_the_refund_of_the_issue_fills_1500_not_1() -> None:
    fill = fill_slots([ORDER, AMOUNT], "I want a refund of $1,500 for ORD-10001", customer=CUSTOMER)
    assert fill.values["amount"] == usd("1500", said="$1,500")


def test_a_bare_number_is_an_amount_only_when_the_amount_was_asked_for() -> None:
    assert "amount" not in fill_slots([ORDER, AMOUNT], "it is 35", customer=CUSTOMER).values
    fill = fill_slots([ORDER, AMOUNT], "it is 35", customer=CUSTOMER, awaiting="amount")
    assert fill.values["amount"] == usd("35", said="35")


def test_a_refused_amount_is_reported_with_its_reason_and_replaces_the_carried_one() -> None:
    fill = fill_slots([AMOUNT], "between $10 and $20", customer=CUSTOMER, known={"amount": usd("15")})
    assert "amount" not in fill.values
    assert fill.invalid == ("amount",)
    assert fill.refusals["amount"].refusal == Refusal.RANGE


def test_two_different_amounts_for_one_slot_are_refused_not_guessed() -> None:
    fill = fill_slots([ORDER, AMOUNT], "I paid $80 for ORD-10001, refund $20 of it", customer=CUSTOMER)
    assert "amount" not in fill.values
    assert fill.refusals["amount"].refusal == Refusal.SEVERAL_AMOUNTS
    same = fill_slots([AMOUNT], "refund $20, yes $20.00", customer=CUSTOMER)
    assert same.values["amount"] == usd("20", said="$20")


def test_a_money_slot_never_takes_a_default_the_profile_or_a_pattern() -> None:
    slot = SlotConfig(name="amount", type="money", default="40", from_customer="arr", pattern=r"(\d+)")
    fill = fill_slots([slot], "refund 25 please", customer=CUSTOMER)
    assert fill.values == {} and fill.missing == ("amount",)


def test_counts_are_read_by_the_same_number_reader() -> None:
    assert fill_slots([MONTHS], "pause it for 2 months", customer=CUSTOMER).values == {"months": 2.0}
    assert fill_slots([MONTHS], "1,200", customer=CUSTOMER).values == {"months": 1200.0}
    shorthand = fill_slots([MONTHS], "2k", customer=CUSTOMER, awaiting="months")
    assert shorthand.invalid == ("months",)


def test_digits_of_an_identifier_are_not_an_amount() -> None:
    fill = fill_slots([AMOUNT, ORDER], "refund for ORD-10002", customer=CUSTOMER)
    assert fill.values == {"order_id": "ORD-10002"}
    assert fill.missing == ("amount",)
    assert fill.prompt == "Could you tell me the Refund amount?"


def test_first_missing_slot_prompt_in_declared_order() -> None:
    fill = fill_slots([ORDER, AMOUNT], "I want a refund", customer=CUSTOMER)
    assert fill.missing == ("order_id", "amount")
    assert fill.prompt == "What is your order number?"


def test_known_values_carry_over_and_the_current_message_wins() -> None:
    known = {"order_id": "ORD-1", "amount": usd("20", said="$20")}
    fill = fill_slots([ORDER, AMOUNT], "make it $30", customer=CUSTOMER, known=known)
    assert fill.values == {"order_id": "ORD-1", "amount": usd("30", said="$30")}
    assert fill_slots([ORDER, AMOUNT], "thanks", customer=CUSTOMER, known=known).values == known


def test_earlier_customer_messages_fill_patterned_slots_most_recent_first() -> None:
    fill = fill_slots(
        [ORDER],
        "I want a refund",
        customer=CUSTOMER,
        earlier_texts=["my order ORD-11111 was late", "actually it was ORD-22222"],
    )
    assert fill.values == {"order_id": "ORD-22222"}


def test_awaited_free_text_slot_takes_the_whole_message() -> None:
    note = SlotConfig(name="note", prompt="What went wrong?")
    assert fill_slots([note], "the box was crushed", customer=CUSTOMER).missing == ("note",)
    fill = fill_slots([note], "  the box was crushed ", customer=CUSTOMER, awaiting="note")
    assert fill.values == {"note": "the box was crushed"}


@pytest.mark.parametrize("slot", [AMOUNT, MONTHS])
def test_unparseable_number_is_reported_invalid(slot: SlotConfig) -> None:
    fill = fill_slots([slot], "no idea", customer=CUSTOMER, awaiting=slot.name)
    assert fill.missing == (slot.name,)
    assert fill.invalid == (slot.name,)


@pytest.mark.parametrize(
    ("source", "expected"),
    [("id", "cus_1"), ("email", "ada@example.com"), ("plan", "pro"), ("account_no", "AC-77")],
)
def test_from_customer(source: str, expected: str) -> None:
    slot = SlotConfig(name="who", from_customer=source)
    assert fill_slots([slot], "hello", customer=CUSTOMER).values == {"who": expected}


def test_from_customer_missing_attribute_asks() -> None:
    slot = SlotConfig(name="vat", from_customer="vat_number", prompt="Your VAT number?")
    fill = fill_slots([slot], "hi", customer=CUSTOMER)
    assert fill.prompt == "Your VAT number?"


def test_optional_slot_uses_default_and_is_never_missing() -> None:
    fill = fill_slots([ORDER, REASON], "ORD-12345", customer=CUSTOMER)
    assert fill.values == {"order_id": "ORD-12345", "reason": "not given"}
    assert fill.complete


def test_prompt_falls_back_to_slot_name() -> None:
    assert prompt_for(SlotConfig(name="order_id")) == "Could you tell me the order id?"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("yes", True),
        ("Yes please!", True),
        ("ok, go ahead", True),
        ("sure", True),
        ("no", False),
        ("No thanks", False),
        ("cancel it", False),
        ("never mind", False),
        ("maybe later?", None),
        ("yes no", None),
    ],
)
def test_parse_yes_no(text: str, answer: bool | None) -> None:
    assert parse_yes_no(text) is answer


def test_an_answer_that_starts_with_yes_or_no_decides() -> None:
    assert parse_yes_no("yes cancel it") is True
    assert parse_yes_no("no, keep it") is False
    assert parse_yes_no("yes... actually never mind") is None
