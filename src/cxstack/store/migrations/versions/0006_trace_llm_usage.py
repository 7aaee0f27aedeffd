"""Model usage per trace: calls, input and output tokens, cost in millionths of the workspace currency,
so that cost per intent is one indexed query.

Revision ID: 0006_trace_llm_usage
Revises: 0005_fact_versions
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_trace_llm_usage"
down_revision: str | None = "0005_fact_versions"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "additive"  # columns with server defaults or nullable: older traces count 0 calls


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("llm_calls", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("llm_input_tokens", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("llm_output_tokens", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("llm_cost_micros", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("llm_cost_micros")
        batch.drop_column("llm_output_tokens")
        batch.drop_column("llm_input_tokens")
        batch.drop_column("llm_calls")
