"""The embedded streaming engine (the default: no servers, run in-process).

A source gives ticks from an offset; each micro-batch is scored per symbol by
`bti_core.stream.scoring`, then:

1. every liquidation opens its claim through the claims service at the crossing tick, which
   audits, decides and — when approved automatically — pays it (a policy has one claim, so a
   batch processed again opens nothing new);
2. the batch's alerts and the checkpoint (each symbol's state and the new offset) are written
   in one transaction (`bti_core.stream.store`).

Killed before step 2, a restart processes the batch again from the last checkpoint: its claims
exist, its alerts are written once. Killed after it, the restart goes on from the new offset.

`ReplaySource` turns the warehouse's stored mark-price bars into ticks — each bar its open,
then its extremes in the order that reaches the close (low first on an up bar), then its close,
at a quarter of the bar apart — merged over the symbols in time order, so an offset names the
same tick on every run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlmodel import col, select

from bti_core.db.engine import session_scope
from bti_core.db.models import Policy
from bti_core.errors import BTIError
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.warehouse import Warehouse
from bti_core.stream.scoring import DEFAULT_RULES, Book, Event, Rules, SymbolState, score
from bti_core.stream.store import load_checkpoint, write_batch

if TYPE_CHECKING:
    from bti_core.services import Services


class ReplaySource:
    """Ticks from stored mark bars of ``symbols`` between ``start`` and ``end`` (module
    docstring)."""

    def __init__(
        self,
        warehouse: Warehouse,
        symbols: Sequence[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
        timeframe: str = "1h",
    ) -> None:
        parts = []
        step = int(timeframe_delta(timeframe).total_seconds() * 1000)
        for sym in symbols:
            bars = warehouse.bars(sym, timeframe, start, end, kind=Kind.MARK)
            if bars.empty:
                continue
            since_epoch = pd.to_datetime(bars["ts"], utc=True) - pd.Timestamp(0, tz="UTC")
            t0 = (since_epoch // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
            o, h, lo, c = (bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
            up = c >= o
            first = np.where(up, lo, h)
            second = np.where(up, h, lo)
            ts = np.stack([t0, t0 + step // 4, t0 + step // 2, t0 + 3 * step // 4], axis=1)
            px = np.stack([o, first, second, c], axis=1)
            parts.append((np.full(ts.size, sym, dtype=object), ts.ravel(), px.ravel()))
        if not parts:
            raise BTIError(f"no mark-price bars of {', '.join(symbols)} to replay in that range")
        names = np.concatenate([p[0] for p in parts])
        times = np.concatenate([p[1] for p in parts])
        prices = np.concatenate([p[2] for p in parts])
        order = np.lexsort((np.arange(len(times)), times))  # time; ties keep the symbols' order
        self.symbols: np.ndarray = names[order]
        self.ts: np.ndarray = times[order].astype(np.int64)
        self.price: np.ndarray = prices[order]

    def __len__(self) -> int:
        return len(self.ts)

    def read(self, offset: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sl = slice(offset, min(offset + limit, len(self.ts)))
        return self.symbols[sl], self.ts[sl], self.price[sl]


@dataclass
class BatchReport:
    offset: int
    ticks: int
    events: list[Event] = field(default_factory=list)
    claims: list[int] = field(default_factory=list)  # opened by this batch
    alerts: int = 0  # new alert rows


class EmbeddedEngine:
    """Score a source's ticks batch by batch into alerts and claims (module docstring)."""

    def __init__(
        self,
        services: Services,
        source: ReplaySource,
        *,
        name: str = "replay",
        rules: Rules = DEFAULT_RULES,
        batch: int = 10_000,
        before_commit: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.services = services
        self.source = source
        self.name = name
        self.rules = rules
        self.batch = batch
        self.before_commit = before_commit  # a hook for the kill tests

    def _fresh_state(self, symbol: str) -> SymbolState:
        fit = self.services.risk.symbol_risk(symbol).fit
        p = fit.params
        return SymbolState(symbol, p.omega, p.alpha, p.gamma, p.beta, float(fit.sigma2_next))

    def _book(self, symbol: str, first_ms: int, last_ms: int) -> tuple[Book, dict[int, str]]:
        """Every sold policy on ``symbol`` whose window overlaps the batch — claimed and paid
        ones too: a batch processed again after a crash must raise the same events (their
        claims exist, so nothing is paid twice; their alerts exist, so nothing is added)."""
        lo = datetime.fromtimestamp(first_ms / 1000, tz=UTC)
        hi = datetime.fromtimestamp(last_ms / 1000, tz=UTC)
        with session_scope(self.services.db) as s:
            pols = s.exec(
                select(Policy).where(
                    Policy.symbol == symbol,
                    col(Policy.status).in_(["active", "claimed", "paid", "expired"]),
                    Policy.end_at >= lo,
                    Policy.start_at <= hi,
                )
            ).all()
        rows = [
            {
                "policy": p.id,
                "side": 1 if p.side == "long" else -1,
                "liquidation": float(p.liquidation_price),
                "payout": float(p.payout),
                "start_ms": int(p.start_at.timestamp() * 1000),
                "end_ms": int(p.end_at.timestamp() * 1000),
                "probability0": p.probability,
                "risk_index0": p.risk_index,
            }
            for p in pols
        ]
        return Book.of(rows), {int(p.id or 0): p.user_id for p in pols}

    def step(self) -> BatchReport | None:
        """One micro-batch from the checkpoint; None when the source has no more ticks."""
        offset, saved = load_checkpoint(self.services.db, self.name)
        syms, ts, px = self.source.read(offset, self.batch)
        if len(ts) == 0:
            return None
        report = BatchReport(offset, len(ts))
        states = {k: SymbolState.from_json(v) for k, v in saved.items()}
        owners: dict[int, str] = {}
        for sym in dict.fromkeys(syms.tolist()):
            mine = syms == sym
            state = states.get(sym) or self._fresh_state(sym)
            book, who = self._book(sym, int(ts[mine][0]), int(ts[mine][-1]))
            owners.update(who)
            new, events, _ = score(state, book, ts[mine], px[mine], self.rules)
            states[sym] = new
            report.events += events
        report.events.sort(key=lambda e: (e.at_ms, e.symbol, e.kind))
        claims = self.services.claims
        for e in report.events:
            if e.kind != "liquidation" or e.policy is None:
                continue
            at = datetime.fromtimestamp(e.at_ms / 1000, tz=UTC)
            cid = claims.open_from_tick(e.policy, e.symbol, at, e.price, self.name)
            if cid is not None:
                report.claims.append(cid)
                claims.process(cid)
        if self.before_commit is not None:
            self.before_commit(report)
        written = write_batch(
            self.services.db,
            self.name,
            report.events,
            owners=owners,
            offset=offset + len(ts),
            state={k: v.to_json() for k, v in states.items()},
        )
        report.alerts = written.alerts
        return report

    def run(
        self,
        *,
        speed: float | None = None,
        progress: Callable[[int, int, BatchReport], None] | None = None,
    ) -> list[BatchReport]:
        """Until the source is exhausted; ``speed`` (×1 … ×10,000) paces the batches so that
        market time passes that many times faster than the clock."""
        done: list[BatchReport] = []
        started = time.monotonic()
        t_first: int | None = None
        while (r := self.step()) is not None:
            done.append(r)
            if progress is not None:
                progress(r.offset + r.ticks, len(self.source), r)
            if speed:
                _, ts, _ = self.source.read(r.offset + r.ticks - 1, 1)
                t_first = t_first if t_first is not None else int(self.source.ts[0])
                due = (int(ts[0]) - t_first) / 1000 / speed
                wait = due - (time.monotonic() - started)
                if wait > 0 and math.isfinite(wait):
                    time.sleep(min(wait, 5.0))
        return done
