"""Schema compatibility: one row naming the revision the database is at and the oldest revision whose code may
run on it, so that workers of the previous release keep running during a rolling upgrade when every migration
since their revision is additive, and refuse with both revisions named when one is not. Written at the end of
every migration run (migrations/env.py).

Revision ID: 0013_schema_compat
Revises: 0012_handoff_exports
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_schema_compat"
down_revision: str | None = "0012_handoff_exports"
branch_labels: str | None = None
depends_on: str | None = None
# Only a new table, but code older than it cannot read the record it holds and refuses any newer database
# anyway: the record says so rather than name releases that would not run.
compatibility = "breaking"


def upgrade() -> None:
    op.create_table(
        "schema_compat",
        sa.Column("revision", sa.String(), nullable=False),
        sa.Column("oldest_compatible", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("revision", name="pk_schema_compat"),
    )


def downgrade() -> None:
    op.drop_table("schema_compat")
