"""Who may run an action on what: pure checks used by the action resolver.

Every conversation belongs to one customer, established by the channel (an integration's key, a signed
web-chat session) or by the workspace's verification step — never by what the customer types. An action that
is not `public` needs that verified customer; an action that takes an object id from the customer (an order
number) checks, through its `owner` rule, that the object belongs to them. An object that is not theirs and
one that does not exist get the same answer, so order numbers cannot be probed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxstack.domain.models import Customer
from cxstack.workspace.models import OwnershipCheck

IDENTITY_REQUIRED = "identity_required"
IDENTITY_MISMATCH = "identity_mismatch"


def lookup(response: Mapping[str, Any], dotted: str) -> Any:
    """`response["a"]["b"]` for "a.b"; None when any part is missing."""
    value: Any = response
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def customer_value(customer: Customer, field: str) -> Any:
    if field in ("id", "email", "name", "plan", "segment"):
        return getattr(customer, field)
    return customer.attributes.get(field)


def owns(response: Mapping[str, Any], check: OwnershipCheck, customer: Customer) -> bool:
    """Fails closed: an owner field that is missing or empty on either side is not a match."""
    owner = lookup(response, check.field)
    mine = customer_value(customer, check.matches)
    if owner in (None, "") or mine in (None, ""):
        return False
    if check.matches == "email":
        return str(owner).strip().casefold() == str(mine).strip().casefold()
    return str(owner).strip() == str(mine).strip()
