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

Parsing takes the fast path (pyarrow's CSV reader) and, only when that fails, re-reads the file
line by line to name the first bad line and what was expected there.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bti_core.errors import DataFormatError
from bti_core.market.schema import (
    BAR_COLUMNS,
    FUNDING_COLUMNS,
    FUNDING_TIMEFRAME,
    TIMEFRAMES,
    Kind,
    canonical_symbol,
    columns_for,
)


class Format(StrEnum):
    NORMALISED = "normalised"
    BINANCE_KLINES = "binance-klines"
    BINANCE_FUNDING = "binance-funding"
    PARQUET = "parquet"


@dataclass(frozen=True)
class SourceFile:
    """A file identified: what it holds and how to read it."""

    path: Path
    format: Format
    kind: Kind
    symbol: str
    timeframe: str


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

_TF = "|".join(sorted(TIMEFRAMES, key=len, reverse=True))
_NORMALISED_NAME = re.compile(
    rf"^(?P<symbol>[A-Za-z0-9]+)_(?P<tf>{_TF})_(?P<kind>ohlcv|mark|funding_rate|funding)$"
)
_BINANCE_NAME = re.compile(
    rf"^(?P<symbol>[A-Z0-9]+)-(?P<tf>{_TF}|fundingRate)-\d{{4}}-\d{{2}}(?:-\d{{2}})?$"
)
_MARK_DIRS = ("markpriceklines", "mark")
# Binance publishes these beside klines/ under the same file names; they are not prices a
# position trades or is liquidated at (the premium index is a rate near 0), so they are refused
# rather than read as last-price bars.
_OTHER_KLINE_DIRS = {
    "indexpriceklines": "index-price klines",
    "premiumindexklines": "premium-index klines",
}

_KIND_BY_SUFFIX = {
    "ohlcv": Kind.OHLCV,
    "mark": Kind.MARK,
    "funding_rate": Kind.FUNDING,
    "funding": Kind.FUNDING,
}

# Open times above this are microseconds (Binance switched in 2025); ms until the year 5138.
_MICROSECOND_THRESHOLD = 10**14


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".zip", ".csv", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _open_bytes(path: Path) -> bytes:
    """The file's CSV bytes, unpacking ``.gz`` and single-member ``.zip`` archives."""
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/")]
                if len(members) != 1:
                    raise DataFormatError(
                        path, "a zip archive holding exactly one CSV file", got=", ".join(members)
                    )
                return zf.read(members[0])
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except FileNotFoundError:
        raise DataFormatError(path, "an existing file", got="no such file") from None
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, OSError) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise DataFormatError(path, "a readable CSV, .csv.gz or .zip file", got=str(exc)) from exc


def _first_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")


def identify(
    path: str | Path,
    *,
    kind: Kind | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
) -> SourceFile:
    """Work out a file's format, kind, symbol and timeframe from its name and first line.

    Explicit arguments override what the name says. Raises `DataFormatError` naming the file and
    the accepted names when something cannot be worked out.
    """
    p = Path(path)
    stem = _stem(p)
    if p.suffix.lower() == ".parquet":
        fmt = Format.PARQUET
        m = _NORMALISED_NAME.match(stem)
        name_symbol = m.group("symbol") if m else None
        name_tf = m.group("tf") if m else None
        name_kind = _KIND_BY_SUFFIX[m.group("kind")] if m else None
    elif m := _NORMALISED_NAME.match(stem):
        fmt = Format.NORMALISED
        name_symbol, name_tf, name_kind = (
            m.group("symbol"),
            m.group("tf"),
            _KIND_BY_SUFFIX[m.group("kind")],
        )
    elif m := _BINANCE_NAME.match(stem):
        name_symbol = m.group("symbol")
        if m.group("tf") == "fundingRate":
            fmt, name_tf, name_kind = Format.BINANCE_FUNDING, FUNDING_TIMEFRAME, Kind.FUNDING
        else:
            fmt, name_tf = Format.BINANCE_KLINES, m.group("tf")
            dirs = [part.lower() for part in p.parts[:-1]]
            other = next((_OTHER_KLINE_DIRS[d] for d in dirs if d in _OTHER_KLINE_DIRS), None)
            if other is not None and kind is None:
                raise DataFormatError(
                    p,
                    "last-price klines (a klines/ folder) or mark-price klines "
                    "(markPriceKlines/); index and premium-index klines are not read",
                    got=other,
                )
            in_mark_dir = any(d in _MARK_DIRS for d in dirs)
            name_kind = Kind.MARK if in_mark_dir else Kind.OHLCV
    else:
        raise DataFormatError(
            p,
            "a file named like SYMBOL_1h_ohlcv.csv(.gz), SYMBOL_1h_mark.csv, "
            "SYMBOL_1h_funding_rate.csv, Binance's BTCUSDT-1h-2024-01.zip / "
            "BTCUSDT-fundingRate-2024-01.csv, or SYMBOL_1h_ohlcv.parquet "
            "(or give the symbol, kind and timeframe explicitly)",
            got=p.name,
        )

    the_kind = kind or name_kind
    the_symbol = symbol or name_symbol
    the_tf = timeframe or name_tf
    if the_kind is None or the_symbol is None or the_tf is None:
        raise DataFormatError(
            p, "a name like SYMBOL_1h_ohlcv.parquet, or an explicit symbol, kind and timeframe"
        )
    if the_kind is Kind.FUNDING:
        the_tf = FUNDING_TIMEFRAME
    if the_tf not in TIMEFRAMES:
        raise DataFormatError(p, f"a timeframe among {', '.join(TIMEFRAMES)}", got=the_tf)
    return SourceFile(p, fmt, the_kind, canonical_symbol(the_symbol), the_tf)


# --- CSV readers ------------------------------------------------------------------------------


def _pa_read(
    data: bytes,
    names: tuple[str, ...],
    types: dict[str, pa.DataType],
    *,
    skip_header: bool,
) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(
            column_names=list(names), skip_rows=1 if skip_header else 0, block_size=1 << 24
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(types), strings_can_be_null=False
        ),
    )


def _diagnose(
    path: Path,
    data: bytes,
    checks: tuple[tuple[str, Callable[[str], object]], ...],
    *,
    skip_header: bool,
    expected_fields: int,
    cause: Exception,
) -> DataFormatError:
    """Find the first line that does not parse; called only after the fast path failed."""
    text = io.StringIO(data.decode("utf-8", errors="replace"))
    for lineno, row in enumerate(csv.reader(text), start=1):
        if lineno == 1 and skip_header:
            continue
        if not row:
            continue
        if len(row) != expected_fields:
            return DataFormatError(
                path,
                f"{expected_fields} comma-separated fields",
                line=lineno,
                got=",".join(row),
            )
        for (name, parse), value in zip(checks, row, strict=False):
            try:
                parse(value)
            except (ValueError, TypeError):
                return DataFormatError(path, f"{name} as {parse.__name__}", line=lineno, got=value)
    return DataFormatError(path, "a well-formed CSV file", got=str(cause))


def _read_checked(
    path: Path,
    data: bytes,
    names: tuple[str, ...],
    types: dict[str, pa.DataType],
    checks: tuple[tuple[str, Callable[[str], object]], ...],
    *,
    skip_header: bool,
) -> pa.Table:
    """Fast read; if it fails, the slow pass names the first bad line."""
    try:
        return _pa_read(data, names, types, skip_header=skip_header)
    except pa.ArrowInvalid as exc:
        raise _diagnose(
            path, data, checks, skip_header=skip_header, expected_fields=len(names), cause=exc
        ) from exc


def _iso_utc(value: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        raise ValueError(value)
    return ts


_iso_utc.__name__ = "an ISO-8601 UTC time"


def _number(value: str) -> float:
    return float(value)


_number.__name__ = "a number"


def _integer(value: str) -> int:
    return int(value)


_integer.__name__ = "an integer"


def _to_utc(ts: pa.ChunkedArray | pd.Series) -> pd.Series:
    """Times from an Arrow column or a pandas column, as ``datetime64[us, UTC]`` (naive = UTC)."""
    out = ts if isinstance(ts, pd.Series) else pd.Series(ts.to_pandas())
    if out.dt.tz is None:
        out = out.dt.tz_localize("UTC")
    return out.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _read_normalised(src: SourceFile, data: bytes) -> pd.DataFrame:
    header = _first_line(data)
    cols = columns_for(src.kind)
    want = NORMALISED_FUNDING_HEADER if src.kind is Kind.FUNDING else NORMALISED_BAR_HEADER
    if header.replace(" ", "") != want:
        raise DataFormatError(src.path, f"the header {want!r}", line=1, got=header)
    names = ("timestamp_utc", *cols[1:])
    value_types = dict.fromkeys(cols[1:], pa.float64())
    checks = (("timestamp_utc", _iso_utc), *((c, _number) for c in cols[1:]))
    try:  # times with a zone (…Z, +00:00), the format's own
        table = _pa_read(
            data,
            names,
            {"timestamp_utc": pa.timestamp("us", tz="UTC"), **value_types},
            skip_header=True,
        )
    except pa.ArrowInvalid:  # naive times are taken as UTC
        types = {"timestamp_utc": pa.timestamp("us"), **value_types}
        table = _read_checked(src.path, data, names, types, checks, skip_header=True)
    frame = table.to_pandas()
    frame.insert(0, "ts", _to_utc(table.column("timestamp_utc")))
    return frame.drop(columns=["timestamp_utc"])[list(cols)]


def _epoch_to_utc(values: np.ndarray) -> pd.Series:
    """Binance open times: milliseconds, or microseconds since 2025; mixed files allowed."""
    v = values.astype(np.int64)
    us = np.where(v >= _MICROSECOND_THRESHOLD, v, v * 1000)
    return pd.Series(pd.to_datetime(us, unit="us", utc=True)).astype("datetime64[us, UTC]")


def _read_binance_klines(src: SourceFile, data: bytes) -> pd.DataFrame:
    header = _first_line(data)
    has_header = header.lower().startswith("open_time")
    first_field = header.split(",", 1)[0]
    if not has_header and not first_field.strip().isdigit():
        raise DataFormatError(
            src.path,
            "Binance kline rows (open time in ms or µs, then open,high,low,close,volume,...) "
            f"or the header {','.join(BINANCE_KLINE_COLUMNS)!r}",
            line=1,
            got=header,
        )
    types: dict[str, pa.DataType] = {"open_time": pa.int64()}
    types |= dict.fromkeys(("open", "high", "low", "close", "volume"), pa.float64())
    checks = (
        ("open_time", _integer),
        *((c, _number) for c in ("open", "high", "low", "close", "volume")),
        ("close_time", _integer),
    )
    table = _read_checked(
        src.path, data, BINANCE_KLINE_COLUMNS, types, checks, skip_header=has_header
    )
    frame = table.to_pandas()
    frame.insert(0, "ts", _epoch_to_utc(frame.pop("open_time").to_numpy()))
    return frame[list(BAR_COLUMNS)]


def _read_binance_funding(src: SourceFile, data: bytes) -> pd.DataFrame:
    header = _first_line(data)
    if header.replace(" ", "") != ",".join(BINANCE_FUNDING_COLUMNS):
        raise DataFormatError(
            src.path, f"the header {','.join(BINANCE_FUNDING_COLUMNS)!r}", line=1, got=header
        )
    types = {"calc_time": pa.int64(), "last_funding_rate": pa.float64()}
    checks = (
        ("calc_time", _integer),
        ("funding_interval_hours", _integer),
        ("last_funding_rate", _number),
    )
    table = _read_checked(src.path, data, BINANCE_FUNDING_COLUMNS, types, checks, skip_header=True)
    frame = table.to_pandas()
    return pd.DataFrame(
        {
            "ts": _epoch_to_utc(frame["calc_time"].to_numpy()),
            "funding_rate": frame["last_funding_rate"].to_numpy(),
        }
    )


def _read_parquet(src: SourceFile) -> pd.DataFrame:
    cols = columns_for(src.kind)
    try:
        frame = pq.read_table(src.path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataFormatError(src.path, "a readable Parquet file", got=str(exc)) from exc
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataFormatError(
            src.path,
            f"Parquet columns {', '.join(cols)}",
            got=", ".join(map(str, frame.columns)),
        )
    frame = frame[list(cols)].copy()
    ts = frame["ts"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise DataFormatError(src.path, "column ts of timestamps", got=str(ts.dtype))
    frame["ts"] = _to_utc(ts)
    for c in cols[1:]:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            raise DataFormatError(src.path, f"column {c} of numbers", got=str(frame[c].dtype))
        frame[c] = frame[c].astype("float64")
    return frame


def read_source(src: SourceFile) -> pd.DataFrame:
    """Read an identified file into its canonical frame (not yet cleaned)."""
    if src.format is Format.PARQUET:
        return _read_parquet(src)
    data = _open_bytes(src.path)
    if not data.strip():
        raise DataFormatError(src.path, "at least one row of data", got="an empty file")
    if src.format is Format.NORMALISED:
        frame = _read_normalised(src, data)
    elif src.format is Format.BINANCE_FUNDING:
        frame = _read_binance_funding(src, data)
    else:
        frame = _read_binance_klines(src, data)
    if frame.empty:
        raise DataFormatError(src.path, "at least one row of data", got="a header only")
    return frame


def read_file(
    path: str | Path,
    *,
    kind: Kind | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
) -> tuple[SourceFile, pd.DataFrame]:
    """Identify and read one file: ``src, frame = read_file("BTCUSDT_1h_ohlcv.csv.gz")``."""
    src = identify(path, kind=kind, symbol=symbol, timeframe=timeframe)
    return src, read_source(src)


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


SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".zip", ".parquet")


def discover(path: str | Path) -> list[Path]:
    """The importable files under a path (the path itself if it is a file), in name order."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise DataFormatError(p, "an existing file or folder", got="no such path")
    return sorted(
        f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUPPORTED_SUFFIXES)
    )


__all__ = [
    "BAR_COLUMNS",
    "FUNDING_COLUMNS",
    "Format",
    "SourceFile",
    "discover",
    "identify",
    "read_file",
    "read_source",
    "write_normalised_csv",
    "write_parquet",
]
