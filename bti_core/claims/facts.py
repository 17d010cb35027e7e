"""What the automatic audit of a claim is told: the policy, the claim's evidence and the
trader's history, read from the database and the warehouse (reads only; never inside the
write transaction that decides, since fitting the risk engine can take seconds)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bti_core.claims.checks import ClaimFacts, PolicyFacts, TraderFacts
from bti_core.claims.records import ClaimError
from bti_core.db.models import Claim, IngestRun, Policy
from bti_core.db.statuses import PolicyStatus
from bti_core.errors import BTIError
from bti_core.market.schema import FEED_SOURCE_PREFIX, Kind, timeframe_delta
from bti_core.market.triggers import Series
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine


class Evidence:
    """Market bars and audit facts for claims."""

    def __init__(
        self,
        warehouse: Warehouse,
        risk: RiskEngine | None,
        clock: Callable[[], datetime],
        db: Engine | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.risk = risk
        self.clock = clock
        self.db = db  # the import runs, for where each stored bar came from

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

    def series(self, symbol: str, start: datetime, end: datetime) -> list[Series]:
        """Every stored mark series of ``symbol`` between ``start`` and ``end`` (with its
        last-price bars), for the proofs of `market.triggers`; none where nothing is stored."""
        try:
            tfs = self.mark_timeframes(symbol)
        except BTIError:
            return []
        out = []
        for tf in tfs:
            try:
                mark, last = self.bars(symbol, start, end, tf)
            except BTIError:
                continue
            mark = mark[~self._fed(symbol, tf, mark)].reset_index(drop=True)
            if len(mark):
                out.append(Series(tf, mark, last))
        return out

    def _fed(self, symbol: str, timeframe: str, mark: pd.DataFrame) -> np.ndarray:
        """Which of ``mark``'s bars a live feed wrote from its own ticks and no import has
        replaced since (the newest import run covering a bar says where its values are from):
        they prove nothing, so a feed never confirms its own tick."""
        fed = np.zeros(len(mark), dtype=bool)
        if self.db is None or not len(mark):
            return fed
        lo, hi = pd.Timestamp(mark["ts"].iloc[0]), pd.Timestamp(mark["ts"].iloc[-1])
        with Session(self.db) as s:
            runs = s.exec(
                select(IngestRun.source, IngestRun.first_ts, IngestRun.last_ts)
                .where(
                    IngestRun.symbol == symbol,
                    IngestRun.kind == str(Kind.MARK),
                    IngestRun.timeframe == timeframe,
                    col(IngestRun.first_ts) <= hi.to_pydatetime(),
                    col(IngestRun.last_ts) >= lo.to_pydatetime(),
                )
                .order_by(col(IngestRun.created_at), col(IngestRun.id))
            ).all()
        if not any(src.startswith(FEED_SOURCE_PREFIX) for src, _, _ in runs):
            return fed
        ts = pd.DatetimeIndex(pd.to_datetime(mark["ts"], utc=True)).as_unit("ns").asi8
        for src, first, last in runs:  # oldest first: a later run's values replaced these
            if first is None or last is None:
                continue
            inside = (ts >= pd.Timestamp(first).value) & (ts <= pd.Timestamp(last).value)
            fed[inside] = src.startswith(FEED_SOURCE_PREFIX)
        return fed

    def facts(
        self, s: Session, claim: Claim, policy: Policy
    ) -> tuple[PolicyFacts, ClaimFacts, TraderFacts]:
        return self.facts_many(s, [claim], {policy.id or 0: policy})[0]

    def facts_many(
        self, s: Session, claims: Sequence[Claim], policies: dict[int, Policy]
    ) -> list[tuple[PolicyFacts, ClaimFacts, TraderFacts]]:
        """The audit's facts of each claim (``policies``: id → policy, covering the claims'),
        with one read per symbol of the bars before purchase and one per table of the
        traders' histories, however many claims (a crash opens thousands at once)."""
        before = self._pre_purchase_bars([policies[c.policy_id] for c in claims])
        users = sorted({c.user_id for c in claims} | {p.user_id for p in policies.values()})
        their_claims: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
        their_policies: dict[str, list[tuple[int, datetime, float]]] = defaultdict(list)
        for i in range(0, len(users), 500):
            chunk = users[i : i + 500]
            for cid, uid, opened in s.exec(
                select(Claim.id, Claim.user_id, Claim.opened_at).where(
                    col(Claim.user_id).in_(chunk)
                )
            ).all():
                their_claims[uid].append((cid or 0, opened))
            for pid, uid, start, lev in s.exec(
                select(col(Policy.id), Policy.user_id, Policy.start_at, col(Policy.leverage)).where(
                    col(Policy.user_id).in_(chunk), Policy.status != PolicyStatus.DECLINED.value
                )
            ).all():
                their_policies[uid].append((pid or 0, start, float(lev)))
        month_ago = self.clock() - timedelta(days=30)
        out = []
        for claim in claims:
            policy = policies[claim.policy_id]
            pf = policy_facts(policy)
            move = distance = None
            closes = before.get(policy.id or 0)
            if closes is not None and len(closes) >= 2:
                c0, c_prev = float(closes[-1]), float(closes[0])
                sign = 1 if policy.side == "long" else -1
                move = sign * (c_prev - c0) / c0
                distance = abs(c0 - float(policy.liquidation_price)) / c0
            cf = ClaimFacts.of(
                claim.source,
                claim.trigger_at,
                claim.evidence,
                pre_purchase_move=move,
                distance_at_purchase=distance,
            )
            others = [t for cid, t in their_claims[claim.user_id] if cid != claim.id]
            earlier = [
                lev
                for pid, start, lev in their_policies[policy.user_id]
                if pid != policy.id and start < policy.start_at
            ]
            tf = TraderFacts(
                claims_last_30d=sum(t >= month_ago for t in others),
                earlier_claims=len(others),
                earlier_leverages=tuple(earlier),
                shared_owner_with=self._shared_owners(s, claim, policy),
            )
            out.append((pf, cf, tf))
        return out

    def _pre_purchase_bars(self, policies: Sequence[Policy]) -> dict[int, np.ndarray]:
        """Per policy, the closes of the bars of the 25 hours before its purchase that had
        closed by then (the hour in progress holds later prices), read once per symbol and
        series."""
        groups: dict[tuple[str, str], list[Policy]] = defaultdict(list)
        for p in policies:
            try:
                groups[
                    (p.symbol, self.series_at(p.symbol, p.start_at - timedelta(hours=25)))
                ].append(p)
            except BTIError:
                continue
        out: dict[int, np.ndarray] = {}
        for (symbol, series), mine in groups.items():
            lo = min(p.start_at for p in mine) - timedelta(hours=25)
            hi = max(p.start_at for p in mine)
            try:
                bars, _ = self.bars(symbol, lo, hi, series)
            except BTIError:
                continue
            step = timeframe_delta(series)
            opens = pd.DatetimeIndex(pd.to_datetime(bars["ts"], utc=True))
            closes_at = (opens + step).as_unit("ns").asi8
            opens_ns = opens.as_unit("ns").asi8
            close = bars["close"].to_numpy(dtype=float)
            for p in mine:
                t0 = pd.Timestamp(p.start_at - timedelta(hours=25)).value
                t1 = pd.Timestamp(p.start_at).value
                keep = (opens_ns >= t0) & (opens_ns <= t1) & (closes_at <= t1)
                out[p.id or 0] = close[keep]
        return out

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

    def probability_before_trigger(
        self, claim: Claim, policy: Policy, cache: dict[str, Any] | None = None
    ) -> float | None:
        """The engine's P(reaching LP in the window's remaining time) from the mark close of
        the bar before the trigger (the engine's current paths; evidence for the reviewer).
        ``cache`` keeps each symbol's engine across the claims of one batch."""
        if self.risk is None:
            return None
        bars = [b for b in claim.evidence.get("bars", []) if b.get("close") is not None]
        before = [b for b in bars if pd.Timestamp(b["ts"]) < pd.Timestamp(claim.trigger_at)]
        if not before:
            return None
        spot = float(before[-1]["close"])
        hours = (policy.end_at - claim.trigger_at).total_seconds() / 3600
        try:
            sr = (cache or {}).get(policy.symbol) or self.risk.symbol_risk(policy.symbol)
            if cache is not None:
                cache[policy.symbol] = sr
            hours = min(max(hours, 1.0), float(sr.table.horizons[-1]))
            lp = float(policy.liquidation_price)
            side = 1 if policy.side == "long" else -1
            p, _ = sr.table.probability(np.log(lp / spot), hours, side)
        except (BTIError, ValueError):
            return None
        return float(p)


def policy_facts(p: Policy) -> PolicyFacts:
    """What the audit reads of a policy."""
    return PolicyFacts(
        side=p.side,
        symbol=p.symbol,
        quantity=float(p.quantity),
        entry_price=float(p.entry_price),
        leverage=float(p.leverage),
        liquidation_price=float(p.liquidation_price),
        start=p.liquidations_from,
        end=p.end_at,
        bought=p.start_at,
        probability=p.probability,
        risk_index=p.risk_index,
    )
