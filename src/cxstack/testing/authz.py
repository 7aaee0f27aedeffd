"""Who may call which route, written down independently of the code that enforces it (cxstack.api.security),
and a runner that checks every /v1 route of an app against it: used by the test suite and benchmarks/authz.py.

A route that is not in ACCESS makes `check_routes` raise, so a new route cannot ship without an entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute

from cxstack.api.keys import ApiKeys
from cxstack.domain.auth import ApiRole
from cxstack.domain.ports import Store

# Argon2id at its smallest cost: keys made for tests verify in microseconds. The app verifies with the
# parameters stored in each hash, so this changes nothing but speed.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

ROLES = tuple(role.value for role in ApiRole)
# "none": no credentials; "session": a web-chat session token.
PRINCIPALS = ("none", *ROLES, "session")
STAFF_READERS = frozenset({"admin", "agent", "viewer"})

ACCESS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/conversations/{conversation_id}/messages"): frozenset({"admin", "integration"}),
    ("GET", "/v1/conversations"): STAFF_READERS,
    ("GET", "/v1/conversations/{conversation_id}"): STAFF_READERS,
    ("GET", "/v1/conversations/{conversation_id}/events"): STAFF_READERS,
    ("POST", "/v1/conversations/{conversation_id}/human-replies"): frozenset({"admin", "agent"}),
    ("GET", "/v1/escalations"): STAFF_READERS,
    ("GET", "/v1/escalations/{escalation_id}"): STAFF_READERS,
    ("GET", "/v1/intents"): STAFF_READERS,
    ("GET", "/v1/workspace"): STAFF_READERS,
    ("GET", "/v1/customers"): frozenset({"admin", "integration"}),
    ("PUT", "/v1/customers/{customer_id}"): frozenset({"admin", "integration"}),
    ("GET", "/v1/customers/{customer_id}"): frozenset({"admin", "integration"}),
    ("POST", "/v1/webchat/sessions"): frozenset({"none", "admin", "integration"}),
    ("POST", "/v1/webchat/sessions/refresh"): frozenset({"session"}),
    ("POST", "/v1/webchat/messages"): frozenset({"session"}),
    ("GET", "/v1/webchat/messages"): frozenset({"session"}),
    ("GET", "/v1/webchat/stream"): frozenset({"session"}),
    ("GET", "/v1/keys"): frozenset({"admin"}),
    ("POST", "/v1/keys"): frozenset({"admin"}),
    ("POST", "/v1/keys/{key_id}/revoke"): frozenset({"admin"}),
    ("GET", "/v1/me"): frozenset({*ROLES, "session"}),
    ("GET", "/v1/outbox"): STAFF_READERS,
    ("POST", "/v1/outbox/requeue"): frozenset({"admin", "agent"}),
    ("GET", "/v1/handoff/exports"): STAFF_READERS,
    ("POST", "/v1/handoff/exports/requeue"): frozenset({"admin", "agent"}),
    ("GET", "/v1/knowledge/facts"): STAFF_READERS,
    ("GET", "/v1/knowledge/facts/{fact_id}"): STAFF_READERS,
    ("GET", "/v1/knowledge/facts/{fact_id}/versions"): STAFF_READERS,
    ("GET", "/v1/knowledge/facts/{fact_id}/diff"): STAFF_READERS,
    ("PATCH", "/v1/knowledge/facts/{fact_id}"): frozenset({"admin"}),
    ("POST", "/v1/knowledge/facts"): frozenset({"admin"}),
    ("POST", "/v1/knowledge/facts/{fact_id}/rollback"): frozenset({"admin"}),
    ("GET", "/v1/metrics"): STAFF_READERS,
    ("POST", "/v1/conversations/{conversation_id}/csat"): frozenset({"admin", "integration"}),
    ("GET", "/v1/rubric"): STAFF_READERS,
    ("GET", "/v1/report"): STAFF_READERS,
    ("POST", "/v1/reviews/sample"): frozenset({"admin", "agent"}),
    ("GET", "/v1/reviews/next"): frozenset({"admin", "agent"}),
    ("GET", "/v1/reviews/conversations/{conversation_id}"): frozenset({"admin", "agent"}),
    ("POST", "/v1/reviews"): frozenset({"admin", "agent"}),
    ("GET", "/v1/reviews"): STAFF_READERS,
}


def expected_status(route: tuple[str, str], principal: str) -> str:
    """'2xx' if the principal may call the route; else 401 without credentials, 403 with the wrong ones."""
    if principal in ACCESS[route]:
        return "2xx"
    return "401" if principal == "none" else "403"


def make_role_keys(store: Store) -> dict[str, str]:
    """One key per role, created through the store like `cxstack keys create`: role -> the whole key."""
    keys = ApiKeys(store, hasher=TEST_HASHER)
    return {role.value: keys.create(f"test {role.value}", role).secret for role in ApiRole}


@dataclass
class Targets:
    """Existing objects the sample requests name, so that an allowed call can succeed."""

    conversation_id: str  # has an escalation
    escalation_id: str
    customer_id: str
    session_token: str  # a web-chat session of another conversation
    spare_key: Callable[[], str]  # a fresh key id to revoke
    fact_id: str = "none"  # a published fact of the workspace (edited, then rolled back to version 1)
    fact_version: Callable[[], int] = lambda: 1  # its newest version number now


def send_as(client: httpx.Client, method: str, url: str, token: str | None, **kwargs: Any) -> httpx.Response:
    """The request with exactly this credential (none if `token` is None), whatever the client's defaults."""
    request = client.build_request(method, url, **kwargs)
    request.headers.pop("Authorization", None)
    if token:
        request.headers["Authorization"] = f"Bearer {token}"
    return client.send(request)


def sample_request(route: tuple[str, str], principal: str, t: Targets) -> tuple[str, dict[str, Any]]:
    """(url, request kwargs) that succeeds for a principal allowed on the route."""
    method, path = route
    url = (
        path.replace("{conversation_id}", t.conversation_id)
        .replace("{escalation_id}", t.escalation_id)
        .replace("{customer_id}", t.customer_id)
        .replace("{fact_id}", t.fact_id)
    )
    if "{key_id}" in url:
        url = url.replace("{key_id}", t.spare_key())
    body: dict[str, Any] | None = None
    params: dict[str, Any] = {}
    if route == ("POST", "/v1/conversations/{conversation_id}/messages"):
        body = {"text": "any news on this?", "customer": t.customer_id}
    elif path.endswith("/human-replies"):
        body = {"text": "A colleague is looking into it.", "author": "authz", "hand_back": False}
    elif method == "PUT" and path.startswith("/v1/customers/"):
        body = {"name": "Authz Check", "plan": "basic", "arr": 10}
    elif route == ("POST", "/v1/webchat/sessions"):
        body = {} if principal == "none" else {"customer_id": t.customer_id}
    elif route == ("POST", "/v1/webchat/messages"):
        body = {"text": "hello"}
    elif route == ("POST", "/v1/keys"):
        body = {"name": "authz spare", "role": "viewer"}
    elif route == ("PATCH", "/v1/knowledge/facts/{fact_id}"):
        edit = {"sources": [f"authz check {uuid.uuid4().hex[:8]}"]}
        body = {"changes": edit, "expected_version": t.fact_version(), "reason": "authz check"}
    elif route == ("POST", "/v1/knowledge/facts"):
        fact_id = f"authz-{uuid.uuid4().hex[:8]}"
        fact = {"id": fact_id, "text": "A check.", "owner": "authz", "status": "draft"}
        body = {"fact": fact, "reason": "authz check"}
    elif path.endswith("/requeue"):
        body = {}  # every dead one: there may be none
    elif path.endswith("/csat"):
        body = {"score": 4}
    elif route == ("POST", "/v1/reviews"):
        # each allowed principal reviews once (a second review by the same key is a 409)
        scores = {"correctness": 4, "groundedness": 4, "policy_compliance": 1, "resolution": 4, "tone": 5}
        body = {"conversation_id": t.conversation_id, "scores": scores, "reason": "manual"}
    elif path.endswith("/rollback"):
        body = {"to_version": 1, "expected_version": t.fact_version(), "reason": "authz check"}
    if path.endswith("/events") or route in (("GET", "/v1/webchat/messages"), ("GET", "/v1/webchat/stream")):
        params["timeout"] = 0
    kwargs: dict[str, Any] = {"params": params}
    if body is not None:
        kwargs["json"] = body
    return url, kwargs


@dataclass(frozen=True)
class Check:
    method: str
    path: str
    principal: str
    expected: str
    actual: int

    @property
    def ok(self) -> bool:
        return str(self.actual) == self.expected or (self.expected == "2xx" and 200 <= self.actual < 300)


def api_routes(api: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /v1."""
    found: list[tuple[str, str]] = []
    for route in api.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            found.extend(
                (method, route.path) for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"})
            )
    return sorted(found)


def check_routes(
    api: FastAPI,
    client: httpx.Client,
    credentials: dict[str, str],
    targets: Targets,
    principals: Iterable[str] = PRINCIPALS,
) -> list[Check]:
    """Calls every /v1 route as every principal; raises KeyError naming a route missing from ACCESS."""
    missing = [route for route in api_routes(api) if route not in ACCESS]
    if missing:
        raise KeyError(f"routes without an entry in cxstack.testing.authz.ACCESS: {missing}")
    checks = []
    for route in api_routes(api):
        for principal in principals:
            url, kwargs = sample_request(route, principal, targets)
            token = targets.session_token if principal == "session" else credentials.get(principal)
            response = send_as(client, route[0], url, token, **kwargs)
            checks.append(
                Check(route[0], route[1], principal, expected_status(route, principal), response.status_code)
            )
    return checks
