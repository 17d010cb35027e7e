"""Market-wide stress scenarios on the open book: what a crash path would claim, when.

A scenario moves every symbol's mark along one shape of time, ``f(t)`` from 0 to 1 (1 at the
trough), scaled by the symbol's trough move ``m``: ``mark(t) = mark₀ · (1 + m · f(t))``. An
open policy is claimed at the first minute its liquidation price is reached — a long when
``mark(t) ≤ liquidation``, a short when ``mark(t) ≥ liquidation`` — and pays its payout.
A symbol with no known mark counts every open policy on the side the move hits (the cautious
reading, as the concentration caps do, `underwriting.claimed_by_move`).

**10 October 2025.** From about 20:50 UTC crypto fell in a liquidation cascade for roughly 40
minutes: the majors 15–22 % on the perpetual venues' lows, large alts 40–70 %, then a partial
rebound. `OCT_10_2025` is a stylised version (troughs rounded from public reports of the
event, the shape a fall accelerating into its last ten minutes); it is not exchange data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bti_core.analytics.book import OPEN
from bti_core.errors import BTIError


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    description: str
    moves: Mapping[str, float]  # symbol → trough move (−0.16 = −16 %)
    other: float  # the trough move of any other symbol
    path: tuple[tuple[int, float], ...]  # (minute, fraction of the trough), from (0, 0)

    def move_of(self, symbol: str) -> float:
        return self.moves.get(symbol, self.other)

    @property
    def minutes(self) -> int:
        return self.path[-1][0]

    def shape(self) -> np.ndarray:
        """f(t) at every whole minute 0…``minutes``."""
        t, f = zip(*self.path, strict=True)
        return np.interp(np.arange(self.minutes + 1), t, f)


OCT_10_2025 = Scenario(
    "oct-10-2025",
    "10 October 2025 (stylised)",
    "majors −15 % to −22 %, alts −40 % to −70 % within about 40 minutes, then a partial rebound",
    {
        "BTCUSDT": -0.15,
        "ETHUSDT": -0.21,
        "BNBUSDT": -0.22,
        "SOLUSDT": -0.40,
        "XRPUSDT": -0.42,
        "LTCUSDT": -0.40,
        "DOGEUSDT": -0.50,
        "ADAUSDT": -0.65,
    },
    -0.50,
    ((0, 0.0), (10, 0.1), (20, 0.3), (28, 0.6), (34, 0.9), (40, 1.0), (50, 0.8), (60, 0.65)),
)


def hour_move(move: float) -> Scenario:
    """Every symbol by ``move`` within an hour, at an even pace (the crash cap's event)."""
    word = "fall" if move < 0 else "rise"
    return Scenario(
        f"hour{move:+.0%}",
        f"Every symbol {move:+.0%} within an hour".replace("-", "−"),
        f"a market-wide {word} of {abs(move):.0%} in 60 minutes, the event the crash cap is "
        "stated for",
        {},
        move,
        ((0, 0.0), (60, 1.0)),
    )


def scenarios(crash_move: float) -> list[Scenario]:
    """The stress scenarios every view shows: 10 October 2025, then the crash cap's event
    both ways (``crash_move``: `Limits.crash_move`, 0.3 = 30 %)."""
    return [OCT_10_2025, hour_move(-crash_move), hour_move(crash_move)]


def marks_of(book: pd.DataFrame, spot: Callable[[str], float]) -> dict[str, float | None]:
    """Each open symbol's mark now by ``spot``; None where it has none (no data, an error)."""
    out: dict[str, float | None] = {}
    for sym in sorted(set(book.loc[book["status"].isin(OPEN), "symbol"].astype(str))):
        try:
            out[sym] = float(spot(sym))
        except (BTIError, ValueError, KeyError):
            out[sym] = None
    return out


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    by_symbol: pd.DataFrame  # symbol, move, mark, trough, open, claims, payout
    timeline: pd.DataFrame  # minute, payout (cumulative), claims (cumulative)
    claimed: pd.DataFrame  # policy, symbol, side, minute, payout

    @property
    def payout(self) -> float:
        return float(self.by_symbol["payout"].sum()) if len(self.by_symbol) else 0.0

    @property
    def claims(self) -> int:
        return int(self.by_symbol["claims"].sum()) if len(self.by_symbol) else 0


def run_scenario(
    book: pd.DataFrame,
    scenario: Scenario,
    marks: Mapping[str, float | None],
    now: pd.Timestamp | None = None,
) -> ScenarioResult:
    """The open policies ``scenario`` would claim, from ``marks`` (symbol → mark now; None
    or absent: unknown), minute by minute. A policy whose window ends before the scenario
    does is counted (the crash may come first: the cautious reading)."""
    o = book[book["status"].isin(OPEN)]
    if now is not None:
        o = o[o["end"] > now]
    shape = scenario.shape()
    rows, hits = [], []
    for symbol, g in o.groupby("symbol", sort=True, observed=True):
        sym = str(symbol)
        m = scenario.move_of(sym)
        side = "long" if m < 0 else "short"
        on_side = g[g["side"] == side]
        mark = marks.get(sym)
        ok = mark is not None and np.isfinite(mark) and mark > 0
        liq = on_side["liquidation_price"].astype(float).to_numpy()
        if ok:
            path = float(mark) * (1 + m * shape)  # type: ignore[arg-type]
            reached = (
                liq[:, None] >= path[None, :] if side == "long" else liq[:, None] <= path[None, :]
            )
            hit = reached.any(axis=1)
            first = np.where(hit, reached.argmax(axis=1), -1)
        else:
            hit = np.ones(len(on_side), dtype=bool)
            first = np.zeros(len(on_side), dtype=int)
        claimed = on_side[hit]
        pays = claimed["payout"].astype(float)
        rows.append(
            {
                "symbol": sym,
                "move": m,
                "mark": float(mark) if ok else None,  # type: ignore[arg-type]
                "trough": float(mark) * (1 + m) if ok else None,  # type: ignore[arg-type]
                "open": len(g),
                "claims": int(hit.sum()),
                "payout": float(pays.sum()),
            }
        )
        hits.append(
            pd.DataFrame(
                {
                    "policy": claimed["policy"].to_numpy(),
                    "symbol": sym,
                    "side": side,
                    "minute": first[hit],
                    "payout": pays.to_numpy(),
                }
            )
        )
    by_symbol = pd.DataFrame(
        rows, columns=["symbol", "move", "mark", "trough", "open", "claims", "payout"]
    )
    claimed_all = (
        pd.concat(hits, ignore_index=True)
        if hits
        else pd.DataFrame(columns=["policy", "symbol", "side", "minute", "payout"])
    )
    minutes = np.arange(scenario.minutes + 1)
    per = claimed_all.groupby("minute")["payout"].agg(["sum", "count"])
    per = per.reindex(minutes, fill_value=0)
    timeline = pd.DataFrame(
        {
            "minute": minutes,
            "payout": per["sum"].astype(float).cumsum().to_numpy(),
            "claims": per["count"].astype(int).cumsum().to_numpy(),
        }
    )
    return ScenarioResult(scenario, by_symbol, timeline, claimed_all)
