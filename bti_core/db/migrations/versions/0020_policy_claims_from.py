"""A continued cover's liquidations count from after the part already paid

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy") as t:
        t.add_column(sa.Column("claims_from", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy") as t:
        t.drop_column("claims_from")
