"""Authorisation check: every /v1 route × every role × no credentials, plus web-chat session attacks.

    python -m benchmarks.authz [--json PATH] [--embedder minilm]

The demo workspace runs in-process behind the real FastAPI app (real SQLite store in a temporary home, keys
created with the shipped argon2id profile, back-office actions on the dry-run connector). Each route is called
as each principal with a request that succeeds for an allowed one. Baseline: the status expected by the role
table written down independently of the code (cxstack.testing.authz.ACCESS): 2xx if allowed, else 401 without
credentials and 403 with the wrong ones. Any mismatch is a failure (exit 1).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)  # whole route names when piped


def _tamper(token: str) -> str:
    head, payload, signature = token.split(".")
    return f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"


def _forge(token: str, **claims: Any) -> str:
    head, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{signature}"


# What a customer might send about an order that is not theirs: reads and writes, plainly or wrapped in chat.
PROBES = (
    "where is my order {order}?",
    "can you tell me the status of {order} please",
    "I want a refund of $20 for {order}",
    "please cancel {order}",
    "did you send the refund for {order}?",
)


def cross_customer_attempts(
    client: Any, integration: str, admin: str, backoffice: Any, per_customer: int = 5
) -> list[dict[str, Any]]:
    """50 attempts through chat: 10 demo customers each ask about 5 orders of other customers. A leak is any
    private detail of the other order (item names, delivery address, tracking number, owner) in the reply the
    customer got; a write is any change the back office recorded on that order."""
    from cxstack.testing.authz import send_as

    accounts = [a for a in sorted(backoffice.accounts()) if backoffice.orders_of(a)["orders"]][:11]
    attempts = []
    for index, asker in enumerate(accounts[:10]):
        others = [a for a in accounts if a != asker]
        for n in range(per_customer):
            owner = others[(index + n) % len(others)]
            order = backoffice.orders_of(owner)["orders"][n % 4]
            private = {
                *(item["name"] for item in order["items"]),
                order["shipping_address"],
                order.get("tracking_number") or "",
                owner,
            } - {""}
            before = backoffice.write_count(order["order_id"])
            text = PROBES[(index + n) % len(PROBES)].format(order=order["order_id"])
            conversation = f"leak-{asker}-{n}"
            answer = send_as(
                client,
                "POST",
                f"/v1/conversations/{conversation}/messages?wait=true",
                integration,
                json={"text": text, "customer": asker},
            ).json()
            if "do you want to" in (answer.get("reply") or "").lower():  # a clarifying question: pick one
                answer = send_as(
                    client,
                    "POST",
                    f"/v1/conversations/{conversation}/messages?wait=true",
                    integration,
                    json={"text": "the first one", "customer": asker},
                ).json()
            if (
                "confirm" in (answer.get("reply") or "").lower()
            ):  # say yes to anything asked, as a pushy customer
                answer = send_as(
                    client,
                    "POST",
                    f"/v1/conversations/{conversation}/messages?wait=true",
                    integration,
                    json={"text": "yes", "customer": asker},
                ).json()
            reply = answer.get("reply") or ""
            # The integration may not read traces; a staff key checks that the attempt is on record.
            record = send_as(client, "GET", f"/v1/conversations/{conversation}", admin).json()
            traced = any(
                (step["output"].get("detail") or {}).get("ownership", {}).get("owner_ok") is False
                for trace in record.get("traces", [])
                for step in trace["steps"]
            )
            attempts.append(
                {
                    "customer": asker,
                    "order": order["order_id"],
                    "owner": owner,
                    "message": text,
                    "reply": reply,
                    "leaked": sorted(p for p in private if p in reply),
                    "writes": backoffice.write_count(order["order_id"]) - before,
                    "traced": traced,
                }
            )
    return attempts


def run(embedder: str) -> dict[str, Any]:
    from cxstack.api.app import create_api
    from cxstack.api.keys import ApiKeys
    from cxstack.api.sessions import WebchatSessions
    from cxstack.app import Settings, build, build_engine
    from cxstack.demo import demo_customers_csv, demo_workspace_path
    from cxstack.demo.backoffice import create_backoffice_app
    from cxstack.domain.auth import ApiRole
    from cxstack.domain.models import utcnow
    from cxstack.strategy.customers import parse_customers_csv
    from cxstack.testing.authz import PRINCIPALS, Targets, check_routes, send_as
    from cxstack.testing.http_standin import LocalHttpServer
    from cxstack.workspace.loader import load_workspace

    started = time.perf_counter()
    # Each refusal is logged as a warning (the trace line a real attack leaves); here they are the point.
    logging.getLogger("cxstack.api.security").setLevel(logging.ERROR)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalHttpServer(
            backoffice_app := create_backoffice_app(Path(tmp) / "northwind.db")
        ) as backoffice_url,
    ):
        # The real demo back office: ownership is checked on its answers (a dry run would check nothing).
        # A copy: the knowledge routes edit (and roll back) a fact in its file.
        workspace = shutil.copytree(demo_workspace_path(), Path(tmp) / "workspace")
        engine = build_engine(
            load_workspace(workspace), embedder_name=embedder, backoffice_url=backoffice_url
        )
        cx = build(Settings(home=Path(tmp) / "home", embedder=embedder), engine=engine)
        cx.store.upsert_customers(parse_customers_csv(demo_customers_csv()))
        keys = ApiKeys(cx.store)  # the shipped argon2id profile
        credentials = {role.value: keys.create(f"authz {role.value}", role).secret for role in ApiRole}
        api = create_api(cx)
        with TestClient(api) as client:
            admin, integration = credentials["admin"], credentials["integration"]
            said = send_as(
                client,
                "POST",
                "/v1/conversations/authz-legal/messages?wait=true",
                integration,
                json={"text": "I'm going to sue you, my lawyer will contact you", "customer": "cus_1001"},
            )
            escalations = send_as(client, "GET", "/v1/escalations?status=all", admin).json()
            mine = [e for e in escalations if e["conversation_id"] == "authz-legal"]
            if said.status_code != 202 or not mine:
                raise SystemExit(f"setup failed: no escalation for the legal threat ({said.status_code})")
            session = send_as(client, "POST", "/v1/webchat/sessions", None, json={}).json()
            targets = Targets(
                conversation_id="authz-legal",
                escalation_id=mine[0]["id"],
                customer_id="cus_1001",
                session_token=session["token"],
                spare_key=lambda: keys.create("authz spare", ApiRole.VIEWER).key.id,
                fact_id="return-policy-overview",
                fact_version=lambda: cx.store.fact_versions("return-policy-overview")[-1].number,
            )
            checks = check_routes(api, client, credentials, targets)

            sessions: WebchatSessions = api.state.auth.sessions
            expired, _ = sessions.issue(
                "web_old", "anon_old", verified=False, now=utcnow() - timedelta(hours=2)
            )
            other_secret, _ = WebchatSessions("x" * 48).issue(
                session["conversation_id"], "cus_1001", verified=True
            )
            revoked_key = keys.create("authz revoked", ApiRole.ADMIN)
            assert send_as(client, "GET", "/v1/me", revoked_key.secret).status_code == 200  # verified, cached
            send_as(client, "POST", f"/v1/keys/{revoked_key.key.id}/revoke", admin)
            attacks = [
                ("expired session: read messages", "GET", "/v1/webchat/messages?timeout=0", expired, None),
                ("expired session: refresh", "POST", "/v1/webchat/sessions/refresh", expired, None),
                (
                    "tampered signature",
                    "GET",
                    "/v1/webchat/messages?timeout=0",
                    _tamper(session["token"]),
                    None,
                ),
                (
                    "forged claims: another conversation",
                    "GET",
                    "/v1/webchat/messages?timeout=0",
                    _forge(session["token"], cid="authz-legal"),
                    None,
                ),
                (
                    "forged claims: verified customer",
                    "POST",
                    "/v1/webchat/messages",
                    _forge(session["token"], sub="cus_1001", ver=True),
                    {"text": "hi"},
                ),
                ("signed with another secret", "GET", "/v1/webchat/messages?timeout=0", other_secret, None),
                (
                    "key revoked through the API (was cached)",
                    "GET",
                    "/v1/workspace",
                    revoked_key.secret,
                    None,
                ),
                (
                    "session token on a staff route",
                    "GET",
                    "/v1/conversations/authz-legal",
                    session["token"],
                    None,
                ),
            ]
            leaks = cross_customer_attempts(client, integration, admin, _Backoffice(backoffice_app))
            session_checks = []
            for name, method, url, token, body in attacks:
                response = send_as(client, method, url, token, **({"json": body} if body else {}))
                expected = 403 if name.startswith("session token on") else 401
                session_checks.append(
                    {
                        "check": name,
                        "expected": expected,
                        "actual": response.status_code,
                        "detail": response.json(),
                    }
                )
    mismatches = [c for c in checks if not c.ok]
    session_mismatches = [c for c in session_checks if c["actual"] != c["expected"]]
    return {
        "embedder": embedder,
        "principals": list(PRINCIPALS),
        "checks": [asdict(c) | {"ok": c.ok} for c in checks],
        "mismatches": len(mismatches),
        "session_checks": session_checks,
        "session_mismatches": len(session_mismatches),
        "cross_customer": leaks,
        "leaks": sum(bool(a["leaked"]) for a in leaks),
        "foreign_writes": sum(a["writes"] for a in leaks),
        "untraced": sum(not a["traced"] for a in leaks),
        "seconds": round(time.perf_counter() - started, 1),
    }


class _Backoffice:
    """Reads the demo back office's own database: who owns what, and what was written to an order."""

    def __init__(self, app: Any) -> None:
        self.service = app.state.service

    def accounts(self) -> list[str]:
        with self.service.database.read() as connection:
            return [row["id"] for row in connection.execute("SELECT id FROM accounts")]

    def orders_of(self, account: str) -> dict[str, Any]:
        result: dict[str, Any] = self.service.orders_of(account)
        return result

    def write_count(self, order_id: str) -> int:
        with self.service.database.read() as connection:
            tables = ("refunds", "returns")
            count = sum(
                connection.execute(f"SELECT COUNT(*) FROM {t} WHERE order_id = ?", (order_id,)).fetchone()[0]
                for t in tables
            )
            status = connection.execute("SELECT status FROM orders WHERE id = ?", (order_id,)).fetchone()[0]
        return int(count) + (1 if status == "cancelled" else 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--embedder", default="minilm", help="the router's embedder (the demo ships minilm)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    result = run(args.embedder)
    principals = result["principals"]
    table = Table(
        title="Every /v1 route × principal: actual status "
        "(baseline: expected by the role table, cxstack.testing.authz.ACCESS)"
    )
    table.add_column("route", no_wrap=True)
    for principal in principals:
        table.add_column(principal, justify="center")
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for check in result["checks"]:
        rows.setdefault(f"{check['method']} {check['path']}", {})[check["principal"]] = check
    for route, cells in rows.items():
        rendered = []
        for principal in principals:
            c = cells[principal]
            style = "green" if c["ok"] else "bold red"
            rendered.append(f"[{style}]{c['actual']}[/]" + ("" if c["ok"] else f" (want {c['expected']})"))
        table.add_row(route, *rendered)
    console.print(table)
    console.print(
        f"{len(result['checks'])} calls, [bold]{result['mismatches']} mismatches[/] against the role table "
        "(aim 0; 2xx = allowed, 401 = no credentials, 403 = wrong role)"
    )

    attacks = Table(title="Web-chat sessions and keys under attack (expected: refused)")
    for column in ("check", "expected", "actual", "detail"):
        attacks.add_column(column)
    for c in result["session_checks"]:
        style = "green" if c["actual"] == c["expected"] else "bold red"
        detail = c["detail"].get("detail") if isinstance(c["detail"], dict) else c["detail"]
        attacks.add_row(c["check"], str(c["expected"]), f"[{style}]{c['actual']}[/]", str(detail))
    console.print(attacks)
    console.print(f"[bold]{result['session_mismatches']} mismatches[/] in the session and key checks (aim 0)")

    leaks = Table(
        title="50 requests about another customer's order, through chat (expected: not found, nothing shown)"
    )
    for column in ("customer", "asked about", "message", "reply", "leaked", "writes", "traced"):
        leaks.add_column(column)
    for a in result["cross_customer"][:8]:
        leaks.add_row(
            a["customer"], f"{a['order']} ({a['owner']})", a["message"], a["reply"][:70],
            ", ".join(a["leaked"]) or "—", str(a["writes"]), "yes" if a["traced"] else "no",
        )  # fmt: skip
    console.print(leaks)
    console.print(
        f"{len(result['cross_customer'])} attempts: [bold]{result['leaks']} leaks, "
        f"{result['foreign_writes']} writes to another customer's order, {result['untraced']} not traced[/] "
        "(aim 0, 0, 0; first 8 shown)"
    )

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        console.print(f"figures written to {args.json}")
    if result["mismatches"] or result["session_mismatches"] or result["leaks"] or result["foreign_writes"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
