"""Reads for the pages: a trader's policies and a policy's lifecycle log (never writes)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import func
from sqlmodel import select

from bti_core.db.engine import session_scope
from bti_core.db.models import Policy, PolicyEvent, PositionChange
from bti_core.db.repository import policies_of, policy_events
from bti_core.db.statuses import OPEN_STATUSES, PolicyStatus
from bti_core.errors import BTIError
from bti_core.market.schema import canonical_symbol
from bti_core.policies.context import PolicyContext


class Listing:
    """The reads of the pages (never writes)."""

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    def newest_start(self, symbol: str) -> datetime | None:
        """When the newest active policy on ``symbol`` started (None: no active policy)."""
        with session_scope(self.ctx.db) as s:
            return s.exec(
                select(func.max(Policy.start_at)).where(
                    Policy.symbol == canonical_symbol(symbol),
                    Policy.status == PolicyStatus.ACTIVE.value,
                )
            ).one()

    def policies(self, user_id: str) -> pd.DataFrame:
        """The trader's policies with the distance from the current mark price to liquidation
        (a read: expiring ended policies is the worker's job)."""
        with session_scope(self.ctx.db) as s:
            pols = policies_of(s, user_id=user_id)
        rows = []
        for p in pols:
            try:
                spot = self.ctx.risk.spot(p.symbol)
            except BTIError:
                spot = float("nan")
            lp = float(p.liquidation_price)
            sign = 1 if p.side == "long" else -1
            rows.append(
                {
                    "policy": p.id,
                    "symbol": p.symbol,
                    "side": p.side,
                    "leverage": float(p.leverage),
                    "status": p.status,
                    "coverage": float(p.coverage),
                    "premium": float(p.premium),
                    "liquidation_price": lp,
                    "mark_price": spot,
                    # only an open policy can still be liquidated
                    "distance_to_liquidation": (
                        (sign * (spot - lp) / spot if lp > 0 else 1.0)
                        if p.status in OPEN_STATUSES
                        else None
                    ),
                    "start": p.start_at,
                    "end": p.end_at,
                    "probability_at_purchase": p.probability,
                    "risk_index": p.risk_index,
                    "chain_policy": p.chain_policy_id,
                    "purchase_tx": p.tx_hash,
                    "linked_position": p.position_id,  # a linked exchange position, or None
                    "peril": p.peril,  # liquidation, or adl (auto-deleveraging)
                }
            )
        return pd.DataFrame(rows)

    def events(self, policy_id: int) -> list[PolicyEvent]:
        """The policy's lifecycle; for cover on a linked position, with every change the
        exchange reported of the position since the purchase (``position reduced`` …)."""
        with session_scope(self.ctx.db) as s:
            events = list(policy_events(s, policy_id=policy_id))
            policy = s.get(Policy, policy_id)
            if policy is None or policy.position_id is None:
                return events
            changes = s.exec(
                select(PositionChange).where(
                    PositionChange.position_id == policy.position_id,
                    PositionChange.at >= policy.start_at,
                )
            ).all()
        events += [
            PolicyEvent(
                policy_id=policy_id,
                at=c.at,
                event=f"position {c.change}",
                detail={"before": c.before, "after": c.after},
            )
            for c in changes
        ]
        return sorted(events, key=lambda e: e.at)
