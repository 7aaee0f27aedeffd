"""Typed customer attributes: the workspace declares each attribute's type (strategy.yaml `attributes`), and
every value that comes in — a CSV export, the API, a replay script — is coerced to it or refused, so a rule
on `vulnerable: true` matches a customer whose CSV says "yes". Pure.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

TRUE = frozenset({"true", "yes", "y", "1", "t", "on"})
FALSE = frozenset({"false", "no", "n", "0", "f", "off"})


class AttributeTypeError(ValueError):
    pass


def coerce_attribute(value: Any, kind: str) -> Any:
    """`value` as the declared kind (string, number, boolean, date); raises AttributeTypeError with the
    reason. An empty value is None (unknown), whatever the kind."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind == "string":
        return str(value).strip()
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        text = str(value).strip().casefold()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise AttributeTypeError(f"{value!r} is not a yes/no value (use true/false, yes/no or 1/0)")
    if kind == "number":
        if isinstance(value, bool):
            raise AttributeTypeError(f"{value!r} is not a number")
        if isinstance(value, int | float):
            return value
        text = str(value).strip().replace(",", "").replace("_", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise AttributeTypeError(f"{value!r} is not a number") from None
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "date":
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        try:
            return date.fromisoformat(str(value).strip()).isoformat()
        except ValueError:
            raise AttributeTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    raise AttributeTypeError(f"unknown attribute type {kind!r}")
