"""Expiry: ended policies without a liquidation expire and their cover is released (the
worker's job; pages never call it)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pandas as pd
from sqlmodel import col, select

from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import ExchangePosition, Policy, PositionChange
from bti_core.db.repository import active_policies, held_triggers
from bti_core.db.statuses import HoldState, Peril, PolicyStatus, PositionState
from bti_core.errors import BTIError, ChainError
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.triggers import Insured, Series, find_triggers
from bti_core.policies.context import PolicyContext
from bti_core.policies.lifecycle import FILING_PERIOD, LifecycleEvent, move_policy
from bti_core.policies.purchase import Purchases

log = logging.getLogger("bti.policies")
EXPIRY_DATA_GRACE = timedelta(days=1)  # how long an ended policy waits for market data


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class Expiry:
    """Expires ended policies and releases their cover through ``purchases``."""

    def __init__(self, ctx: PolicyContext, purchases: Purchases) -> None:
        self.ctx = ctx
        self.purchases = purchases

    def _awaits_claim(self, p: Policy, now: datetime) -> bool:
        """Whether an ended policy must stay open for the claims: its stored mark bars prove
        its liquidation price reached inside the window (`market.triggers`), a stream's
        crossing of it is held for the bars to settle, or the market data does not yet cover
        the window's end — each waited for at most ``EXPIRY_DATA_GRACE``."""
        if now >= p.end_at + EXPIRY_DATA_GRACE:
            return False
        if p.peril == Peril.ADL.value:
            return self._adl_recorded(p)
        wh = self.ctx.risk.warehouse
        series: list[Series] = []
        covered = False
        try:
            for tf in wh.timeframes(p.symbol, Kind.MARK):
                mark = wh.query(
                    Kind.MARK,
                    p.symbol,
                    tf,
                    pd.Timestamp(p.start_at) - pd.Timedelta(hours=1),
                    pd.Timestamp(p.end_at) + pd.Timedelta(hours=1),
                )
                series.append(Series(tf, mark))
                last_bar = wh.latest(Kind.MARK, p.symbol, tf)["ts"]
                covered |= pd.Timestamp(last_bar) + timeframe_delta(tf) >= pd.Timestamp(p.end_at)
        except (BTIError, IndexError):
            return True
        insured = Insured(
            p.id or 0, p.side, float(p.liquidation_price), p.liquidations_from, p.end_at
        )
        if find_triggers([insured], series):
            return True
        with session_scope(self.ctx.db) as s:
            if any(h.state == HoldState.HELD for h in held_triggers(s, p.id or 0)):
                return True
        return not covered

    def _adl_recorded(self, p: Policy) -> bool:
        """Whether an ended ADL policy's position was reduced or closed inside the window and
        the exchange has (or cannot say whether it has) an ADL of it then: the claims'
        `scan_adl` opens the claim."""
        accounts = self.ctx.accounts
        if accounts is None or p.position_id is None:
            return False
        with session_scope(self.ctx.db) as s:
            pos = s.get(ExchangePosition, p.position_id)
            changed = s.exec(
                select(PositionChange.id).where(
                    PositionChange.position_id == p.position_id,
                    col(PositionChange.change).in_(["reduced", "closed"]),
                    PositionChange.at >= p.start_at,
                )
            ).first()
        if pos is None or changed is None:
            return False
        try:
            orders = accounts.reader(pos.account_id).forced_orders(
                p.symbol, "adl", _ms(p.start_at), _ms(p.end_at)
            )
        except BTIError:
            return True  # asked again next round, within the grace
        return any(o.side == p.side for o in orders)

    def end_closed(self) -> int:
        """End the cover of active linked policies whose position the trader closed on the
        exchange (`policies.positions`' terms: no refund); returns how many ended. The window
        ends at the closing, so no later move of the mark is a claim on it. A closing the
        exchange forced against the peril insured (its liquidation record, or its ADL record
        for ADL cover, in the window) is the claims' to judge, and an
        exchange that cannot be read is asked again next round: neither ends anything."""
        accounts = self.ctx.accounts
        if accounts is None:
            return 0
        with session_scope(self.ctx.db) as s:
            closed = s.exec(
                select(Policy, ExchangePosition).where(
                    Policy.position_id == ExchangePosition.id,
                    Policy.status == PolicyStatus.ACTIVE.value,
                    ExchangePosition.status == PositionState.CLOSED.value,
                )
            ).all()
        ending: dict[int, datetime] = {}
        for policy, pos in closed:
            at = pos.closed_at or self.ctx.clock()
            try:
                forced = accounts.reader(pos.account_id).forced_orders(
                    policy.symbol,
                    "adl" if policy.peril == Peril.ADL.value else "liquidation",
                    _ms(policy.start_at),
                    _ms(at) + 60_000,
                )
            except BTIError as exc:
                log.info("policy %s: the exchange cannot tell how it closed: %s", policy.id, exc)
                continue
            if not any(o.side == policy.side for o in forced):
                ending[policy.id or 0] = max(policy.start_at, min(at, policy.end_at))
        done: list[Policy] = []
        with write_scope(self.ctx.db) as s:
            for pid, at in ending.items():
                fresh = s.get(Policy, pid)
                if fresh is None or fresh.status != PolicyStatus.ACTIVE:
                    continue
                detail = {
                    "reason": "the position was closed on the exchange",
                    "closed_at": at.isoformat(),
                    "window_end": fresh.end_at.isoformat(),
                }
                fresh.end_at = at
                move_policy(s, policy=fresh, event=LifecycleEvent.EXPIRE, detail=detail)
                done.append(fresh)
        self._release(done)  # closed by the trader: no liquidation left to claim
        return len(done)

    def _release(self, done: list[Policy]) -> None:
        if self.ctx.chain is not None:
            for p in done:
                if p.chain_policy_id is not None:
                    try:
                        self.purchases.release(p)
                    except ChainError as exc:  # reconcile retries it
                        log.warning("releasing the cover of policy %s failed: %s", p.id, exc)

    def expire_due(self) -> int:
        """Mark active policies whose window has ended without a liquidation as expired and
        release their cover on-chain once the filing period for late claims is over
        (`FILING_PERIOD`; `reconcile` releases the rest then); returns how many expired. A
        policy whose mark reached its liquidation price stays active for the claims scan. (A
        release that fails, node down, is retried by `reconcile`.)"""
        now = self.ctx.clock()
        done: list[Policy] = []
        with session_scope(self.ctx.db) as s:
            due = [p for p in active_policies(s) if p.end_at <= now]
        due = [p for p in due if not self._awaits_claim(p, now)]
        with write_scope(self.ctx.db) as s:
            for p in due:
                fresh = s.get(Policy, p.id)
                if fresh is not None and fresh.status == PolicyStatus.ACTIVE:
                    move_policy(s, policy=fresh, event=LifecycleEvent.EXPIRE)
                    done.append(fresh)
        # a claim may still be filed for a while: the cover stays locked until then
        # (`reconcile` releases it once the filing period is over)
        self._release([p for p in done if p.end_at + FILING_PERIOD <= now])
        return len(done)
