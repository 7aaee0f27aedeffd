"""A local back office for the ABCD benchmark: plain JSON over HTTP, one endpoint per ABCD action.

    POST /actions/<ontology action name>     JSON body: the action's slots
    header X-Customer-Id       the verified customer the call is made for (the connector sends it)
    header Idempotency-Key     a repeated key is answered from the first call, not executed again

Every call is recorded in order per customer (`calls`), whether it succeeded or not: that record, not the
assistant's trace, is what `benchmarks.agent_actions_abcd` scores. Each benchmark customer has one account
with one order (`Account`); calls that name an order, a username, an email, a zip code or a phone number are
checked against it, and a mismatch is refused (404) as a real back office would refuse it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# ontology.json `actions`: every action a subflow of ABCD can call.
ACTIONS = frozenset(
    {
        "verify-identity",
        "ask-the-oracle",
        "validate-purchase",
        "make-password",
        "promo-code",
        "subscription-status",
        "offer-refund",
        "make-purchase",
        "record-reason",
        "enter-details",
        "shipping-status",
        "update-order",
        "pull-up-account",
        "update-account",
        "send-link",
        "notify-team",
        "membership",
        "search-faq",
        "try-again",
        "log-out-in",
        "instructions",
        "search-jeans",
        "search-shirt",
        "search-boots",
        "search-jacket",
        "search-pricing",
        "search-timing",
        "search-membership",
        "search-policy",
        "select-faq",
    }
)


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    username: str
    email: str
    order_id: str
    zip_code: str
    phone: str
    membership: str


@dataclass(frozen=True)
class Call:
    action: str
    body: dict[str, Any]
    status: int

    @property
    def ok(self) -> bool:
        return self.status < 400


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _mismatch(account: Account, body: dict[str, Any]) -> str | None:
    """The first identifying value in the call that is not this account's."""
    checks: dict[str, Callable[[Any], bool]] = {
        "order_id": lambda v: _digits(v) == account.order_id,
        "username": lambda v: str(v).strip().lower() == account.username.lower(),
        "email": lambda v: str(v).strip().lower() == account.email.lower(),
        "zip_code": lambda v: _digits(v) == account.zip_code,
        "phone": lambda v: _digits(v) == _digits(account.phone),
    }
    for name, matches in checks.items():
        if name in body and not matches(body[name]):
            return name
    return None


@dataclass
class AbcdBackoffice:
    accounts: dict[str, Account] = field(default_factory=dict)
    _calls: dict[str, list[Call]] = field(default_factory=dict)
    _answered: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, account: Account) -> None:
        with self._lock:
            self.accounts[account.account_id] = account

    def calls(self, account_id: str) -> list[Call]:
        with self._lock:
            return list(self._calls.get(account_id, ()))

    def sequence(self, account_id: str) -> list[str]:
        """The actions called for this customer, in order: what is scored."""
        return [call.action for call in self.calls(account_id)]

    def execute(
        self, action: str, customer: str | None, body: dict[str, Any], key: str | None
    ) -> tuple[int, Any]:
        with self._lock:
            if key and key in self._answered:
                return self._answered[key]
            account = self.accounts.get(customer or "")
            if action not in ACTIONS:
                status, answer = 404, {"error": f"no action {action}"}
            elif account is None:
                status, answer = 403, {"error": "unknown customer"}
            elif (wrong := _mismatch(account, body)) is not None:
                status, answer = 404, {"error": f"{wrong.replace('_', ' ')} does not match the account"}
            else:
                status, answer = 200, self._answer(action, account, body)
            if account is not None:
                self._calls.setdefault(account.account_id, []).append(Call(action, dict(body), status))
            if key:
                self._answered[key] = (status, answer)
            return status, answer

    @staticmethod
    def _answer(action: str, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {"ok": True, "action": action}
        if action == "pull-up-account":
            answer["name"] = account.name
        elif action == "promo-code":
            answer["code"] = f"SAVE-{account.order_id[-4:]}"
        elif action == "make-password":
            answer["password"] = f"{account.username[:3]}-{account.order_id[:4]}-new"
        elif action == "subscription-status":
            answer.update(status="active", amount_due="$20.00", due_date="the 1st of next month")
        elif action == "ask-the-oracle":
            answer["answer"] = "yes"
        return answer

    def app(self) -> Starlette:
        async def call(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                body = {}
            status, answer = self.execute(
                request.path_params["action"],
                request.headers.get("x-customer-id"),
                body if isinstance(body, dict) else {},
                request.headers.get("idempotency-key"),
            )
            return JSONResponse(answer, status_code=status)

        return Starlette(routes=[Route("/actions/{action}", call, methods=["POST"])])
