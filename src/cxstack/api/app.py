"""The HTTP entry point: REST API, web chat page, escalation desk. Routes only parse, call and format."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, status
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from cxstack import __version__
from cxstack.api import views
from cxstack.api.schemas import (
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
    MessageAccepted,
    OutboxItemOut,
    PostMessage,
    WorkspaceOut,
)
from cxstack.app import CxApp
from cxstack.domain.ports import OutboxStatus

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _cx(request: Request) -> CxApp:
    cx: CxApp = request.app.state.cx
    return cx


Cx = Annotated[CxApp, Depends(_cx)]
# The caller chooses conversation ids (its own ticket or chat id); keep them URL- and log-safe.
ConversationIdParam = Annotated[
    str, PathParam(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
]


def create_api(app: CxApp) -> FastAPI:
    """The FastAPI application around a built CxApp; its lifespan starts and stops the service."""

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
    api.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _add_offline_docs(api)
    _add_error_handlers(api)
    _add_api_routes(api)
    _add_pages(api)
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


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's detail list stays as is (clients parse it); `message` names the fields for people.
        errors = exc.errors()
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": jsonable_encoder(errors), "message": _describe_errors(errors)},
        )

    @api.exception_handler(views.ConversationNotFoundError)
    async def conversation_not_found(_: Request, exc: views.ConversationNotFoundError) -> JSONResponse:
        return _not_found(str(exc))

    @api.exception_handler(views.EscalationNotFoundError)
    async def escalation_not_found(_: Request, exc: views.EscalationNotFoundError) -> JSONResponse:
        return _not_found(str(exc))

    @api.exception_handler(views.UnknownChannelError)
    async def unknown_channel(_: Request, exc: views.UnknownChannelError) -> JSONResponse:
        error = {"type": "unknown_channel", "loc": ["body", "channel"], "msg": str(exc), "input": exc.channel}
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


def _add_api_routes(api: FastAPI) -> None:
    @api.post(
        "/v1/conversations/{conversation_id}/messages",
        response_model=MessageAccepted,
        status_code=status.HTTP_202_ACCEPTED,
        tags=["conversations"],
        responses={
            200: {"model": MessageAccepted, "description": "duplicate external id: nothing was stored"}
        },
    )
    async def post_message(
        conversation_id: ConversationIdParam,
        body: PostMessage,
        cx: Cx,
        response: Response,
        wait: Annotated[bool, Query(description="wait (up to 10 s) for the reply and its trace")] = False,
    ) -> MessageAccepted:
        accepted = await views.post_message(cx, conversation_id, body, wait=wait)
        if accepted.duplicate:
            response.status_code = status.HTTP_200_OK
        return accepted

    @api.get("/v1/conversations", response_model=list[ConversationSummary], tags=["conversations"])
    async def list_conversations(
        cx: Cx, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[ConversationSummary]:
        return views.list_conversations(cx, limit)

    @api.get(
        "/v1/conversations/{conversation_id}",
        response_model=ConversationOut,
        tags=["conversations"],
        responses={404: {"description": "unknown conversation"}},
    )
    async def get_conversation(conversation_id: str, cx: Cx) -> ConversationOut:
        return views.get_conversation(cx, conversation_id)

    @api.get(
        "/v1/conversations/{conversation_id}/events",
        response_model=ConversationEvents,
        tags=["conversations"],
        responses={404: {"description": "unknown conversation"}},
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
        responses={404: {"description": "unknown conversation"}},
    )
    async def post_human_reply(conversation_id: str, body: HumanReply, cx: Cx) -> HumanReplyOut:
        return await views.human_reply(cx, conversation_id, body)

    @api.get("/v1/escalations", response_model=list[EscalationOut], tags=["escalations"])
    async def list_escalations(
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
        responses={404: {"description": "unknown escalation"}},
    )
    async def get_escalation(escalation_id: str, cx: Cx) -> EscalationOut:
        return views.get_escalation(cx, escalation_id)

    @api.get("/v1/intents", response_model=list[IntentOut], tags=["workspace"])
    async def list_intents(cx: Cx) -> list[IntentOut]:
        return views.intents(cx.workspace)

    @api.get("/v1/workspace", response_model=WorkspaceOut, tags=["workspace"])
    async def workspace(cx: Cx) -> WorkspaceOut:
        return views.workspace_info(cx)

    @api.get("/v1/customers", response_model=list[CustomerOut], tags=["customers"])
    async def list_customers(
        cx: Cx, q: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[CustomerOut]:
        return views.list_customers(cx, q, limit)

    @api.put("/v1/customers/{customer_id}", response_model=CustomerOut, tags=["customers"])
    async def put_customer(customer_id: str, body: CustomerProfile, cx: Cx) -> CustomerOut:
        """Create or update a customer profile (plan, ARR, segment, attributes) for the strategy layer."""
        return views.upsert_customer(cx, customer_id, body)

    @api.get(
        "/v1/customers/{customer_id}",
        response_model=CustomerOut,
        tags=["customers"],
        responses={404: {"description": "unknown customer"}},
    )
    async def get_customer(customer_id: str, cx: Cx) -> CustomerOut | JSONResponse:
        found = views.get_customer(cx, customer_id)
        return found if found is not None else _not_found(f"customer {customer_id} not found")

    @api.get(
        "/v1/outbox",
        response_model=list[OutboxItemOut],
        tags=["service"],
        summary="Replies in the outbox by status (dead: failed every send attempt)",
    )
    async def list_outbox(
        cx: Cx,
        status: Annotated[OutboxStatus, Query(description="dead, pending or sent")] = OutboxStatus.DEAD,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[OutboxItemOut]:
        """Oldest first. A dead reply never reached the customer; requeueing it is a store operation
        (`Store.requeue_outbox`)."""
        return views.list_outbox(cx, status, limit)

    @api.get(
        "/health",
        response_model=HealthOut,
        tags=["service"],
        responses={503: {"model": HealthOut, "description": "the database is unreachable"}},
    )
    async def health(cx: Cx, response: Response) -> HealthOut:
        """`ok`, or `degraded` with `reasons` (database unreachable, turn worker down or restarting).
        503 only when the database is unreachable; a restarting worker answers 200 because messages are
        still stored and will be answered (see `HealthOut`)."""
        report = views.health(cx)
        if not report.db_ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report


def _add_pages(api: FastAPI) -> None:
    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page(request: Request, cx: Cx) -> HTMLResponse:
        return templates.TemplateResponse(request, "chat.html", _page_context(cx, "chat"))

    @api.get("/escalations", response_class=HTMLResponse, include_in_schema=False)
    async def escalations_page(request: Request, cx: Cx) -> HTMLResponse:
        return templates.TemplateResponse(request, "escalations.html", _page_context(cx, "escalations"))


def _page_context(cx: CxApp, page: str) -> dict[str, Any]:
    ws = cx.workspace
    return {
        "page": page,
        "workspace": ws.settings.name,
        "version": str(ws.version)[:12],
        "app_version": __version__,
    }


def serve_api(
    app: CxApp,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Runs the API with uvicorn until interrupted (used by `cxstack serve`). Every turn is traced in the
    store, so the per-request access log is off unless asked for: it costs ~10% of ingest throughput."""
    import uvicorn

    uvicorn.run(create_api(app), host=host, port=port, log_level=log_level, access_log=access_log)


def app_factory() -> FastAPI:  # pragma: no cover - for `uvicorn cxstack.api.app:app_factory --factory`
    from cxstack.app import Settings, build

    return create_api(build(Settings()))
