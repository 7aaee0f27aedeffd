"""Customer attributes have declared types: imports coerce them (or refuse the row with its line), rules are
checked against them, and a rule on `vulnerable: true` fires for a CSV that says "yes"."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.conftest import write_workspace

from cxstack.domain.attributes import AttributeTypeError, coerce_attribute
from cxstack.domain.models import CustomerId
from cxstack.strategy.customers import CustomerDataError, customer_from_dict, parse_customers_csv
from cxstack.strategy.policy import assess
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.validate import validate_workspace

STRATEGY = """\
version: 1
tiers:
  - {name: standard}
default_tier: standard
attributes: {vulnerable: boolean, tenure_months: number, country: string, since: date}
rules:
  - id: vulnerable-to-people
    when: {attributes: {vulnerable: true}}
    then: {force_human: true, queue: general, priority: high}
"""
CSV = """id,name,vulnerable,tenure_months,country,since
cus_1,Ana,yes,12,PT,2024-02-01
cus_2,Bo,No,1,US,
cus_3,Cy,1,"1,200",DE,2020-01-01
"""


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("yes", "boolean", True),
        ("Y", "boolean", True),
        ("0", "boolean", False),
        (" false ", "boolean", False),
        (1, "boolean", True),
        ("1,200", "number", 1200),
        ("2.5", "number", 2.5),
        ("2024-02-01", "date", "2024-02-01"),
        ("  PT ", "string", "PT"),
        ("", "boolean", None),
    ],
)
def test_values_are_coerced_to_the_declared_type(value: object, kind: str, expected: object) -> None:
    assert coerce_attribute(value, kind) == expected


@pytest.mark.parametrize(
    ("value", "kind"), [("maybe", "boolean"), ("lots", "number"), ("01/02/2024", "date")]
)
def test_values_of_another_type_are_refused(value: str, kind: str) -> None:
    with pytest.raises(AttributeTypeError):
        coerce_attribute(value, kind)


def test_csv_import_coerces_and_the_rule_fires(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path / "ws", **{"strategy.yaml": STRATEGY}))
    customers = {c.id: c for c in parse_customers_csv(CSV, attribute_types=ws.strategy.attributes)}
    assert customers[CustomerId("cus_1")].attributes == {
        "vulnerable": True,
        "tenure_months": 12,
        "country": "PT",
        "since": "2024-02-01",
    }
    assert customers[CustomerId("cus_3")].attributes["tenure_months"] == 1200
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    fired = assess(
        customers[CustomerId("cus_1")], intent=None, channel="api", amount=None, now=now, strategy=ws.strategy
    )
    calm = assess(
        customers[CustomerId("cus_2")], intent=None, channel="api", amount=None, now=now, strategy=ws.strategy
    )
    assert fired.force_human and fired.fired_rules == ("vulnerable-to-people",)
    assert not calm.force_human


def test_a_stored_text_value_still_matches_a_declared_rule(tmp_path: Path) -> None:
    """Profiles imported before the type was declared hold "yes": the rule compares by type, so it fires."""
    ws = load_workspace(write_workspace(tmp_path / "ws", **{"strategy.yaml": STRATEGY}))
    old = customer_from_dict({"id": "cus_9", "vulnerable": "yes"})
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert assess(old, intent=None, channel="api", amount=None, now=now, strategy=ws.strategy).force_human


def test_a_bad_value_rejects_the_row_with_its_line(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path / "ws", **{"strategy.yaml": STRATEGY}))
    bad = CSV + "cus_4,Di,maybe,3,FR,\ncus_5,Ed,no,many,FR,\n"
    with pytest.raises(CustomerDataError) as caught:
        parse_customers_csv(bad, attribute_types=ws.strategy.attributes)
    assert caught.value.problems[0].startswith("row 5, column vulnerable: 'maybe' is not a yes/no value")
    assert caught.value.problems[1].startswith("row 6, column tenure_months: 'many' is not a number")


def test_api_payloads_are_coerced_too(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path / "ws", **{"strategy.yaml": STRATEGY}))
    customer = customer_from_dict(
        {"id": "cus_7", "attributes": {"vulnerable": "TRUE"}}, attribute_types=ws.strategy.attributes
    )
    assert customer.attributes == {"vulnerable": True}
    with pytest.raises(CustomerDataError, match="vulnerable"):
        customer_from_dict({"id": "cus_8", "vulnerable": "sometimes"}, attribute_types=ws.strategy.attributes)


def test_validate_flags_a_rule_that_can_never_match_its_type(tmp_path: Path) -> None:
    never = STRATEGY.replace("{vulnerable: true}", "{vulnerable: maybe}")
    problems = validate_workspace(write_workspace(tmp_path / "ws", **{"strategy.yaml": never}))
    [problem] = [p for p in problems if "can never fire" in p.message]
    assert problem.is_error and problem.file == "strategy.yaml" and problem.line == 8
    assert "boolean" in problem.message


def test_validate_warns_about_an_undeclared_attribute(tmp_path: Path) -> None:
    undeclared = STRATEGY.replace(
        "attributes: {vulnerable: boolean, tenure_months: number, country: string, since: date}\n", ""
    )
    problems = validate_workspace(write_workspace(tmp_path / "ws", **{"strategy.yaml": undeclared}))
    [problem] = [p for p in problems if "does not declare" in p.message]
    assert problem.severity == "warning" and "vulnerable: boolean" in problem.fix
