"""policy.permit: the trader's own EIP-2612 permit of a purchase relayed by BTI

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy") as batch:
        batch.add_column(sa.Column("permit", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy") as batch:
        batch.drop_column("permit")
