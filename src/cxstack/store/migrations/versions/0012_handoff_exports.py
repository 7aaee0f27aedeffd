"""Help-desk handoff: escalations exported as tickets (a queue with retries and dead letters, like the
outbox) and the help desk's events applied once each.

Revision ID: 0012_handoff_exports
Revises: 0011_outbox_content
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cxstack.store.orm import UTCDateTime

revision = "0012_handoff_exports"
down_revision: str | None = "0011_outbox_content"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "additive"  # new tables


def upgrade() -> None:
    op.create_table(
        "handoff_exports",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("escalation_id", sa.String(), sa.ForeignKey("escalations.id"), nullable=False),
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("ticket_id", sa.String(), nullable=True),
        sa.Column("ticket_url", sa.String(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("followups_sent", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("escalation_id", name="uq_handoff_exports_escalation_id"),
    )
    op.create_index(
        "ix_handoff_exports_status_next_attempt_at", "handoff_exports", ["status", "next_attempt_at"]
    )
    op.create_index("ix_handoff_exports_kind_ticket_id", "handoff_exports", ["kind", "ticket_id"])
    op.create_index("ix_handoff_exports_conversation_id", "handoff_exports", ["conversation_id"])
    op.create_table(
        "handoff_events",
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("event_key", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "event_key"),
    )


def downgrade() -> None:
    op.drop_table("handoff_events")
    op.drop_index("ix_handoff_exports_conversation_id", table_name="handoff_exports")
    op.drop_index("ix_handoff_exports_kind_ticket_id", table_name="handoff_exports")
    op.drop_index("ix_handoff_exports_status_next_attempt_at", table_name="handoff_exports")
    op.drop_table("handoff_exports")
