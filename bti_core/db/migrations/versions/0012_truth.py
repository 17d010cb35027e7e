"""Money moves only on the truth: demo accounts marked, sign-in attempts counted, one-time
session tickets (the cookie is set by the server), alerts seen per user, and liquidations a
stream saw but nothing confirmed yet, held

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# the demo accounts the dashboard made before they were marked (their passwords are published)
_DEMO = {"trader": "trader-demo", "underwriter": "underwriter-demo"}


def upgrade() -> None:
    with op.batch_alter_table("app_user") as b:
        b.add_column(sa.Column("demo", sa.Boolean(), nullable=False, server_default=sa.false()))
    conn = op.get_bind()
    import bcrypt

    users = sa.table(
        "app_user", sa.column("username"), sa.column("password_hash"), sa.column("demo")
    )
    for name, hashed in conn.execute(
        sa.select(users.c.username, users.c.password_hash).where(users.c.username.in_(list(_DEMO)))
    ).all():
        try:
            published = bcrypt.checkpw(_DEMO[name].encode(), hashed.encode())
        except ValueError:
            published = False
        if published:
            conn.execute(users.update().where(users.c.username == name).values(demo=True))

    op.create_table(
        "sign_in_attempt",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("client", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
    )
    for c in ("username", "client", "at"):
        op.create_index(f"ix_sign_in_attempt_{c}", "sign_in_attempt", [c])

    op.create_table(
        "session_ticket",
        sa.Column("ticket_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
    )

    op.create_table(
        "alert_seen",
        sa.Column("alert_id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    # each acknowledgement so far becomes its acknowledger's own
    op.execute(
        "INSERT INTO alert_seen (alert_id, user_id, at) SELECT id, acknowledged_by, "
        "acknowledged_at FROM alert WHERE acknowledged_at IS NOT NULL "
        "AND acknowledged_by IS NOT NULL"
    )

    op.create_table(
        "held_trigger",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("stream", sa.String(120), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("price", Money(), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=True),
        sa.Column("claim_id", sa.Integer(), nullable=True),
        sa.UniqueConstraint("policy_id", "stream", "at"),
    )
    op.create_index("ix_held_trigger_policy_id", "held_trigger", ["policy_id"])
    op.create_index("ix_held_trigger_state", "held_trigger", ["state"])


def downgrade() -> None:
    op.drop_index("ix_held_trigger_state", table_name="held_trigger")
    op.drop_index("ix_held_trigger_policy_id", table_name="held_trigger")
    op.drop_table("held_trigger")
    op.drop_table("alert_seen")
    op.drop_table("session_ticket")
    for c in ("username", "client", "at"):
        op.drop_index(f"ix_sign_in_attempt_{c}", table_name="sign_in_attempt")
    op.drop_table("sign_in_attempt")
    with op.batch_alter_table("app_user") as b:
        b.drop_column("demo")
