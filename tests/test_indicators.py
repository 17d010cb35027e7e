"""Indicators: against `ta`'s own classes on a fixed frame, and against hand formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator
from ta.trend import MACD, ADXIndicator
from ta.volatility import AverageTrueRange, BollingerBands

from bti_core import indicators as ind
from tests.conftest import hourly


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return hourly(400)


def test_against_ta(bars: pd.DataFrame) -> None:
    c, h, lo = bars["close"], bars["high"], bars["low"]
    pd.testing.assert_series_equal(ind.rsi(c), RSIIndicator(c, 14).rsi())
    pd.testing.assert_series_equal(
        ind.macd(c)["macd_signal"], MACD(c).macd_signal(), check_names=False
    )
    pd.testing.assert_series_equal(
        ind.atr(h, lo, c), AverageTrueRange(h, lo, c, 14).average_true_range()
    )
    pd.testing.assert_series_equal(ind.adx(h, lo, c), ADXIndicator(h, lo, c, 14).adx())
    bb = ind.bollinger(c)
    ref = BollingerBands(c, 20, 2)
    assert bb["bb_width"].to_numpy() == pytest.approx(
        ref.bollinger_wband().to_numpy() / 100, nan_ok=True
    )


def test_against_hand_formulas(bars: pd.DataFrame) -> None:
    c = bars["close"]
    assert ind.sma(c, 20).iloc[-1] == pytest.approx(c.iloc[-20:].mean())
    alpha = 2 / 21
    e = c.iloc[0]
    for x in c.iloc[1:]:
        e = alpha * x + (1 - alpha) * e
    assert ind.ema(c, 20).iloc[-1] == pytest.approx(e, rel=1e-6)
    # Bollinger: mid ± 2 population σ; width = (upper − lower)/mid
    w = c.iloc[-20:]
    assert ind.bollinger(c)["bb_width"].iloc[-1] == pytest.approx(4 * w.std(ddof=0) / w.mean())
    # OBV: running sum of volume signed by the close's move
    obv = ind.obv(c, bars["volume"])
    step = obv.diff().iloc[1:]
    sign = np.sign(c.diff().iloc[1:])
    assert step.to_numpy() == pytest.approx((sign * bars["volume"].iloc[1:]).to_numpy())


def test_realised_vol_and_amihud(bars: pd.DataFrame) -> None:
    c, v = bars["close"], bars["volume"]
    r = np.log(c).diff()
    assert ind.realised_volatility(c, 24, 8760).iloc[-1] == pytest.approx(
        np.sqrt((r.iloc[-24:] ** 2).mean() * 8760)
    )
    qv = c * v
    assert ind.amihud_illiquidity(c, v, 24).iloc[-1] == pytest.approx(
        (r.abs() / (qv / 1e6)).iloc[-24:].mean()
    )


def test_funding_features() -> None:
    ts = pd.date_range("2024-01-01", periods=6, freq="8h", tz="UTC")
    f = pd.DataFrame({"ts": ts, "funding_rate": [0.0001, 0.0001, 0.0003, -0.0002, 0.0001, 0.0005]})
    out = ind.funding_features(f, window=3)
    assert out["funding_mean"].iloc[-1] == pytest.approx((-0.0002 + 0.0001 + 0.0005) / 3)
    assert out["funding_max"].iloc[-1] == 0.0005 and out["funding_min"].iloc[-1] == -0.0002
    assert out["funding_annualised"].iloc[0] == pytest.approx(0.0001 * 3 * 365)


def test_compute_registry(bars: pd.DataFrame) -> None:
    out = ind.compute(bars, list(ind.INDICATORS))
    declared = {c for spec in ind.INDICATORS.values() for c in spec.columns}
    assert set(out.columns) == set(bars.columns) | declared
    assert len(out) == len(bars)
    assert out[list(declared)].iloc[-1].notna().all()
    with pytest.raises(ValueError, match="unknown indicator 'psar'"):
        ind.compute(bars, ["psar"])


@pytest.mark.parametrize("n", [0, 1, 5, 20])
def test_short_frames_give_empty_columns_not_errors(bars: pd.DataFrame, n: int) -> None:
    out = ind.compute(bars.head(n), list(ind.INDICATORS))
    assert len(out) == n
    if n < 15:
        assert out["atr"].isna().all()
