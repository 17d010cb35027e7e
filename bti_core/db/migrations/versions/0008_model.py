"""model: trained liquidation-probability models (their files and what their cards say)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model",
        sa.Column("id", sa.String(120), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("candidate", sa.String(40), nullable=False),
        sa.Column("uses_model", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("data_sha256", sa.String(64), nullable=False),
        sa.Column("data_start", UTCDateTime(), nullable=False),
        sa.Column("data_end", UTCDateTime(), nullable=False),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
    )
    op.create_index("ix_model_created_at", "model", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_model_created_at", table_name="model")
    op.drop_table("model")
