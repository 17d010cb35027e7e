"""Cover on a linked exchange position: the policy names the position it insures

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy") as b:
        b.add_column(sa.Column("position_id", sa.Integer(), nullable=True))
        b.create_index("ix_policy_position_id", ["position_id"])


def downgrade() -> None:
    with op.batch_alter_table("policy") as b:
        b.drop_index("ix_policy_position_id")
        b.drop_column("position_id")
