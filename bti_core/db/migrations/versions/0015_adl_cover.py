"""Auto-deleveraging cover: a policy names the peril it pays for (liquidation, or ADL)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy") as b:
        b.add_column(
            sa.Column("peril", sa.String(12), nullable=False, server_default="liquidation")
        )


def downgrade() -> None:
    with op.batch_alter_table("policy") as b:
        b.drop_column("peril")
