from __future__ import annotations

import pytest

from cxstack.domain.models import Customer, CustomerId
from cxstack.resolution.slots import fill_slots, parse_number, parse_yes_no, prompt_for
from cxstack.workspace.models import SlotConfig

CUSTOMER = Customer(
    id=CustomerId("cus_1"),
    name="Ada",
    email="ada@example.com",
    plan="pro",
    attributes={"account_no": "AC-77"},
)
ORDER = SlotConfig(name="order_id", pattern=r"\b(ORD-\d{5})\b", prompt="What is your order number?")
AMOUNT = SlotConfig(name="amount", type="number", description="Refund amount")
REASON = SlotConfig(name="reason", required=False, default="not given")


def test_pattern_and_number_from_one_message() -> None:
    fill = fill_slots([AMOUNT, ORDER], "Please refund €25.50 for ORD-10002", customer=CUSTOMER)
    assert fill.values == {"order_id": "ORD-10002", "amount": 25.5}
    assert fill.complete and fill.prompt is None


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
    fill = fill_slots(
        [ORDER, AMOUNT], "make it 30", customer=CUSTOMER, known={"order_id": "ORD-1", "amount": 20}
    )
    assert fill.values == {"order_id": "ORD-1", "amount": 30.0}


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


def test_unparseable_number_is_reported_invalid() -> None:
    fill = fill_slots([AMOUNT], "no idea", customer=CUSTOMER, awaiting="amount")
    assert fill.missing == ("amount",)
    assert fill.invalid == ("amount",)


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
    ("text", "value"),
    [
        ("25", 25.0),
        ("€25.50", 25.5),
        ("25,50", 25.5),
        ("1,200", 1200.0),
        ("1.234,5", 1234.5),
        ("$ 12", 12.0),
        ("none", None),
    ],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


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
