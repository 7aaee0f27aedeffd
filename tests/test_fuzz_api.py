"""Schemathesis against the real app's OpenAPI schema: no server error, every answer as the schema documents.

The app is the shop workspace of tests/conftest.py (hashing embedder) with the WhatsApp and email channels and
the generic help-desk webhook on, served in-process (no network). Cases come from the schema served at
/openapi.json; each is sent through a TestClient that ran the app's lifespan, and checked by schemathesis.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from tests.conftest import SHOP, write_workspace
from tests.test_fuzz_parsers import WHATSAPP_VALID, mutated

from cxstack.api.app import create_api
from cxstack.app import CxApp, Settings, build
from cxstack.channels import email, whatsapp
from cxstack.integrations.helpdesks import webhook
from cxstack.testing.authz import make_role_keys
from cxstack.workspace.loader import load_workspace

CHECKS = [schemathesis.checks.not_a_server_error, response_schema_conformance, status_code_conformance]
PER_OPERATION = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

# The web-chat widget starts anonymous sessions (customer anon_…, unverified) without credentials.
PUBLIC = {"POST /v1/webchat/sessions"}

APP_SECRET, PHONE_ID = "fuzz-app-secret", "106540352242922"
HANDOFF_SECRET = "fuzz-handoff-secret"
PM_USER, PM_PASSWORD = "postmark", "fuzz-postmark-password"
ENV = {
    "CXSTACK_WHATSAPP_VERIFY_TOKEN": "fuzz-verify",
    "CXSTACK_WHATSAPP_APP_SECRET": APP_SECRET,
    "CXSTACK_WHATSAPP_ACCESS_TOKEN": "EAAG-fuzz",
    "CXSTACK_WHATSAPP_PHONE_NUMBER_ID": PHONE_ID,
    "CXSTACK_WHATSAPP_API_BASE": "http://127.0.0.1:9/v21.0",
    "CXSTACK_EMAIL_ADDRESS": "support@shop.test",
    "CXSTACK_SMTP_HOST": "127.0.0.1",
    "CXSTACK_SMTP_PORT": "9",
    "CXSTACK_MAILGUN_SIGNING_KEY": "fuzz-mailgun-key",
    "CXSTACK_POSTMARK_WEBHOOK_USER": PM_USER,
    "CXSTACK_POSTMARK_WEBHOOK_PASSWORD": PM_PASSWORD,
    "CXSTACK_HANDOFF_WEBHOOK_SECRET": HANDOFF_SECRET,
    "CXSTACK_IMAP_HOST": "",
}
SETTINGS_YAML = (
    SHOP["cxstack.yaml"]
    + "channels: [api, webchat, whatsapp, email]\n"
    + "helpdesk:\n  kind: webhook\n  base_url: http://127.0.0.1:9/tickets\n"
)


@dataclass(frozen=True)
class Deployment:
    api: FastAPI
    client: TestClient
    keys: dict[str, str]
    known: dict[str, str]  # path parameter -> an id that exists


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One app for the whole module: the fuzzer's requests accumulate in it, as a real deployment's would."""
    tmp = tmp_path_factory.mktemp("fuzz_api")
    with pytest.MonkeyPatch.context() as env:
        for name, value in ENV.items():
            env.setenv(name, value)
        root = write_workspace(tmp / "ws", **{"cxstack.yaml": SETTINGS_YAML})
        cx: CxApp = build(
            Settings(home=tmp / "home", embedder="hashing", backoffice_url="http://127.0.0.1:9"),
            workspace=load_workspace(root),
        )
        keys = make_role_keys(cx.store)
        api = create_api(cx)
        with TestClient(api) as client:
            yield Deployment(api, client, keys, seed(client, keys))


def seed(client: TestClient, keys: dict[str, str]) -> dict[str, str]:
    """Ids that exist, so that half the cases reach past "not found": a conversation with an escalation, a
    customer, a fact, a key."""
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    said = client.post(
        "/v1/conversations/fuzz-1/messages?wait=true", json={"text": "I will sue you"}, headers=admin
    )
    assert said.status_code == 202, said.text
    (escalation,) = client.get("/v1/escalations", headers=admin).json()
    customer = client.put("/v1/customers/cus_fuzz", json={"name": "Fuzz", "plan": "basic"}, headers=admin)
    assert customer.status_code == 200, customer.text
    viewer = next(k for k in client.get("/v1/keys", headers=admin).json() if k["role"] == "viewer")
    return {
        "conversation_id": "fuzz-1",
        "escalation_id": escalation["id"],
        "customer_id": "cus_fuzz",
        "fact_id": "return-window",
        "key_id": viewer["id"],
    }


@pytest.fixture(scope="module")
def operations(service: Deployment) -> list[Any]:
    # The schema as the client that holds the lifespan serves it: schemathesis' own ASGI loader would run the
    # app on a second event loop, beside the one the service started on. (Its pytest integration,
    # `from_fixture` + `parametrize`, needs an attribute pytest 9 removed, so each operation runs below.)
    schema = schemathesis.openapi.from_dict(service.client.get("/openapi.json").json())
    return [result.ok() for result in schema.get_all_operations()]


def send(client: TestClient, case: Any, headers: dict[str, str]) -> Any:
    """The case as schemathesis would send it, through the client that holds the app's lifespan."""
    if headers and case.headers:
        # the credentials under test, not ones the generator made up from the security schemes
        case.headers = {
            k: v for k, v in case.headers.items() if k.lower() not in ("authorization", "x-api-key")
        }
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    data = kwargs.pop("data", None)
    if isinstance(data, bytes | str):
        kwargs["content"] = data
    elif data is not None:
        kwargs["data"] = data
    for unused in ("timeout", "allow_redirects", "follow_redirects", "verify", "cert"):
        kwargs.pop(unused, None)
    return client.request(**kwargs)


def strategy(operation: Any, known: dict[str, str]) -> Any:
    """Valid cases with made-up ids, the same with ids that exist (waiting on none), and invalid cases."""
    names = {p.name for p in operation.path_parameters}
    existing = {name: value for name, value in known.items() if name in names}
    no_wait = {"timeout": 0} if any(p.name == "timeout" for p in operation.query) else None
    return (
        operation.as_strategy()
        | operation.as_strategy(path_parameters=existing, query=no_wait)
        | operation.as_strategy(GenerationMode.NEGATIVE)
    )


def fuzz(operations: list[Any], known: dict[str, str], check: Any) -> None:
    """`check(case)` on generated cases of each operation; every operation's failure named at the end."""
    failures: list[str] = []
    for operation in operations:

        @PER_OPERATION
        @given(case=strategy(operation, known))
        def run(case: Any) -> None:
            check(case)

        try:
            run()
        # schemathesis' FailureGroup is a BaseExceptionGroup; each operation's failures are collected, then
        # all are reported together
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)


def test_every_operation_as_admin(operations: list[Any], service: Deployment) -> None:
    client, keys = service.client, service.keys
    headers = {"Authorization": f"Bearer {keys['admin']}"}

    answered: Counter[int] = Counter()

    def check(case: Any) -> None:
        response = send(client, case, headers)
        answered[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    fuzz(operations, service.known, check)
    print("statuses as admin:", dict(sorted(answered.items())))
    # the fuzzing must reach the routes' work, not stop at their refusals
    assert sum(n for status, n in answered.items() if status < 300) >= len(operations)


def test_every_operation_without_a_key(operations: list[Any], service: Deployment) -> None:
    client = service.client

    def check(case: Any) -> None:
        response = send(client, case, {})
        case.validate_response(response, checks=CHECKS)
        if case.path.startswith("/v1/") and case.operation.label not in PUBLIC:
            # FastAPI reads and validates the body before the route's security dependency runs: a body it
            # cannot decode (400) or validate (422) is refused before the missing key is; nothing is stored.
            assert response.status_code in (400, 401, 404, 405, 422), (case.path, response.status_code)

    fuzz(operations, service.known, check)


def test_web_chat_operations_as_a_session(operations: list[Any], service: Deployment) -> None:
    """The widget's routes with an anonymous session's token (anyone can have one); the long poll and the
    event stream are asked to end at once (timeout=0) so that each answer can be checked whole."""
    client = service.client
    session = client.post("/v1/webchat/sessions", json={})
    assert session.status_code == 201, session.text
    headers = {"Authorization": f"Bearer {session.json()['token']}"}
    webchat = [op for op in operations if op.path.startswith("/v1/webchat/")]
    assert len(webchat) >= 4

    def check(case: Any) -> None:
        if any(p.name == "timeout" for p in case.operation.query):
            case.query = {**(case.query or {}), "timeout": 0}
        case.validate_response(send(client, case, headers), checks=CHECKS, headers=headers)

    fuzz(webchat, {}, check)


def test_a_last_event_id_of_unicode_digits_is_a_400(service: Deployment) -> None:
    # found by the fuzzer: "²" (latin-1 byte 0xb2) passed str.isdigit() and int() raised: a 500
    client = service.client
    token = client.post("/v1/webchat/sessions", json={}).json()["token"]
    response = client.get(
        "/v1/webchat/stream?timeout=0",
        headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "\u00b2".encode("latin-1")},
    )
    assert response.status_code == 400 and "Last-Event-ID" in response.text


# --- webhooks with arbitrary bodies -------------------------------------------------------------------------

BODIES = st.binary(max_size=200) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
).map(lambda value: json.dumps(value).encode())
WEBHOOK_FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
WEBHOOKS = [
    "/webhooks/whatsapp",
    "/webhooks/email/mailgun",
    "/webhooks/email/postmark",
    "/webhooks/handoff/zendesk",
    "/webhooks/handoff/chatwoot",
    "/webhooks/handoff/generic",
]


@WEBHOOK_FUZZ
@given(body=BODIES)
def test_unsigned_webhook_bodies_are_refused_never_a_server_error(service: Deployment, body: bytes) -> None:
    client = service.client
    for path in WEBHOOKS:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 401, 404, 422), (path, response.status_code, response.text)


def signed(path: str, body: bytes) -> dict[str, str]:
    """The headers a genuine provider would send with `body`: the fuzzing gets past the signature check."""
    if path == "/webhooks/whatsapp":
        return {"X-Hub-Signature-256": whatsapp.signature_of(APP_SECRET, body)}
    if path == "/webhooks/email/postmark":
        token = base64.b64encode(f"{PM_USER}:{PM_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {webhook.HEADER: webhook.sign(HANDOFF_SECRET, body)}


@WEBHOOK_FUZZ
@given(body=BODIES)
def test_signed_webhook_bodies_are_parsed_or_refused_never_a_server_error(
    service: Deployment, body: bytes
) -> None:
    client = service.client
    for path in ("/webhooks/whatsapp", "/webhooks/email/postmark", "/webhooks/handoff/generic"):
        headers = {"Content-Type": "application/json", **signed(path, body)}
        response = client.post(path, content=body, headers=headers)
        assert response.status_code in (200, 400, 404), (path, response.status_code, response.text)


@WEBHOOK_FUZZ
@given(payload=mutated(WHATSAPP_VALID))
def test_signed_whatsapp_deliveries_nearly_valid_are_stored_or_refused(
    service: Deployment, payload: Any
) -> None:
    body = json.dumps(payload).encode()
    response = service.client.post(
        "/webhooks/whatsapp", content=body, headers=signed("/webhooks/whatsapp", body)
    )
    assert response.status_code in (200, 400, 404), (response.status_code, response.text)


MAILGUN_KEY = ENV["CXSTACK_MAILGUN_SIGNING_KEY"]
MAILGUN_FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "from",
            "sender",
            "subject",
            "body-plain",
            "Message-Id",
            "In-Reply-To",
            "References",
            "message-headers",
            "attachment-count",
            "X-Mailgun-Spf",
            "X-Mailgun-Dkim-Check-Result",
        ]
    ),
    st.text(max_size=30)
    | st.sampled_from(["bob@example.com", "<m@example.com>", "[]", '[["a"]]', "pass", "3"]),
)


@WEBHOOK_FUZZ
# found by the fuzzer: a signed "nan" timestamp passed the age check, "-inf" was a 500 (OverflowError)
@example(fields={}, timestamp="nan", token="cd613e30-d8f1-6adf-91b7-584a2265b1f5")
@example(fields={}, timestamp="-inf", token="2f1b8e0c-0d6a-4c8e-9a43-3b0e1f7c5d21")
@given(
    fields=MAILGUN_FIELDS,
    timestamp=st.sampled_from(["now", "nan", "inf", "-inf", "1e999", "-1e999", "", "x"]),
    token=st.uuids().map(str),
)
def test_signed_mailgun_forms_are_parsed_or_refused_never_a_server_error(
    service: Deployment, fields: dict[str, str], timestamp: str, token: str
) -> None:
    stamp = str(int(time.time())) if timestamp == "now" else timestamp
    signature = email.mailgun_signature(MAILGUN_KEY, stamp, token)
    form = {**fields, "timestamp": stamp, "token": token, "signature": signature}
    response = service.client.post("/webhooks/email/mailgun", data=form)
    assert response.status_code in (200, 400, 401), (response.status_code, response.text)
    if timestamp != "now":
        assert response.status_code == 401, (timestamp, response.text)


def test_the_fuzzed_deployment_has_its_webhooks_on(
    service: Deployment,
) -> None:
    """Guards the fuzzing above: with a channel off, every body would be a 404 and prove nothing."""
    client = service.client
    body = b'{"object": "page"}'
    for path in ("/webhooks/whatsapp", "/webhooks/email/postmark", "/webhooks/handoff/generic"):
        assert client.post(path, content=body).status_code == 401, path
        assert client.post(path, content=body, headers=signed(path, body)).status_code == 400, path


# --- what the fuzzing found, pinned ----------------------------------------------------------------------


def test_a_channel_on_a_key_that_is_not_an_integration_is_a_422_naming_it(
    service: Deployment,
) -> None:
    client, keys = service.client, service.keys
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    response = client.post(
        "/v1/keys", json={"name": "bot", "role": "agent", "channel": "whatsapp"}, headers=admin
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "channel"]
    assert "bot" not in [k["name"] for k in client.get("/v1/keys", headers=admin).json()]
    created = client.post(
        "/v1/keys", json={"name": "wa-bridge", "role": "integration", "channel": "whatsapp"}, headers=admin
    )
    assert created.status_code == 201 and created.json()["channel"] == "whatsapp"


def test_refusals_found_undocumented_are_in_the_schema(
    service: Deployment,
) -> None:
    client = service.client
    paths = client.get("/openapi.json").json()["paths"]
    assert {"403", "404"} <= set(paths["/webhooks/whatsapp"]["get"]["responses"])
    assert {"401", "403"} <= set(paths["/v1/handoff/exports"]["get"]["responses"])
    assert "403" in paths["/v1/webchat/stream"]["get"]["responses"]


def test_a_json_body_that_is_not_utf8_is_a_documented_400(service: Deployment) -> None:
    client, keys = service.client, service.keys
    response = client.put(
        "/v1/customers/cus_bytes",
        content=b'{"name": "\xff"}',
        headers={"Authorization": f"Bearer {keys['admin']}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert (
        client.get(
            "/v1/customers/cus_bytes", headers={"Authorization": f"Bearer {keys['admin']}"}
        ).status_code
        == 404
    )
    documented = client.get("/openapi.json").json()["paths"]["/v1/customers/{customer_id}"]["put"][
        "responses"
    ]
    assert "400" in documented
