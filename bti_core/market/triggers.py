"""Liquidation triggers (pure): when the stored mark bars prove that a policy's liquidation price
was reached inside its window, with the bars around it as evidence.

A bar proves only that the mark was at its low and its high *somewhere in its span*
``[open, open + length)``, never at its open. So a bar proves a liquidation inside a policy's
window ``[start, end)`` only when its whole span lies inside the window: a bar that opened
before the purchase may hold an extreme from before the cover existed, and one that closes
after the end may hold an extreme from after it. Where several series are stored (a minute
series beside the hourly one: a replay, or an import of 1m klines), the finest bars covering a
stretch decide it (a coarser bar whose span a finer series covers gives way to it), and a
policy's trigger is the proof that settles it earliest — the bar that closes first — so a
crash two minutes into an hour is dated by its minute, not by the hour's open, and a crash two
minutes after a policy ended proves nothing for it.

A long is liquidated when the mark's low ≤ LP, a short when the mark's high ≥ LP (liquidation
triggers on the mark price, never on the last trade).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from bti_core.market.schema import timeframe_delta

EVIDENCE_BARS = 6  # bars kept on each side of the trigger
NEAR = timedelta(minutes=2)  # a record's or a tick's time and the bar that proves it


@dataclass(frozen=True)
class Insured:
    policy_id: int
    side: str  # long / short
    liquidation_price: float
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Trigger:
    policy_id: int
    at: datetime  # when the proof begins: a bar's open, a tick's time
    mark_price: Decimal  # the bar's mark low (long) or high (short); the tick's mark
    evidence: dict[str, Any]
    until: datetime | None = None  # when it ends: the bar's close (None: a moment)

    @property
    def span_end(self) -> datetime:
        return self.until or self.at


@dataclass(frozen=True)
class Series:
    """One stored mark series: its bar length, its bars (``ts`` the open; sorted) and the
    last-price bars of the same length (joined into the evidence)."""

    timeframe: str
    mark: pd.DataFrame
    last: pd.DataFrame | None = None

    @property
    def step(self) -> pd.Timedelta:
        return timeframe_delta(self.timeframe)

    @classmethod
    def infer(cls, mark: pd.DataFrame, last: pd.DataFrame | None = None) -> Series:
        """A series whose bar length is read off its bars (the smallest gap between opens)."""
        ts = pd.DatetimeIndex(pd.to_datetime(mark["ts"], utc=True))
        gaps = np.diff(ts.as_unit("ns").asi8)
        gaps = gaps[gaps > 0]
        step = pd.Timedelta(int(gaps.min()) if len(gaps) else 3_600_000_000_000, unit="ns")
        minutes = int(step / pd.Timedelta(minutes=1))
        tf = f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"
        return cls(tf, mark, last)


def evidence_window(
    mark: pd.DataFrame, last: pd.DataFrame | None, i: int, n: int = EVIDENCE_BARS
) -> list[dict[str, Any]]:
    """Bars ``i−n … i+n`` of mark (and last, joined on time) as plain records."""
    lo, hi = max(0, i - n), min(len(mark), i + n + 1)
    win = mark.iloc[lo:hi][["ts", "open", "high", "low", "close"]].copy()
    if last is not None and len(last):
        win = win.merge(
            last[["ts", "high", "low", "close"]].rename(
                columns={"high": "last_high", "low": "last_low", "close": "last_close"}
            ),
            on="ts",
            how="left",
        )
    win["ts"] = win["ts"].map(lambda t: pd.Timestamp(t).isoformat())
    return [
        {str(k): (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in win.to_dict("records")
    ]


@dataclass(frozen=True)
class _Bars:
    """A series as arrays, with the mask of the bars a finer series covers."""

    series: Series
    opens: np.ndarray  # ns
    step: int  # ns
    low: np.ndarray
    high: np.ndarray
    open_coverage: tuple[int, int] | None  # [first open, last close) of this series, ns


def _arrays(series: Sequence[Series]) -> list[tuple[_Bars, np.ndarray]]:
    """Each series finest first, with a mask of its bars that no finer series covers."""
    out: list[tuple[_Bars, np.ndarray]] = []
    ordered = sorted((s for s in series if len(s.mark)), key=lambda s: s.step)
    for s in ordered:
        opens = pd.DatetimeIndex(pd.to_datetime(s.mark["ts"], utc=True)).as_unit("ns").asi8
        step = int(s.step.value)
        bars = _Bars(
            s,
            opens,
            step,
            s.mark["low"].to_numpy(float),
            s.mark["high"].to_numpy(float),
            (int(opens[0]), int(opens[-1]) + step) if len(opens) else None,
        )
        own = np.ones(len(opens), dtype=bool)
        for finer, _ in out:
            if finer.open_coverage is not None:
                lo, hi = finer.open_coverage
                own &= ~((opens >= lo) & (opens + step <= hi))  # the finer bars decide
        out.append((bars, own))
    return out


def find_triggers(
    policies: Sequence[Insured],
    series: Sequence[Series] | Series,
    *,
    near: datetime | None = None,
) -> list[Trigger]:
    """Each policy's trigger: of the bars whose span lies inside its window and whose mark
    reached its liquidation price (module docstring), the one that closes first — the finer
    at equal closes. ``near``: only bars whose span holds that moment or lies within `NEAR`
    of it (a trader's record, a stream's tick)."""
    if isinstance(series, Series):
        series = [series]
    arrays = _arrays(series)
    if not arrays or not policies:
        return []
    out: list[Trigger] = []
    near_ns = None if near is None else pd.Timestamp(near).value
    slack = int(pd.Timedelta(NEAR).value)
    for p in policies:
        start, end = pd.Timestamp(p.start).value, pd.Timestamp(p.end).value
        best: tuple[int, int, _Bars, int] | None = None  # (close, step, series, index)
        for bars, own in arrays:
            # bars opening at or after the start and closing at or before the end
            i0 = int(np.searchsorted(bars.opens, start, side="left"))
            i1 = int(np.searchsorted(bars.opens, end - bars.step, side="right"))
            if i1 <= i0:
                continue
            ext = bars.low[i0:i1] if p.side == "long" else bars.high[i0:i1]
            hit = own[i0:i1] & (
                ext <= p.liquidation_price if p.side == "long" else ext >= p.liquidation_price
            )
            if near_ns is not None:
                o = bars.opens[i0:i1]
                hit &= (o - slack <= near_ns) & (near_ns < o + bars.step + slack)
            if not hit.any():
                continue
            i = i0 + int(np.argmax(hit))
            key = (int(bars.opens[i]) + bars.step, bars.step)
            if best is None or key < best[:2]:
                best = (*key, bars, i)
        if best is None:
            continue
        _, _, bars, i = best
        s = bars.series
        price = float(bars.low[i] if p.side == "long" else bars.high[i])
        opened = pd.Timestamp(int(bars.opens[i]), unit="ns", tz="UTC")
        closed = opened + s.step
        out.append(
            Trigger(
                p.policy_id,
                opened.to_pydatetime(),
                Decimal(repr(price)),
                {
                    "kind": "mark_reached_liquidation_price",
                    "bar": opened.isoformat(),
                    "timeframe": s.timeframe,
                    "until": closed.isoformat(),
                    "mark_extreme": price,
                    "liquidation_price": p.liquidation_price,
                    "bars": evidence_window(s.mark, s.last, i),
                },
                closed.to_pydatetime(),
            )
        )
    return out


def refutes(p: Insured, series: Sequence[Series], at: datetime, now: datetime) -> bool:
    """Whether the stored bars say the mark did *not* reach ``p``'s liquidation price at
    ``at``: the finest stored bar holding that moment has closed by ``now`` and its extreme
    stayed on the safe side (a forged or glitched tick). False where no bar holds it yet."""
    t, t_now = pd.Timestamp(at).value, pd.Timestamp(now).value
    for bars, _ in _arrays(series):
        i = int(np.searchsorted(bars.opens, t, side="right")) - 1
        if i < 0 or t >= bars.opens[i] + bars.step:
            continue
        if bars.opens[i] + bars.step > t_now:
            return False  # the bar is still forming
        ext = bars.low[i] if p.side == "long" else bars.high[i]
        return bool(ext > p.liquidation_price if p.side == "long" else ext < p.liquidation_price)
    return False


def covered_until(mark: pd.DataFrame) -> datetime | None:
    """Open time of the last bar (the scan has seen the market up to its close)."""
    return None if mark.empty else pd.Timestamp(mark["ts"].iloc[-1]).to_pydatetime()
