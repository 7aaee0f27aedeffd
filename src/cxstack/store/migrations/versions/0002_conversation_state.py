"""Conversation ownership, concurrency and failure handling.

- conversations: status values become the ownership states (open → bot, escalated → waiting_for_person);
  `verified` (the channel proved who the customer is), `version` (optimistic concurrency), a lease
  (`lease_owner`, `lease_until`: one worker at a time) and `retry_at` (back-off after a failed turn).
- messages: `turn_failures` and `last_error` of the turn that tried to answer them.
- traces: `turn_at`, the turn's clock.
- conversation_events: every status transition, who made it and why.

Revision ID: 0002_conversation_state
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_conversation_state"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "breaking"  # renames the conversation statuses the previous code writes and reads


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(), nullable=True))
        batch.add_column(sa.Column("lease_until", _utc(), nullable=True))
        batch.add_column(sa.Column("retry_at", _utc(), nullable=True))
    op.execute("UPDATE conversations SET status = 'bot' WHERE status = 'open'")
    op.execute("UPDATE conversations SET status = 'waiting_for_person' WHERE status = 'escalated'")
    # Conversations created before identities were tracked came from trusted API callers, except the
    # anonymous ids the API made up for callers that sent no customer.
    op.execute("UPDATE conversations SET verified = true WHERE customer_id NOT LIKE 'anon\\_%' ESCAPE '\\'")
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("turn_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("turn_at", _utc(), nullable=True))
    op.create_table(
        "conversation_events",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("transition", sa.String(), nullable=False),
        sa.Column("from_status", sa.String(), nullable=False),
        sa.Column("to_status", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=True),
        sa.Column("at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_events"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_conversation_events_conversation_id_conversations",
        ),
    )
    op.create_index("ix_conversation_events_conversation_id", "conversation_events", ["conversation_id"])
    op.create_index("ix_conversations_retry_at", "conversations", ["retry_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_retry_at", "conversations")
    op.drop_table("conversation_events")
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("turn_at")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("last_error")
        batch.drop_column("turn_failures")
    op.execute("UPDATE conversations SET status = 'open' WHERE status IN ('bot', 'person')")
    op.execute("UPDATE conversations SET status = 'escalated' WHERE status = 'waiting_for_person'")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
        batch.drop_column("version")
        batch.drop_column("verified")
