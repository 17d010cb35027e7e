"""The market-wide stress scenarios on a small book whose answers are worked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bti_core.analytics.scenarios import OCT_10_2025, hour_move, marks_of, run_scenario, scenarios
from bti_core.errors import NoDataError

NOW = pd.Timestamp("2026-01-01 12:00", tz="UTC")


def row(policy: int, symbol: str, side: str, liq: float, payout: float, **kw: object) -> dict:
    return {
        "policy": policy,
        "symbol": symbol,
        "side": side,
        "liquidation_price": liq,
        "payout": payout,
        "status": kw.get("status", "active"),
        "end": kw.get("end", NOW + pd.Timedelta(days=1)),
    }


@pytest.fixture
def book() -> pd.DataFrame:
    return pd.DataFrame(
        [
            row(1, "BTCUSDT", "long", 90.0, 100),  # reached by −15 % (85)
            row(2, "BTCUSDT", "long", 80.0, 200),  # not: 85 > 80
            row(3, "BTCUSDT", "short", 110.0, 300),  # a fall never claims a short
            row(4, "ADAUSDT", "long", 0.5, 50),  # −65 % of 1.0 = 0.35: reached
            row(5, "NEWUSDT", "long", 1.0, 70),  # no mark known: counted whole
            row(6, "BTCUSDT", "long", 99.0, 1000, status="paid"),  # settled: not open
            row(7, "BTCUSDT", "long", 99.0, 1000, end=NOW - pd.Timedelta(hours=1)),  # ended
        ]
    ).astype({"symbol": "category"})  # as `load_book` gives it


def test_the_october_path_claims_what_its_troughs_reach(book: pd.DataFrame) -> None:
    marks = {"BTCUSDT": 100.0, "ADAUSDT": 1.0, "NEWUSDT": None}
    r = run_scenario(book, OCT_10_2025, marks, now=NOW)
    by = r.by_symbol.set_index("symbol")
    assert by.loc["BTCUSDT", "claims"] == 1 and by.loc["BTCUSDT", "payout"] == 100
    assert by.loc["BTCUSDT", "trough"] == pytest.approx(85.0)
    assert by.loc["ADAUSDT", "claims"] == 1 and by.loc["NEWUSDT", "claims"] == 1
    assert (r.claims, r.payout) == (3, 220.0)
    assert sorted(r.claimed["policy"]) == [1, 4, 5]
    # the first minute each is reached on the path: BTC's 90 is a fall of 10 % = 2/3 of the
    # trough, between minute 28 (0.6) and 34 (0.9) on the stylised shape
    minute = dict(zip(r.claimed["policy"], r.claimed["minute"], strict=True))
    shape = OCT_10_2025.shape()
    assert shape[minute[1]] >= 10 / 15 > shape[minute[1] - 1]
    assert minute[5] == 0  # unknown mark: at once
    # the timeline adds up, never falls, and ends at the total
    assert r.timeline["payout"].is_monotonic_increasing
    assert r.timeline["payout"].iloc[-1] == 220.0 and r.timeline["claims"].iloc[-1] == 3
    assert len(r.timeline) == OCT_10_2025.minutes + 1


def test_a_rise_claims_shorts_and_an_empty_book_claims_nothing(book: pd.DataFrame) -> None:
    up = run_scenario(book, hour_move(0.3), {"BTCUSDT": 100.0, "ADAUSDT": 1.0}, now=NOW)
    assert sorted(up.claimed["policy"]) == [3]  # the short at 110 (NEWUSDT has only a long)
    assert up.by_symbol.set_index("symbol").loc["NEWUSDT", "claims"] == 0
    down = run_scenario(book, hour_move(-0.3), {"BTCUSDT": 100.0, "ADAUSDT": 1.0}, now=NOW)
    assert sorted(down.claimed["policy"]) == [1, 2, 5]  # 70 reaches 90 and 80; ADA 0.7 > 0.5
    empty = run_scenario(book.iloc[0:0], OCT_10_2025, {}, now=NOW)
    assert (empty.claims, empty.payout) == (0, 0.0) and len(empty.timeline) == 61
    assert np.allclose(hour_move(-0.3).shape()[[0, 30, 60]], [0, 0.5, 1])
    assert [s.key for s in scenarios(0.3)] == ["oct-10-2025", "hour-30%", "hour+30%"]


def test_marks_are_read_for_open_symbols_and_a_missing_one_is_none(book: pd.DataFrame) -> None:
    def spot(sym: str) -> float:
        if sym == "NEWUSDT":
            raise NoDataError("no market data for NEWUSDT")
        return {"BTCUSDT": 100.0, "ADAUSDT": 1.0}[sym]

    assert marks_of(book, spot) == {"ADAUSDT": 1.0, "BTCUSDT": 100.0, "NEWUSDT": None}
