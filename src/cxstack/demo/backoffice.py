"""The demo back office of Northwind Outfitters: orders, refunds, returns, accounts, subscriptions over HTTP.

It stands in for a retailer's real order-management system so that `actions.yaml` of the demo workspace has
something real to call: its own SQLite file, seeded on first start with the accounts of `customers.csv`, and
realistic status codes (404 unknown, 409 conflict, 422 invalid). Demo-only fault injection (`X-Demo-Fault`
header, `/_demo/faults`) lets tests and demos see how cxstack behaves when a back office times out or fails.

Run it with `python -m cxstack.demo.backoffice --port 8765 --db /tmp/northwind.db`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import random
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import ClientDisconnect

CUSTOMERS_CSV = Path(__file__).with_name("customers.csv")
ORDERS_PER_ACCOUNT = 4
FIRST_ORDER_NUMBER = 10001
DEFAULT_FAULT_DELAY_S = 5.0

ORDER_ID_PATTERN = re.compile(r"^ORD-?(\d{5})$", re.IGNORECASE)
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
PHONE_DIGITS_PATTERN = re.compile(r"\d")

STATUS_LABELS = {
    "received": "order received, not shipped yet",
    "in_transit": "in transit",
    "out_for_delivery": "out for delivery",
    "delivered": "delivered",
    "cancelled": "cancelled",
}
# Addresses, quantities and the order itself can change only before the parcel leaves the warehouse.
CHANGEABLE_STATUSES = frozenset({"received"})
REFUND_METHOD_LABELS = {
    "original_payment": "original payment method",
    "store_credit": "Northwind store credit",
    "gift_card": "prepaid gift card",
    "paper_check": "paper check",
}
# Words customers use for a refund method (ABCD: gift card, add value, paper check, credit card).
REFUND_METHOD_SYNONYMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("gift",), "gift_card"),
    (("check", "cheque"), "paper_check"),
    (("store credit", "add value", "account credit", "credit to my account"), "store_credit"),
    (("original", "card", "paypal", "same way", "back to"), "original_payment"),
)
RETURN_METHOD_LABELS = {
    "mail": "by mail with a prepaid label",
    "store": "at any Northwind store",
    "drop_off": "at a drop-off center",
}
# The demo's plans (customers.csv), lowest first; policies that grow with the plan compare these ranks.
PLAN_RANK = {"basic": 0, "plus": 1, "business": 2, "enterprise": 3}
PLAN_LABELS = {"basic": "Basic", "plus": "Plus", "business": "Business", "enterprise": "Enterprise"}
# Return windows by plan, in days (None: unlimited) — the knowledge facts `return-window-<plan>`.
RETURN_WINDOW_DAYS: dict[str, int | None] = {"enterprise": None, "business": 180, "plus": 90, "basic": 30}
# Standard shipping is free from this subtotal, and on every order of the Enterprise plan (shipping-free-*).
FREE_SHIPPING_FROM = 75.0
STANDARD_SHIPPING_FEE = 8.0
FREE_SHIPPING_PLANS = frozenset({"enterprise"})
# An expired promo code is replaced from this plan up (plan-benefit-promo, promo-basic-expired).
PROMO_REPLACEMENT_MIN_PLAN = "plus"

CATALOGUE: tuple[tuple[str, str, float], ...] = (
    ("NW-BT-101", "Calvin Klein leather boots", 149.00),
    ("NW-BT-102", "Guess suede ankle boots", 119.00),
    ("NW-BT-103", "Michael Kors waterproof hiking boots", 189.00),
    ("NW-BT-104", "Tommy Hilfiger chelsea boots", 129.00),
    ("NW-JK-201", "Calvin Klein wool blend jacket", 229.00),
    ("NW-JK-202", "Guess denim jacket", 98.00),
    ("NW-JK-203", "Michael Kors quilted puffer jacket", 259.00),
    ("NW-JK-204", "Tommy Hilfiger rain jacket", 139.00),
    ("NW-JN-301", "Calvin Klein slim fit jeans", 79.00),
    ("NW-JN-302", "Guess ripped skinny jeans", 69.00),
    ("NW-JN-303", "Michael Kors straight leg jeans", 89.00),
    ("NW-JN-304", "Tommy Hilfiger relaxed jeans", 59.00),
    ("NW-SH-401", "Calvin Klein oxford shirt", 54.00),
    ("NW-SH-402", "Guess linen shirt", 45.00),
    ("NW-SH-403", "Michael Kors silk blend shirt", 74.00),
    ("NW-SH-404", "Tommy Hilfiger polo shirt", 39.00),
)
CARRIERS = ("UPS", "FedEx", "DHL", "USPS")
STREETS = (
    "Maple Avenue",
    "Harbor Road",
    "Elm Street",
    "Cedar Lane",
    "Lakeview Drive",
    "Station Road",
    "Oak Court",
)
CITIES = ("Springfield", "Riverton", "Lakewood", "Fairview", "Georgetown", "Milford", "Ashland")

PROMO_CODES: tuple[tuple[str, int, int, int, str], ...] = (
    # code, percent off, valid from (days relative to today), valid to (relative), minimum plan
    ("WELCOME10", 10, -365, 365, "basic"),
    ("SPRING20", 20, -40, -33, "basic"),  # a 7-day promotion that has ended
    ("BUSINESS15", 15, -90, 90, "business"),  # Business and Enterprise plans only (promo-business15)
    ("SUMMER25", 25, 20, 27, "basic"),  # announced, not started yet
    ("FLASH30", 30, -3, 4, "basic"),
)


# --- request bodies ---------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RefundRequest(_Body):
    amount: float = Field(gt=0)
    reason: str = "customer request"
    method: Literal["original_payment", "store_credit", "gift_card", "paper_check"] = "original_payment"
    # When given, the order must belong to this account: a customer can only refund their own orders.
    account_id: str | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _method_synonyms(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().lower().replace("-", " ").replace("_", " ")
        for synonyms, method in REFUND_METHOD_SYNONYMS:
            if any(word in text for word in synonyms):
                return method
        return value


class AddressUpdate(_Body):
    address: str = Field(min_length=8, max_length=200)


class ReturnRequest(_Body):
    method: str = "mail"
    reason: str = "customer request"


class CancelRequest(_Body):
    reason: str = "customer request"


class EmailUpdate(_Body):
    email: str


class PhoneUpdate(_Body):
    phone: str


class PauseRequest(_Body):
    months: int = Field(1, ge=1, le=3)


class PromoValidation(_Body):
    code: str = Field(min_length=1, max_length=40)
    account_id: str | None = None


class VerifyRequest(_Body):
    email: str = Field(min_length=3, max_length=200)
    order_id: str = Field(min_length=3, max_length=40)


class FaultConfig(_Body):
    mode: Literal["timeout", "500", "503"]
    count: int = Field(1, ge=1, le=1000)
    path_prefix: str = "/"
    delay_s: float = Field(DEFAULT_FAULT_DELAY_S, ge=0, le=120)


# --- storage ----------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, username TEXT NOT NULL,
    phone TEXT NOT NULL, plan TEXT NOT NULL, country TEXT NOT NULL,
    address TEXT NOT NULL, two_factor INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), status TEXT NOT NULL,
    placed_on TEXT NOT NULL, eta TEXT NOT NULL, delivered_on TEXT, carrier TEXT NOT NULL,
    tracking_number TEXT NOT NULL, shipping_address TEXT NOT NULL, shipping_fee REAL NOT NULL,
    total REAL NOT NULL, payment_method TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id TEXT NOT NULL REFERENCES orders(id), sku TEXT NOT NULL, name TEXT NOT NULL,
    quantity INTEGER NOT NULL, unit_price REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id), amount REAL NOT NULL,
    reason TEXT NOT NULL, method TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
    idempotency_key TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS returns (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id), method TEXT NOT NULL,
    reason TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id), plan_name TEXT NOT NULL, status TEXT NOT NULL,
    price_per_year REAL NOT NULL, amount_due REAL NOT NULL, due_date TEXT NOT NULL, paused_until TEXT
);
CREATE TABLE IF NOT EXISTS idempotent_responses (
    key TEXT PRIMARY KEY, method TEXT NOT NULL, path TEXT NOT NULL, request_hash TEXT NOT NULL,
    status INTEGER NOT NULL, body BLOB NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class BackofficeDatabase:
    """One SQLite file; a lock serialises writers in this process, BEGIN IMMEDIATE across processes."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._write_lock = threading.Lock()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
        with self.write() as connection:
            if connection.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0:
                seed_database(connection, date.today())

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.db_path, timeout=10, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            finally:
                connection.close()


@dataclass(frozen=True)
class DemoAccount:
    id: str
    name: str
    email: str
    plan: str
    arr: float
    segment: str
    country: str


def load_demo_accounts(path: Path = CUSTOMERS_CSV) -> list[DemoAccount]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            DemoAccount(
                id=row["id"],
                name=row["name"],
                email=row["email"],
                plan=row["plan"],
                arr=float(row["arr"]),
                segment=row["segment"],
                country=row["country"],
            )
            for row in csv.DictReader(handle)
        ]


def plan_rank(plan: str) -> int:
    """The rank of a plan (basic 0 … enterprise 3); an unknown plan ranks as basic."""
    return PLAN_RANK.get(plan, 0)


def username_for(name: str) -> str:
    # The ABCD convention: first initial + last name + 1 (John Smith -> jsmith1).
    words = re.sub(r"[^a-z ]", "", name.lower()).split()
    if len(words) < 2:
        return (words[0] if words else "user") + "1"
    return f"{words[0][0]}{words[-1]}1"


def seed_database(connection: sqlite3.Connection, today: date) -> None:
    """Deterministic demo data: the same accounts, orders and amounts on every fresh database."""
    rng = random.Random(20260501)
    order_number = FIRST_ORDER_NUMBER
    for account in load_demo_accounts():
        street = f"{rng.randint(10, 9800)} {rng.choice(STREETS)}"
        address = f"{street}, {rng.choice(CITIES)}, {rng.randint(10000, 99999)}"
        phone = f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        connection.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                account.id,
                account.name,
                account.email,
                username_for(account.name),
                phone,
                account.plan,
                account.country,
                address,
            ),
        )
        # Orders from oldest to newest: one delivered long ago, then progressively fresher ones.
        for index, status in enumerate(_order_statuses(rng)):
            order_id = f"ORD-{order_number}"
            order_number += 1
            placed_days_ago = (200, 45, 6, 1)[index] + rng.randint(0, 10)
            placed_on = today - timedelta(days=placed_days_ago)
            eta = placed_on + timedelta(days=rng.randint(3, 6))
            delivered_on = eta.isoformat() if status == "delivered" else None
            # Draw unconditionally so that ids, items and amounts never depend on the date of seeding.
            days_until_late_eta = rng.randint(1, 3)
            if status != "delivered" and eta < today:
                eta = today + timedelta(days=days_until_late_eta)
            quantity_of_items = 1 if account.segment == "consumer" else rng.randint(2, 3)
            items = rng.sample(CATALOGUE, k=rng.randint(1, 3))
            lines = [
                (sku, name, quantity_of_items if account.segment != "consumer" else 1, price)
                for sku, name, price in items
            ]
            subtotal = sum(quantity * price for _, _, quantity, price in lines)
            free_shipping = subtotal >= FREE_SHIPPING_FROM or account.plan in FREE_SHIPPING_PLANS
            shipping_fee = 0.0 if free_shipping else STANDARD_SHIPPING_FEE
            connection.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order_id,
                    account.id,
                    status,
                    placed_on.isoformat(),
                    eta.isoformat(),
                    delivered_on,
                    rng.choice(CARRIERS),
                    f"1Z{rng.randint(10**9, 10**10 - 1)}",
                    address,
                    shipping_fee,
                    round(subtotal + shipping_fee, 2),
                    rng.choice(("credit card", "debit card", "paypal")),
                ),
            )
            connection.executemany(
                "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)",
                [(order_id, sku, name, quantity, price) for sku, name, quantity, price in lines],
            )
            if status == "cancelled":
                seeded_refund: tuple[float, str, str] | None = (
                    round(subtotal + shipping_fee, 2),
                    "order cancelled before shipping",
                    "complete",
                )
            elif index == 1 and rng.random() < 0.35:
                seeded_refund = (
                    round(min(30.0, subtotal), 2),
                    "item arrived damaged",
                    rng.choice(("in_progress", "complete")),
                )
            else:
                seeded_refund = None
            if seeded_refund is not None:
                amount, reason, refund_status = seeded_refund
                connection.execute(
                    "INSERT INTO refunds VALUES (?, ?, ?, ?, 'original_payment', ?, ?, NULL)",
                    (
                        f"rf_{order_id.lower()}_seed",
                        order_id,
                        amount,
                        reason,
                        refund_status,
                        (placed_on + timedelta(days=2)).isoformat(),
                    ),
                )
        if account.plan != "basic":
            price = {"plus": 99.0, "business": 1200.0, "enterprise": 9600.0}[account.plan]
            plan_name = {
                "plus": "Northwind Plus",
                "business": "Northwind Business",
                "enterprise": "Enterprise",
            }[account.plan]
            status = rng.choices(("active", "past_due", "paused"), weights=(8, 2, 1))[0]
            if status == "past_due":
                due_date = today - timedelta(days=rng.randint(1, 5))
            else:
                due_date = today + timedelta(days=rng.randint(3, 60))
            amount_due = price if status != "paused" else 0.0
            paused_until = (today + timedelta(days=30)).isoformat() if status == "paused" else None
            connection.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account.id, plan_name, status, price, amount_due, due_date.isoformat(), paused_until),
            )


def _order_statuses(rng: random.Random) -> list[str]:
    return [
        "delivered",
        rng.choice(("delivered", "delivered", "cancelled")),
        rng.choice(("in_transit", "out_for_delivery", "delivered")),
        rng.choice(("received", "received", "in_transit")),
    ]


# --- the service ------------------------------------------------------------------------------------------


class BackofficeService:
    """The back office's rules, kept out of the route handlers."""

    def __init__(self, database: BackofficeDatabase) -> None:
        self.database = database

    # orders

    def order(self, order_id: str) -> dict[str, Any]:
        with self.database.read() as connection:
            return self._order(connection, normalise_order_id(order_id))

    def _order(self, connection: sqlite3.Connection, order_id: str) -> dict[str, Any]:
        row = connection.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise HTTPException(404, detail=f"Order {order_id} not found.")
        items = [
            dict(item)
            for item in connection.execute(
                "SELECT sku, name, quantity, unit_price FROM order_items WHERE order_id = ?", (order_id,)
            )
        ]
        refunded = _refunded_total(connection, order_id)
        summary = ", ".join(
            f"{item['quantity']} x {item['name']}" if item["quantity"] > 1 else str(item["name"])
            for item in items
        )
        order = dict(row)
        order.update(
            order_id=order_id,
            status_label=STATUS_LABELS[row["status"]],
            delivery_note=_delivery_note(order),
            total_display=f"${row['total']:.2f}",
            items=items,
            items_summary=summary,
            refunded_total=refunded,
            refundable_amount=round(row["total"] - refunded, 2),
        )
        return order

    def orders_of(self, account_id: str) -> dict[str, Any]:
        with self.database.read() as connection:
            self._account_row(connection, account_id)
            ids = [
                row["id"]
                for row in connection.execute(
                    "SELECT id FROM orders WHERE account_id = ? ORDER BY placed_on DESC", (account_id,)
                )
            ]
            return {
                "account_id": account_id,
                "orders": [self._order(connection, order_id) for order_id in ids],
            }

    def refunds(self, order_id: str) -> dict[str, Any]:
        order_id = normalise_order_id(order_id)
        with self.database.read() as connection:
            order = self._order(connection, order_id)
            refunds = [
                dict(row)
                for row in connection.execute(
                    "SELECT id, amount, reason, method, status, created_at FROM refunds WHERE order_id = ? "
                    "ORDER BY created_at",
                    (order_id,),
                )
            ]
        if refunds:
            latest = refunds[-1]
            summary = (
                f"{len(refunds)} refund(s) totalling ${order['refunded_total']:.2f}; the latest, "
                f"${latest['amount']:.2f} to your {REFUND_METHOD_LABELS[latest['method']]}, is "
                f"{latest['status'].replace('_', ' ')}."
            )
        else:
            summary = "there is no refund on this order yet."
        return {
            "order_id": order_id,
            "refunds": refunds,
            "refund_count": len(refunds),
            "total_refunded": order["refunded_total"],
            "latest_status": refunds[-1]["status"] if refunds else "none",
            "summary": summary,
            "account_id": order["account_id"],
        }

    def refund(
        self, order_id: str, request: RefundRequest, idempotency_key: str | None
    ) -> tuple[int, dict[str, Any]]:
        order_id = normalise_order_id(order_id)
        amount = round(request.amount, 2)
        with self.database.write() as connection:
            if idempotency_key:
                existing = connection.execute(
                    "SELECT * FROM refunds WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if existing is not None:
                    if existing["order_id"] != order_id or abs(existing["amount"] - amount) > 0.001:
                        raise HTTPException(
                            409, detail="Idempotency-Key was already used for a different refund."
                        )
                    return 200, self._refund_response(connection, dict(existing), replayed=True)
            order = self._order(connection, order_id)
            if request.account_id is not None and request.account_id != order["account_id"]:
                raise HTTPException(
                    404, detail=f"Order {order_id} not found on account {request.account_id}."
                )
            if amount > order["refundable_amount"] + 1e-9:
                raise HTTPException(
                    409,
                    detail=(
                        f"Refund of ${amount:.2f} exceeds the refundable amount of "
                        f"${order['refundable_amount']:.2f} on order {order_id}."
                    ),
                )
            refund = {
                "id": f"rf_{uuid.uuid4().hex[:12]}",
                "order_id": order_id,
                "amount": amount,
                "reason": request.reason,
                "method": request.method,
                "status": "in_progress",
                "created_at": _now(),
                "idempotency_key": idempotency_key,
            }
            connection.execute(
                "INSERT INTO refunds VALUES "
                "(:id, :order_id, :amount, :reason, :method, :status, :created_at, :idempotency_key)",
                refund,
            )
            _record_event(connection, order["account_id"], "refund", f"{order_id} ${amount:.2f}")
            return 201, self._refund_response(connection, refund, replayed=False)

    def _refund_response(
        self, connection: sqlite3.Connection, refund: dict[str, Any], *, replayed: bool
    ) -> dict[str, Any]:
        order = self._order(connection, refund["order_id"])
        return {
            "refund_id": refund["id"],
            "order_id": refund["order_id"],
            "amount": refund["amount"],
            "amount_display": f"${refund['amount']:.2f}",
            "reason": refund["reason"],
            "method": refund["method"],
            "method_label": REFUND_METHOD_LABELS[refund["method"]],
            "status": refund["status"],
            "remaining_refundable": order["refundable_amount"],
            "replayed": replayed,
        }

    def change_address(self, order_id: str, request: AddressUpdate) -> dict[str, Any]:
        order_id = normalise_order_id(order_id)
        with self.database.write() as connection:
            order = self._order(connection, order_id)
            if order["status"] not in CHANGEABLE_STATUSES:
                raise HTTPException(
                    409,
                    detail=f"Order {order_id} is already {order['status_label']}; its address cannot change.",
                )
            address = " ".join(request.address.split())
            connection.execute("UPDATE orders SET shipping_address = ? WHERE id = ?", (address, order_id))
            _record_event(connection, order["account_id"], "address_change", f"{order_id}: {address}")
            return self._order(connection, order_id)

    def cancel(self, order_id: str, request: CancelRequest) -> dict[str, Any]:
        order_id = normalise_order_id(order_id)
        with self.database.write() as connection:
            order = self._order(connection, order_id)
            if order["status"] == "cancelled":
                raise HTTPException(409, detail=f"Order {order_id} is already cancelled.")
            if order["status"] not in CHANGEABLE_STATUSES:
                raise HTTPException(
                    409,
                    detail=f"Order {order_id} is already {order['status_label']}; return it once it arrives.",
                )
            refund_amount = order["refundable_amount"]
            connection.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
            if refund_amount > 0:
                connection.execute(
                    "INSERT INTO refunds VALUES (?, ?, ?, ?, 'original_payment', 'in_progress', ?, NULL)",
                    (
                        f"rf_{uuid.uuid4().hex[:12]}",
                        order_id,
                        refund_amount,
                        f"cancelled: {request.reason}",
                        _now(),
                    ),
                )
            _record_event(connection, order["account_id"], "cancel_order", order_id)
            result = self._order(connection, order_id)
            result["refund_amount"] = refund_amount
            result["refund_display"] = f"${refund_amount:.2f}"
            return result

    def start_return(self, order_id: str, request: ReturnRequest, today: date) -> dict[str, Any]:
        order_id = normalise_order_id(order_id)
        method = normalise_return_method(request.method)
        if method is None:
            raise HTTPException(422, detail="Return method must be one of: mail, store, drop_off.")
        with self.database.write() as connection:
            order = self._order(connection, order_id)
            if order["status"] != "delivered":
                raise HTTPException(
                    409,
                    detail=f"Order {order_id} is {order['status_label']}; a return starts after delivery.",
                )
            plan = connection.execute(
                "SELECT plan FROM accounts WHERE id = ?", (order["account_id"],)
            ).fetchone()["plan"]
            window = RETURN_WINDOW_DAYS.get(plan, RETURN_WINDOW_DAYS["basic"])
            delivered = date.fromisoformat(order["delivered_on"] or order["eta"])
            if window is not None and (today - delivered).days > window:
                raise HTTPException(
                    409,
                    detail=(
                        f"Order {order_id} was delivered {(today - delivered).days} days ago; the return "
                        f"window on the {PLAN_LABELS.get(plan, plan)} plan is {window} days."
                    ),
                )
            return_id = f"RMA-{uuid.uuid4().hex[:8].upper()}"
            connection.execute(
                "INSERT INTO returns VALUES (?, ?, ?, ?, ?)",
                (return_id, order_id, method, request.reason, _now()),
            )
            _record_event(connection, order["account_id"], "return", f"{order_id} {method}")
            instructions = {
                "mail": "A prepaid label is on its way to your email; drop the parcel at any carrier point.",
                "store": "Bring the items and this return number to any Northwind store.",
                "drop_off": "Show this return number at any partner drop-off center; no printing needed.",
            }[method]
            return {
                "return_id": return_id,
                "order_id": order_id,
                "method": method,
                "method_label": RETURN_METHOD_LABELS[method],
                "label_url": f"https://returns.northwind.example/labels/{return_id}",
                "instructions": instructions,
            }

    def executed_writes(self, after: int = 0) -> list[dict[str, Any]]:
        """Read-only: every write this back office executed (its event log), oldest first, from event id
        `after` on: the account it changed, its kind (refund, cancel_order, address_change, email_change, …),
        the order it touched and, for a refund, the amount. Benchmarks and tests check what an assistant did
        against this record rather than against the assistant's own traces."""
        with self.database.read() as connection:
            rows = connection.execute(
                "SELECT id, account_id, kind, detail, created_at FROM events WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()
        writes = []
        for row in rows:
            detail = str(row["detail"])
            order = _EVENT_ORDER.match(detail) if row["kind"] in _ORDER_EVENTS else None
            amount = _EVENT_AMOUNT.search(detail) if row["kind"] == "refund" else None
            writes.append(
                {
                    **dict(row),
                    "order_id": order.group(1) if order else None,
                    "amount": float(amount.group(1)) if amount else None,
                }
            )
        return writes

    def order_owner(self, order_id: str) -> str | None:
        with self.database.read() as connection:
            row = connection.execute(
                "SELECT account_id FROM orders WHERE id = ?", (normalise_order_id(order_id),)
            ).fetchone()
            return None if row is None else str(row["account_id"])

    def verify(self, request: VerifyRequest) -> dict[str, Any]:
        """The account whose email and order number both match; one 404 for every kind of mismatch."""
        try:
            order_id = normalise_order_id(request.order_id)
        except HTTPException:
            order_id = ""
        with self.database.read() as connection:
            row = connection.execute(
                "SELECT a.id FROM accounts a JOIN orders o ON o.account_id = a.id "
                "WHERE lower(a.email) = lower(?) AND o.id = ?",
                (request.email.strip(), order_id),
            ).fetchone()
        if row is None:
            raise HTTPException(404, detail="No account matches those details.")
        return {"account_id": row["id"], "verified": True}

    # accounts

    def _account_row(self, connection: sqlite3.Connection, account_id: str) -> sqlite3.Row:
        row = connection.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            raise HTTPException(404, detail=f"Account {account_id} not found.")
        return row  # type: ignore[no-any-return]

    def account(self, account_id: str) -> dict[str, Any]:
        with self.database.read() as connection:
            row = self._account_row(connection, account_id)
            result = dict(row)
            result["two_factor"] = bool(row["two_factor"])
            result["masked_email"] = mask_email(row["email"])
            return result

    def send_account_email(self, account_id: str, kind: str) -> dict[str, Any]:
        with self.database.write() as connection:
            row = self._account_row(connection, account_id)
            if kind == "2fa_reset":
                connection.execute("UPDATE accounts SET two_factor = 0 WHERE id = ?", (account_id,))
            _record_event(connection, account_id, kind, row["email"])
            return {
                "account_id": account_id,
                "sent_to": mask_email(row["email"]),
                "masked_email": mask_email(row["email"]),
                "username": row["username"],
                "expires_in_minutes": 30,
                "kind": kind,
            }

    def change_email(self, account_id: str, request: EmailUpdate) -> dict[str, Any]:
        email = request.email.strip().lower()
        if not EMAIL_PATTERN.match(email):
            raise HTTPException(422, detail=f"'{request.email}' is not a valid email address.")
        with self.database.write() as connection:
            self._account_row(connection, account_id)
            owner = connection.execute("SELECT id FROM accounts WHERE lower(email) = ?", (email,)).fetchone()
            if owner is not None and owner["id"] != account_id:
                raise HTTPException(409, detail="That email address belongs to another account.")
            connection.execute("UPDATE accounts SET email = ? WHERE id = ?", (email, account_id))
            _record_event(connection, account_id, "email_change", email)
        return {"account_id": account_id, "email": email, "masked_email": mask_email(email)}

    def change_phone(self, account_id: str, request: PhoneUpdate) -> dict[str, Any]:
        digits = "".join(PHONE_DIGITS_PATTERN.findall(request.phone))
        if not 10 <= len(digits) <= 15:
            raise HTTPException(422, detail=f"'{request.phone}' is not a valid phone number.")
        phone = f"({digits[-10:-7]}) {digits[-7:-4]}-{digits[-4:]}"
        if len(digits) > 10:
            phone = f"+{digits[:-10]} {phone}"
        with self.database.write() as connection:
            self._account_row(connection, account_id)
            connection.execute("UPDATE accounts SET phone = ? WHERE id = ?", (phone, account_id))
            _record_event(connection, account_id, "phone_change", phone)
        return {"account_id": account_id, "phone": phone}

    # subscriptions

    def _subscription_row(self, connection: sqlite3.Connection, account_id: str) -> dict[str, Any]:
        self._account_row(connection, account_id)
        row = connection.execute("SELECT * FROM subscriptions WHERE account_id = ?", (account_id,)).fetchone()
        if row is None:
            raise HTTPException(404, detail=f"Account {account_id} has no subscription.")
        subscription = dict(row)
        subscription["status_label"] = subscription["status"].replace("_", " ")
        subscription["billing_note"] = _billing_note(subscription)
        return subscription

    def subscription(self, account_id: str) -> dict[str, Any]:
        with self.database.read() as connection:
            return self._subscription_row(connection, account_id)

    def change_subscription(
        self,
        account_id: str,
        operation: Literal["cancel", "pause", "resume", "renew"],
        today: date,
        months: int = 1,
    ) -> dict[str, Any]:
        with self.database.write() as connection:
            subscription = self._subscription_row(connection, account_id)
            status = subscription["status"]
            if operation == "cancel":
                if status == "cancelled":
                    raise HTTPException(409, detail="The subscription is already cancelled.")
                access_until = max(date.fromisoformat(subscription["due_date"]), today).isoformat()
                connection.execute(
                    "UPDATE subscriptions SET status = 'cancelled', amount_due = 0 WHERE account_id = ?",
                    (account_id,),
                )
                extra: dict[str, Any] = {"access_until": access_until}
            elif operation == "pause":
                if status in ("cancelled", "paused"):
                    raise HTTPException(409, detail=f"A {status} subscription cannot be paused.")
                resumes_on = (today + timedelta(days=30 * months)).isoformat()
                connection.execute(
                    "UPDATE subscriptions SET status = 'paused', paused_until = ? WHERE account_id = ?",
                    (resumes_on, account_id),
                )
                extra = {"resumes_on": resumes_on, "months": months}
            elif operation == "resume":
                if status != "paused":
                    raise HTTPException(409, detail="Only a paused subscription can be resumed.")
                connection.execute(
                    "UPDATE subscriptions SET status = 'active', paused_until = NULL WHERE account_id = ?",
                    (account_id,),
                )
                extra = {}
            else:
                if status == "active" and subscription["amount_due"] == 0:
                    raise HTTPException(409, detail="Nothing is due on this subscription.")
                charged = subscription["amount_due"] or subscription["price_per_year"]
                next_due = (today + timedelta(days=365)).isoformat()
                connection.execute(
                    "UPDATE subscriptions SET status = 'active', amount_due = 0, due_date = ?, "
                    "paused_until = NULL WHERE account_id = ?",
                    (next_due, account_id),
                )
                extra = {"charged": charged, "charged_display": f"${charged:.2f}", "next_due_date": next_due}
            _record_event(connection, account_id, f"subscription_{operation}", status)
            result = self._subscription_row(connection, account_id)
            result.update(extra)
            return result

    # promotions

    def validate_promo(self, request: PromoValidation, today: date) -> dict[str, Any]:
        code = request.code.strip().upper()
        found = next((promo for promo in PROMO_CODES if promo[0] == code), None)
        result: dict[str, Any] = {
            "code": code,
            "valid": False,
            "discount_percent": 0,
            "replacement_code": None,
        }
        if found is None:
            result.update(
                reason="unknown", message=f"{code} isn't a Northwind promo code, so it can't be applied."
            )
            return result
        _, percent, start, end, minimum = found
        plan = "basic"
        if request.account_id:
            with self.database.read() as connection:
                plan = self._account_row(connection, request.account_id)["plan"]
        plan_label = PLAN_LABELS.get(plan, plan)
        valid_from, valid_to = today + timedelta(days=start), today + timedelta(days=end)
        if today < valid_from:
            result.update(reason="not_started", message=f"{code} starts on {valid_from.isoformat()}.")
        elif today > valid_to:
            result.update(reason="expired", message=f"{code} expired on {valid_to.isoformat()}.")
            # The Plus plan and up get a fresh code when theirs no longer works (plan-benefit-promo).
            if plan_rank(plan) >= plan_rank(PROMO_REPLACEMENT_MIN_PLAN):
                replacement = f"NW{percent}{uuid.uuid4().hex[:4].upper()}"
                result.update(
                    replacement_code=replacement,
                    message=(
                        f"{code} expired on {valid_to.isoformat()}, but on the {plan_label} plan here is a "
                        f"new code for {percent}% off: {replacement}."
                    ),
                )
        elif plan_rank(plan) < plan_rank(minimum):
            eligible = [PLAN_LABELS[name] for name, rank in PLAN_RANK.items() if rank >= plan_rank(minimum)]
            named = eligible[0] if len(eligible) == 1 else ", ".join(eligible[:-1]) + " and " + eligible[-1]
            plans = "plan" if len(eligible) == 1 else "plans"
            result.update(reason="plan", message=f"{code} is only for customers on the {named} {plans}.")
        else:
            result.update(
                valid=True,
                reason="ok",
                discount_percent=percent,
                message=f"{code} is valid until {valid_to.isoformat()} and takes {percent}% off at checkout.",
            )
        return result


def _delivery_note(order: dict[str, Any]) -> str:
    status = order["status"]
    if status == "delivered":
        return f"delivered on {order['delivered_on']} to {order['shipping_address']}"
    if status == "cancelled":
        return "it was cancelled, so nothing will ship"
    if status == "received":
        return f"it leaves our warehouse soon and should arrive by {order['eta']}"
    return f"expected by {order['eta']} with {order['carrier']} (tracking {order['tracking_number']})"


def _billing_note(subscription: dict[str, Any]) -> str:
    status = subscription["status"]
    if status == "active":
        return f"It renews on {subscription['due_date']} for ${subscription['price_per_year']:.2f}."
    if status == "past_due":
        return (
            f"${subscription['amount_due']:.2f} was due on {subscription['due_date']}; "
            "you can renew it here in the chat."
        )
    if status == "paused":
        return f"It is paused until {subscription['paused_until']} and nothing is charged meanwhile."
    return "It is cancelled and will not renew."


def normalise_order_id(raw: str) -> str:
    match = ORDER_ID_PATTERN.match(raw.strip())
    if match is None:
        raise HTTPException(422, detail=f"'{raw}' is not an order id like ORD-10234.")
    return f"ORD-{match.group(1)}"


def normalise_return_method(raw: str) -> str | None:
    text = raw.strip().lower().replace("-", " ").replace("_", " ")
    if "mail" in text or "post" in text:
        return "mail"
    if "store" in text or "shop" in text:
        return "store"
    if "drop" in text:
        return "drop_off"
    return None


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _refunded_total(connection: sqlite3.Connection, order_id: str) -> float:
    total = connection.execute("SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = ?", (order_id,))
    return round(float(total.fetchone()[0]), 2)


# How `_record_event` details name an order and a refund's amount ("ORD-10004 $90.00"), for executed_writes.
_ORDER_EVENTS = frozenset({"refund", "address_change", "cancel_order", "return"})
_EVENT_ORDER = re.compile(r"^(ORD-\d{5})\b")
_EVENT_AMOUNT = re.compile(r"\$(\d+\.\d{2})$")


def _record_event(connection: sqlite3.Connection, account_id: str, kind: str, detail: str) -> None:
    connection.execute(
        "INSERT INTO events (account_id, kind, detail, created_at) VALUES (?, ?, ?, ?)",
        (account_id, kind, detail, _now()),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- demo-only fault injection ------------------------------------------------------------------------------


@dataclass
class _ArmedFault:
    mode: str
    remaining: int
    path_prefix: str
    delay_s: float


class FaultInjector:
    """Faults armed through /_demo/faults fire on the next matching requests, then disarm."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_ArmedFault] = []

    def arm(self, config: FaultConfig) -> None:
        with self._lock:
            self._armed.append(_ArmedFault(config.mode, config.count, config.path_prefix, config.delay_s))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, path: str) -> _ArmedFault | None:
        with self._lock:
            for fault in self._armed:
                if path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._armed.remove(fault)
                    return fault
            return None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(vars(fault)) for fault in self._armed]


# --- idempotent writes -------------------------------------------------------------------------------------

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class IdempotencyKeys:
    """Every write that carries an Idempotency-Key runs once: a repeat with the same key, method, path and
    body gets the first answer back (with `Idempotent-Replayed: true`); a repeat with a different request is a
    422. Answers of 5xx are not kept, so a failed call may be retried. A per-key lock makes a retry that
    arrives while the first call is still running wait for it instead of running beside it."""

    def __init__(self, database: BackofficeDatabase) -> None:
        self.database = database
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def stored(self, key: str) -> sqlite3.Row | None:
        with self.database.read() as connection:
            row: sqlite3.Row | None = connection.execute(
                "SELECT * FROM idempotent_responses WHERE key = ?", (key,)
            ).fetchone()
            return row

    def keep(self, key: str, method: str, path: str, request_hash: str, status: int, body: bytes) -> None:
        with self.database.write() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO idempotent_responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, method, path, request_hash, status, body, _now()),
            )


# --- the app ----------------------------------------------------------------------------------------------


def create_backoffice_app(db_path: Path) -> FastAPI:
    service = BackofficeService(BackofficeDatabase(db_path))
    faults = FaultInjector()
    app = FastAPI(
        title="Northwind Outfitters back office (demo)",
        description="A stand-in order-management system for the cxstack demo workspace. Not for production.",
        version="1.0",
    )
    app.state.service = service
    app.state.faults = faults
    idempotency = IdempotencyKeys(service.database)

    @app.middleware("http")
    async def run_each_write_once(request: Request, call_next: Any) -> Response:
        # Innermost middleware: an injected fault never reaches it, so a faulted call is never remembered.
        # Refunds keep their own key on the refund row (a replay answers 200 with `replayed: true`).
        key = request.headers.get("idempotency-key")
        path = request.url.path
        own_keys = path.startswith("/_demo") or path.endswith("/refunds")
        if not key or request.method not in WRITE_METHODS or own_keys:
            passed: Response = await call_next(request)
            return passed
        try:
            request_hash = hashlib.sha256(await request.body()).hexdigest()
        except ClientDisconnect:  # the caller gave up (its timeout) before we read the request: nothing ran
            return Response(status_code=499)
        async with idempotency.lock(key):
            row = idempotency.stored(key)
            if row is not None:
                if (row["method"], row["path"], row["request_hash"]) != (
                    request.method,
                    request.url.path,
                    request_hash,
                ):
                    detail = "Idempotency-Key was already used for a different request."
                    return JSONResponse({"detail": detail}, status_code=422)
                return Response(
                    content=row["body"],
                    status_code=row["status"],
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
            response: Response = await call_next(request)
            body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
            if response.status_code < 500:
                idempotency.keep(key, request.method, path, request_hash, response.status_code, body)
            return Response(
                content=body,
                status_code=response.status_code,
                headers=dict(response.headers),
                media_type=response.media_type,
            )

    @app.middleware("http")
    async def inject_faults(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/_demo") or request.url.path == "/health":
            response: Response = await call_next(request)
            return response
        header = request.headers.get("x-demo-fault")
        fault = (
            _ArmedFault(
                header, 1, "/", float(request.headers.get("x-demo-fault-delay", DEFAULT_FAULT_DELAY_S))
            )
            if header
            else faults.take(request.url.path)
        )
        if fault is not None and fault.mode in ("500", "503"):
            return JSONResponse({"detail": f"Injected demo fault {fault.mode}."}, status_code=int(fault.mode))
        if fault is not None and fault.mode == "timeout":
            # Answer late but correctly: the caller's timeout, not this server, decides that the call failed.
            await asyncio.sleep(fault.delay_s)
        response = await call_next(request)
        return response

    @app.middleware("http")
    async def only_the_callers_objects(request: Request, call_next: Any) -> Response:
        # Defence in depth beside cxstack's own ownership check: a call made for a customer (the
        # X-Customer-Id header) may only touch that customer's orders and account; anything else is a 404,
        # exactly like an object that does not exist.
        caller = request.headers.get("x-customer-id")
        parts = request.url.path.strip("/").split("/")
        if caller and len(parts) >= 2 and parts[0] in ("orders", "accounts"):
            try:
                owner = service.order_owner(parts[1]) if parts[0] == "orders" else parts[1]
            except HTTPException:
                owner = None
            if owner != caller:
                return JSONResponse({"detail": f"{parts[0][:-1].capitalize()} not found."}, status_code=404)
        forwarded: Response = await call_next(request)
        return forwarded

    @app.post("/customers/verify")
    def verify_customer(body: VerifyRequest) -> dict[str, Any]:
        return service.verify(body)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "service": "northwind-backoffice"}

    @app.get("/orders/{order_id}")
    def get_order(order_id: str) -> dict[str, Any]:
        return service.order(order_id)

    @app.get("/orders/{order_id}/refunds")
    def list_refunds(order_id: str) -> dict[str, Any]:
        return service.refunds(order_id)

    @app.post("/orders/{order_id}/refunds")
    def create_refund(
        order_id: str,
        body: RefundRequest,
        response: Response,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict[str, Any]:
        status_code, refund = service.refund(order_id, body, idempotency_key)
        response.status_code = status_code
        return refund

    @app.put("/orders/{order_id}/shipping-address")
    @app.post("/orders/{order_id}/shipping-address")
    def update_shipping_address(order_id: str, body: AddressUpdate) -> dict[str, Any]:
        return service.change_address(order_id, body)

    @app.post("/orders/{order_id}/cancel")
    def cancel_order(order_id: str, body: CancelRequest | None = None) -> dict[str, Any]:
        return service.cancel(order_id, body or CancelRequest())

    @app.post("/orders/{order_id}/returns", status_code=201)
    def create_return(order_id: str, body: ReturnRequest) -> dict[str, Any]:
        return service.start_return(order_id, body, date.today())

    @app.get("/accounts/{account_id}")
    def get_account(account_id: str) -> dict[str, Any]:
        return service.account(account_id)

    @app.get("/accounts/{account_id}/orders")
    def list_orders(account_id: str) -> dict[str, Any]:
        return service.orders_of(account_id)

    @app.post("/accounts/{account_id}/password-reset", status_code=202)
    def password_reset(account_id: str) -> dict[str, Any]:
        return service.send_account_email(account_id, "password_reset")

    @app.post("/accounts/{account_id}/username-reminder", status_code=202)
    def username_reminder(account_id: str) -> dict[str, Any]:
        return service.send_account_email(account_id, "username_reminder")

    @app.post("/accounts/{account_id}/2fa-reset", status_code=202)
    def two_factor_reset(account_id: str) -> dict[str, Any]:
        return service.send_account_email(account_id, "2fa_reset")

    @app.put("/accounts/{account_id}/email")
    def update_email(account_id: str, body: EmailUpdate) -> dict[str, Any]:
        return service.change_email(account_id, body)

    @app.put("/accounts/{account_id}/phone")
    def update_phone(account_id: str, body: PhoneUpdate) -> dict[str, Any]:
        return service.change_phone(account_id, body)

    @app.get("/accounts/{account_id}/subscription")
    def get_subscription(account_id: str) -> dict[str, Any]:
        return service.subscription(account_id)

    @app.post("/accounts/{account_id}/subscription/cancel")
    def cancel_subscription(account_id: str) -> dict[str, Any]:
        return service.change_subscription(account_id, "cancel", date.today())

    @app.post("/accounts/{account_id}/subscription/pause")
    def pause_subscription(account_id: str, body: PauseRequest | None = None) -> dict[str, Any]:
        return service.change_subscription(account_id, "pause", date.today(), (body or PauseRequest()).months)

    @app.post("/accounts/{account_id}/subscription/resume")
    def resume_subscription(account_id: str) -> dict[str, Any]:
        return service.change_subscription(account_id, "resume", date.today())

    @app.post("/accounts/{account_id}/subscription/renew")
    def renew_subscription(account_id: str) -> dict[str, Any]:
        return service.change_subscription(account_id, "renew", date.today())

    @app.post("/promo-codes/validate")
    def validate_promo_code(body: PromoValidation) -> dict[str, Any]:
        return service.validate_promo(body, date.today())

    @app.post("/_demo/faults", status_code=201)
    def arm_fault(body: FaultConfig) -> dict[str, Any]:
        faults.arm(body)
        return {"armed": faults.snapshot()}

    @app.get("/_demo/faults")
    def list_faults() -> dict[str, Any]:
        return {"armed": faults.snapshot()}

    @app.delete("/_demo/faults")
    def clear_faults() -> dict[str, Any]:
        faults.clear()
        return {"armed": []}

    return app


def run_backoffice(host: str = "127.0.0.1", port: int = 8765, db_path: Path | None = None) -> None:
    import uvicorn

    path = db_path or Path.cwd() / "northwind-backoffice.db"
    uvicorn.run(create_backoffice_app(path), host=host, port=port, log_level="info")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Northwind Outfitters demo back office.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--db", type=Path, default=Path("northwind-backoffice.db"), help="SQLite file")
    args = parser.parse_args(argv)
    run_backoffice(args.host, args.port, args.db)


if __name__ == "__main__":
    main()
