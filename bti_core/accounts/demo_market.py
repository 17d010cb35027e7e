"""The demo exchange follows the demo market: every mark-price bar the warehouse receives (the
demo's hourly market, a `bti crash` replay's minutes) moves its marks, and a bar that reaches a
position's liquidation price liquidates it there, as the exchange's engine would — so a crash
replayed by `bti crash` leaves the exchange's own forced-order record that confirms the claim.

`ensure_demo_trader` gives the demo trader (the dashboard's published demo account) an account
on it with a read-only key and two open positions; the key is kept beside the books, under the
data folder, for the local demo only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from bti_core.accounts.demo_books import DemoBooks
from bti_core.files import write_text
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.warehouse import Warehouse

#: the demo trader's positions: symbol, side, size, leverage
DEMO_POSITIONS = (("BTCUSDT", "long", "0.05", 20), ("ETHUSDT", "short", "1.5", 10))
# the short is first in the ETHUSDT queue: `bti crash --symbol ETHUSDT` deleverages it (ADL)
DEMO_ADL_QUANTILES = {("ETHUSDT", "short"): 4}
DEMO_WALLET = Decimal(10_000)


@dataclass(frozen=True)
class DemoTrader:
    uid: str
    api_key: str
    secret: str


def ensure_demo_trader(books: DemoBooks, folder: Path, spot: Any) -> DemoTrader:
    """The demo trader's account, key and positions (opened at ``spot(symbol)``), made once and
    kept in ``folder``; positions the market has since liquidated are not reopened."""
    path = folder / "trader.json"
    if path.exists():
        d = json.loads(path.read_text())
        trader = DemoTrader(d["uid"], d["api_key"], d["secret"])
        if trader.uid in books.accounts and trader.api_key in books.keys:
            return trader
    uid = books.add_account(DEMO_WALLET)
    key, secret = books.add_key(uid)
    for symbol, side, size, leverage in DEMO_POSITIONS:
        try:
            price = Decimal(str(round(float(spot(symbol)), 2)))
        except Exception:  # a symbol the demo market lacks: no position on it
            continue
        p = books.open_position(uid, symbol, side, size, price, leverage)  # type: ignore[arg-type]
        p.adl_quantile = DEMO_ADL_QUANTILES.get((symbol, side), p.adl_quantile)
    trader = DemoTrader(uid, key, secret)
    write_text(path, json.dumps(vars(trader)))
    os.chmod(path, 0o600)
    return trader


def save(books: DemoBooks, folder: Path) -> None:
    write_text(folder / "books.json", json.dumps(books.to_json()))


def load(books: DemoBooks, folder: Path) -> bool:
    path = folder / "books.json"
    if not path.exists():
        return False
    books.load_json(json.loads(path.read_text()))
    return True


class MarketFollower:
    """Feeds the books every mark bar of the last ``window`` not fed before (a bar rewritten
    with other prices, as a replay does, or still under way, is fed again)."""

    def __init__(self, books: DemoBooks, warehouse: Warehouse, window: timedelta) -> None:
        self.books = books
        self.warehouse = warehouse
        self.window = window
        self.fed: dict[tuple[str, str, int], tuple[float, float, float]] = {}

    def tick(self, now: pd.Timestamp | None = None) -> list[str]:
        """Feed the new bars, oldest first; returns the uids liquidated."""
        now = now or pd.Timestamp.now("UTC")
        symbols = {p.symbol for a in self.books.accounts.values() for p in a.positions.values()}
        bars: list[tuple[int, str, float, float, float]] = []
        read: dict[tuple[str, str, int], tuple[float, float, float]] = {}
        for symbol in sorted(symbols):
            for tf in self.warehouse.timeframes(symbol, Kind.MARK):
                step = timeframe_delta(tf)
                frame = self.warehouse.query(Kind.MARK, symbol, tf, now - self.window - step)
                for ts, low, high, close in frame[["ts", "low", "high", "close"]].itertuples(
                    index=False
                ):
                    start = pd.Timestamp(ts)
                    if start > now:
                        continue  # not begun: a bar from the future moves nothing
                    # a bar under way counts from now: what it has reached, it has reached
                    end = min(start + step, now)
                    key = (symbol, tf, int(end.value // 1_000_000))
                    values = (float(low), float(high), float(close))
                    if self.fed.get(key) == values:
                        continue
                    read[key] = values
                    bars.append((key[2], symbol, *values))
        # fed only once every read is done: a tick a failed read stopped is redone whole
        self.fed.update(read)
        hit: list[str] = []
        for end_ms, symbol, low, high, close in sorted(bars):
            hit += self.books.mark_bar(symbol, low, high, close, end_ms)
        return hit
