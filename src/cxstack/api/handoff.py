"""Help-desk handoff routes: the help desks' webhooks (checked, parsed and applied by the handoff service) and
the export queue for people (dead exports, with their reasons)."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, status

from cxstack.api.deps import Cx
from cxstack.api.schemas import RequeueRequest
from cxstack.api.security import Scope, requires
from cxstack.api.views import requeue_refusals
from cxstack.app import CxApp
from cxstack.domain.handoff import Export, ExportStatus
from cxstack.integrations.helpdesks.base import PayloadError, SignatureError
from cxstack.integrations.helpdesks.service import HandoffService, UnknownTicketError

log = logging.getLogger(__name__)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a body that is not the help desk's (the field named); nothing applied"},
    401: {"description": "missing, wrong or old signature; nothing stored"},
    404: {"description": "handoff to this help desk is off here, or the ticket is not one we made"},
}


def _service(cx: CxApp, kind: str) -> HandoffService:
    handoff = cx.handoff
    if handoff is None or handoff.desk.kind != kind:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"handoff to {kind} is not enabled here")
    return handoff


async def _receive(request: Request, cx: CxApp, kind: str) -> dict[str, int]:
    service = _service(cx, kind)
    raw = await request.body()
    try:
        received = await service.receive(raw, request.headers)
    except SignatureError as exc:
        log.warning("refused a %s webhook: %s", kind, exc)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    except PayloadError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except UnknownTicketError as exc:
        log.warning("refused a %s webhook: %s", kind, exc)
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return received.as_dict()


def add_handoff_routes(api: FastAPI) -> None:
    @api.post("/webhooks/handoff/zendesk", tags=["handoff"], responses=_RESPONSES)
    async def zendesk_webhook(request: Request, cx: Cx) -> dict[str, int]:
        """A Zendesk trigger's webhook (X-Zendesk-Webhook-Signature): an agent's public comment goes to the
        customer on their channel; solved or closed hands the conversation back to the bot."""
        return await _receive(request, cx, "zendesk")

    @api.post("/webhooks/handoff/chatwoot", tags=["handoff"], responses=_RESPONSES)
    async def chatwoot_webhook(request: Request, cx: Cx) -> dict[str, int]:
        """Chatwoot's account webhook (X-Chatwoot-Signature): an agent's outgoing, non-private message goes to
        the customer; a resolved conversation hands it back to the bot."""
        return await _receive(request, cx, "chatwoot")

    @api.post("/webhooks/handoff/generic", tags=["handoff"], responses=_RESPONSES)
    async def generic_webhook(request: Request, cx: Cx) -> dict[str, int]:
        """Events from your own help desk (X-Cxstack-Signature): reply, solved or closed."""
        return await _receive(request, cx, "webhook")

    @api.get(
        "/v1/handoff/exports",
        tags=["handoff"],
        summary="Escalations exported (or failing to be) to the help desk",
        dependencies=[requires(Scope.CONVERSATIONS_READ)],
        responses={
            401: {"description": "no credentials, or an invalid, revoked or expired one"},
            403: {"description": "the credential's role may not do this"},
        },
    )
    def list_exports(
        cx: Cx,
        status_: Annotated[
            Literal["pending", "sent", "dead", "all"],
            Query(alias="status", description="dead, pending, sent"),
        ] = "dead",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        """Oldest first; a dead export names why (and the escalation shows it too)."""
        if cx.handoff is None:
            return []
        wanted = None if status_ == "all" else ExportStatus(status_)
        return [_export_out(e) for e in cx.handoff.store.exports(wanted, limit)]

    @api.post(
        "/v1/handoff/exports/requeue",
        tags=["handoff"],
        summary="Export escalations to the help desk again: the ids given, or every dead one",
        dependencies=[requires(Scope.ESCALATIONS_WRITE)],
        responses={
            401: {"description": "no credentials, or an invalid, revoked or expired one"},
            403: {"description": "the credential's role may not do this"},
            404: {"description": "an unknown export id, or no help desk here (those before it are requeued)"},
            409: {"description": "an export that already made its ticket (those before it are requeued)"},
        },
    )
    async def requeue_exports(body: RequeueRequest, cx: Cx) -> list[dict[str, Any]]:
        """For escalations the help desk never took, once the cause is fixed (a revoked token, a desk that
        was down longer than the retries): each starts again at attempt 1 with the same idempotency key,
        so a ticket the desk did make is not made twice."""
        with requeue_refusals():
            requeued = await cx.requeue_exports(body.ids)
        return [_export_out(e) for e in requeued]


def _export_out(e: Export) -> dict[str, Any]:
    return {
        "id": e.id,
        "escalation_id": e.escalation_id,
        "conversation_id": e.conversation_id,
        "kind": e.kind,
        "status": e.status.value,
        "attempts": e.attempts,
        "last_error": e.last_error,
        "ticket_id": e.ticket_id,
        "ticket_url": e.ticket_url,
        "created_at": e.created_at.isoformat(),
        "next_attempt_at": e.next_attempt_at.isoformat(),
    }
