"""quote, policy, policy_event: priced offers, insured orders and their lifecycle log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quote",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("liquidation_price", Money(), nullable=False),
        sa.Column("spot", Money(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("probability_se", sa.Float(), nullable=False),
        sa.Column("baseline_probability", sa.Float(), nullable=False),
        sa.Column("risk_index", sa.Float(), nullable=False),
        sa.Column("risk_breakdown", sa.JSON(), nullable=False),
        sa.Column("payout", Money(), nullable=False),
        sa.Column("premium", Money(), nullable=False),
        sa.Column("premium_breakdown", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
    )
    op.create_index("ix_quote_user_id", "quote", ["user_id"])
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("quote_id", sa.String(length=32), sa.ForeignKey("quote.id"), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("quantity", Money(), nullable=False),
        sa.Column("entry_price", Money(), nullable=False),
        sa.Column("leverage", Money(), nullable=False),
        sa.Column("margin_mode", sa.String(length=10), nullable=False),
        sa.Column("order_type", sa.String(length=10), nullable=False),
        sa.Column("margin", Money(), nullable=False),
        sa.Column("liquidation_price", Money(), nullable=False),
        sa.Column("coverage", Money(), nullable=False),
        sa.Column("share", Money(), nullable=False),
        sa.Column("deductible", Money(), nullable=False),
        sa.Column("payout", Money(), nullable=False),
        sa.Column("premium", Money(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("risk_index", sa.Float(), nullable=False),
        sa.Column("start_at", UTCDateTime(), nullable=False),
        sa.Column("end_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("quote_id"),
    )
    for col in ("user_id", "symbol", "end_at", "status"):
        op.create_index(f"ix_policy_{col}", "policy", [col])
    op.create_table(
        "policy_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policy.id"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_policy_event_policy_id", "policy_event", ["policy_id"])


def downgrade() -> None:
    op.drop_table("policy_event")
    for col in ("user_id", "symbol", "end_at", "status"):
        op.drop_index(f"ix_policy_{col}", table_name="policy")
    op.drop_table("policy")
    op.drop_index("ix_quote_user_id", table_name="quote")
    op.drop_table("quote")
