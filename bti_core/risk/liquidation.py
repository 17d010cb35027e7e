"""Liquidation price and maintenance margin of USDT-margined perpetuals (one-way mode).

Tiered maintenance margin (Binance USDT-M "Leverage and Margin" brackets):

    MM = notional × MMR_tier − cum_tier,   cum_n = floor_n × (MMR_n − MMR_{n−1}) + cum_{n−1}

Liquidation price (Binance, "How to Calculate Liquidation Price of USDⓈ-M Contracts"):

    LP = (WB − TMM + UPNL + cum − side·Q·EP) / (Q·MMR − side·Q)

side = +1 long, −1 short; Q the position size (base asset), EP the entry price. Isolated margin:
TMM = UPNL = 0 and WB = the position's margin. Cross margin: WB is the wallet balance, TMM and
UPNL the maintenance margin and unrealised PnL of the *other* positions. The tier is the one of
the notional at the liquidation price; when that differs from the tier used, the price is
recomputed in the new tier (at most once per tier).

Fees: an opening fee paid from the isolated margin lowers WB by ``Q·EP·fee_open``; the fee to
close at liquidation, ``Q·LP·fee_close``, joins the maintenance requirement, so
``LP = (WB − TMM + UPNL + cum − side·Q·EP) / (Q·(MMR + fee_close) − side·Q)``.

Without cum or fees the isolated price reduces to ``EP(1 − 1/L)/(1 − MMR)`` for a long and
``EP(1 + 1/L)/(1 + MMR)`` for a short; Bybit's worked example (20,000 long at 50×, MMR 0.5 %)
gives ≈ 19,700.

Everything is vectorised: scalars or arrays of equal length in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from bti_core.market.schema import canonical_symbol

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | int | npt.ArrayLike
BRACKETS_DIR = Path(__file__).resolve().parent / "brackets"


@dataclass(frozen=True)
class Brackets:
    """A symbol's maintenance-margin tiers, sorted by notional floor."""

    symbol: str
    floor: FloatArray
    cap: FloatArray
    max_leverage: FloatArray
    mmr: FloatArray
    cum: FloatArray

    @classmethod
    def from_frame(cls, symbol: str, frame: pd.DataFrame) -> Brackets:
        f = frame.sort_values("notional_floor").reset_index(drop=True)
        floor = f["notional_floor"].to_numpy(float)
        mmr = f["mmr"].to_numpy(float)
        if (np.diff(mmr) < 0).any() or floor[0] != 0:
            raise ValueError(f"{symbol}: tiers must start at 0 and have rising MMR")
        cum = np.zeros(len(f))
        for n in range(1, len(f)):
            cum[n] = floor[n] * (mmr[n] - mmr[n - 1]) + cum[n - 1]
        return cls(
            symbol,
            floor,
            f["notional_cap"].to_numpy(float),
            f["max_leverage"].to_numpy(float),
            mmr,
            cum,
        )

    def tier(self, notional: ArrayLike) -> npt.NDArray[np.intp]:
        """Index of the tier holding each notional (a notional on a cap belongs to the lower)."""
        n = np.asarray(notional, dtype=float)
        return np.clip(np.searchsorted(self.cap, n, side="left"), 0, len(self.cap) - 1)

    def max_leverage_for(self, notional: ArrayLike) -> FloatArray:
        return self.max_leverage[self.tier(notional)]


@cache
def brackets_for(symbol: str) -> Brackets:
    """The symbol's table from ``risk/brackets/SYMBOL.csv``, else ``default.csv``."""
    sym = canonical_symbol(symbol)
    path = BRACKETS_DIR / f"{sym}.csv"
    if not path.exists():
        path = BRACKETS_DIR / "default.csv"
    return Brackets.from_frame(sym, pd.read_csv(path, comment="#"))


def maintenance_margin(notional: ArrayLike, brackets: Brackets) -> FloatArray:
    """``MM = notional·MMR_tier − cum_tier``."""
    n = np.asarray(notional, dtype=float)
    t = brackets.tier(n)
    return n * brackets.mmr[t] - brackets.cum[t]


def liquidation_price(
    entry: ArrayLike,
    quantity: ArrayLike,
    side: ArrayLike,
    margin: ArrayLike,
    brackets: Brackets,
    *,
    other_maintenance: ArrayLike = 0.0,
    other_upnl: ArrayLike = 0.0,
    fee_open: ArrayLike = 0.0,
    fee_close: ArrayLike = 0.0,
) -> FloatArray:
    """Liquidation (mark) price of each position; 0 for a long that can never be liquidated.

    ``margin`` is the isolated margin, or the wallet balance in cross mode (then pass the other
    positions' ``other_maintenance`` and ``other_upnl``).
    """
    ep = np.asarray(entry, dtype=float)
    q = np.asarray(quantity, dtype=float)
    s = np.asarray(side, dtype=float)
    wb = np.asarray(margin, dtype=float) - q * ep * np.asarray(fee_open, dtype=float)
    fc = np.asarray(fee_close, dtype=float)
    base = wb - np.asarray(other_maintenance, dtype=float) + np.asarray(other_upnl, dtype=float)
    base, ep, q, s, fc = np.broadcast_arrays(base, ep, q, s, fc)

    tier = brackets.tier(q * ep)
    lp = np.empty(base.shape)
    for _ in range(len(brackets.mmr) + 1):
        mmr, cum = brackets.mmr[tier], brackets.cum[tier]
        lp = (base + cum - s * q * ep) / (q * (mmr + fc) - s * q)
        new_tier = brackets.tier(np.maximum(lp, 0.0) * q)
        if (new_tier == tier).all():
            break
        tier = new_tier
    return np.maximum(lp, 0.0)


def isolated_liquidation_price(
    entry: ArrayLike,
    leverage: ArrayLike,
    side: ArrayLike,
    brackets: Brackets,
    *,
    notional: ArrayLike | None = None,
    fee_open: ArrayLike = 0.0,
    fee_close: ArrayLike = 0.0,
) -> FloatArray:
    """Isolated position opened with margin ``notional/leverage`` (notional default: 1 unit).

    The price depends on the notional only through the tier; pass it for large positions.
    """
    ep = np.asarray(entry, dtype=float)
    lev = np.asarray(leverage, dtype=float)
    q = np.asarray(notional, dtype=float) / ep if notional is not None else np.ones_like(ep)
    return liquidation_price(
        ep, q, side, q * ep / lev, brackets, fee_open=fee_open, fee_close=fee_close
    )
