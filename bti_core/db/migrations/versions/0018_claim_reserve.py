"""An open claim's reserve as booked in the pool

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("claim") as t:
        t.add_column(sa.Column("reserved", Money(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("claim") as t:
        t.drop_column("reserved")
