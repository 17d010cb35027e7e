"""Liquidation triggers (pure): the first bar inside a policy's window whose mark price reached
the liquidation price, with the bars around it as evidence.

Only bars that open at or after the purchase count (a bar that opened before it may hold an
extreme from before the cover existed), and bars that open before the window's end. A long is
liquidated when the mark's low ≤ LP, a short when the mark's high ≥ LP (liquidation triggers on
the mark price, never on the last trade).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

EVIDENCE_BARS = 6  # bars kept on each side of the trigger


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
    at: datetime  # open time of the liquidating bar
    mark_price: Decimal  # the bar's mark low (long) or high (short)
    evidence: dict[str, Any]


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


def find_triggers(
    policies: list[Insured], mark: pd.DataFrame, last: pd.DataFrame | None = None
) -> list[Trigger]:
    """The first liquidating bar of each policy, if any (``mark`` sorted by ``ts``)."""
    if mark.empty or not policies:
        return []
    ts = pd.DatetimeIndex(mark["ts"])
    low = mark["low"].to_numpy(float)
    high = mark["high"].to_numpy(float)
    out: list[Trigger] = []
    for p in policies:
        i0 = int(ts.searchsorted(pd.Timestamp(p.start), side="left"))
        i1 = int(ts.searchsorted(pd.Timestamp(p.end), side="left"))
        if i1 <= i0:
            continue
        hit = (
            low[i0:i1] <= p.liquidation_price
            if p.side == "long"
            else high[i0:i1] >= p.liquidation_price
        )
        if not hit.any():
            continue
        i = i0 + int(np.argmax(hit))
        price = low[i] if p.side == "long" else high[i]
        out.append(
            Trigger(
                p.policy_id,
                ts[i].to_pydatetime(),
                Decimal(repr(float(price))),
                {
                    "kind": "mark_reached_liquidation_price",
                    "bar": pd.Timestamp(ts[i]).isoformat(),
                    "mark_extreme": float(price),
                    "liquidation_price": p.liquidation_price,
                    "bars": evidence_window(mark, last, i),
                },
            )
        )
    return out


def covered_until(mark: pd.DataFrame) -> datetime | None:
    """Open time of the last bar (the scan has seen the market up to its close)."""
    return None if mark.empty else pd.Timestamp(mark["ts"].iloc[-1]).to_pydatetime()
