"""alert and stream_checkpoint: the real-time pipeline's alerts (idempotent by key) and its
checkpoints (scoring state and source offset, written with the alerts they cover)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.String(80), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("message", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(80), nullable=True),
    )
    op.create_index("ix_alert_symbol", "alert", ["symbol"])
    op.create_index("ix_alert_policy_id", "alert", ["policy_id"])
    op.create_index("ix_alert_user_id", "alert", ["user_id"])
    op.create_index("ix_alert_at", "alert", ["at"])
    op.create_table(
        "stream_checkpoint",
        sa.Column("name", sa.String(120), primary_key=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_checkpoint")
    for ix in ("ix_alert_at", "ix_alert_user_id", "ix_alert_policy_id", "ix_alert_symbol"):
        op.drop_index(ix, table_name="alert")
    op.drop_table("alert")
