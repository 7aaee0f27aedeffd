"""Who is calling and what they may do: one FastAPI security dependency and one role table.

Every route under /v1 declares the one scope it needs with `Security(authorize, scopes=[...])`; `authorize`
resolves the caller (an API key, a web-chat session token, or nobody) to a `Principal` and answers 401 (no or
bad credentials) or 403 (a credential whose role lacks the scope). Route handlers never check roles.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from cxstack.api.keys import KEY_PREFIX, ApiKeys
from cxstack.api.sessions import SessionError, WebchatSession, WebchatSessions
from cxstack.domain.auth import ApiKey, ApiRole

log = logging.getLogger(__name__)


class Scope(enum.StrEnum):
    CONVERSATIONS_WRITE = "conversations:write"  # post customer messages (the REST channel)
    CONVERSATIONS_READ = "conversations:read"  # transcripts with traces, long-poll, the conversation list
    ESCALATIONS_READ = "escalations:read"
    ESCALATIONS_WRITE = "escalations:write"  # human replies and hand-back
    CUSTOMERS_READ = "customers:read"
    CUSTOMERS_WRITE = "customers:write"  # plan, ARR, segment, attributes: they decide tier, caps and queues
    WORKSPACE_READ = "workspace:read"  # intents, workspace, queues, facts and their versions
    KNOWLEDGE_WRITE = "knowledge:write"  # edit, create and roll back facts (admin only: answers say them)
    KEYS = "keys"  # create, list, revoke API keys
    WHOAMI = "whoami"  # any authenticated caller may ask who it is
    WEBCHAT_START = "webchat:start"  # open a web-chat session (anonymous: anyone)
    WEBCHAT_IDENTIFY = "webchat:identify"  # open one for a named customer, who is then verified
    WEBCHAT_CONVERSE = "webchat:converse"  # post and read in the session's own conversation only
    METRICS_READ = "metrics:read"  # automation with quality, by slice
    FEEDBACK_WRITE = "feedback:write"  # record a customer's satisfaction (CSAT) with a conversation
    REVIEWS_WRITE = "reviews:write"  # review conversations against the rubric, run the sampler


_STAFF_READ = {
    Scope.CONVERSATIONS_READ,
    Scope.ESCALATIONS_READ,
    Scope.WORKSPACE_READ,
    Scope.METRICS_READ,
    Scope.WHOAMI,
}
ROLE_SCOPES: Mapping[ApiRole, frozenset[Scope]] = {
    ApiRole.ADMIN: frozenset(Scope) - {Scope.WEBCHAT_CONVERSE},
    ApiRole.AGENT: frozenset({*_STAFF_READ, Scope.ESCALATIONS_WRITE, Scope.REVIEWS_WRITE}),
    ApiRole.INTEGRATION: frozenset(
        {
            Scope.CONVERSATIONS_WRITE,
            Scope.CUSTOMERS_READ,
            Scope.CUSTOMERS_WRITE,
            Scope.WEBCHAT_START,
            Scope.WEBCHAT_IDENTIFY,
            Scope.FEEDBACK_WRITE,
            Scope.WHOAMI,
        }
    ),
    ApiRole.VIEWER: frozenset(_STAFF_READ),
}
ANONYMOUS_SCOPES = frozenset({Scope.WEBCHAT_START})
SESSION_SCOPES = frozenset({Scope.WEBCHAT_CONVERSE, Scope.WHOAMI})


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["anonymous", "key", "session"]
    scopes: frozenset[Scope]
    key: ApiKey | None = None
    session: WebchatSession | None = None
    token: str = field(default="", repr=False)  # the session token, to refresh it

    @property
    def role(self) -> str:
        if self.key is not None:
            return self.key.role.value
        return "webchat" if self.kind == "session" else "anonymous"

    @property
    def label(self) -> str:
        """For logs and traces: never the secret."""
        if self.key is not None:
            return f"key {KEY_PREFIX}{self.key.id} ({self.key.role.value}, {self.key.name!r})"
        if self.session is not None:
            return f"web-chat session {self.session.conversation_id}"
        return "anonymous"

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal("anonymous", ANONYMOUS_SCOPES)


@dataclass
class Auth:
    """What `authorize` needs, kept on `app.state.auth`."""

    keys: ApiKeys
    sessions: WebchatSessions


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`cxk_…`), or a web-chat session token for the /v1/webchat routes.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="An API key (`cxk_…`)."
)


_MISSING = "missing credentials: send an API key as 'Authorization: Bearer cxk_…' or 'X-API-Key: cxk_…'"


def unauthorized(detail: str, *, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="cxstack"' + (f', error="{error}"' if error else "")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": challenge})


def forbidden(principal: Principal, scope: Scope) -> HTTPException:
    if principal.kind == "session":
        detail = "a web-chat session may only use the /v1/webchat routes of its own conversation"
    else:
        detail = f"the {principal.role} role may not do this (it needs {scope.value})"
    return HTTPException(status.HTTP_403_FORBIDDEN, detail)


def require_scope(principal: Principal, scope: Scope, request: Request | None = None) -> None:
    """For the rare check that depends on the body (e.g. naming a customer); answers like `authorize`."""
    if principal.can(scope):
        return
    where = f"{request.method} {request.url.path}" if request is not None else scope.value
    log.warning("denied %s: %s lacks %s", where, principal.label, scope.value)
    if principal.kind == "anonymous":
        raise unauthorized(f"{_MISSING} (this needs {scope.value})")
    raise forbidden(principal, scope)


async def _resolve(auth: Auth, token: str | None) -> Principal:
    if token is None:
        return ANONYMOUS
    if token.startswith(KEY_PREFIX):
        key = auth.keys.cached(token) or await run_in_threadpool(auth.keys.verify, token)
        if key is None:
            raise unauthorized("invalid or revoked API key", error="invalid_token")
        return Principal("key", ROLE_SCOPES[key.role], key=key)
    try:
        session = auth.sessions.read(token)
    except SessionError as exc:
        raise unauthorized(str(exc), error="invalid_token") from None
    return Principal("session", SESSION_SCOPES, session=session, token=token)


async def authorize(
    security_scopes: SecurityScopes,
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller as a Principal holding every scope the route declares; 401 or 403 otherwise."""
    if bearer is None and request.headers.get("authorization"):
        raise unauthorized("the Authorization header must read 'Bearer <API key or session token>'")
    token = bearer.credentials.strip() if bearer is not None else None
    if api_key is not None:
        if token is not None and token != api_key.strip():
            raise unauthorized("send one credential: Authorization or X-API-Key, not two different ones")
        token = api_key.strip()
    try:
        principal = await _resolve(request.app.state.auth, token or None)
    except HTTPException as exc:
        log.warning("refused %s %s: %s", request.method, request.url.path, exc.detail)
        raise
    for name in security_scopes.scopes:
        scope = Scope(name)
        if not principal.can(scope):
            require_scope(principal, scope, request)
    if not security_scopes.scopes and principal.kind == "anonymous":
        raise unauthorized(_MISSING)
    return principal


def requires(scope: Scope) -> Any:
    """`Security(authorize, scopes=[scope])`: the only way a route states who may call it."""
    return Security(authorize, scopes=[scope.value])
