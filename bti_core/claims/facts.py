"""What the automatic audit of a claim is told: the policy, the claim's evidence and the
trader's history, read from the database and the warehouse (reads only; never inside the
write transaction that decides, since fitting the risk engine can take seconds)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlmodel import Session, select

from bti_core.claims.checks import ClaimFacts, PolicyFacts, TraderFacts
from bti_core.claims.records import ClaimError
from bti_core.db.models import Claim, Policy
from bti_core.errors import BTIError
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine


class Evidence:
    """Market bars and audit facts for claims."""

    def __init__(
        self, warehouse: Warehouse, risk: RiskEngine | None, clock: Callable[[], datetime]
    ) -> None:
        self.warehouse = warehouse
        self.risk = risk
        self.clock = clock

    def mark_timeframes(self, symbol: str) -> list[str]:
        """The stored mark-price timeframes, finest first (a replay adds 1m bars beside the
        hourly series)."""
        tfs = self.warehouse.timeframes(symbol, Kind.MARK)
        if not tfs:
            raise ClaimError(f"no mark-price data for {symbol}: claims are judged on the mark")
        return tfs

    def series_at(self, symbol: str, at: datetime) -> str:
        """The finest stored series whose bars hold the time ``at`` (a replay's minutes hold
        only their stretch); else the series with the longest history."""
        t = pd.Timestamp(at)
        tfs = self.mark_timeframes(symbol)
        spans: list[tuple[str, pd.Timestamp, pd.Timestamp]] = []
        for tf in tfs:
            ds = self.warehouse.dataset(Kind.MARK, symbol, tf)
            if ds is not None and ds.first is not None and ds.last is not None:
                spans.append((tf, ds.first, ds.last + timeframe_delta(tf)))
        for tf, first, end in spans:  # finest first
            if first <= t < end:
                return tf
        return min(spans, key=lambda sp: sp[1])[0] if spans else tfs[0]

    def bars(
        self, symbol: str, start: datetime, end: datetime, timeframe: str | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Mark and last-price bars of ``timeframe`` (default: the finest holding ``start``)."""
        tf = timeframe or self.series_at(symbol, start)
        t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
        mark = self.warehouse.query(Kind.MARK, symbol, tf, t0, t1)
        try:
            last = self.warehouse.query(Kind.OHLCV, symbol, tf, t0, t1)
        except BTIError:
            last = pd.DataFrame(columns=["ts", "high", "low", "close"])
        return mark, last

    def facts(
        self, s: Session, claim: Claim, policy: Policy
    ) -> tuple[PolicyFacts, ClaimFacts, TraderFacts]:
        pf = PolicyFacts(
            side=policy.side,
            symbol=policy.symbol,
            quantity=float(policy.quantity),
            entry_price=float(policy.entry_price),
            leverage=float(policy.leverage),
            liquidation_price=float(policy.liquidation_price),
            start=policy.start_at,
            end=policy.end_at,
            probability=policy.probability,
            risk_index=policy.risk_index,
        )
        move = distance = None
        try:
            t0 = policy.start_at - timedelta(hours=25)
            series = self.series_at(policy.symbol, t0)
            before, _ = self.bars(policy.symbol, t0, policy.start_at, series)
            # only bars that had closed at the purchase (the hour in progress holds later prices)
            closed = pd.DatetimeIndex(before["ts"]) + timeframe_delta(series) <= pd.Timestamp(
                policy.start_at
            )
            before = before[closed]
            if len(before) >= 2:
                c0, c_prev = float(before["close"].iloc[-1]), float(before["close"].iloc[0])
                sign = 1 if policy.side == "long" else -1
                move = sign * (c_prev - c0) / c0
                distance = abs(c0 - float(policy.liquidation_price)) / c0
        except BTIError:
            pass
        ev = claim.evidence
        cf = ClaimFacts(
            source=claim.source,
            trigger_at=claim.trigger_at,
            bars=list(ev.get("bars", [])),
            record=ev.get("record"),
            pre_purchase_move=move,
            distance_at_purchase=distance,
        )
        month_ago = self.clock() - timedelta(days=30)
        others = s.exec(
            select(Claim).where(Claim.user_id == claim.user_id, Claim.id != claim.id)
        ).all()
        earlier = s.exec(
            select(Policy).where(
                Policy.user_id == policy.user_id,
                Policy.id != policy.id,
                Policy.start_at < policy.start_at,
                Policy.status != "declined",
            )
        ).all()
        tf = TraderFacts(
            claims_last_30d=sum(c.opened_at >= month_ago for c in others),
            earlier_claims=len(others),
            earlier_leverages=tuple(float(p.leverage) for p in earlier),
            shared_owner_with=self._shared_owners(s, claim, policy),
        )
        return pf, cf, tf

    def _shared_owners(self, s: Session, claim: Claim, policy: Policy) -> tuple[str, ...]:
        """Other traders who paid from this policy's wallet, or whose filed records name the
        same exchange account as this claim's record (one owner, many accounts)."""
        users: set[str] = set()
        if policy.wallet:
            same_wallet = s.exec(
                select(Policy.user_id).where(
                    Policy.wallet == policy.wallet, Policy.user_id != policy.user_id
                )
            ).all()
            users.update(same_wallet)
        account = (claim.evidence.get("record") or {}).get("account")
        if account:
            filed = s.exec(
                select(Claim).where(Claim.source == "trader", Claim.user_id != claim.user_id)
            ).all()
            users.update(
                c.user_id
                for c in filed
                if (c.evidence.get("record") or {}).get("account") == account
            )
        return tuple(sorted(users))

    def probability_before_trigger(self, claim: Claim, policy: Policy) -> float | None:
        """The engine's P(reaching LP in the window's remaining time) from the mark close of
        the bar before the trigger (the engine's current paths; evidence for the reviewer)."""
        if self.risk is None:
            return None
        bars = [b for b in claim.evidence.get("bars", []) if b.get("close") is not None]
        before = [b for b in bars if pd.Timestamp(b["ts"]) < pd.Timestamp(claim.trigger_at)]
        if not before:
            return None
        spot = float(before[-1]["close"])
        hours = (policy.end_at - claim.trigger_at).total_seconds() / 3600
        try:
            sr = self.risk.symbol_risk(policy.symbol)
            hours = min(max(hours, 1.0), float(sr.table.horizons[-1]))
            lp = float(policy.liquidation_price)
            side = 1 if policy.side == "long" else -1
            p, _ = sr.table.probability(np.log(lp / spot), hours, side)
        except (BTIError, ValueError):
            return None
        return float(p)
