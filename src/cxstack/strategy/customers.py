"""Customer profiles from a CSV export (for `cxstack` imports) or a JSON payload (API, replay scripts).

Known columns are id, name, email, plan, arr, segment (header case and a UTF-8 BOM do not matter); every other
column becomes an attribute that policy rules can test. All bad rows are reported at once, by row and column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from cxstack.domain.attributes import AttributeTypeError, coerce_attribute
from cxstack.domain.models import Customer, CustomerId
from cxstack.domain.money import Refusal, read_number

KNOWN_COLUMNS = ("id", "name", "email", "plan", "arr", "segment")
# CRM exports write "12k" and "1.5M"; customers' messages never get this shorthand (see domain.money).
_MULTIPLIERS = {"k": Decimal(1_000), "m": Decimal(1_000_000)}
# A currency sign or code around the figure ("$1200", "€ 3 500", "1200 USD"): ARR is a size, not a payment.
_CURRENCY_EDGES = re.compile(r"^(?:[^\w\s.,'-]|[A-Z]{3}\b|\s)+|(?:[^\w\s.,']|\b[A-Z]{3}|\s)+$")


class CustomerDataError(ValueError):
    """Customer data that cannot be read; `problems` lists each one as "row N, column C: ..."."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_arr(value: Any, *, locale: str = "en_US") -> float:
    """An ARR from a number or text such as "12,000", "$1200", "€ 3 500", "12k" (empty means 0). The digits
    are read by the one number reader (`cxstack.domain.money.read_number`): "1.500" in en_US is refused as
    ambiguous rather than read as 1.5."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, int | float):
        amount = float(value)
    else:
        text = _CURRENCY_EDGES.sub("", str(value))
        if not text:
            return 0.0
        multiplier = _MULTIPLIERS.get(text[-1].lower(), Decimal(1))
        if multiplier != 1:
            text = text[:-1].rstrip()
        number = read_number(text, locale=locale)
        if isinstance(number, Refusal):
            raise ValueError(f"not an amount: {value!r}")
        amount = float(number * multiplier)
    if amount < 0 or amount != amount:
        raise ValueError(f"not a valid amount: {value!r}")
    return amount


def parse_customers_csv(
    path_or_text: Path | str, *, attribute_types: Mapping[str, str] | None = None
) -> list[Customer]:
    """Customers from a CSV file (a `Path`, or a `str` naming an existing file) or from CSV text. Columns
    the workspace declares (`attribute_types`) are coerced to their type; a value that is not of it
    rejects the import with its row and column."""
    looks_like_path = isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and (Path(path_or_text).is_file() or path_or_text.lower().endswith(".csv"))
    )
    if looks_like_path:
        text = Path(path_or_text).read_text(encoding="utf-8-sig")  # a missing file raises FileNotFoundError
    else:
        text = str(path_or_text).removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise CustomerDataError(["the CSV is empty; expected a header row with at least `id`"])
    columns = [h.strip().lower() for h in header]
    if "id" not in columns:
        raise CustomerDataError([f"row 1: no `id` column (found: {', '.join(columns) or 'nothing'})"])
    duplicates = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicates:
        raise CustomerDataError([f"row 1: column `{c}` appears twice" for c in duplicates])
    customers: list[Customer] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for row_number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            problems.append(f"row {row_number}: {len(row)} values but only {len(columns)} columns")
            continue
        record = {columns[i]: cell.strip() for i, cell in enumerate(row) if columns[i]}
        customer_id = record.get("id", "")
        if not customer_id:
            problems.append(f"row {row_number}, column id: empty id")
            continue
        if customer_id in seen:
            problems.append(
                f"row {row_number}, column id: `{customer_id}` already on row {seen[customer_id]}"
            )
            continue
        seen[customer_id] = row_number
        try:
            arr = parse_arr(record.get("arr", ""))
        except ValueError as exc:
            problems.append(f"row {row_number}, column arr: {exc}")
            continue
        raw_attributes = {k: v for k, v in record.items() if k not in KNOWN_COLUMNS and v != ""}
        attributes, bad = _typed(raw_attributes, attribute_types or {})
        if bad:
            problems.extend(f"row {row_number}, column {column}: {why}" for column, why in bad)
            continue
        customers.append(
            Customer(
                id=CustomerId(customer_id),
                name=record.get("name", ""),
                email=record.get("email", ""),
                plan=record.get("plan", ""),
                arr=arr,
                segment=record.get("segment", ""),
                attributes=attributes,
            )
        )
    if problems:
        raise CustomerDataError(problems)
    return customers


def _typed(
    attributes: Mapping[str, Any], attribute_types: Mapping[str, str]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    typed: dict[str, Any] = {}
    bad: list[tuple[str, str]] = []
    for key, value in attributes.items():
        kind = attribute_types.get(key)
        if kind is None:
            typed[key] = value
            continue
        try:
            coerced = coerce_attribute(value, kind)
        except AttributeTypeError as exc:
            bad.append((key, f"{exc} (declared {kind} in strategy.yaml)"))
            continue
        if coerced is not None:
            typed[key] = coerced
    return typed, bad


def customer_from_dict(
    data: Mapping[str, Any], *, attribute_types: Mapping[str, str] | None = None
) -> Customer:
    """A customer from an API or replay payload: `{"id": ..., "plan": ..., "arr": ...}`. Keys other than the
    known fields, and an explicit `attributes` mapping, become attributes (coerced to declared types)."""
    raw_id = data.get("id")
    if raw_id is None or str(raw_id).strip() == "":
        raise CustomerDataError(["customer: `id` is required"])
    try:
        arr = parse_arr(data.get("arr"))
    except ValueError as exc:
        raise CustomerDataError([f"customer {raw_id}, field arr: {exc}"]) from None
    explicit = data.get("attributes") or {}
    if not isinstance(explicit, Mapping):
        raise CustomerDataError([f"customer {raw_id}, field attributes: expected an object"])
    raw = {k: v for k, v in data.items() if k not in KNOWN_COLUMNS and k != "attributes"}
    raw.update(explicit)
    attributes, bad = _typed(raw, attribute_types or {})
    if bad:
        raise CustomerDataError([f"customer {raw_id}, attribute {key}: {why}" for key, why in bad])
    return Customer(
        id=CustomerId(str(raw_id).strip()),
        name=str(data.get("name") or ""),
        email=str(data.get("email") or ""),
        plan=str(data.get("plan") or ""),
        arr=arr,
        segment=str(data.get("segment") or ""),
        attributes=attributes,
    )


def customer_to_dict(customer: Customer) -> dict[str, Any]:
    """The inverse of `customer_from_dict`, for traces and escalation packets."""
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "plan": customer.plan,
        "arr": customer.arr,
        "segment": customer.segment,
        "attributes": dict(customer.attributes),
    }
