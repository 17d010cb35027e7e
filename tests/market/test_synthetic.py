"""The demo-market generator: deterministic, and with the statistics of real perpetuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bti_core.market.cleaning import clean_bars, clean_funding
from bti_core.market.synthetic import generate_demo_markets


@pytest.fixture(scope="module")
def year() -> dict:
    return generate_demo_markets(
        start="2025-01-01", periods=24 * 365, seed=11, with_exchange_quirks=False
    )


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = generate_demo_markets(periods=500, seed=5)
    b = generate_demo_markets(periods=500, seed=5)
    c = generate_demo_markets(periods=500, seed=6)
    for s in a:
        pd.testing.assert_frame_equal(a[s].ohlcv, b[s].ohlcv)
        pd.testing.assert_frame_equal(a[s].funding, b[s].funding)
    assert not np.allclose(a["BTCUSDT"].ohlcv["close"], c["BTCUSDT"].ohlcv["close"])


def test_fat_tails_and_volatility_clustering(year: dict) -> None:
    for m in year.values():
        r = np.log(m.mark["close"]).diff().dropna()
        assert r.kurt() > 5, m.symbol  # excess kurtosis of hourly returns
        assert r.abs().autocorr(1) > 0.1, m.symbol


def test_symbols_move_together(year: dict) -> None:
    rb = np.log(year["BTCUSDT"].mark["close"]).diff()
    re = np.log(year["ETHUSDT"].mark["close"]).diff()
    assert rb.corr(re) > 0.5


def test_mark_differs_from_last_and_funding_every_8h(year: dict) -> None:
    m = year["BTCUSDT"]
    basis = m.ohlcv["close"] / m.mark["close"] - 1
    assert 1e-4 < basis.std() < 5e-3
    assert (m.mark["volume"] == 0).all() and (m.ohlcv["volume"] > 0).all()
    assert set(m.funding["ts"].dt.hour) == {0, 8, 16}
    assert len(m.funding) == 365 * 3
    assert m.funding["funding_rate"].abs().max() <= 0.003
    assert (m.funding["funding_rate"] == 0.0001).mean() > 0.3  # clamped to the interest rate often


def test_crash_days_happen(year: dict) -> None:
    closes = year["SOLUSDT"].mark.set_index("ts")["close"].resample("1D").last()
    assert (np.log(closes).diff() < -0.10).sum() >= 1


def test_generated_bars_are_valid_and_quirks_are_caught() -> None:
    markets = generate_demo_markets(periods=24 * 30, seed=2)
    rep_total = {}
    for s, m in markets.items():
        mark, rm = clean_bars(m.mark, symbol=s, timeframe="1h", kind="mark")
        _bars, rb = clean_bars(m.ohlcv, symbol=s, timeframe="1h", mark=mark)
        _f, rf = clean_funding(m.funding, symbol=s)
        for rep in (rm, rb, rf):
            assert rep.counts["invalid_bars"] == 0 and rep.counts["missing_values"] == 0
        rep_total[s] = rb
    assert rep_total["BTCUSDT"].counts["listing_placeholders"] == 2
    assert rep_total["ETHUSDT"].counts["flat_zero_volume"] == 2
    assert rep_total["ETHUSDT"].counts["missing_bars"] == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="periods"):
        generate_demo_markets(periods=1)
    with pytest.raises(ValueError, match="timeframe"):
        generate_demo_markets(periods=10, timeframe="7m")
