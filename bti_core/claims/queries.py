"""Read models of claims for the pages (queries only; they never write)."""

from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bti_core.db.engine import session_scope
from bti_core.db.models import Claim, Policy


def review_queue(
    db: Engine, *, states: list[str] | None = None, symbol: str | None = None
) -> pd.DataFrame:
    """Claims for review, soonest due and largest first."""
    with session_scope(db) as s:
        stmt = select(Claim, Policy).where(Claim.policy_id == Policy.id)
        if states:
            stmt = stmt.where(col(Claim.state).in_(states))
        if symbol:
            stmt = stmt.where(Policy.symbol == symbol)
        rows = s.exec(stmt).all()
    far = pd.Timestamp.max.tz_localize("UTC")
    df = pd.DataFrame(
        [
            {
                "claim": c.id,
                "state": c.state,
                "due": c.due_at,
                "amount": float(c.amount_claimed),
                "approved": None if c.amount_approved is None else float(c.amount_approved),
                "symbol": p.symbol,
                "side": p.side,
                "leverage": float(p.leverage),
                "trader": c.user_id,
                "source": c.source,
                "opened": c.opened_at,
                "policy": p.id,
            }
            for c, p in rows
        ],
        columns=[
            "claim",
            "state",
            "due",
            "amount",
            "approved",
            "symbol",
            "side",
            "leverage",
            "trader",
            "source",
            "opened",
            "policy",
        ],
    )
    if df.empty:
        return df
    key = df["due"].map(lambda d: far if d is None or pd.isna(d) else pd.Timestamp(d))
    return (
        df.assign(_k=key).sort_values(["_k", "amount"], ascending=[True, False]).drop(columns="_k")
    )


def claims_of(db: Engine, *, user_id: str) -> list[Claim]:
    with session_scope(db) as s:
        stmt = select(Claim).where(Claim.user_id == user_id).order_by(col(Claim.id).desc())
        return list(s.exec(stmt).all())
