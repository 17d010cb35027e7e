"""Market context of one symbol: basis, funding, open interest and the accounts' long/short
ratio on one hourly time axis, from whatever the warehouse holds (each where its data exist).

- **Basis**: ``mark / last − 1`` of each hourly close (the mark price is what liquidates).
- **Funding**: the last realised rate at or before each hour (per 8 h, as the exchange pays).
- **Open interest**: contracts and their USDT value at the end of each period.
- **Long/short ratio**: accounts long ÷ accounts short (Binance's global account ratio).
"""

from __future__ import annotations

import pandas as pd

from bti_core.errors import BTIError
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind
from bti_core.market.warehouse import Warehouse

COLUMNS = [
    "ts",
    "mark",
    "last",
    "basis",
    "funding_rate",
    "open_interest",
    "open_interest_value",
    "long_short_ratio",
    "long_account",
]


def _read(
    warehouse: Warehouse, kind: Kind, symbol: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame | None:
    tfs = warehouse.timeframes(symbol, kind)
    if not tfs:
        return None
    tf = "1h" if "1h" in tfs else (FUNDING_TIMEFRAME if kind is Kind.FUNDING else tfs[-1])
    try:
        df = warehouse.query(kind, symbol, tf, start, end)
    except (BTIError, ValueError, FileNotFoundError):
        return None
    return df if len(df) else None


def market_context(
    warehouse: Warehouse, symbol: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Hourly rows from ``start`` to ``end`` (`COLUMNS`; a column is empty where its data do
    not exist)."""
    base = _read(warehouse, Kind.MARK, symbol, start, end)
    last = _read(warehouse, Kind.OHLCV, symbol, start, end)
    if base is None and last is None:
        return pd.DataFrame(columns=COLUMNS)
    spine = base if base is not None else last
    assert spine is not None
    out = pd.DataFrame({"ts": spine["ts"]})
    out["mark"] = spine["close"].to_numpy() if base is not None else float("nan")
    if last is not None:
        out = out.merge(
            last[["ts", "close"]].rename(columns={"close": "last"}), on="ts", how="left"
        )
    else:
        out["last"] = float("nan")
    out["basis"] = out["mark"] / out["last"] - 1.0
    out = out.sort_values("ts").reset_index(drop=True)
    for kind, cols in (
        (Kind.FUNDING, ["funding_rate"]),
        (Kind.OPEN_INTEREST, ["open_interest", "open_interest_value"]),
        (Kind.LONG_SHORT, ["long_short_ratio", "long_account"]),
    ):
        pad = pd.Timedelta(hours=8) if kind is Kind.FUNDING else pd.Timedelta(0)
        df = _read(warehouse, kind, symbol, start - pad, end)
        if df is None:
            for c in cols:
                out[c] = float("nan")
            continue
        # as of each hour: the latest reading at or before it (never a later one)
        out = pd.merge_asof(out, df[["ts", *cols]].sort_values("ts"), on="ts", direction="backward")
    return out[COLUMNS]
