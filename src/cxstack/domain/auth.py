"""Who may call the API: keys with roles. The key's secret is never stored, only its argon2 hash."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class ApiRole(enum.StrEnum):
    ADMIN = "admin"  # workspace, customers, keys — and everything else
    AGENT = "agent"  # escalations, human replies, hand-back, reading conversations
    INTEGRATION = (
        "integration"  # posts messages and customer profiles for its channel, mints web-chat sessions
    )
    VIEWER = "viewer"  # reads conversations, traces, intents, the workspace


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key. `id` is the key's public prefix (`cxk_<id>_<secret>`), used to find it."""

    id: str
    name: str
    role: ApiRole
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    # An integration key bound to one channel may only post messages on it; None: any channel.
    channel: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
