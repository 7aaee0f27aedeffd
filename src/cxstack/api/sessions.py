"""Web-chat sessions: a short-lived signed token (JWT, HS256) scoped to one conversation.

Claims: the conversation id (`cid`), the customer id (`sub`), whether the customer is verified (`ver`: a key
of an integration vouched for them), expiry (`exp`) and the time the session started (`sat`), past which a
refresh cannot carry it (`max_age`). The signing secret is `CXSTACK_SECRET_KEY`, or a file created once with
mode 0600 in CXSTACK_HOME; every API process of one deployment must share it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from cxstack.domain.models import utcnow

log = logging.getLogger(__name__)

AUDIENCE = "cxstack-webchat"
ALGORITHM = "HS256"
SECRET_FILE = "secret_key"
MIN_SECRET_LENGTH = 32
DEFAULT_TTL = timedelta(minutes=30)
DEFAULT_MAX_AGE = timedelta(hours=12)


class SessionError(Exception):
    """A token that does not open a session; the message says why, for the client."""


class SessionExpiredError(SessionError):
    pass


class SessionInvalidError(SessionError):
    pass


@dataclass(frozen=True, slots=True)
class WebchatSession:
    conversation_id: str
    customer_id: str
    verified: bool
    expires_at: datetime
    started_at: datetime


class WebchatSessions:
    def __init__(
        self, secret: str, *, ttl: timedelta = DEFAULT_TTL, max_age: timedelta = DEFAULT_MAX_AGE
    ) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the session signing secret must have at least {MIN_SECRET_LENGTH} characters")
        self._secret = secret
        self.ttl = ttl
        self.max_age = max_age

    def issue(
        self,
        conversation_id: str,
        customer_id: str,
        *,
        verified: bool,
        now: datetime | None = None,
        started_at: datetime | None = None,
    ) -> tuple[str, WebchatSession]:
        now = now or utcnow()
        started = _whole_seconds(started_at or now)
        expires = min(now + self.ttl, started + self.max_age)
        session = WebchatSession(conversation_id, customer_id, verified, _whole_seconds(expires), started)
        claims = {
            "aud": AUDIENCE,
            "sub": customer_id,
            "cid": conversation_id,
            "ver": verified,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "sat": int(started.timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), session

    def read(self, token: str) -> WebchatSession:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["exp", "iat", "sub", "aud", "cid", "sat"]},
            )
        except jwt.ExpiredSignatureError:
            raise SessionExpiredError(
                "web-chat session expired: start a new session (POST /v1/webchat/sessions)"
            ) from None
        except jwt.InvalidTokenError:
            raise SessionInvalidError(
                "invalid web-chat session token (tampered, or not one of ours)"
            ) from None
        cid, sub, ver = claims.get("cid"), claims.get("sub"), claims.get("ver")
        if not isinstance(cid, str) or not isinstance(sub, str) or not isinstance(ver, bool):
            raise SessionInvalidError("invalid web-chat session token (malformed claims)")
        return WebchatSession(
            conversation_id=cid,
            customer_id=sub,
            verified=ver,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            started_at=datetime.fromtimestamp(int(claims["sat"]), UTC),
        )

    def refresh(self, token: str, *, now: datetime | None = None) -> tuple[str, WebchatSession]:
        """A new token for a still-valid session, expiring `ttl` from now but never past `max_age`."""
        session = self.read(token)
        now = now or utcnow()
        if now >= session.started_at + self.max_age:
            raise SessionExpiredError("web-chat session reached its maximum age: start a new session")
        return self.issue(
            session.conversation_id,
            session.customer_id,
            verified=session.verified,
            now=now,
            started_at=session.started_at,
        )


def _whole_seconds(moment: datetime) -> datetime:
    return datetime.fromtimestamp(int(moment.timestamp()), UTC)


def signing_secret(configured: str | None, home: Path) -> str:
    """`configured` (CXSTACK_SECRET_KEY) if set; else the secret in `home`/secret_key, created once (0600)."""
    if configured:
        return configured
    path = home / SECRET_FILE
    home.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48))
    log.info("created the session signing secret %s (mode 0600)", path)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    for _ in range(50):  # another process may have created the file and not written it yet
        secret = path.read_text(encoding="ascii").strip()
        if secret:
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by other users: chmod 600 it", path)
            return secret
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: delete it to create a new session signing secret")
