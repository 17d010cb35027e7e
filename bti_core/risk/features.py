"""Features of a start hour and an order for the learned risk models, and their labels.

Two layers, both vectorised:

- `market_frame` — one row per hourly bar ``t`` of a symbol, computed from bars up to and
  including ``t`` only (trailing windows, `ta`'s causal indicators, funding known at ``t``):
  realised volatilities over a day, a week and 30 days, trend (close over its 24- and 168-hour
  means, the slope of the 168-hour mean over a day), momentum (24-hour and 7-day log returns),
  RSI(14), Bollinger width(20), ATR(14)/close, the drawdown from the 30-day high and the run-up
  from the 30-day low, funding (last rate and its 30-day z-score), basis (last over mark − 1),
  volume shock (log of the day's volume over its 30-day daily mean), Amihud illiquidity (24 h
  over 30 days, in logs), hour of day and day of week (as sine and cosine), and the macro signal.
- `order_features` — one row per (start hour, side, leverage, horizon), from the backtest's
  prediction rows (which carry the engine's and the GBM baseline's probabilities, the GARCH
  variance of the next hour and the log distance ``b = ln(LP/S)`` to the liquidation price):
  the distance in units of the forecast volatility over the horizon, ``|b| / (σ_GARCH·√h)``, and
  in units of the 30-day realised one, the ratio of GARCH to realised volatility, the
  probabilities as logits, and the market features that depend on the side turned to the side
  (a long is hurt by a fall: momentum, trend and drawdown are signed by the side, so one model
  reads both sides).

The label is the backtest's: 1 when the mark price reached the liquidation price in bars
``t+1 … t+h``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from bti_core import indicators as ind
from bti_core.risk.metrics import logit
from bti_core.risk.probability import HOURS_PER_YEAR

# Side-free context shared by the market and the order features: liquidity and calendar.
_CONTEXT_COLUMNS: tuple[str, ...] = (
    "volume_shock",
    "amihud_ratio",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "macro",
)
# Columns of `market_frame`, in order.
MARKET_COLUMNS: tuple[str, ...] = (
    "rv_24h",
    "rv_7d",
    "rv_30d",
    "rv_ratio_day_month",
    "trend_24h",
    "trend_168h",
    "slope_168h",
    "momentum_24h",
    "momentum_7d",
    "rsi",
    "bb_width",
    "atr_pct",
    "drawdown_30d",
    "runup_30d",
    "funding_rate",
    "funding_z",
    "basis",
    *_CONTEXT_COLUMNS,
)

# Features of an order (`order_features`); the stacked models add the two probabilities.
ORDER_COLUMNS: tuple[str, ...] = (
    "side_sign",
    "log_leverage",
    "log_horizon",
    "distance_garch",
    "distance_rv",
    "garch_over_rv",
    "rv_ratio_day_month",
    "trend_24h_side",
    "trend_168h_side",
    "slope_168h_side",
    "momentum_24h_side",
    "momentum_7d_side",
    "rsi_side",
    "bb_width",
    "atr_pct",
    "adverse_30d",
    "funding_side",
    "funding_z_side",
    "basis_side",
    *_CONTEXT_COLUMNS,
)
PROBABILITY_COLUMNS: tuple[str, ...] = ("logit_engine", "logit_baseline")
ALL_COLUMNS: tuple[str, ...] = ORDER_COLUMNS + PROBABILITY_COLUMNS

_DAY, _WEEK, _MONTH = 24, 24 * 7, 24 * 30


def market_frame(
    last: pd.DataFrame,
    mark: pd.DataFrame,
    funding: pd.DataFrame | None = None,
    macro: pd.Series | None = None,
) -> pd.DataFrame:
    """Hourly market features of one symbol, indexed by the bar's open time ``ts``.

    ``last`` and ``mark`` are hourly bars (``ts, open, high, low, close, volume``); ``funding``
    has ``ts, funding_rate`` (a fraction per interval); ``macro`` a signal in [−1, 1] by date
    (`bti_core.risk.index.load_macro_signals`). The row of bar ``t`` reads nothing after ``t``:
    rolling windows end at ``t``, a funding rate counts from its own time, and a macro signal
    from the day after its date (a day's signal is published once the day is over)."""
    hours = pd.date_range(mark["ts"].iloc[0], mark["ts"].iloc[-1], freq="1h")
    m = mark.set_index("ts").reindex(hours)
    lp = last.set_index("ts").reindex(hours)
    close = m["close"].astype(float)
    r = pd.Series(np.log(close.to_numpy()), index=hours).diff()
    out = pd.DataFrame(index=hours)
    per_year = np.sqrt(HOURS_PER_YEAR)

    def rv(window: int) -> pd.Series:
        return np.sqrt((r**2).rolling(window, min_periods=window * 2 // 3).mean()) * per_year

    out["rv_24h"], out["rv_7d"], out["rv_30d"] = rv(_DAY), rv(_WEEK), rv(_MONTH)
    out["rv_ratio_day_month"] = np.log(out["rv_24h"] / out["rv_30d"])
    # a gap hour (exchange maintenance) repeats the last close, so a day's window across it
    # still has a value; `ta`'s windows do not skip gaps either
    filled = close.ffill()
    high, low = m["high"].fillna(filled), m["low"].fillna(filled)
    sma24 = filled.rolling(_DAY, min_periods=_DAY).mean()
    sma168 = filled.rolling(_WEEK, min_periods=_WEEK).mean()
    out["trend_24h"] = np.log(filled / sma24)
    out["trend_168h"] = np.log(filled / sma168)
    out["slope_168h"] = np.log(sma168 / sma168.shift(_DAY))
    out["momentum_24h"] = np.log(filled / filled.shift(_DAY))
    out["momentum_7d"] = np.log(filled / filled.shift(_WEEK))
    out["rsi"] = (ind.rsi(filled) - 50) / 50
    out["bb_width"] = ind.bollinger(filled)["bb_width"]
    out["atr_pct"] = (ind.atr(high, low, filled) / filled).replace(0.0, np.nan)
    out["drawdown_30d"] = np.log(filled / high.rolling(_MONTH, min_periods=_DAY).max())
    out["runup_30d"] = np.log(filled / low.rolling(_MONTH, min_periods=_DAY).min())
    if funding is not None and len(funding):
        f = funding.sort_values("ts").set_index("ts")["funding_rate"].astype(float)
        f = f[~f.index.duplicated(keep="last")]
        stats = ind.funding_features(f.rename("funding_rate").reset_index(), window=90)
        known = stats.reindex(stats.index.union(hours)).ffill().reindex(hours)
        out["funding_rate"] = known["funding_rate"] * 1e4  # basis points per interval
        out["funding_z"] = known["funding_z"].clip(-10, 10)
    else:
        out["funding_rate"] = 0.0
        out["funding_z"] = 0.0
    out["basis"] = (lp["close"] / close - 1) * 1e4  # basis points
    volume = lp["volume"].astype(float)
    day_volume = volume.rolling(_DAY, min_periods=_DAY // 2).sum()
    month_volume = volume.rolling(_MONTH, min_periods=_MONTH // 2).sum() / 30
    with np.errstate(divide="ignore", invalid="ignore"):
        out["volume_shock"] = np.log(day_volume / month_volume)
        lclose = lp["close"].astype(float).ffill()
        ill_day = ind.amihud_illiquidity(lclose, volume, _DAY)
        ill_month = ind.amihud_illiquidity(lclose, volume, _MONTH)
        out["amihud_ratio"] = np.log(ill_day / ill_month)
    hour = hours.hour.to_numpy()
    dow = hours.dayofweek.to_numpy()
    out["hour_sin"], out["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    out["dow_sin"], out["dow_cos"] = np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)
    if macro is not None and len(macro):
        published = macro.copy()
        published.index = published.index + pd.Timedelta(days=1)
        known_macro = published.reindex(published.index.union(hours)).ffill().reindex(hours)
        out["macro"] = known_macro.fillna(0.0).to_numpy()
    else:
        out["macro"] = 0.0
    out = out.replace([np.inf, -np.inf], np.nan)
    out.index.name = "ts"
    return out[list(MARKET_COLUMNS)]


def order_features(rows: pd.DataFrame, market: pd.DataFrame) -> pd.DataFrame:
    """Features of each order row (``ts, side, leverage, horizon, engine, baseline, sigma2,
    log_barrier``; side "long"/"short") joined with its start hour's market features.

    Returns the rows' index with `ALL_COLUMNS`; missing market values stay NaN (the models'
    pipelines impute them from the training fold)."""
    mk = market.reindex(pd.DatetimeIndex(rows["ts"]))
    mk.index = rows.index
    side = np.where(rows["side"].to_numpy() == "long", 1.0, -1.0)
    h = rows["horizon"].to_numpy(dtype=float)
    dist = np.abs(rows["log_barrier"].to_numpy(dtype=float))
    garch_vol = np.sqrt(rows["sigma2"].to_numpy(dtype=float))  # hourly
    rv_hourly = mk["rv_30d"].to_numpy() / np.sqrt(HOURS_PER_YEAR)
    out = pd.DataFrame(index=rows.index)
    out["side_sign"] = side
    out["log_leverage"] = np.log(rows["leverage"].to_numpy(dtype=float))
    out["log_horizon"] = np.log(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["distance_garch"] = dist / (garch_vol * np.sqrt(h))
        out["distance_rv"] = dist / (rv_hourly * np.sqrt(h))
        out["garch_over_rv"] = np.log(garch_vol / rv_hourly)
    out["rv_ratio_day_month"] = mk["rv_ratio_day_month"]
    # signed so that a positive value is good for the position: a long likes a rising market
    for col in ("trend_24h", "trend_168h", "slope_168h", "momentum_24h", "momentum_7d", "rsi"):
        out[f"{col}_side"] = side * mk[col]
    out["bb_width"] = mk["bb_width"]
    out["atr_pct"] = mk["atr_pct"]
    # how far the price already moved against the side over 30 days (≤ 0 for a long's fall)
    out["adverse_30d"] = np.where(side > 0, mk["drawdown_30d"], -mk["runup_30d"])
    # a long pays positive funding: the carry against the position
    out["funding_side"] = side * mk["funding_rate"]
    out["funding_z_side"] = side * mk["funding_z"]
    out["basis_side"] = side * mk["basis"]
    for col in ("volume_shock", "amihud_ratio", "hour_sin", "hour_cos", "dow_sin", "dow_cos"):
        out[col] = mk[col]
    out["macro"] = mk["macro"]
    out["logit_engine"] = logit(rows["engine"])
    out["logit_baseline"] = logit(rows["baseline"])
    return out.replace([np.inf, -np.inf], np.nan)[list(ALL_COLUMNS)]


def order_vector(
    market: Mapping[Any, Any],
    *,
    side: int,
    leverage: float,
    horizon: float,
    engine: float,
    baseline: float,
    sigma2: float,
    log_barrier: float,
) -> np.ndarray:
    """`order_features` for one order, in plain floats (a quote's ≤ 5 ms has no room for a
    one-row DataFrame): the same formulas, in `ALL_COLUMNS` order; a test holds the two equal."""
    sgn = 1.0 if side > 0 else -1.0
    m = market.get

    def f(name: str) -> float:
        v = m(name)
        return float("nan") if v is None else float(v)

    dist = abs(log_barrier)
    garch_vol = math.sqrt(sigma2) if sigma2 > 0 else float("nan")
    rv_hourly = f("rv_30d") / math.sqrt(HOURS_PER_YEAR)
    root_h = math.sqrt(horizon)

    def ratio(a: float, b: float) -> float:
        return a / b if b and math.isfinite(b) else float("nan")

    def log_ratio(a: float, b: float) -> float:
        r = ratio(a, b)
        return math.log(r) if r > 0 else float("nan")

    values = {
        "side_sign": sgn,
        "log_leverage": math.log(leverage),
        "log_horizon": math.log(horizon),
        "distance_garch": ratio(dist, garch_vol * root_h),
        "distance_rv": ratio(dist, rv_hourly * root_h),
        "garch_over_rv": log_ratio(garch_vol, rv_hourly),
        "rv_ratio_day_month": f("rv_ratio_day_month"),
        "bb_width": f("bb_width"),
        "atr_pct": f("atr_pct"),
        "adverse_30d": f("drawdown_30d") if sgn > 0 else -f("runup_30d"),
        "funding_side": sgn * f("funding_rate"),
        "funding_z_side": sgn * f("funding_z"),
        "basis_side": sgn * f("basis"),
        "macro": f("macro"),
        "logit_engine": float(logit(engine)),
        "logit_baseline": float(logit(baseline)),
    }
    for col in ("trend_24h", "trend_168h", "slope_168h", "momentum_24h", "momentum_7d", "rsi"):
        values[f"{col}_side"] = sgn * f(col)
    for col in ("volume_shock", "amihud_ratio", "hour_sin", "hour_cos", "dow_sin", "dow_cos"):
        values[col] = f(col)
    out = np.array([values[c] for c in ALL_COLUMNS], dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out
