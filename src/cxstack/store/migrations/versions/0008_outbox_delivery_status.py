"""Delivery reports on sent replies: the provider's message id (WhatsApp's wamid) and its status (sent,
delivered, read, failed) with the error, so a reply that never arrived is visible on its conversation.

Revision ID: 0008_outbox_delivery_status
Revises: 0007_quality_monitoring
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cxstack.store.orm import UTCDateTime

revision = "0008_outbox_delivery_status"
down_revision: str | None = "0007_quality_monitoring"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "additive"  # nullable columns and a non-unique index


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("provider_message_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("delivery_status", sa.String(), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("delivery_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_outbox_provider_message_id", ["provider_message_id"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_provider_message_id")
        batch.drop_column("delivery_at")
        batch.drop_column("delivery_error")
        batch.drop_column("delivery_status")
        batch.drop_column("provider_message_id")
