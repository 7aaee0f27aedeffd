"""The HTTP entry point: REST API, web chat page, escalation desk. Routes only parse, call and format."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import OperationalError

from cxstack import __version__
from cxstack.api import views
from cxstack.api.body_limit import BodyLimitMiddleware, too_large_detail
from cxstack.api.deps import Cx
from cxstack.api.email_webhooks import add_email_routes
from cxstack.api.handoff import add_handoff_routes
from cxstack.api.keys import ApiKeys
from cxstack.api.knowledge import add_knowledge_routes
from cxstack.api.monitoring import add_monitoring_routes, add_review_routes
from cxstack.api.openapi_errors import document_body_errors
from cxstack.api.ops import add_ops_routes, liveness
from cxstack.api.schemas import (
    CONVERSATION_ID_PATTERN,
    ConversationEvents,
    ConversationOut,
    ConversationSummary,
    CustomerOut,
    CustomerProfile,
    EscalationOut,
    HealthOut,
    HumanReply,
    HumanReplyOut,
    IntentOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    MessageAccepted,
    OutboxItemOut,
    PostMessage,
    PrincipalOut,
    RequeueRequest,
    WebchatAccepted,
    WebchatEvents,
    WebchatMessageIn,
    WebchatSessionOut,
    WebchatSessionRequest,
    WorkspaceOut,
)
from cxstack.api.security import Auth, Principal, Scope, requires, unauthorized
from cxstack.api.sessions import SessionError, WebchatSessions, signing_secret
from cxstack.api.webhooks import add_webhook_routes
from cxstack.api.widget import add_widget_routes
from cxstack.app import CxApp, ExternalIdConflictError
from cxstack.channels import gate
from cxstack.domain.ports import OutboxStatus
from cxstack.logs import configure_logging
from cxstack.store.db import storage_full

HERE = Path(__file__).parent
HEALTHCHECK_SECONDS = 30
log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=str(HERE / "templates"))


# `async` though it does no I/O: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
async def _auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


AuthState = Annotated[Auth, Depends(_auth)]
# The caller chooses conversation ids (its own ticket or chat id); keep them URL- and log-safe.
ConversationIdParam = Annotated[str, PathParam(min_length=1, max_length=128, pattern=CONVERSATION_ID_PATTERN)]


def build_auth(app: CxApp) -> Auth:
    """API keys over the app's store and the web-chat session signer, from the app's settings."""
    settings = app.settings
    secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    return Auth(
        keys=ApiKeys(app.store, cache_seconds=settings.api_key_cache_seconds),
        sessions=WebchatSessions(
            signing_secret(secret, settings.home), ttl=timedelta(minutes=settings.session_minutes)
        ),
    )


def create_api(app: CxApp, *, auth: Auth | None = None) -> FastAPI:
    """The FastAPI application around a built CxApp; its lifespan starts and stops the service.
    Every /v1 route needs credentials (see cxstack.api.security); /health, /docs and the pages do not."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await app.start()
        try:
            yield
        finally:
            await app.stop()

    api = FastAPI(
        title="cxstack",
        version=__version__,
        description="AI customer support as an engineered system. Every reply carries the trace of the layer "
        "decisions that produced it.",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no CDN, works offline
    )
    api.state.cx = app
    api.state.auth = auth or build_auth(app)
    # Past the limit the body is not read further and the answer (413) never echoes it.
    api.add_middleware(BodyLimitMiddleware, max_body_bytes=app.settings.max_body_bytes)
    api.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _add_offline_docs(api)
    _add_error_handlers(api, app.settings.max_body_bytes)
    _add_api_routes(api)
    _add_pages(api)
    document_body_errors(api)
    return api


def _swagger_ui_static() -> Path:
    """Swagger UI 5's files from the swagger-ui-py package, found without importing its web-framework glue."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install swagger-ui-py==25.7.1")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _add_offline_docs(api: FastAPI) -> None:
    api.mount("/docs-assets", StaticFiles(directory=str(_swagger_ui_static())), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title="cxstack API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def _not_found(message: str) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": message})


def _without_input(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error without the value it rejected: a 10 MB body must not come back in the answer."""
    return {key: value for key, value in error.items() if key not in ("input", "url")}


def _add_error_handlers(api: FastAPI, max_body_bytes: int) -> None:
    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's detail list stays as is (clients parse it) minus the rejected input; `message` names the
        # fields for people.
        errors = [_without_input(dict(error)) for error in exc.errors()]
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": jsonable_encoder(errors), "message": _describe_errors(errors)},
        )

    @api.exception_handler(status.HTTP_413_CONTENT_TOO_LARGE)
    async def too_large(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            content={"detail": too_large_detail(max_body_bytes)},
        )

    @api.exception_handler(views.ConversationNotFoundError)
    async def conversation_not_found(_: Request, exc: views.ConversationNotFoundError) -> JSONResponse:
        return _not_found(str(exc))

    @api.exception_handler(views.EscalationNotFoundError)
    async def escalation_not_found(_: Request, exc: views.EscalationNotFoundError) -> JSONResponse:
        return _not_found(str(exc))

    @api.exception_handler(views.ApiKeyNotFoundError)
    async def key_not_found(_: Request, exc: views.ApiKeyNotFoundError) -> JSONResponse:
        return _not_found(str(exc))

    @api.exception_handler(gate.TemplateError)
    async def template_refused(_: Request, exc: gate.TemplateError) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": str(exc)})

    @api.exception_handler(gate.OutboundRefusedError)
    async def outbound_refused(_: Request, exc: gate.OutboundRefusedError) -> JSONResponse:
        # The channel would not deliver it (WhatsApp's window): said now, not after a silent drop.
        return JSONResponse(status_code=status.HTTP_409_CONFLICT, content={"detail": str(exc)})

    @api.exception_handler(ExternalIdConflictError)
    async def external_id_conflict(_: Request, exc: ExternalIdConflictError) -> JSONResponse:
        # Never which conversation: that would hand out another conversation's id.
        return JSONResponse(status_code=status.HTTP_409_CONFLICT, content={"detail": str(exc)})

    @api.exception_handler(views.ConversationOfAnotherCustomerError)
    async def conversation_of_another(
        _: Request, exc: views.ConversationOfAnotherCustomerError
    ) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_409_CONFLICT, content={"detail": str(exc)})

    @api.exception_handler(views.ChannelNotAllowedError)
    async def channel_not_allowed(_: Request, exc: views.ChannelNotAllowedError) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_403_FORBIDDEN, content={"detail": str(exc)})

    @api.exception_handler(OperationalError)
    async def store_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # The database went away (a restart, a failover) or its disk is full: the request's transaction
        # rolled back, so nothing of it is stored and the client may retry it as is (same external id).
        full = storage_full(exc)
        code = status.HTTP_507_INSUFFICIENT_STORAGE if full else status.HTTP_503_SERVICE_UNAVAILABLE
        detail = (
            "the database's disk is full: nothing of this request was stored; retry once space is freed"
            if full
            else "the database is unavailable: nothing of this request was stored; retry shortly"
        )
        log.error("%s %s: %s (%s)", request.method, request.url.path, detail, str(exc.orig).strip()[:200])
        return JSONResponse(status_code=code, content={"detail": detail}, headers={"Retry-After": "1"})

    @api.exception_handler(views.UnknownChannelError)
    async def unknown_channel(_: Request, exc: views.UnknownChannelError) -> JSONResponse:
        error = {"type": "unknown_channel", "loc": ["body", "channel"], "msg": str(exc)}
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": [error], "message": f"body.channel: {exc}"},
        )


def _describe_errors(errors: Any) -> str:
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            at = f" at position {loc[1]}" if len(loc) > 1 else ""
            parts.append(f"body: malformed JSON{at} ({error.get('ctx', {}).get('error', 'decode error')})")
            continue
        parts.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


# Routes that only read or write the synchronous store are plain `def`: FastAPI runs them on its thread pool.
# The ones that must wait (for a turn, a long poll) are `async def` and reach the store through a thread.


def _add_api_routes(api: FastAPI) -> None:
    _add_conversation_routes(api)
    _add_escalation_routes(api)
    _add_workspace_and_customer_routes(api)
    _add_webchat_routes(api)
    _add_key_routes(api)
    add_knowledge_routes(api)
    add_monitoring_routes(api)
    add_review_routes(api)
    add_webhook_routes(api)
    add_email_routes(api)
    add_handoff_routes(api)
    add_widget_routes(api)
    _add_service_routes(api)
    add_ops_routes(api)


_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "no credentials, or an invalid, revoked or expired one"},
    403: {"description": "the credential's role may not do this"},
}


def _add_conversation_routes(api: FastAPI) -> None:
    @api.post(
        "/v1/conversations/{conversation_id}/messages",
        response_model=MessageAccepted,
        status_code=status.HTTP_202_ACCEPTED,
        tags=["conversations"],
        responses={
            **_UNAUTHORIZED,
            200: {"model": MessageAccepted, "description": "duplicate external id: nothing was stored"},
            409: {"description": "external_id already used in another conversation: nothing was stored"},
        },
    )
    async def post_message(
        conversation_id: ConversationIdParam,
        body: PostMessage,
        cx: Cx,
        principal: Annotated[Principal, requires(Scope.CONVERSATIONS_WRITE)],
        response: Response,
        wait: Annotated[bool, Query(description="wait (up to 10 s) for the reply and its trace")] = False,
    ) -> MessageAccepted:
        """The REST channel (integration or admin key). The customer it names is taken as verified by the
        channel; a profile it carries (plan, ARR, segment, attributes) is stored with the message."""
        accepted = await views.post_message(cx, conversation_id, body, principal=principal, wait=wait)
        if accepted.duplicate:
            response.status_code = status.HTTP_200_OK
        return accepted

    @api.get(
        "/v1/conversations",
        response_model=list[ConversationSummary],
        tags=["conversations"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.CONVERSATIONS_READ)],
    )
    def list_conversations(
        cx: Cx, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[ConversationSummary]:
        return views.list_conversations(cx, limit)

    @api.get(
        "/v1/conversations/{conversation_id}",
        response_model=ConversationOut,
        tags=["conversations"],
        responses={**_UNAUTHORIZED, 404: {"description": "unknown conversation"}},
        dependencies=[requires(Scope.CONVERSATIONS_READ)],
    )
    def get_conversation(conversation_id: str, cx: Cx) -> ConversationOut:
        return views.get_conversation(cx, conversation_id)

    @api.get(
        "/v1/conversations/{conversation_id}/events",
        response_model=ConversationEvents,
        tags=["conversations"],
        responses={**_UNAUTHORIZED, 404: {"description": "unknown conversation"}},
        dependencies=[requires(Scope.CONVERSATIONS_READ)],
    )
    async def conversation_events(
        conversation_id: str,
        cx: Cx,
        after: Annotated[int, Query(ge=0, description="messages the client has already seen")] = 0,
        timeout: Annotated[float, Query(ge=0, le=views.EVENTS_MAX_SECONDS)] = 25.0,
    ) -> ConversationEvents:
        return await views.conversation_events(cx, conversation_id, after=after, timeout=timeout)

    @api.post(
        "/v1/conversations/{conversation_id}/human-replies",
        response_model=HumanReplyOut,
        status_code=status.HTTP_201_CREATED,
        tags=["escalations"],
        responses={**_UNAUTHORIZED, 404: {"description": "unknown conversation"}},
        dependencies=[requires(Scope.ESCALATIONS_WRITE)],
    )
    async def post_human_reply(conversation_id: str, body: HumanReply, cx: Cx) -> HumanReplyOut:
        return await views.human_reply(cx, conversation_id, body)


def _add_escalation_routes(api: FastAPI) -> None:
    @api.get(
        "/v1/escalations",
        response_model=list[EscalationOut],
        tags=["escalations"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.ESCALATIONS_READ)],
    )
    def list_escalations(
        cx: Cx,
        queue: str | None = None,
        status: Annotated[
            Literal["open", "resolved", "closed", "all"], Query(description="'all' for every status")
        ] = "open",
    ) -> list[EscalationOut]:
        return views.escalation_queue(cx, queue=queue, status=None if status == "all" else status)

    @api.get(
        "/v1/escalations/{escalation_id}",
        response_model=EscalationOut,
        tags=["escalations"],
        responses={**_UNAUTHORIZED, 404: {"description": "unknown escalation"}},
        dependencies=[requires(Scope.ESCALATIONS_READ)],
    )
    def get_escalation(escalation_id: str, cx: Cx) -> EscalationOut:
        return views.get_escalation(cx, escalation_id)


def _add_workspace_and_customer_routes(api: FastAPI) -> None:
    @api.get(
        "/v1/intents",
        response_model=list[IntentOut],
        tags=["workspace"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.WORKSPACE_READ)],
    )
    def list_intents(cx: Cx) -> list[IntentOut]:
        return views.intents(cx.workspace)

    @api.get(
        "/v1/workspace",
        response_model=WorkspaceOut,
        tags=["workspace"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.WORKSPACE_READ)],
    )
    def workspace(cx: Cx) -> WorkspaceOut:
        return views.workspace_info(cx)

    @api.get(
        "/v1/customers",
        response_model=list[CustomerOut],
        tags=["customers"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.CUSTOMERS_READ)],
    )
    def list_customers(
        cx: Cx, q: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[CustomerOut]:
        return views.list_customers(cx, q, limit)

    @api.put(
        "/v1/customers/{customer_id}",
        response_model=CustomerOut,
        tags=["customers"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.CUSTOMERS_WRITE)],
    )
    def put_customer(customer_id: str, body: CustomerProfile, cx: Cx) -> CustomerOut:
        """Create or update a customer profile (plan, ARR, segment, attributes) for the strategy layer.
        Integration or admin keys only: these fields decide tier, caps and queues."""
        return views.upsert_customer(cx, customer_id, body)

    @api.get(
        "/v1/customers/{customer_id}",
        response_model=CustomerOut,
        tags=["customers"],
        responses={**_UNAUTHORIZED, 404: {"description": "unknown customer"}},
        dependencies=[requires(Scope.CUSTOMERS_READ)],
    )
    def get_customer(customer_id: str, cx: Cx) -> CustomerOut | JSONResponse:
        found = views.get_customer(cx, customer_id)
        return found if found is not None else _not_found(f"customer {customer_id} not found")


def _add_webchat_routes(api: FastAPI) -> None:
    @api.post(
        "/v1/webchat/sessions",
        response_model=WebchatSessionOut,
        status_code=status.HTTP_201_CREATED,
        tags=["web chat"],
        responses={
            **_UNAUTHORIZED,
            409: {"description": "conversation_id is in use by another customer"},
        },
    )
    def start_webchat_session(
        cx: Cx,
        auth: AuthState,
        principal: Annotated[Principal, requires(Scope.WEBCHAT_START)],
        body: WebchatSessionRequest | None = None,
    ) -> WebchatSessionOut:
        """Without credentials: an anonymous session for a new conversation (customer `anon_…`, not
        verified). With an integration or admin key and a `customer_id`: a session for that customer, who
        is verified, optionally in `conversation_id` (theirs, or a new one)."""
        return views.start_webchat_session(cx, auth.sessions, principal, body or WebchatSessionRequest())

    @api.post(
        "/v1/webchat/sessions/refresh",
        response_model=WebchatSessionOut,
        tags=["web chat"],
        responses=_UNAUTHORIZED,
    )
    def refresh_webchat_session(
        auth: AuthState, principal: Annotated[Principal, requires(Scope.WEBCHAT_CONVERSE)]
    ) -> WebchatSessionOut:
        """A new token for a still-valid session (an expired one gets 401: start a new session)."""
        try:
            token, session = auth.sessions.refresh(principal.token)
        except SessionError as exc:
            raise unauthorized(str(exc), error="invalid_token") from None
        return views.session_out(token, session)

    @api.post(
        "/v1/webchat/messages",
        response_model=WebchatAccepted,
        status_code=status.HTTP_202_ACCEPTED,
        tags=["web chat"],
        responses={
            **_UNAUTHORIZED,
            200: {"model": WebchatAccepted, "description": "duplicate external id: nothing was stored"},
        },
    )
    async def post_webchat_message(
        body: WebchatMessageIn,
        cx: Cx,
        principal: Annotated[Principal, requires(Scope.WEBCHAT_CONVERSE)],
        response: Response,
        wait: Annotated[bool, Query(description="wait (up to 10 s) for the reply")] = False,
    ) -> WebchatAccepted:
        """A customer message in the session's conversation (web-chat session token)."""
        assert principal.session is not None
        accepted = await views.webchat_post(cx, principal.session, body, wait=wait)
        if accepted.duplicate:
            response.status_code = status.HTTP_200_OK
        return accepted

    @api.get(
        "/v1/webchat/messages",
        response_model=WebchatEvents,
        tags=["web chat"],
        responses=_UNAUTHORIZED,
    )
    async def webchat_messages(
        cx: Cx,
        principal: Annotated[Principal, requires(Scope.WEBCHAT_CONVERSE)],
        after: Annotated[int, Query(ge=0, description="messages the client has already seen")] = 0,
        timeout: Annotated[float, Query(ge=0, le=views.EVENTS_MAX_SECONDS)] = 25.0,
    ) -> WebchatEvents:
        """The session's conversation as its customer sees it (long poll): messages only."""
        assert principal.session is not None
        return await views.webchat_events(cx, principal.session, after=after, timeout=timeout)


def _add_key_routes(api: FastAPI) -> None:
    @api.get(
        "/v1/keys",
        response_model=list[KeyOut],
        tags=["keys"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.KEYS)],
    )
    def list_keys(auth: AuthState) -> list[KeyOut]:
        return [views.key_out(k) for k in auth.keys.all()]

    @api.post(
        "/v1/keys",
        response_model=KeyCreated,
        status_code=status.HTTP_201_CREATED,
        tags=["keys"],
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.KEYS)],
    )
    def create_key(body: KeyCreate, auth: AuthState) -> KeyCreated:
        """A new key; the answer holds the whole key, which is shown this once and stored nowhere."""
        return views.create_key(auth.keys, body)

    @api.post(
        "/v1/keys/{key_id}/revoke",
        response_model=KeyOut,
        tags=["keys"],
        responses={**_UNAUTHORIZED, 404: {"description": "unknown key"}},
        dependencies=[requires(Scope.KEYS)],
    )
    def revoke_key(key_id: str, auth: AuthState) -> KeyOut:
        """Revoked at once in this process; other API processes stop accepting it within their key cache
        time (CXSTACK_API_KEY_CACHE_SECONDS, default 30 s)."""
        return views.revoke_key(auth.keys, key_id)

    @api.get("/v1/me", response_model=PrincipalOut, tags=["keys"], responses=_UNAUTHORIZED)
    async def whoami(principal: Annotated[Principal, requires(Scope.WHOAMI)]) -> PrincipalOut:
        """Who the credential is: its kind, role and scopes (the pages use it to check a key)."""
        return views.principal_out(principal)


def _add_service_routes(api: FastAPI) -> None:
    @api.get(
        "/v1/outbox",
        response_model=list[OutboxItemOut],
        tags=["service"],
        summary="Replies in the outbox by status (dead: failed every send attempt)",
        responses=_UNAUTHORIZED,
        dependencies=[requires(Scope.CONVERSATIONS_READ)],
    )
    def list_outbox(
        cx: Cx,
        status: Annotated[OutboxStatus, Query(description="dead, pending or sent")] = OutboxStatus.DEAD,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[OutboxItemOut]:
        """Oldest first. A dead reply never reached the customer; `POST /v1/outbox/requeue` sends it again
        once the cause is fixed."""
        return views.list_outbox(cx, status, limit)

    @api.post(
        "/v1/outbox/requeue",
        response_model=list[OutboxItemOut],
        tags=["service"],
        summary="Send replies again from their first attempt: the ids given, or every dead one",
        responses={
            **_UNAUTHORIZED,
            404: {"description": "an unknown outbox id (those before it in `ids` are requeued)"},
            409: {"description": "an item that was already sent (those before it in `ids` are requeued)"},
        },
        dependencies=[requires(Scope.ESCALATIONS_WRITE)],
    )
    async def requeue_outbox(body: RequeueRequest, cx: Cx) -> list[OutboxItemOut]:
        """For replies that died on a cause now fixed (a channel's credentials, an outage that outlasted the
        retries). Each starts again at attempt 1; the channel checks it again when it is sent."""
        with views.requeue_refusals():
            requeued = await cx.requeue_outbox(body.ids)
        return [views.outbox_item_out(item) for item in requeued]

    @api.get(
        "/health",
        response_model=HealthOut,
        tags=["service"],
    )
    async def health(cx: Cx) -> HealthOut:
        """Liveness: always 200 while the process answers; `ok`, or `degraded` with `reasons` (database
        unreachable, turn worker down or restarting). Readiness, with 503, is `/ready`."""
        return await liveness(cx)


def _add_pages(api: FastAPI) -> None:
    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page(request: Request, cx: Cx) -> HTMLResponse:
        return templates.TemplateResponse(request, "chat.html", _page_context(cx, "chat"))

    @api.get("/escalations", response_class=HTMLResponse, include_in_schema=False)
    async def escalations_page(request: Request, cx: Cx) -> HTMLResponse:
        return templates.TemplateResponse(request, "escalations.html", _page_context(cx, "escalations"))

    @api.get("/reviews", response_class=HTMLResponse, include_in_schema=False)
    async def reviews_page(request: Request, cx: Cx) -> HTMLResponse:
        return templates.TemplateResponse(request, "reviews.html", _page_context(cx, "reviews"))

    @api.get("/quality", response_class=HTMLResponse, include_in_schema=False)
    async def quality_page(request: Request, cx: Cx) -> HTMLResponse:
        return templates.TemplateResponse(request, "quality.html", _page_context(cx, "quality"))


def _page_context(cx: CxApp, page: str) -> dict[str, Any]:
    ws = cx.workspace
    return {
        "page": page,
        "workspace": ws.settings.name,
        "version": str(ws.version)[:12],
        "app_version": __version__,
    }


def api_server(
    app: CxApp,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    access_log: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> Any:
    """A uvicorn server for the API (`cxstack serve` runs it until interrupted); `on_listening` runs once its
    socket accepts connections (after the service started), so whatever it prints is true when printed.
    Every turn is traced in the store, so the per-request access log is off unless asked for: it costs ~10%
    of ingest throughput."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit and on_listening is not None:
                on_listening()

    from uvicorn.config import LOGGING_CONFIG

    json_logs = configure_logging()  # CXSTACK_LOG_FORMAT=json: uvicorn's lines become JSON too
    config = uvicorn.Config(
        create_api(app),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        log_config=json_logs if json_logs is not None else LOGGING_CONFIG,
    )
    return Server(config)


def serve_api_processes(
    processes: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    access_log: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Runs `processes` API processes on one port with uvicorn's own supervisor, which respawns one that
    dies, until SIGTERM/SIGINT. Each process builds its service from CXSTACK_* (the caller sets them, and
    does the once-per-deployment work first): see `app_factory`. `on_listening` runs once the port answers."""
    import uvicorn

    from cxstack.logs import process_log_config

    if on_listening is not None:
        threading.Thread(
            target=_when_answering, args=(_link_url(host, port), on_listening), name="listening", daemon=True
        ).start()
    uvicorn.run(
        "cxstack.api.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        # A process that is building its service (loading the router, the knowledge index) on a busy machine
        # may not answer the supervisor's ping in uvicorn's default 5 s and be killed, again and again; one
        # that died is seen at once whatever this is.
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
        log_level=log_level,
        access_log=access_log,
        # several processes write to one terminal or log file: every line names its process
        log_config=process_log_config(),
    )


def _link_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}/health"


def _when_answering(url: str, then: Callable[[], None], seconds: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                then()
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def app_factory() -> FastAPI:
    """One API process of `serve --processes N` (or `uvicorn cxstack.api.app:app_factory --factory`): the
    service built from CXSTACK_* settings (CXSTACK_WORKSPACE, CXSTACK_HOME, CXSTACK_DATABASE_URL, …)."""
    from cxstack.app import Settings, build

    _stop_with_parent()
    return create_api(build(Settings()))


def _stop_with_parent() -> None:
    """Linux: this process gets SIGTERM when the supervisor that started it dies, even by SIGKILL; otherwise
    it would keep the port open and the supervisor restarted in its place could not listen."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
