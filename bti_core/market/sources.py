"""Importers for market-data files, all returning canonical frames (see `schema`).

Formats read:

- **normalised CSV** (the format of BTI's own exports and of the development data set):
  ``timestamp_utc,open,high,low,close,volume`` or ``timestamp_utc,funding_rate``, ISO-8601 UTC
  times, optionally gzip-compressed; file names ``SYMBOL_TF_ohlcv``, ``SYMBOL_TF_mark``,
  ``SYMBOL_TF_funding_rate``.
- **Binance USDT-M public data** (data.binance.vision, ``futures/um``): kline and mark-price
  kline CSVs of 12 columns (``open_time,open,high,low,close,volume,close_time,quote_volume,
  count,taker_buy_volume,taker_buy_quote_volume,ignore``), with or without the header row that
  the exchange added in 2022, open times in milliseconds or (since 2025) microseconds, as
  ``.csv`` or the published ``.zip``; file names ``BTCUSDT-1h-2024-01.zip`` (monthly) or
  ``BTCUSDT-1h-2024-01-15.zip`` (daily). Mark-price klines are told apart by their folder
  (``markPriceKlines``) or by ``kind=Kind.MARK``. Funding files ``BTCUSDT-fundingRate-2024-01``:
  ``calc_time,funding_interval_hours,last_funding_rate``.
- **Parquet** with the canonical columns (``ts`` plus the kind's columns).

Parsing streams the file through pyarrow's CSV reader in blocks (bounded by `ImportLimits`) and,
only when that fails, re-reads it line by line to name the first bad line and what was expected
there. A header row is matched by name, so its columns may come in any order; a header that is
not the format's is refused. Every time must lie between 2009 and the present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bti_core.errors import DataFormatError
from bti_core.market.identify import Format, SourceFile, discover, identify
from bti_core.market.reading import (
    DEFAULT_LIMITS,
    Check,
    ImportLimits,
    bar_frame,
    check_times,
    header_names,
    integer_error,
    iso_times,
    number_error,
    parse_times,
    read_head,
    read_table,
    utc_series,
)
from bti_core.market.schema import BAR_COLUMNS, EARLIEST_TIME, FUNDING_COLUMNS, Kind, columns_for

NORMALISED_BAR_HEADER = "timestamp_utc,open,high,low,close,volume"
NORMALISED_FUNDING_HEADER = "timestamp_utc,funding_rate"
BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
BINANCE_FUNDING_COLUMNS = ("calc_time", "funding_interval_hours", "last_funding_rate")


# --- reading, bounded ------------------------------------------------------------------


def _read_normalised(
    src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None
) -> pd.DataFrame:
    cols = columns_for(src.kind)
    expected = ("timestamp_utc", *cols[1:])
    names = header_names(src, read_head(src, limits), expected)
    value_types = dict.fromkeys(cols[1:], pa.float64())
    checks: dict[str, Check] = {
        "timestamp_utc": iso_times(),
        **dict.fromkeys(cols[1:], number_error),
    }
    try:  # times with a zone (…Z, +00:00), the format's own
        types = {"timestamp_utc": pa.timestamp("us", tz="UTC"), **value_types}
        held = [read_table(src, limits, names, types, checks, skip_header=True, diagnose=False)]
    except pa.ArrowException:  # naive times are taken as UTC
        types = {"timestamp_utc": pa.timestamp("us"), **value_types}
        held = [read_table(src, limits, names, types, checks, skip_header=True)]
    ts = parse_times(src, held[0].column("timestamp_utc"), limits, now=now, skip_header=True)
    return bar_frame(ts, held, cols[1:])


def _read_binance_klines(
    src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None
) -> pd.DataFrame:
    header = read_head(src, limits)
    first_field = header.split(",", 1)[0].strip()
    has_header = not first_field.lstrip("+-").isdigit()
    names = (
        header_names(
            src,
            header,
            BINANCE_KLINE_COLUMNS,
            or_rows="Binance kline rows (an integer open time in ms or µs, then "
            "open,high,low,close,volume,…)",
        )
        if has_header
        else BINANCE_KLINE_COLUMNS
    )
    types: dict[str, pa.DataType] = {"open_time": pa.int64()}
    types |= dict.fromkeys(("open", "high", "low", "close", "volume"), pa.float64())
    checks: dict[str, Check] = {
        "open_time": integer_error,
        **dict.fromkeys(("open", "high", "low", "close", "volume"), number_error),
        "close_time": integer_error,
    }
    held = [read_table(src, limits, names, types, checks, skip_header=has_header)]
    ts = parse_times(
        src, held[0].column("open_time"), limits, now=now, skip_header=has_header, epoch=True
    )
    return bar_frame(ts, held, BAR_COLUMNS[1:])


def _read_binance_funding(
    src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None
) -> pd.DataFrame:
    names = header_names(src, read_head(src, limits), BINANCE_FUNDING_COLUMNS)
    types = {"calc_time": pa.int64(), "last_funding_rate": pa.float64()}
    checks: dict[str, Check] = {
        "calc_time": integer_error,
        "funding_interval_hours": integer_error,
        "last_funding_rate": number_error,
    }
    table = read_table(src, limits, names, types, checks, skip_header=True)
    ts = parse_times(src, table.column("calc_time"), limits, now=now, skip_header=True, epoch=True)
    return pd.DataFrame({"ts": ts, "funding_rate": table.column("last_funding_rate").to_numpy()})


def _read_parquet(src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None) -> pd.DataFrame:
    cols = columns_for(src.kind)
    try:
        pf = pq.ParquetFile(src.path)
        if pf.metadata.num_rows > limits.max_rows:
            raise DataFormatError(
                src.path,
                f"at most {limits.max_rows:,} rows per file (BTI_IMPORT_MAX_ROWS)",
                got=f"{pf.metadata.num_rows:,} rows",
            )
        present = set(pf.schema_arrow.names)
        missing = [c for c in cols if c not in present]
        if missing:
            raise DataFormatError(
                src.path,
                f"Parquet columns {', '.join(cols)} (missing {', '.join(missing)})",
                got=", ".join(pf.schema_arrow.names)[:200],
            )
        table = pf.read(columns=list(cols))
    except FileNotFoundError:
        raise DataFormatError(src.path, "an existing file", got="no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(src.path, "a readable Parquet file", got=str(exc)[:300]) from exc
    ts_col = table.column("ts")
    if not pa.types.is_timestamp(ts_col.type):
        raise DataFormatError(src.path, "column ts of timestamps", got=str(ts_col.type))
    for c in cols[1:]:
        t = table.column(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise DataFormatError(src.path, f"column {c} of numbers", got=str(t))
    if ts_col.type.tz is None:  # naive times are UTC
        ts_col = pc.assume_timezone(ts_col, "UTC")
    try:
        ts_us = ts_col.cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid as exc:  # a second- or ms-resolution time beyond µs range
        raise DataFormatError(src.path, "times from 2009 to now", got=str(exc)[:200]) from exc
    nulls = ts_us.is_null().to_numpy(zero_copy_only=False)
    us = pc.fill_null(ts_us.cast(pa.int64()), EARLIEST_TIME.value // 1000).to_numpy()
    check_times(
        src,
        us.astype(np.int64, copy=False),
        now=now,
        where=lambda i: {"row": i + 1},
    )
    frame = pd.DataFrame(
        {c: table.column(c).to_numpy(zero_copy_only=False).astype("float64") for c in cols[1:]}
    )
    frame.insert(0, "ts", utc_series(us.astype(np.int64, copy=False), nulls))
    return frame


def read_source(
    src: SourceFile,
    *,
    limits: ImportLimits = DEFAULT_LIMITS,
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Read an identified file into its canonical frame (not yet cleaned).

    Every time must lie between `EARLIEST_TIME` and ``now`` (default: the clock) plus
    `CLOCK_SKEW`; the file may not exceed ``limits``. Raises `DataFormatError` naming the file,
    the line (or Parquet row) and what is allowed there."""
    if src.format is Format.PARQUET:
        frame = _read_parquet(src, limits, now)
    else:
        if not read_head(src, limits):
            raise DataFormatError(src.path, "at least one row of data", got="an empty file")
        if src.format is Format.NORMALISED:
            frame = _read_normalised(src, limits, now)
        elif src.format is Format.BINANCE_FUNDING:
            frame = _read_binance_funding(src, limits, now)
        else:
            frame = _read_binance_klines(src, limits, now)
    if frame.empty:
        raise DataFormatError(src.path, "at least one row of data", got="a header only")
    return frame


def read_file(
    path: str | Path, *, limits: ImportLimits = DEFAULT_LIMITS, now: pd.Timestamp | None = None
) -> tuple[SourceFile, pd.DataFrame]:
    """Identify and read one file: ``src, frame = read_file("BTCUSDT_1h_ohlcv.csv.gz")``
    (`identify` it with hints, then `read_source`, when its name does not say everything)."""
    src = identify(path)
    return src, read_source(src, limits=limits, now=now)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical frame to Parquet (readable back by `read_file`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), p)
    return p


def write_normalised_csv(frame: pd.DataFrame, path: str | Path, kind: Kind) -> Path:
    """Write a canonical frame in the normalised CSV format (gzip when the name ends in .gz)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    cols = columns_for(kind)
    out = frame[list(cols)].rename(columns={"ts": "timestamp_utc"})
    out["timestamp_utc"] = out["timestamp_utc"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(p, index=False, compression="gzip" if p.suffix == ".gz" else None)
    return p


__all__ = [
    "BAR_COLUMNS",
    "DEFAULT_LIMITS",
    "FUNDING_COLUMNS",
    "Format",
    "ImportLimits",
    "SourceFile",
    "discover",
    "identify",
    "read_file",
    "read_source",
    "write_normalised_csv",
    "write_parquet",
]
