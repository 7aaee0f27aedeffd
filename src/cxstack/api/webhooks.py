"""Provider webhooks: routes only check, parse and hand over (the contracts are in channels/)."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse

from cxstack.api.deps import Cx
from cxstack.app import CxApp, ExternalIdConflictError
from cxstack.channels import whatsapp

log = logging.getLogger(__name__)


def _whatsapp(cx: CxApp) -> whatsapp.WhatsAppSettings:
    settings = cx.whatsapp
    if settings is None or whatsapp.CHANNEL not in cx.workspace.settings.channels:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the WhatsApp channel is not enabled here")
    return settings


def add_webhook_routes(api: FastAPI) -> None:
    @api.get(
        "/webhooks/whatsapp",
        response_class=PlainTextResponse,
        tags=["channels"],
        responses={
            403: {"description": "not a subscription check, or the verify token is wrong"},
            404: {"description": "the WhatsApp channel is off here"},
        },
    )
    def whatsapp_verify(
        cx: Cx,
        mode: Annotated[str, Query(alias="hub.mode")] = "",
        token: Annotated[str, Query(alias="hub.verify_token")] = "",
        challenge: Annotated[str, Query(alias="hub.challenge", max_length=200)] = "",
    ) -> PlainTextResponse:
        """Meta's subscription check: the challenge back when the verify token matches, else 403."""
        settings = _whatsapp(cx)
        if mode != "subscribe" or not hmac.compare_digest(token.encode(), settings.verify_token.encode()):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "verification refused")
        return PlainTextResponse(challenge)

    @api.post(
        "/webhooks/whatsapp",
        tags=["channels"],
        responses={
            400: {"description": "a payload that is not WhatsApp's (the field named); nothing stored"},
            401: {"description": "missing or wrong X-Hub-Signature-256; nothing stored"},
            404: {"description": "the channel is off here, or the delivery is for another phone number"},
        },
    )
    async def whatsapp_webhook(request: Request, cx: Cx) -> dict[str, Any]:
        """Messages and delivery reports from the WhatsApp Cloud API, verified on the raw body, stored, then
        acknowledged; a redelivery (same wamid) stores nothing twice."""
        settings = _whatsapp(cx)
        raw = await request.body()
        if not whatsapp.signature_valid(settings.app_secret, raw, request.headers.get("x-hub-signature-256")):
            log.warning("refused a WhatsApp webhook: missing or wrong X-Hub-Signature-256")
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong X-Hub-Signature-256")
        try:
            delivery = whatsapp.parse(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: not JSON") from None
        except whatsapp.PayloadError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        strangers = delivery.phone_number_ids - {settings.phone_number_id}
        if strangers:
            log.warning("refused a WhatsApp webhook for phone number id(s) %s", ", ".join(sorted(strangers)))
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not a phone number this deployment serves")

        async def post(conversation: str, text: str, wamid: str, customer_id: str) -> bool | None:
            try:
                result = await cx.post_message(
                    conversation,
                    text,
                    external_id=wamid,
                    channel=whatsapp.CHANNEL,
                    customer_id=customer_id,
                    verified=True,  # WhatsApp vouches for the sender's number, and only for that
                )
            except ExternalIdConflictError:
                return None
            return result.created

        accepted = await whatsapp.accept(delivery, cx.store, post, cx.undelivered)
        return accepted.as_dict()
