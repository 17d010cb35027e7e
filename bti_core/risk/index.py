"""The dynamic risk index (0–100) of an insured order, as a sum of explained contributions.

``index = Σ_i w_i · s_i`` with weights ``w_i`` summing to 100 and factor scores ``s_i ∈ [0, 1]``
(0 = no added risk, 1 = the most). Each factor's contribution is shown with the quote, so the
index explains itself. The weights put the model's liquidation probability first and let the
order's terms, the market's state, the trader's record and the macro regime shade it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bti_core import indicators as ind
from bti_core.errors import DataFormatError

WEIGHTS: dict[str, float] = {
    "liquidation_probability": 30,
    "leverage": 10,
    "coverage": 5,
    "duration": 5,
    "position_size": 5,
    "order_terms": 5,
    "liquidity": 5,
    "trend": 5,
    "rsi": 3,
    "atr": 4,
    "bollinger_width": 3,
    "funding": 5,
    "trader_history": 10,
    "macro": 5,
}
LABELS: dict[str, str] = {
    "liquidation_probability": "Liquidation probability (model)",
    "leverage": "Leverage",
    "coverage": "Coverage vs margin",
    "duration": "Policy duration",
    "position_size": "Position size vs 24 h volume",
    "order_terms": "Order type and margin mode",
    "liquidity": "Market liquidity (Amihud)",
    "trend": "Trend vs 50-bar average",
    "rsi": "RSI 14",
    "atr": "ATR vs distance to liquidation",
    "bollinger_width": "Bollinger width",
    "funding": "Funding stress",
    "trader_history": "Trader's record",
    "macro": "Macro regime",
}
assert math.isclose(sum(WEIGHTS.values()), 100)


@dataclass(frozen=True)
class MarketFeatures:
    """The market's state for the risk index, from recent hourly bars and funding."""

    close: float
    sma50: float
    rsi: float
    atr_pct: float  # ATR(14) / close
    bb_width_pct: float  # percentile of today's Bollinger width in the last 90 days, 0–1
    amihud_pct: float  # percentile of today's Amihud illiquidity in the last 90 days, 0–1
    quote_volume_24h: float
    funding_annualised: float  # last realised funding, a year's worth (+: longs pay)

    @classmethod
    def neutral(cls, close: float) -> MarketFeatures:
        return cls(close, close, 50.0, 0.0, 0.5, 0.5, math.inf, 0.0)


def market_features(bars: pd.DataFrame, funding: pd.DataFrame | None = None) -> MarketFeatures:
    """Features from the last ~90 days of hourly last-price bars (``ts``, OHLCV)."""
    if len(bars) < 60:
        raise ValueError(f"need at least 60 hourly bars for market features, got {len(bars)}")
    b = bars.tail(24 * 90).reset_index(drop=True)
    c = b["close"]
    width = ind.bollinger(c)["bb_width"]
    illiq = ind.amihud_illiquidity(c, b["volume"], 24)

    def pct(s: pd.Series) -> float:
        s = s.dropna()
        return float((s <= s.iloc[-1]).mean()) if len(s) else 0.5

    f_ann = 0.0
    if funding is not None and len(funding):
        f_ann = float(funding["funding_rate"].iloc[-1]) * 3 * 365
    return MarketFeatures(
        close=float(c.iloc[-1]),
        sma50=float(ind.sma(c, 50).iloc[-1]),
        rsi=float(ind.rsi(c).iloc[-1]),
        atr_pct=float(ind.atr(b["high"], b["low"], c).iloc[-1] / c.iloc[-1]),
        bb_width_pct=pct(width),
        amihud_pct=pct(illiq),
        quote_volume_24h=float(ind.quote_volume(c, b["volume"]).tail(24).sum()),
        funding_annualised=f_ann,
    )


@dataclass(frozen=True)
class TraderHistory:
    """A trader's record. ``policies == 0`` means unknown: the factor is neutral."""

    policies: int = 0
    liquidations: int = 0
    claims: int = 0
    average_leverage: float = 0.0
    win_rate: float | None = None


@dataclass(frozen=True)
class Contribution:
    factor: str
    label: str
    value: str  # the input, as shown to the trader
    score: float  # 0–1
    weight: float
    points: float  # weight × score


@dataclass(frozen=True)
class RiskIndex:
    value: float
    contributions: tuple[Contribution, ...]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.contributions])


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x))) if math.isfinite(x) else 1.0


def risk_index(
    *,
    probability: float,
    side: int,
    leverage: float,
    max_leverage: float,
    coverage: float,
    margin: float,
    duration_hours: int,
    max_duration_hours: int,
    notional: float,
    order_type: str,
    margin_mode: str,
    distance_to_liquidation: float,  # |LP − spot| / spot
    market: MarketFeatures,
    trader: TraderHistory,
    macro_signal: float = 0.0,  # −1 stress … +1 calm; 0 neutral
) -> RiskIndex:
    """The index and its per-factor contributions (see the module docstring)."""
    hist_score = 0.5
    hist_text = "new trader (neutral)"
    if trader.policies > 0:
        win = 0.5 if trader.win_rate is None else trader.win_rate
        hist_score = (
            0.4 * min(1.0, trader.liquidations / max(1, trader.policies) * 2)
            + 0.3 * min(1.0, trader.average_leverage / 50)
            + 0.2 * min(1.0, trader.claims / max(1, trader.policies) * 2)
            + 0.1 * (1 - win)
        )
        hist_text = (
            f"{trader.policies} policies, {trader.liquidations} liquidated, "
            f"{trader.claims} claims, "
            f"avg {trader.average_leverage:.0f}×"
        )
    trend_gap = (market.sma50 - market.close) / market.close * side  # > 0: price moving against
    scores: dict[str, tuple[float, str]] = {
        "liquidation_probability": (1 - math.exp(-probability / 0.1), f"{probability:.2%}"),
        "leverage": (
            _clip((leverage - 1) / max(1.0, max_leverage - 1)),
            f"{leverage:g}× of {max_leverage:g}×",
        ),
        "coverage": (_clip(coverage / margin), f"{coverage:,.0f} of {margin:,.0f} USDT margin"),
        "duration": (_clip(duration_hours / max_duration_hours), f"{duration_hours} h"),
        "position_size": (
            _clip(notional / market.quote_volume_24h / 0.001)
            if market.quote_volume_24h > 0
            else 1.0,
            f"{notional / market.quote_volume_24h:.4%} of 24 h volume"
            if market.quote_volume_24h > 0
            else "no volume",
        ),
        "order_terms": (
            0.5 * (order_type == "limit") + 0.5 * (margin_mode == "cross"),
            f"{order_type}, {margin_mode}",
        ),
        "liquidity": (
            market.amihud_pct,
            f"illiquidity at the {market.amihud_pct:.0%} percentile of 90 d",
        ),
        "trend": (_clip(0.5 + 10 * trend_gap), f"price {-trend_gap * side:+.2%} vs SMA 50"),
        "rsi": (_clip(market.rsi / 100 if side > 0 else 1 - market.rsi / 100), f"{market.rsi:.0f}"),
        "atr": (
            _clip(market.atr_pct / distance_to_liquidation) if distance_to_liquidation > 0 else 1.0,
            f"ATR {market.atr_pct:.2%} vs {distance_to_liquidation:.2%} to liquidation",
        ),
        "bollinger_width": (market.bb_width_pct, f"{market.bb_width_pct:.0%} percentile of 90 d"),
        "funding": (
            _clip(0.5 + side * market.funding_annualised / 0.5),
            f"{market.funding_annualised:+.1%} a year "
            f"({'longs' if market.funding_annualised >= 0 else 'shorts'} pay)",
        ),
        "trader_history": (hist_score, hist_text),
        "macro": (_clip((1 - macro_signal) / 2), f"signal {macro_signal:+.2f}"),
    }
    contributions = tuple(
        Contribution(k, LABELS[k], text, s, WEIGHTS[k], WEIGHTS[k] * s)
        for k, (s, text) in scores.items()
    )
    return RiskIndex(float(sum(c.points for c in contributions)), contributions)


def load_macro_signals(path: str | Path) -> pd.Series:
    """A user-supplied regime table: CSV ``date,signal`` with signal in [−1, 1] (−1 stress, +1
    calm). Returns the signal indexed by UTC date."""
    p = Path(path)
    try:
        df = pd.read_csv(p)
    except (OSError, pd.errors.ParserError) as exc:
        raise DataFormatError(p, "a CSV file with columns date,signal", got=str(exc)) from exc
    if list(df.columns[:2]) != ["date", "signal"]:
        raise DataFormatError(
            p, "the header 'date,signal'", line=1, got=",".join(map(str, df.columns))
        )
    dates = pd.to_datetime(df["date"], utc=True, errors="coerce")
    sig = pd.to_numeric(df["signal"], errors="coerce")
    bad = dates.isna() | sig.isna() | (sig.abs() > 1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            p,
            "a date and a signal between −1 and 1",
            line=i + 2,
            got=f"{df['date'].iloc[i]},{df['signal'].iloc[i]}",
        )
    return pd.Series(sig.to_numpy(float), index=dates.dt.normalize()).sort_index()


def macro_signal_at(signals: pd.Series | None, when: pd.Timestamp) -> float:
    """The latest signal on or before ``when``; 0 (neutral) without a table."""
    if signals is None or signals.empty:
        return 0.0
    upto = signals[signals.index <= when]
    return float(upto.iloc[-1]) if len(upto) else 0.0
