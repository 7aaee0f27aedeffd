"""Email provider webhooks: routes only check, parse and hand over (the contract is in channels/email.py)."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from cxstack.api.deps import Cx
from cxstack.app import CxApp
from cxstack.channels import email

log = logging.getLogger(__name__)

# A form field (the body, the headers) may be long; the files themselves spool to disk and are never kept.
MAX_FORM_FIELD_BYTES = 10 * 1024 * 1024

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a payload that is not the provider's (the field named); nothing stored"},
    401: {
        "description": "unsigned, forged or replayed (Mailgun), wrong basic auth (Postmark); nothing stored"
    },
    404: {"description": "the email channel, or this provider's inbound, is off here"},
}


def _settings(cx: CxApp, provider: str, configured: bool) -> email.EmailSettings:
    settings = cx.email
    if settings is None or email.CHANNEL not in cx.workspace.settings.channels or not configured:
        log.warning(
            "refused an email webhook from %s: the channel or its %s inbound is off here", provider, provider
        )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"email from {provider} is not enabled here")
    return settings


def _basic_auth_valid(header: str | None, user: str, password: str) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, _, given_password = given.partition(":")
    # both compared, whatever the first says: no timing hint of which one was wrong
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return user_ok and password_ok


def add_email_routes(api: FastAPI) -> None:
    api.state.body_limits = {
        **getattr(api.state, "body_limits", {}),
        "/webhooks/email/": email.MAX_EMAIL_BODY_BYTES,
    }
    tokens = email.TokenCache()

    @api.post("/webhooks/email/mailgun", tags=["channels"], responses=RESPONSES)
    async def mailgun_webhook(request: Request, cx: Cx) -> dict[str, Any]:
        """A mail from a Mailgun route's forward() (fully parsed), checked against its signature (timestamp +
        token, at most 5 minutes old, each token once), stored under its Message-ID, then acknowledged."""
        settings = _settings(cx, "mailgun", bool(cx.email and cx.email.mailgun_signing_key))
        try:
            form = await request.form(max_files=100, max_fields=200, max_part_size=MAX_FORM_FIELD_BYTES)
        except MultiPartException as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body: {exc.message}") from None
        try:
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            refused = email.mailgun_check(settings.mailgun_signing_key, fields, tokens)
            if refused is not None:
                log.warning("refused a Mailgun webhook: %s", refused)
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"Mailgun signature: {refused}")
            # only what describes each file is kept: the bytes stay in the spooled upload, deleted on close
            files = [
                email.Attachment(v.filename or "", v.content_type or "", v.size or 0)
                for _, v in form.multi_items()
                if isinstance(v, UploadFile)
            ]
            try:
                mail = email.parse_mailgun(fields, files)
            except email.PayloadError as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        finally:
            await form.close()
        accepted = await email.accept(mail, cx.store, email.poster(cx), settings, cx.undelivered)
        return accepted.as_dict()

    @api.post("/webhooks/email/postmark", tags=["channels"], responses=RESPONSES)
    async def postmark_webhook(request: Request, cx: Cx) -> dict[str, Any]:
        """A mail from Postmark's inbound webhook (JSON), behind HTTP basic auth, stored under its Message-ID,
        then acknowledged."""
        configured = bool(cx.email and cx.email.postmark_user and cx.email.postmark_password)
        settings = _settings(cx, "postmark", configured)
        if not _basic_auth_valid(
            request.headers.get("authorization"), settings.postmark_user, settings.postmark_password
        ):
            log.warning("refused a Postmark webhook: missing or wrong basic auth")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong basic auth",
                headers={"WWW-Authenticate": 'Basic realm="cxstack email"'},
            )
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: not JSON") from None
        try:
            mail = email.parse_postmark(payload, settings.trusted_authserv_ids)
        except email.PayloadError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        del payload, raw  # a 20 MB attachment's base64 need not outlive the parse
        accepted = await email.accept(mail, cx.store, email.poster(cx), settings, cx.undelivered)
        return accepted.as_dict()
