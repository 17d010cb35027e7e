"""What the Market page and the CLI show: one call that gathers bars, mark, funding,
indicators, headline figures and the last cleaning reports for a symbol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from bti_core import indicators as ind
from bti_core.db.engine import session_scope
from bti_core.db.repository import latest_ingest_runs
from bti_core.errors import NoDataError
from bti_core.market.cleaning import CleaningReport
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind, canonical_symbol, timeframe_delta
from bti_core.market.warehouse import Warehouse

WARMUP_BARS = 200  # history read before the range so that long indicators start filled
YEAR = pd.Timedelta(days=365)


@dataclass(frozen=True)
class MarketStats:
    last: float
    mark: float | None
    change_24h: float | None
    quote_volume_24h: float | None
    funding_rate: float | None
    funding_annualised: float | None
    realised_vol_30d: float | None
    as_of: pd.Timestamp


@dataclass
class MarketView:
    symbol: str
    timeframe: str
    bars: pd.DataFrame  # ts, OHLCV, flags, mark_close, realised_vol, quote_volume, indicators
    funding: pd.DataFrame  # ts, funding features
    stats: MarketStats
    reports: list[tuple[pd.Timestamp, str, CleaningReport]] = field(default_factory=list)


def periods_per_year(timeframe: str) -> float:
    return YEAR / timeframe_delta(timeframe)


def market_view(
    warehouse: Warehouse,
    symbol: str,
    timeframe: str,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    indicators: Sequence[str] = (),
    engine: Engine | None = None,
) -> MarketView:
    """Bars of ``symbol`` in ``[start, end)`` at ``timeframe`` with everything the page draws."""
    symbol = canonical_symbol(symbol)
    step = timeframe_delta(timeframe)
    ppy = periods_per_year(timeframe)
    vol_window = max(2, int(pd.Timedelta(days=30) / step))
    warm_start = start - step * max(WARMUP_BARS, vol_window) if start is not None else None
    bars = warehouse.bars(symbol, timeframe, warm_start, end)
    if bars.empty:
        raise NoDataError(f"no {symbol} bars at {timeframe} in the chosen range")
    bars = ind.compute(bars, indicators)
    bars["realised_vol"] = ind.realised_volatility(bars["close"], vol_window, ppy)
    bars["quote_volume"] = ind.quote_volume(bars["close"], bars["volume"])
    try:
        mark = warehouse.bars(symbol, timeframe, warm_start, end, kind=Kind.MARK)
        bars = bars.merge(
            mark[["ts", "close"]].rename(columns={"close": "mark_close"}), on="ts", how="left"
        )
    except NoDataError:
        bars["mark_close"] = np.nan
    try:
        funding_raw = warehouse.query(Kind.FUNDING, symbol, FUNDING_TIMEFRAME, warm_start, end)
        funding = (
            ind.funding_features(funding_raw).reset_index() if len(funding_raw) else _no_funding()
        )
    except NoDataError:
        funding = _no_funding()

    stats = _stats(bars, funding)
    if start is not None:
        bars = bars[bars["ts"] >= start].reset_index(drop=True)
        funding = funding[funding["ts"] >= start].reset_index(drop=True)
    reports = last_reports(engine, symbol) if engine is not None else []
    return MarketView(symbol, timeframe, bars, funding, stats, reports)


def _no_funding() -> pd.DataFrame:
    return pd.DataFrame(columns=["ts", "funding_rate", "funding_mean", "funding_annualised"])


def _stats(bars: pd.DataFrame, funding: pd.DataFrame) -> MarketStats:
    last = bars.iloc[-1]
    day_ago = bars[bars["ts"] <= last["ts"] - pd.Timedelta(hours=24)]
    day = bars[bars["ts"] > last["ts"] - pd.Timedelta(hours=24)]

    def opt(x: Any) -> float | None:
        return None if x is None or pd.isna(x) else float(x)

    return MarketStats(
        last=float(last["close"]),
        mark=opt(last.get("mark_close")),
        change_24h=opt(last["close"] / day_ago["close"].iloc[-1] - 1) if len(day_ago) else None,
        quote_volume_24h=opt(day["quote_volume"].sum()) if len(day) else None,
        funding_rate=opt(funding["funding_rate"].iloc[-1]) if len(funding) else None,
        funding_annualised=opt(funding["funding_annualised"].iloc[-1]) if len(funding) else None,
        realised_vol_30d=opt(last["realised_vol"]),
        as_of=last["ts"],
    )


def last_reports(
    engine: Engine, symbol: str, limit: int = 6
) -> list[tuple[pd.Timestamp, str, CleaningReport]]:
    """The newest cleaning reports of a symbol: (time of the run, source, report)."""
    with session_scope(engine) as session:
        runs = latest_ingest_runs(session, symbol=canonical_symbol(symbol), limit=limit)
        return [
            (pd.Timestamp(r.created_at), r.source, CleaningReport.from_dict(r.report)) for r in runs
        ]
