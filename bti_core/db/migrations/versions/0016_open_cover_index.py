"""The concentration caps' read from one covering index of the open book

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COLUMNS = ["status", "symbol", "side", "leverage", "liquidation_price", "coverage"]


def upgrade() -> None:
    op.create_index("ix_policy_open_cover", "policy", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_policy_open_cover", table_name="policy")
