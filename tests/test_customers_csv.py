from __future__ import annotations

from pathlib import Path

import pytest

from cxstack.strategy.customers import (
    CustomerDataError,
    customer_from_dict,
    customer_to_dict,
    parse_arr,
    parse_customers_csv,
)


def test_parses_known_columns_and_attributes(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        "\ufeffID,Name,Email,Plan,ARR,Segment,Region,Churn_Risk\n"
        'c1,Ada,ada@example.com,Enterprise,"120,000",enterprise,EU,true\n'
        "\n"
        "c2,Bob,bob@example.com,Pro,$1200,smb,,\n",
        encoding="utf-8",
    )
    first, second = parse_customers_csv(path)
    assert (first.id, first.name, first.email, first.plan, first.arr, first.segment) == (
        "c1",
        "Ada",
        "ada@example.com",
        "Enterprise",
        120_000.0,
        "enterprise",
    )
    assert first.attributes == {"region": "EU", "churn_risk": "true"}
    assert second.arr == 1200.0
    assert second.attributes == {}  # empty cells are not attributes


def test_accepts_text_and_a_path_string(tmp_path: Path) -> None:
    text = "id,arr\nc1,10\n"
    assert parse_customers_csv(text)[0].arr == 10.0
    path = tmp_path / "c.csv"
    path.write_text(text, encoding="utf-8")
    assert parse_customers_csv(str(path))[0].id == "c1"
    with pytest.raises(FileNotFoundError):
        parse_customers_csv(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12,000", 12_000.0),
        ("$1200", 1200.0),
        ("€ 3 500", 3500.0),
        ("12k", 12_000.0),
        ("1.5M", 1_500_000.0),
        ("", 0.0),
        (None, 0.0),
        (42, 42.0),
        ("0.5", 0.5),
    ],
)
def test_parse_arr(raw: object, expected: float) -> None:
    assert parse_arr(raw) == expected


@pytest.mark.parametrize("raw", ["lots", "-5", True, "1.2.3"])
def test_parse_arr_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_arr(raw)


def test_errors_name_row_and_column_and_are_all_reported() -> None:
    text = "id,name,arr\nc1,Ada,lots\n,Nobody,10\nc1,Again,5\nc4,Fine,5\n"
    with pytest.raises(CustomerDataError) as raised:
        parse_customers_csv(text)
    assert raised.value.problems == [
        "row 2, column arr: not an amount: 'lots'",
        "row 3, column id: empty id",
        "row 4, column id: `c1` already on row 2",
    ]


def test_missing_id_column() -> None:
    with pytest.raises(CustomerDataError, match=r"no `id` column \(found: name, arr\)"):
        parse_customers_csv("name,arr\nAda,1\n")
    with pytest.raises(CustomerDataError, match="empty"):
        parse_customers_csv("")


def test_customer_from_dict() -> None:
    customer = customer_from_dict(
        {"id": 7, "plan": "Pro", "arr": "12,500", "region": "EU", "attributes": {"seats": 3}}
    )
    assert customer.id == "7"
    assert customer.plan == "Pro" and customer.arr == 12_500.0
    assert customer.attributes == {"region": "EU", "seats": 3}
    assert customer_from_dict(customer_to_dict(customer)) == customer
    with pytest.raises(CustomerDataError, match="`id` is required"):
        customer_from_dict({"plan": "Pro"})
    with pytest.raises(CustomerDataError, match="field arr"):
        customer_from_dict({"id": "x", "arr": "many"})
