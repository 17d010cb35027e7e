"""policy: on-chain purchase (wallet, terms hash, chain policy id, tx hash, payment deadline)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy") as batch:  # batch: SQLite rebuilds the table
        batch.add_column(sa.Column("wallet", sa.String(length=42), nullable=True))
        batch.add_column(sa.Column("terms_hash", sa.String(length=66), nullable=True))
        batch.add_column(sa.Column("chain_policy_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tx_hash", sa.String(length=66), nullable=True))
        batch.add_column(sa.Column("pay_deadline", UTCDateTime(), nullable=True))
        batch.create_unique_constraint("uq_policy_terms_hash", ["terms_hash"])
        batch.create_index("ix_policy_chain_policy_id", ["chain_policy_id"])


def downgrade() -> None:
    with op.batch_alter_table("policy") as batch:
        batch.drop_index("ix_policy_chain_policy_id")
        batch.drop_constraint("uq_policy_terms_hash", type_="unique")
        for col in ("pay_deadline", "tx_hash", "chain_policy_id", "terms_hash", "wallet"):
            batch.drop_column(col)
