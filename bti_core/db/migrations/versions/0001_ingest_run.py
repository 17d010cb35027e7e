"""ingest_run: one row per import into the market warehouse, with its cleaning report

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("symbol", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("timeframe", sa.String(length=8), nullable=False),
        sa.Column("rows_in", sa.Integer(), nullable=False),
        sa.Column("rows_stored", sa.Integer(), nullable=False),
        sa.Column("rows_added", sa.Integer(), nullable=False),
        sa.Column("rows_updated", sa.Integer(), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("first_ts", UTCDateTime(), nullable=True),
        sa.Column("last_ts", UTCDateTime(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_index("ix_ingest_run_symbol", "ingest_run", ["symbol"])
    op.create_index("ix_ingest_run_created_at", "ingest_run", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_ingest_run_created_at", table_name="ingest_run")
    op.drop_index("ix_ingest_run_symbol", table_name="ingest_run")
    op.drop_table("ingest_run")
