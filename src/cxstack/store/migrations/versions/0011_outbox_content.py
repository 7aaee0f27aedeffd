"""Structured content beside a reply's text: an approved WhatsApp template and its parameters, or the
choices a clarifying question offers (sent as buttons or a list where the channel has them).

Revision ID: 0011_outbox_content
Revises: 0009_email_threads
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cxstack.store.orm import JSONType

revision = "0011_outbox_content"
down_revision: str | None = "0009_email_threads"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "additive"  # a nullable column


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("content", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("content")
