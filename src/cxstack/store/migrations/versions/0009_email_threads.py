"""Email threading: every mail's Message-ID with its conversation, so a reply (In-Reply-To / References)
finds its conversation, a redelivered mail is known, and a bounce finds the reply it reports on.

Revision ID: 0009_email_threads
Revises: 0008_outbox_delivery_status
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cxstack.store.orm import UTCDateTime

revision = "0009_email_threads"
down_revision: str | None = "0008_outbox_delivery_status"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "additive"  # a new table


def upgrade() -> None:
    op.create_table(
        "email_messages",
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("outbox_id", sa.String(), nullable=True),
        sa.Column("full_text", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_email_messages"),
    )
    op.create_index(
        "ix_email_messages_conversation_id_created_at", "email_messages", ["conversation_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_email_messages_conversation_id_created_at", table_name="email_messages")
    op.drop_table("email_messages")
