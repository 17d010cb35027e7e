"""Changes to a policy (extend, raise, cancel) as priced, sent on-chain and applied

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money, UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_change",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("policy_id", sa.Integer, sa.ForeignKey("policy.id"), nullable=False),
        sa.Column("user_id", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("from_terms", sa.String(66), nullable=False),
        sa.Column("terms_hash", sa.String(66), nullable=False, unique=True),
        sa.Column("coverage", Money(), nullable=False),
        sa.Column("payout", Money(), nullable=False),
        sa.Column("end_at", UTCDateTime(), nullable=False),
        sa.Column("new_premium", Money(), nullable=False),
        sa.Column("credit", Money(), nullable=False),
        sa.Column("charge", Money(), nullable=False),
        sa.Column("refund", Money(), nullable=False),
        sa.Column("quote_id", sa.String(32), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
    )
    op.create_index("ix_policy_change_policy_id", "policy_change", ["policy_id"])
    op.create_index("ix_policy_change_user_id", "policy_change", ["user_id"])
    op.create_index("ix_policy_change_state", "policy_change", ["state"])


def downgrade() -> None:
    op.drop_table("policy_change")
