"""claim, claim_audit (hash-chained) and its head, app_user (sign-in)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from bti_core.db.types import Money, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claim",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.Integer(), sa.ForeignKey("policy.id"), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("appealed", sa.Boolean(), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("trigger_at", UTCDateTime(), nullable=False),
        sa.Column("trigger_price", Money(), nullable=False),
        sa.Column("liquidation_price", Money(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("amount_claimed", Money(), nullable=False),
        sa.Column("amount_approved", Money(), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=80), nullable=True),
        sa.Column("decision_reason", sa.String(length=2000), nullable=True),
        sa.Column("claim_ref", sa.String(length=66), nullable=False),
        sa.Column("payout_tx", sa.String(length=66), nullable=True),
        sa.Column("paid_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("policy_id", name="uq_claim_policy_id"),
    )
    for col in ("user_id", "state", "due_at"):
        op.create_index(f"ix_claim_{col}", "claim", [col])
    op.create_table(
        "claim_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("claim_id", sa.Integer(), sa.ForeignKey("claim.id"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("event", sa.String(length=24), nullable=False),
        sa.Column("from_state", sa.String(length=12), nullable=True),
        sa.Column("to_state", sa.String(length=12), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_claim_audit_claim_id", "claim_audit", ["claim_id"])
    op.create_table(
        "claim_audit_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "claim_audit_head",
            sa.column("id", sa.Integer()),
            sa.column("last_id", sa.Integer()),
            sa.column("last_hash", sa.String()),
        ),
        [{"id": 1, "last_id": 0, "last_hash": "0" * 64}],
    )
    op.create_table(
        "app_user",
        sa.Column("username", sa.String(length=40), primary_key=True),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("email", sa.String(length=120), nullable=False),
        sa.Column("role", sa.String(length=12), nullable=False),
        sa.Column("password_hash", sa.String(length=80), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("app_user")
    op.drop_table("claim_audit_head")
    op.drop_index("ix_claim_audit_claim_id", table_name="claim_audit")
    op.drop_table("claim_audit")
    for col in ("user_id", "state", "due_at"):
        op.drop_index(f"ix_claim_{col}", table_name="claim")
    op.drop_table("claim")
