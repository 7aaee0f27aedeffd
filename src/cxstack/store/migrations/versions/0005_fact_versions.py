"""Knowledge fact versions: (fact id, number) as the key and optimistic lock, content as JSON, author, reason.

Revision ID: 0005_fact_versions
Revises: 0004_api_keys
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_fact_versions"
down_revision: str | None = "0004_api_keys"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "additive"  # a new table


def upgrade() -> None:
    op.create_table(
        "fact_versions",
        sa.Column("fact_id", sa.String(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fact_id", "number", name="pk_fact_versions"),
    )


def downgrade() -> None:
    op.drop_table("fact_versions")
