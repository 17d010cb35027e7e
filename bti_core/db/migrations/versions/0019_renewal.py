"""A trader's consent to renew a cover automatically

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money, UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "renewal",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.String(80), nullable=False),
        sa.Column("policy_id", sa.Integer, sa.ForeignKey("policy.id"), nullable=False),
        sa.Column("first_policy_id", sa.Integer, sa.ForeignKey("policy.id"), nullable=False),
        sa.Column("max_premium", Money(), nullable=False),
        sa.Column("times_left", sa.Integer, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("quote_id", sa.String(32), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_renewal_user_id", "renewal", ["user_id"])
    op.create_index("ix_renewal_policy_id", "renewal", ["policy_id"])
    op.create_index("ix_renewal_state", "renewal", ["state"])


def downgrade() -> None:
    op.drop_table("renewal")
