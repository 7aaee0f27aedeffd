"""Quality monitoring: one outcome row per conversation (kept by every turn's commit), reviews against the
rubric, judge versions and their judgements, the review queue. Existing conversations get their outcome rows
from their traces.

Revision ID: 0007_quality_monitoring
Revises: 0006_trace_llm_usage
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from cxstack.store.orm import JSONType, UTCDateTime

revision = "0007_quality_monitoring"
down_revision: str | None = "0006_trace_llm_usage"
branch_labels: str | None = None
depends_on: str | None = None
compatibility = "breaking"  # every turn's commit keeps the outcome rows: older code's would not


def _json() -> sa.types.TypeEngine[Any]:
    return JSONType


def upgrade() -> None:
    op.create_table(
        "conversation_outcomes",
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=True),
        sa.Column("language", sa.String(), nullable=True),
        sa.Column("intent", sa.String(), nullable=True),
        sa.Column("mechanism", sa.String(), nullable=True),
        sa.Column("workspace_version", sa.String(), nullable=False),
        sa.Column("variant", sa.String(), nullable=True),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("min_confidence", sa.Float(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_turn_at", UTCDateTime(), nullable=False),
        sa.Column("escalated_at", UTCDateTime(), nullable=True),
        sa.Column("escalation_reason", sa.String(), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("return_gap_s", sa.Float(), nullable=True),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("priced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("csat", sa.Integer(), nullable=True),
        sa.Column("csat_at", UTCDateTime(), nullable=True),
        sa.Column("csat_comment", sa.Text(), nullable=True),
        sa.Column("offered_at", UTCDateTime(), nullable=True),
        sa.Column("sample_pi", sa.Float(), nullable=True),
        sa.Column("sample_stratum", sa.String(), nullable=True),
        sa.Column("sampled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("reviews", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("human_quality", sa.Float(), nullable=True),
        sa.Column("judge_version", sa.String(), nullable=True),
        sa.Column("judge_passed", sa.Float(), nullable=True),
        sa.Column("judge_overall", sa.Float(), nullable=True),
        sa.Column("judge_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    for column in ("started_at", "intent", "offered_at"):
        op.create_index(f"ix_conversation_outcomes_{column}", "conversation_outcomes", [column])
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("rubric_version", sa.String(), nullable=False),
        sa.Column("scores", _json(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("judge_version", sa.String(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_conversation_id", "reviews", ["conversation_id"])
    op.create_index("ix_reviews_created_at", "reviews", ["created_at"])
    op.create_table(
        "judgements",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("judge_version", sa.String(), nullable=False),
        sa.Column("rubric_version", sa.String(), nullable=False),
        sa.Column("scores", _json(), nullable=False),
        sa.Column("overall", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_judgements_conversation_id", "judgements", ["conversation_id"])
    op.create_index("ix_judgements_judge_version", "judgements", ["judge_version"])
    op.create_table(
        "judge_versions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("rubric_version", sa.String(), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("parent", sa.String(), nullable=True),
        sa.Column("fit_fold", sa.Integer(), nullable=True),
        sa.Column("agreement", _json(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "review_queue",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("stratum", sa.String(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("wanted", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversation_id", "reason"),
    )
    op.create_index("ix_review_queue_status_priority", "review_queue", ["status", "priority"])
    # Conversations that already have traces get their rows: the same fold every commit applies.
    from cxstack.store.outcomes import rebuild_outcomes

    rebuild_outcomes(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_review_queue_status_priority", table_name="review_queue")
    op.drop_table("review_queue")
    op.drop_table("judge_versions")
    op.drop_index("ix_judgements_judge_version", table_name="judgements")
    op.drop_index("ix_judgements_conversation_id", table_name="judgements")
    op.drop_table("judgements")
    op.drop_index("ix_reviews_created_at", table_name="reviews")
    op.drop_index("ix_reviews_conversation_id", table_name="reviews")
    op.drop_table("reviews")
    for column in ("offered_at", "intent", "started_at"):
        op.drop_index(f"ix_conversation_outcomes_{column}", table_name="conversation_outcomes")
    op.drop_table("conversation_outcomes")
