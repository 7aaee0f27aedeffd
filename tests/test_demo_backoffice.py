"""The demo back office, run in-process with FastAPI's TestClient on a fresh SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cxstack.demo import demo_customers_csv
from cxstack.demo.backoffice import BackofficeDatabase, create_backoffice_app, load_demo_accounts


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_backoffice_app(tmp_path / "backoffice.db")) as test_client:
        yield test_client


def first_order_with_status(client: TestClient, status: str) -> dict[str, object]:
    for account in load_demo_accounts():
        for order in client.get(f"/accounts/{account.id}/orders").json()["orders"]:
            if order["status"] == status and order["refundable_amount"] > 10:
                return dict(order)
    raise AssertionError(f"no seeded order with status {status}")


def test_health(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"


def test_every_demo_customer_has_an_account_and_orders(client: TestClient) -> None:
    accounts = load_demo_accounts(demo_customers_csv())
    assert len(accounts) >= 25
    for account in accounts:
        body = client.get(f"/accounts/{account.id}").json()
        assert body["email"] == account.email
        assert len(client.get(f"/accounts/{account.id}/orders").json()["orders"]) >= 3


def test_order_lookup_accepts_loose_ids(client: TestClient) -> None:
    order = client.get("/orders/ORD-10001").json()
    assert order["order_id"] == "ORD-10001"
    assert order["account_id"] == "cus_1001"
    assert order["items"] and order["status_label"]
    assert client.get("/orders/ord10001").json()["order_id"] == "ORD-10001"


def test_unknown_and_malformed_ids(client: TestClient) -> None:
    assert client.get("/orders/ORD-99999").status_code == 404
    assert client.get("/orders/not-an-order").status_code == 422
    assert client.get("/accounts/cus_0000").status_code == 404
    assert client.post("/orders/ORD-99999/refunds", json={"amount": 5}).status_code == 404


def test_refund_reduces_the_refundable_amount(client: TestClient) -> None:
    order = first_order_with_status(client, "delivered")
    response = client.post(f"/orders/{order['order_id']}/refunds", json={"amount": 10, "reason": "stain"})
    assert response.status_code == 201
    refund = response.json()
    assert refund["amount"] == 10
    assert refund["remaining_refundable"] == pytest.approx(float(str(order["refundable_amount"])) - 10)
    listed = client.get(f"/orders/{order['order_id']}/refunds").json()
    assert refund["refund_id"] in [item["id"] for item in listed["refunds"]]


def test_refund_with_the_same_idempotency_key_is_not_repeated(client: TestClient) -> None:
    order_id = str(first_order_with_status(client, "delivered")["order_id"])
    headers = {"Idempotency-Key": "turn-123:issue_refund"}
    first = client.post(f"/orders/{order_id}/refunds", json={"amount": 7.5}, headers=headers)
    second = client.post(f"/orders/{order_id}/refunds", json={"amount": 7.5}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["refund_id"] == second.json()["refund_id"]
    assert second.json()["replayed"] is True
    refunds = client.get(f"/orders/{order_id}/refunds").json()["refunds"]
    assert sum(1 for item in refunds if item["id"] == first.json()["refund_id"]) == 1
    reused = client.post(f"/orders/{order_id}/refunds", json={"amount": 9}, headers=headers)
    assert reused.status_code == 409


def test_over_refund_is_a_conflict(client: TestClient) -> None:
    order = first_order_with_status(client, "delivered")
    refundable = float(str(order["refundable_amount"]))
    too_much = client.post(f"/orders/{order['order_id']}/refunds", json={"amount": refundable + 1})
    assert too_much.status_code == 409
    assert client.post(f"/orders/{order['order_id']}/refunds", json={"amount": refundable}).status_code == 201
    assert client.post(f"/orders/{order['order_id']}/refunds", json={"amount": 1}).status_code == 409


def test_refund_validation_and_ownership(client: TestClient) -> None:
    assert client.post("/orders/ORD-10001/refunds", json={"amount": -5}).status_code == 422
    assert client.post("/orders/ORD-10001/refunds", json={"amount": 5, "method": "cash"}).status_code == 422
    foreign = client.post("/orders/ORD-10001/refunds", json={"amount": 5, "account_id": "cus_1002"})
    assert foreign.status_code == 404


def test_address_change_only_before_shipping(client: TestClient) -> None:
    open_order = first_order_with_status(client, "received")
    changed = client.put(
        f"/orders/{open_order['order_id']}/shipping-address",
        json={"address": "12 Elm Street, Springfield, 62704"},
    )
    assert changed.status_code == 200
    assert changed.json()["shipping_address"] == "12 Elm Street, Springfield, 62704"
    shipped = first_order_with_status(client, "in_transit")
    response = client.put(
        f"/orders/{shipped['order_id']}/shipping-address", json={"address": "1 Main St, X 1"}
    )
    assert response.status_code == 409


def test_cancel_order_refunds_the_total_once(client: TestClient) -> None:
    order = first_order_with_status(client, "received")
    cancelled = client.post(f"/orders/{order['order_id']}/cancel", json={})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["refund_amount"] == order["refundable_amount"]
    assert client.post(f"/orders/{order['order_id']}/cancel", json={}).status_code == 409


def test_return_window_depends_on_plan(client: TestClient) -> None:
    # cus_1001 is on the Basic plan (30 days): the delivery from ~200 days ago cannot be returned.
    orders = client.get("/accounts/cus_1001/orders").json()["orders"]
    oldest = orders[-1]
    assert oldest["status"] == "delivered"
    refused = client.post(f"/orders/{oldest['order_id']}/returns", json={"method": "mail"})
    assert refused.status_code == 409 and "on the Basic plan is 30 days" in refused.json()["detail"]
    # cus_1025 is on the Business plan (180 days), whatever it spends: ~200 days is too late there too.
    business_oldest = client.get("/accounts/cus_1025/orders").json()["orders"][-1]
    assert business_oldest["status"] == "delivered"
    late = client.post(f"/orders/{business_oldest['order_id']}/returns", json={"method": "mail"})
    assert late.status_code == 409 and "on the Business plan is 180 days" in late.json()["detail"]
    # cus_1026 is on the Enterprise plan: unlimited returns.
    enterprise_oldest = client.get("/accounts/cus_1026/orders").json()["orders"][-1]
    created = client.post(
        f"/orders/{enterprise_oldest['order_id']}/returns", json={"method": "drop-off center"}
    )
    assert created.status_code == 201
    assert created.json()["method"] == "drop_off"
    assert (
        client.post(
            f"/orders/{enterprise_oldest['order_id']}/returns", json={"method": "carrier pigeon"}
        ).status_code
        == 422
    )


def test_shipping_fee_depends_on_plan_and_subtotal(tmp_path: Path) -> None:
    # Standard shipping is free from $75, and on every Enterprise plan order (shipping-free-enterprise).
    with BackofficeDatabase(tmp_path / "fees.db").read() as connection:
        rows = connection.execute(
            "SELECT a.plan, o.shipping_fee, o.total - o.shipping_fee AS subtotal FROM orders o "
            "JOIN accounts a ON a.id = o.account_id"
        ).fetchall()
    for row in rows:
        free = row["plan"] == "enterprise" or row["subtotal"] >= 75
        assert row["shipping_fee"] == (0.0 if free else 8.0)
    assert any(row["shipping_fee"] == 8.0 for row in rows)


def test_account_emails_and_profile_changes(client: TestClient) -> None:
    reset = client.post("/accounts/cus_1003/password-reset")
    assert reset.status_code == 202
    assert reset.json()["masked_email"].startswith("s***@")
    assert client.put("/accounts/cus_1003/email", json={"email": "not-an-email"}).status_code == 422
    taken = client.put("/accounts/cus_1003/email", json={"email": "maya.thompson@example.com"})
    assert taken.status_code == 409
    updated = client.put("/accounts/cus_1003/email", json={"email": "Sofia.R@example.org"})
    assert updated.json()["email"] == "sofia.r@example.org"
    assert client.get("/accounts/cus_1003").json()["email"] == "sofia.r@example.org"
    assert client.put("/accounts/cus_1003/phone", json={"phone": "+1 415 555 0199"}).status_code == 200
    assert client.put("/accounts/cus_1003/phone", json={"phone": "12"}).status_code == 422


def test_subscription_lifecycle(client: TestClient) -> None:
    assert client.get("/accounts/cus_1001/subscription").status_code == 404  # basic plan
    subscription = client.get("/accounts/cus_1003/subscription").json()
    assert subscription["plan_name"] == "Northwind Plus"
    paused = client.post("/accounts/cus_1003/subscription/pause", json={"months": 2})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert client.post("/accounts/cus_1003/subscription/pause", json={}).status_code == 409
    assert client.post("/accounts/cus_1003/subscription/resume").json()["status"] == "active"
    cancelled = client.post("/accounts/cus_1003/subscription/cancel")
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["access_until"]
    assert client.post("/accounts/cus_1003/subscription/cancel").status_code == 409


def test_promo_codes(client: TestClient) -> None:
    valid = client.post("/promo-codes/validate", json={"code": "welcome10"}).json()
    assert valid["valid"] is True and valid["discount_percent"] == 10
    unknown = client.post("/promo-codes/validate", json={"code": "NOPE99"}).json()
    assert unknown["valid"] is False and unknown["reason"] == "unknown"
    basic_expired = client.post(
        "/promo-codes/validate", json={"code": "SPRING20", "account_id": "cus_1001"}
    ).json()
    assert basic_expired["reason"] == "expired" and basic_expired["replacement_code"] is None
    plus_expired = client.post(
        "/promo-codes/validate", json={"code": "SPRING20", "account_id": "cus_1002"}
    ).json()
    assert plus_expired["replacement_code"] and "on the Plus plan" in plus_expired["message"]
    # BUSINESS15 is for the Business and Enterprise plans only (fact promo-business15).
    plus_only = client.post(
        "/promo-codes/validate", json={"code": "BUSINESS15", "account_id": "cus_1002"}
    ).json()
    assert plus_only["reason"] == "plan"
    assert plus_only["message"] == "BUSINESS15 is only for customers on the Business and Enterprise plans."
    for account_id in ("cus_1021", "cus_1026"):  # business, enterprise
        eligible = client.post(
            "/promo-codes/validate", json={"code": "business15", "account_id": account_id}
        ).json()
        assert eligible["valid"] is True and eligible["discount_percent"] == 15


def test_fault_header_and_armed_faults(client: TestClient) -> None:
    assert client.get("/orders/ORD-10001", headers={"X-Demo-Fault": "500"}).status_code == 500
    assert client.get("/orders/ORD-10001", headers={"X-Demo-Fault": "503"}).status_code == 503
    # A "timeout" fault answers late but correctly; a zero delay keeps this test fast.
    late = client.get("/orders/ORD-10001", headers={"X-Demo-Fault": "timeout", "X-Demo-Fault-Delay": "0"})
    assert late.status_code == 200
    armed = client.post("/_demo/faults", json={"mode": "503", "count": 2, "path_prefix": "/orders/"})
    assert armed.status_code == 201
    assert client.get("/accounts/cus_1001").status_code == 200  # other paths unaffected
    assert [client.get("/orders/ORD-10001").status_code for _ in range(3)] == [503, 503, 200]
    client.post("/_demo/faults", json={"mode": "500", "count": 5})
    client.delete("/_demo/faults")
    assert client.get("/orders/ORD-10001").status_code == 200


def test_faulted_refund_is_not_recorded(client: TestClient) -> None:
    order_id = str(first_order_with_status(client, "delivered")["order_id"])
    before = client.get(f"/orders/{order_id}/refunds").json()["refund_count"]
    failed = client.post(f"/orders/{order_id}/refunds", json={"amount": 5}, headers={"X-Demo-Fault": "500"})
    assert failed.status_code == 500
    assert client.get(f"/orders/{order_id}/refunds").json()["refund_count"] == before


def test_data_survives_a_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "backoffice.db"
    with TestClient(create_backoffice_app(db_path)) as first:
        refund = first.post("/orders/ORD-10001/refunds", json={"amount": 3}).json()
    with TestClient(create_backoffice_app(db_path)) as second:
        refunds = second.get("/orders/ORD-10001/refunds").json()["refunds"]
        assert refund["refund_id"] in [item["id"] for item in refunds]
        assert len(second.get("/accounts/cus_1001/orders").json()["orders"]) == 4


def test_calls_made_for_a_customer_only_reach_their_own_objects(tmp_path: Path) -> None:
    with TestClient(create_backoffice_app(tmp_path / "bo.db")) as client:
        owner = client.get("/orders/ORD-10001").json()["account_id"]
        other = "cus_1002" if owner != "cus_1002" else "cus_1003"
        assert client.get("/orders/ORD-10001", headers={"X-Customer-Id": owner}).status_code == 200
        theirs = client.get("/orders/ORD-10001", headers={"X-Customer-Id": other})
        missing = client.get("/orders/ORD-99999", headers={"X-Customer-Id": other})
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == {"detail": "Order not found."} == missing.json()
        refund = client.post(
            "/orders/ORD-10001/refunds", json={"amount": 5}, headers={"X-Customer-Id": other}
        )
        assert refund.status_code == 404
        assert client.get(f"/accounts/{owner}", headers={"X-Customer-Id": other}).status_code == 404


def test_verify_matches_email_and_order_of_one_account(tmp_path: Path) -> None:
    with TestClient(create_backoffice_app(tmp_path / "bo.db")) as client:
        order = client.get("/orders/ORD-10001").json()
        email = client.get(f"/accounts/{order['account_id']}").json()["email"]
        ok = client.post("/customers/verify", json={"email": email.upper(), "order_id": "ord-10001"})
        assert ok.status_code == 200 and ok.json()["account_id"] == order["account_id"]
        for body in (
            {"email": email, "order_id": "ORD-10005"},
            {"email": "someone@example.com", "order_id": "ORD-10001"},
            {"email": email, "order_id": "garbage"},
        ):
            refused = client.post("/customers/verify", json=body)
            assert refused.status_code == 404 and refused.json() == {
                "detail": "No account matches those details."
            }


def test_every_write_with_the_same_idempotency_key_runs_once(client: TestClient) -> None:
    order_id = str(first_order_with_status(client, "delivered")["order_id"])
    headers = {"Idempotency-Key": "turn-7:start_return"}
    first = client.post(f"/orders/{order_id}/returns", json={"method": "drop_off"}, headers=headers)
    second = client.post(f"/orders/{order_id}/returns", json={"method": "drop_off"}, headers=headers)
    assert first.status_code == second.status_code
    assert first.json() == second.json()
    if first.status_code == 201:
        assert first.json()["return_id"] == second.json()["return_id"]
    assert second.headers["idempotent-replayed"] == "true"
    different = client.post(f"/orders/{order_id}/returns", json={"method": "store"}, headers=headers)
    assert different.status_code == 422
    account = client.get(f"/orders/{order_id}").json()["account_id"]
    reset = {"Idempotency-Key": "turn-8:password_reset"}
    sent = [client.post(f"/accounts/{account}/password-reset", headers=reset).json() for _ in range(3)]
    assert sent[0] == sent[1] == sent[2]


def test_a_failed_write_is_not_remembered(client: TestClient) -> None:
    order_id = str(first_order_with_status(client, "received")["order_id"])
    headers = {"Idempotency-Key": "turn-9:cancel", "X-Demo-Fault": "500"}
    assert client.post(f"/orders/{order_id}/cancel", json={}, headers=headers).status_code == 500
    retried = client.post(f"/orders/{order_id}/cancel", json={}, headers={"Idempotency-Key": "turn-9:cancel"})
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
