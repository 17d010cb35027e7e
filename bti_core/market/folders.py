"""A folder of exchange files (Binance public data, normalised CSV, Parquet) read as each symbol's
hourly bars, for the backtest, the learned models and the forecasts, which read folders rather
than the warehouse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bti_core.errors import DataFormatError
from bti_core.market.cleaning import clean_bars
from bti_core.market.identify import discover, identify
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.sources import read_source

HOUR = pd.Timedelta(hours=1)


def load_folder(
    folder: str | Path, skipped: list[str] | None = None
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Cleaned hourly (last-price bars, mark-price bars) per symbol from a folder in the format
    of the development data (``SYMBOL_1h_ohlcv``, ``SYMBOL_1h_mark``).

    Binance's monthly files (``BTCUSDT-1h-2022-01.zip``, mark prices under a ``markPriceKlines``
    folder) are joined. Sub-hourly files (``SYMBOL_5m_mark`` …) are accepted where no hourly
    ones are: each kind is cleaned at its own timeframe, then aggregated to hours (high = max,
    low = min), so a liquidation inside an hour is seen exactly as on hourly bars. Where several
    timeframes of a kind are present the hourly one is used, else the finest.

    What is left out is said in ``skipped`` (when given): files whose name or header is not a
    known format (a downloaded folder often holds a README or checksums beside the bars), bars
    coarser than an hour, and symbols without both last-price and mark-price bars.
    """
    notes = skipped if skipped is not None else []
    found: dict[str, dict[Kind, dict[str, list[Path]]]] = {}
    unread: dict[str, list[str]] = {}  # reason → file names (a monthly tree repeats a reason)
    for f in discover(folder):
        try:
            src = identify(f)
        except DataFormatError as exc:
            why = f"expected {exc.expected}" + (f"; got {exc.got!r}" if exc.got else "")
            unread.setdefault(why.replace(f.name, "…"), []).append(f.name)
            continue
        if src.kind is Kind.FUNDING:
            continue
        if not _fits_hours(src.timeframe):
            why = f"{src.timeframe} bars; the backtest needs 1h or finer"
            unread.setdefault(why, []).append(f.name)
            continue
        found.setdefault(src.symbol, {}).setdefault(src.kind, {}).setdefault(
            src.timeframe, []
        ).append(f)
    for why, names in unread.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        notes.append(f"{shown}: not read ({why})")
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for sym, kinds in sorted(found.items()):
        if Kind.MARK not in kinds or Kind.OHLCV not in kinds:
            missing = "mark-price" if Kind.MARK not in kinds else "last-price"
            notes.append(
                f"{sym}: left out, no {missing} bars (positions open at the last price and are "
                "liquidated on the mark price)"
            )
            continue
        tf_mark, tf_last = _pick_timeframe(kinds[Kind.MARK]), _pick_timeframe(kinds[Kind.OHLCV])
        mark, _ = clean_bars(
            _read_all(kinds[Kind.MARK][tf_mark]), symbol=sym, timeframe=tf_mark, kind=Kind.MARK
        )
        same = tf_mark == tf_last
        last, _ = clean_bars(
            _read_all(kinds[Kind.OHLCV][tf_last]),
            symbol=sym,
            timeframe=tf_last,
            mark=mark if same else None,
        )
        out[sym] = (to_hourly(last), to_hourly(mark))
    if not out:
        raise FileNotFoundError(
            f"{folder}: no SYMBOL_<timeframe>_ohlcv and SYMBOL_<timeframe>_mark pairs found "
            "(timeframes of one hour or less, e.g. 1h, 15m, 1m)"
            + "".join(f"; {note}" for note in notes)
        )
    return out


def load_funding(folder: str | Path) -> dict[str, pd.DataFrame]:
    """Realised funding (``ts, funding_rate``) per symbol from the same folder, where there is
    any (Binance's monthly funding files are joined); a symbol without it is left out."""
    files: dict[str, list[Path]] = {}
    for f in discover(folder):
        try:
            src = identify(f)
        except DataFormatError:
            continue
        if src.kind is Kind.FUNDING:
            files.setdefault(src.symbol, []).append(f)
    return {sym: _read_all(paths)[["ts", "funding_rate"]] for sym, paths in sorted(files.items())}


def _fits_hours(timeframe: str) -> bool:
    step = timeframe_delta(timeframe)
    return step <= HOUR and HOUR % step == pd.Timedelta(0)


def _pick_timeframe(files: dict[str, list[Path]]) -> str:
    return "1h" if "1h" in files else min(files, key=timeframe_delta)


def _read_all(files: list[Path]) -> pd.DataFrame:
    """One frame from one file or many (Binance's monthly files), in time order; a bar present
    in two files is kept once."""
    frames = [read_source(identify(f)) for f in files]
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return df.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")


def to_hourly(bars: pd.DataFrame) -> pd.DataFrame:
    """Aggregate bars of an hour or less to hourly bars (open first, high max, low min, close
    last, volume sum, flags OR); hours with no bar are left out, as gaps."""
    if len(bars) < 2 or (bars["ts"].diff().dropna() >= HOUR).all():
        return bars
    hour = bars["ts"].dt.floor("1h")
    g = bars.groupby(hour, sort=True)
    out = pd.DataFrame(
        {
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "volume": g["volume"].sum(),
        }
    )
    if "flags" in bars.columns:
        out["flags"] = g["flags"].agg(np.bitwise_or.reduce).astype(bars["flags"].dtype)
    return out.rename_axis("ts").reset_index()
