"""quote: the learned model a quote consulted and its probability

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quote") as batch:
        batch.add_column(sa.Column("ml_probability", sa.Float(), nullable=True))
        batch.add_column(sa.Column("model_id", sa.String(120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quote") as batch:
        batch.drop_column("model_id")
        batch.drop_column("ml_probability")
