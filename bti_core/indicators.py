"""Technical indicators (through `ta`), liquidity and funding features.

Pure functions over pandas Series/frames indexed like their input. `ta` computes the classic
indicators; it is never asked for ``add_all_ta_features`` (its PSAR loops row by row: minutes on
100k rows). ATR and ADX in `ta` are row loops too: compute them on the window shown or streamed.

Sources:
- SMA/EMA, RSI (Wilder 1978), MACD (Appel), Bollinger bands and width (Bollinger 2001), ATR and
  ADX (Wilder 1978), OBV (Granville 1963): as implemented by `ta` 0.11.
- Realised volatility: ``σ̂ = √(P/n · Σ r_t²)`` over the last n log returns, P bars a year
  (Andersen, Bollerslev, Diebold & Labys 2001, zero-mean estimator).
- Amihud illiquidity: ``ILLIQ = mean(|r_t| / QV_t)`` with QV the quote volume, here per million
  USDT traded (Amihud 2002, *J. Financial Markets* 5(1)).
- Funding: rolling mean, extremes and z-score of the realised rate, and its annualised level
  ``F·(365·24/interval_h)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator
from ta.trend import MACD, ADXIndicator, EMAIndicator, SMAIndicator
from ta.volatility import AverageTrueRange, BollingerBands
from ta.volume import OnBalanceVolumeIndicator

HOURS_PER_YEAR = 24 * 365


def sma(close: pd.Series, window: int = 20) -> pd.Series:
    return SMAIndicator(close, window=window).sma_indicator()


def ema(close: pd.Series, window: int = 20) -> pd.Series:
    return EMAIndicator(close, window=window).ema_indicator()


def rsi(close: pd.Series, window: int = 14) -> pd.Series:
    return RSIIndicator(close, window=window).rsi()


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.DataFrame:
    m = MACD(close, window_slow=slow, window_fast=fast, window_sign=signal)
    return pd.DataFrame(
        {"macd": m.macd(), "macd_signal": m.macd_signal(), "macd_hist": m.macd_diff()}
    )


def bollinger(close: pd.Series, window: int = 20, k: float = 2.0) -> pd.DataFrame:
    """Bands ``SMA ± k·σ`` and width ``(upper − lower)/SMA`` (a volatility regime gauge)."""
    b = BollingerBands(close, window=window, window_dev=k)
    return pd.DataFrame(
        {
            "bb_mid": b.bollinger_mavg(),
            "bb_upper": b.bollinger_hband(),
            "bb_lower": b.bollinger_lband(),
            "bb_width": b.bollinger_wband() / 100.0,  # ta gives percent
        }
    )


def atr(high: pd.Series, low: pd.Series, close: pd.Series, window: int = 14) -> pd.Series:
    return AverageTrueRange(high, low, close, window=window).average_true_range()


def adx(high: pd.Series, low: pd.Series, close: pd.Series, window: int = 14) -> pd.Series:
    return ADXIndicator(high, low, close, window=window).adx()


def obv(close: pd.Series, volume: pd.Series) -> pd.Series:
    return OnBalanceVolumeIndicator(close, volume).on_balance_volume()


def log_returns(close: pd.Series) -> pd.Series:
    return pd.Series(np.log(close.to_numpy()), index=close.index).diff()


def realised_volatility(close: pd.Series, window: int, periods_per_year: float) -> pd.Series:
    """Annualised realised volatility over the last ``window`` returns (zero-mean estimator)."""
    r2 = log_returns(close) ** 2
    return np.sqrt(r2.rolling(window, min_periods=window).mean() * periods_per_year)


def quote_volume(close: pd.Series, volume: pd.Series) -> pd.Series:
    """Traded value in the quote currency (USDT), approximated by close × base volume."""
    return close * volume


def amihud_illiquidity(close: pd.Series, volume: pd.Series, window: int) -> pd.Series:
    """Mean |return| per million of quote currency traded; bars with no volume are skipped."""
    qv = quote_volume(close, volume).replace(0.0, np.nan)
    ratio = log_returns(close).abs() / (qv / 1e6)
    return ratio.rolling(window, min_periods=max(1, window // 2)).mean()


def funding_features(
    funding: pd.DataFrame, window: int = 21, interval_hours: float = 8.0
) -> pd.DataFrame:
    """Features of realised funding (``ts, funding_rate``), one row per funding time.

    ``window`` counts funding events (21 × 8 h = one week).
    """
    f = funding.set_index("ts")["funding_rate"]
    roll = f.rolling(window, min_periods=1)
    std = f.rolling(window, min_periods=2).std()
    return pd.DataFrame(
        {
            "funding_rate": f,
            "funding_mean": roll.mean(),
            "funding_max": roll.max(),
            "funding_min": roll.min(),
            "funding_z": (f - roll.mean()) / std.replace(0.0, np.nan),
            "funding_annualised": f * (HOURS_PER_YEAR / interval_hours),
        }
    )


@dataclass(frozen=True)
class Indicator:
    """A selectable indicator: where it is drawn, its output columns and how it is computed.

    ``min_bars``: `ta`'s ATR and ADX fail on fewer bars than their window; below it the columns
    are left empty (NaN) rather than raising.
    """

    label: str
    panel: str  # "price" overlays the candles; anything else gets a panel of that name
    columns: tuple[str, ...]
    compute: Callable[[pd.DataFrame], pd.DataFrame]
    min_bars: int = 1


def _one(
    name: str, f: Callable[[pd.DataFrame], pd.Series]
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda bars: pd.DataFrame({name: f(bars)})


INDICATORS: dict[str, Indicator] = {
    "sma20": Indicator("SMA 20", "price", ("sma20",), _one("sma20", lambda b: sma(b["close"], 20))),
    "sma50": Indicator("SMA 50", "price", ("sma50",), _one("sma50", lambda b: sma(b["close"], 50))),
    "ema20": Indicator("EMA 20", "price", ("ema20",), _one("ema20", lambda b: ema(b["close"], 20))),
    "bollinger": Indicator(
        "Bollinger 20, 2σ",
        "price",
        ("bb_mid", "bb_upper", "bb_lower"),
        lambda b: bollinger(b["close"])[["bb_mid", "bb_upper", "bb_lower"]],
    ),
    "bb_width": Indicator(
        "Bollinger width", "BB width", ("bb_width",), lambda b: bollinger(b["close"])[["bb_width"]]
    ),
    "rsi": Indicator("RSI 14", "RSI", ("rsi",), _one("rsi", lambda b: rsi(b["close"]))),
    "macd": Indicator(
        "MACD 12/26/9", "MACD", ("macd", "macd_signal", "macd_hist"), lambda b: macd(b["close"])
    ),
    "atr": Indicator(
        "ATR 14", "ATR", ("atr",), _one("atr", lambda b: atr(b["high"], b["low"], b["close"])), 15
    ),
    "adx": Indicator(
        "ADX 14", "ADX", ("adx",), _one("adx", lambda b: adx(b["high"], b["low"], b["close"])), 30
    ),
    "obv": Indicator("OBV", "OBV", ("obv",), _one("obv", lambda b: obv(b["close"], b["volume"]))),
    "amihud": Indicator(
        "Amihud illiquidity (per 1M USDT)",
        "Illiquidity",
        ("amihud",),
        _one("amihud", lambda b: amihud_illiquidity(b["close"], b["volume"], 24)),
    ),
}


def compute(bars: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """The chosen indicators, as columns beside ``bars`` (same index)."""
    parts = [bars]
    for name in names:
        if name not in INDICATORS:
            raise ValueError(f"unknown indicator {name!r}; choose from {', '.join(INDICATORS)}")
        spec = INDICATORS[name]
        if len(bars) < spec.min_bars:
            parts.append(pd.DataFrame(np.nan, index=bars.index, columns=list(spec.columns)))
        else:
            parts.append(spec.compute(bars))
    return pd.concat(parts, axis=1)
