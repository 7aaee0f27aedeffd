"""Outbox delivery: a per-item `next_attempt_at` (the send queue is ordered by it) and dead items.

Existing rows are due at their creation time; items the old code marked `failed` are `dead` now (out of the
send queue, listed by the API and counted by /health).

Revision ID: 0003_outbox_delivery
Revises: 0002_conversation_state
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_outbox_delivery"
down_revision: str | None = "0002_conversation_state"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "breaking"  # a NOT NULL column the previous code does not fill; renames a status


def upgrade() -> None:
    op.add_column("outbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE outbox SET next_attempt_at = created_at")
    op.execute("UPDATE outbox SET status = 'dead' WHERE status = 'failed'")
    # SQLite cannot make a column NOT NULL in place: batch mode copies the table there, and is a plain
    # ALTER TABLE on PostgreSQL.
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("next_attempt_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.drop_index("ix_outbox_status_created_at", table_name="outbox")
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_status_next_attempt_at", table_name="outbox")
    op.create_index("ix_outbox_status_created_at", "outbox", ["status", "created_at"])
    op.execute("UPDATE outbox SET status = 'failed' WHERE status = 'dead'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("next_attempt_at")
