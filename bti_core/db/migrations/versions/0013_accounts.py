"""Linked exchange accounts: read-only keys kept encrypted, the positions the exchange reports
for them, and each position's changes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_account",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(40), nullable=False),
        sa.Column("exchange", sa.String(20), nullable=False),
        sa.Column("label", sa.String(40), nullable=False),
        sa.Column("account_uid", sa.String(40), nullable=False),
        sa.Column("linked_uid", sa.String(64), nullable=True, unique=True),
        sa.Column("key_hint", sa.String(8), nullable=False),
        sa.Column("key_cipher", sa.String(1000), nullable=False),
        sa.Column("secret_cipher", sa.String(1000), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
    )
    op.create_index("ix_exchange_account_username", "exchange_account", ["username"])

    op.create_table(
        "exchange_position",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("side", sa.String(5), nullable=False),
        sa.Column("size", Money(), nullable=False),
        sa.Column("entry_price", Money(), nullable=False),
        sa.Column("mark_price", Money(), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("margin_mode", sa.String(8), nullable=False),
        sa.Column("margin", Money(), nullable=False),
        sa.Column("liquidation_price", Money(), nullable=True),
        sa.Column("adl_quantile", sa.Integer(), nullable=True),
        sa.Column("exchange_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("account_id", "symbol", "side"),
    )
    op.create_index("ix_exchange_position_account_id", "exchange_position", ["account_id"])

    op.create_table(
        "position_change",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("position_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("change", sa.String(12), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=False),
    )
    op.create_index("ix_position_change_position_id", "position_change", ["position_id"])


def downgrade() -> None:
    op.drop_table("position_change")
    op.drop_table("exchange_position")
    op.drop_table("exchange_account")
