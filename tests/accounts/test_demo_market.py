"""The demo exchange following the market: bars reach liquidation prices as they come (a bar
under way included, a bar not begun never), a bar over before a position opened never touches
it, a rewritten bar is fed again; the books survive a save and a load."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from bti_core.accounts.demo_books import DemoBooks
from bti_core.accounts.demo_market import MarketFollower, ensure_demo_trader, load, save
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.warehouse import Warehouse

NOW = pd.Timestamp("2026-03-02 12:30", tz="UTC")


def bars(prices: list[tuple[str, float]]) -> pd.DataFrame:
    ts = [pd.Timestamp(t, tz="UTC") for t, _ in prices]
    lows = [p for _, p in prices]
    return pd.DataFrame(
        {"ts": ts, "open": lows, "high": lows, "low": lows, "close": lows, "volume": 0.0}
    )


def test_bars_liquidate_what_they_reach_when_they_reach_it(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh")
    ingest = Ingestor(wh, None, clock=lambda: NOW + pd.Timedelta(hours=2))
    books = DemoBooks()
    uid = books.add_account(10_000)
    opened = int((NOW - pd.Timedelta(minutes=10)).value // 1_000_000)
    books.open_position(uid, "BTCUSDT", "long", 1, 50_000, 20, at_ms=opened)
    lp = books.liquidation_price(books.accounts[uid], books.position(uid, "BTCUSDT", "long"))
    follower = MarketFollower(books, wh, timedelta(hours=2))

    def store(rows: list[tuple[str, float]]) -> None:
        ingest.ingest_frame(
            bars(rows), symbol="BTCUSDT", kind=Kind.MARK, timeframe="1m", source="test"
        )

    store([("2026-03-02 12:15", 40_000.0)])  # over before the position opened
    store([("2026-03-02 12:25", 49_000.0), ("2026-03-02 12:31", 1.0)])  # and one not begun
    assert follower.tick(NOW) == []
    assert books.marks["BTCUSDT"] == Decimal(49_000)
    store([("2026-03-02 12:30", float(lp) - 1)])  # under way, already through the price
    assert follower.tick(NOW) == [uid]
    [record] = books.accounts[uid].forced
    assert record["updateTime"] == int(NOW.value // 1_000_000)
    assert record["avgPrice"] == str(lp) and record["side"] == "SELL"
    assert follower.tick(NOW) == []  # fed once


def test_the_books_survive_a_restart_and_the_demo_trader_is_made_once(tmp_path: Path) -> None:
    books = DemoBooks()
    trader = ensure_demo_trader(books, tmp_path, lambda symbol: 100.0)
    assert {p.symbol for p in books.accounts[trader.uid].positions.values()} == {
        "BTCUSDT",
        "ETHUSDT",
    }
    books.set_mark("ETHUSDT", 1_000)  # the short is liquidated
    save(books, tmp_path)
    again = DemoBooks()
    assert load(again, tmp_path)
    assert ensure_demo_trader(again, tmp_path, lambda symbol: 1.0) == trader
    assert again.to_json() == books.to_json()
    assert [p.symbol for p in again.accounts[trader.uid].positions.values()] == ["BTCUSDT"]
    assert (tmp_path / "trader.json").stat().st_mode & 0o077 == 0
    assert not load(DemoBooks(), tmp_path / "nothing")


def test_a_fall_that_runs_the_fund_dry_deleverages_the_profitable_shorts_first_in_the_queue() -> (
    None
):
    """A fall of `FUND_MOVE` within the hour: shorts in profit and in the top of the queue are
    auto-deleveraged at the bar's low; one lower in the queue, or not in profit, is not."""
    books = DemoBooks()
    first, low_in_queue, at_a_loss = (books.add_account(10_000) for _ in range(3))
    start = int(NOW.value // 1_000_000) - 3_600_000
    for uid, entry, leverage, quantile in (
        (first, 3_000, 10, 4),
        (low_in_queue, 3_000, 10, 1),
        (at_a_loss, 2_400, 2, 4),  # sold lower than the fall goes
    ):
        p = books.open_position(uid, "ETHUSDT", "short", 1, entry, leverage, at_ms=start)
        p.adl_quantile = quantile
    minute = 60_000
    assert books.mark_bar("ETHUSDT", 2_990, 3_000, 2_995, start + minute) == []
    assert books.mark_bar("ETHUSDT", 2_700, 2_995, 2_700, start + 2 * minute) == []  # −10 %
    assert books.mark_bar("ETHUSDT", 2_500, 2_700, 2_520, start + 3 * minute) == [first]  # −16.7 %
    [adl] = books.accounts[first].forced
    assert adl["clientOrderId"].startswith("adl_autoclose") and adl["avgPrice"] == "2500"
    assert books.position(first, "ETHUSDT", "short") is None
    assert books.position(low_in_queue, "ETHUSDT", "short") is not None
    assert books.position(at_a_loss, "ETHUSDT", "short") is not None


def test_a_tick_a_failed_read_stopped_is_redone_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read failed inside DuckDB while `bti crash` wrote the store (a full run's demo
    exchange died of it); the exchange now tries again — and the bars read before the failure
    in that tick are fed then, not lost as already fed."""
    wh = Warehouse(tmp_path / "wh")
    ingest = Ingestor(wh, None, clock=lambda: NOW + pd.Timedelta(hours=2))
    books = DemoBooks()
    uid = books.add_account(10_000)
    opened = int((NOW - pd.Timedelta(hours=1)).value // 1_000_000)
    for sym in ("BTCUSDT", "ETHUSDT"):
        books.open_position(uid, sym, "long", 1, 50_000, 20, at_ms=opened)
    lp = books.liquidation_price(books.accounts[uid], books.position(uid, "BTCUSDT", "long"))
    for sym, price in (("BTCUSDT", float(lp) - 1), ("ETHUSDT", 49_000.0)):
        ingest.ingest_frame(
            bars([("2026-03-02 12:20", price)]),
            symbol=sym,
            kind=Kind.MARK,
            timeframe="1m",
            source="test",
        )
    follower = MarketFollower(books, wh, timedelta(hours=2))
    real = wh.query

    def fails_on_eth(kind: Kind, symbol: str, *a: object, **k: object) -> pd.DataFrame:
        if symbol == "ETHUSDT":
            raise RuntimeError("don't know what type")
        return real(kind, symbol, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(wh, "query", fails_on_eth)
    with pytest.raises(RuntimeError):
        follower.tick(NOW)
    monkeypatch.setattr(wh, "query", real)
    assert follower.tick(NOW) == [uid]  # BTC's bar, read before the failure, is fed now
