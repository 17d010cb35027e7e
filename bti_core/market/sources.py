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

import csv
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bti_core.errors import DataFormatError
from bti_core.market.schema import (
    BAR_COLUMNS,
    CLOCK_SKEW,
    EARLIEST_TIME,
    FUNDING_COLUMNS,
    FUNDING_TIMEFRAME,
    TIMEFRAMES,
    Kind,
    allowed_times,
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


# --- reading, bounded ------------------------------------------------------------------


@dataclass(frozen=True)
class ImportLimits:
    """Ceilings on one imported file, decompressed: a 500 KB zip can hold a 200 MB CSV, and a
    few MB of zip would exhaust the machine if read whole. Files are read in blocks of
    ``block_bytes``, so memory holds the parsed columns, never the file's text."""

    max_bytes: int = 1024 << 20
    max_rows: int = 5_000_000
    block_bytes: int = 16 << 20

    @classmethod
    def from_settings(cls, settings: object) -> ImportLimits:
        return cls(
            max_bytes=int(getattr(settings, "import_max_mb", 1024)) << 20,
            max_rows=int(getattr(settings, "import_max_rows", 5_000_000)),
        )


DEFAULT_LIMITS = ImportLimits()
# zipfile raises NotImplementedError for a compression method, version or flag it cannot read
# and RuntimeError for an encrypted member; bz2 raises OSError, lzma its own error
_READ_ERRORS = (
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)


def _too_big(path: Path, limits: ImportLimits, got: str) -> DataFormatError:
    return DataFormatError(
        path,
        f"at most {limits.max_bytes >> 20:,} MiB of data per file once decompressed "
        "(BTI_IMPORT_MAX_MB; split the file or raise the limit)",
        got=got,
    )


class _Stream(io.RawIOBase):
    """A file's decompressed bytes, counted. Reading past ``limit`` or a corrupt archive ends
    the stream early and records why; `check` then raises. (An exception raised inside
    pyarrow's reader would come back wrapped; a short stream and a flag keep the cause.)"""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        super().__init__()
        self._raw = raw
        self.limit = limit
        self.count = 0
        self.exceeded = False
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.exceeded or self.error is not None:
            return 0
        try:
            data = self._raw.read(len(buffer))
        except _READ_ERRORS as exc:
            self.error = exc
            return 0
        n = len(data)
        self.count += n
        if self.count > self.limit:
            self.exceeded = True
            return 0
        buffer[:n] = data
        return n

    def check(self, path: Path, limits: ImportLimits) -> None:
        if self.exceeded:
            raise _too_big(path, limits, got=f"more than {self.limit:,} bytes")
        if self.error is not None:
            raise DataFormatError(
                path, "a readable CSV, .csv.gz or .zip file", got=str(self.error)
            ) from self.error


@contextmanager
def _open_stream(path: Path, limits: ImportLimits) -> Iterator[_Stream]:
    """The file's CSV bytes as a bounded stream, unpacking ``.gz`` and one-member ``.zip``."""
    with ExitStack() as stack:
        try:
            raw: IO[bytes]
            if path.suffix.lower() == ".zip":
                zf = stack.enter_context(zipfile.ZipFile(path))
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise DataFormatError(
                        path,
                        "a zip archive holding exactly one CSV file",
                        got=", ".join(m.filename for m in members) or "an empty archive",
                    )
                if members[0].file_size > limits.max_bytes:  # the header's word; counted too
                    raise _too_big(path, limits, got=f"{members[0].file_size:,} bytes")
                raw = stack.enter_context(zf.open(members[0]))
            else:
                fh = stack.enter_context(open(path, "rb"))
                magic = fh.read(2)
                fh.seek(0)
                raw = (
                    stack.enter_context(cast(IO[bytes], gzip.GzipFile(fileobj=fh)))
                    if magic == b"\x1f\x8b"
                    else fh
                )
        except FileNotFoundError:
            raise DataFormatError(path, "an existing file", got="no such file") from None
        except _READ_ERRORS as exc:
            raise DataFormatError(
                path, "a readable CSV, .csv.gz or .zip file", got=str(exc)
            ) from exc
        yield _Stream(raw, limits.max_bytes)


def _head(src: SourceFile, limits: ImportLimits) -> str:
    """The first non-blank line, without a byte-order mark; '' for an empty file."""
    with _open_stream(src.path, limits) as stream:
        for raw in io.BufferedReader(stream):
            line = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff").strip()
            if line:
                return line
            if stream.count > 1 << 20:  # a megabyte of blank lines is not a CSV file
                break
        stream.check(src.path, limits)
    return ""


def _header_names(
    src: SourceFile, header: str, expected: tuple[str, ...], *, or_rows: str = ""
) -> tuple[str, ...]:
    """The header's column names in file order, if they are exactly the format's (any order);
    columns are then read by name, so a file whose header swaps two columns is read right.
    ``or_rows``: what a first data row looks like, for formats whose header is optional."""
    names = tuple(n.strip().strip("\"'").strip().lower() for n in header.split(","))
    if len(names) == len(expected) and set(names) == set(expected):
        return names
    want = f"the header {','.join(expected)!r} (columns in any order)"
    if or_rows and not set(names) & set(expected):  # not a header at all
        raise DataFormatError(src.path, f"{or_rows} or {want}", line=1, got=header[:200])
    missing = [n for n in expected if n not in names]
    unknown = [n for n in names if n not in expected]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = [
        *([f"missing {', '.join(missing)}"] if missing else []),
        *([f"unknown {', '.join(unknown)}"] if unknown else []),
        *([f"repeated {', '.join(repeated)}"] if repeated else []),
    ]
    raise DataFormatError(src.path, f"{want} — {'; '.join(problems)}", line=1, got=header[:200])


Check = Callable[[str], str | None]  # None if the value is fine, else what was expected


_ISO_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?P<zone>Z|[+-]\d{2}:?\d{2})?$"
)


def _iso_times() -> Check:
    """ISO-8601 times, all with a zone or all without (naive = UTC): a file that mixes them
    was stitched from two sources, and one of them may be in local time."""
    zoned: list[bool] = []

    def check(value: str) -> str | None:
        m = _ISO_TIME.match(value.strip())
        if m is None:
            return "an ISO-8601 UTC time such as 2024-01-31T13:00:00Z"
        z = m.group("zone") is not None
        if not zoned:
            zoned.append(z)
        elif z != zoned[0]:
            return (
                "a time written like the file's first, "
                + ("with a zone (…Z or +00:00)" if zoned[0] else "without a zone (taken as UTC)")
                + ": the file mixes times with and without a zone"
            )
        return None

    return check


def _number(value: str) -> str | None:
    try:
        float(value)
    except ValueError:
        return "a number"
    return None


def _integer(value: str) -> str | None:
    return None if re.fullmatch(r"\s*[+-]?\d+\s*", value) else "an integer"


def _diagnose(
    src: SourceFile,
    limits: ImportLimits,
    names: tuple[str, ...],
    checks: dict[str, Check],
    *,
    skip_header: bool,
    cause: Exception,
) -> DataFormatError:
    """Find the first line that does not parse (streamed; called only after the fast path
    failed) and say what was expected there."""
    with _open_stream(src.path, limits) as stream:
        text = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8", errors="replace")
        for lineno, row in enumerate(csv.reader(text), start=1):
            if (lineno == 1 and skip_header) or not row or row == [""]:
                continue
            if len(row) != len(names):
                return DataFormatError(
                    src.path,
                    f"{len(names)} comma-separated fields ({','.join(names)})",
                    line=lineno,
                    got=",".join(row)[:200],
                )
            for name, value in zip(names, row, strict=True):
                if name in checks and value.strip() and (want := checks[name](value)):
                    return DataFormatError(src.path, f"{name} as {want}", line=lineno, got=value)
        stream.check(src.path, limits)
    return DataFormatError(src.path, "a well-formed CSV file", got=str(cause)[:300])


def _read_table(
    src: SourceFile,
    limits: ImportLimits,
    names: tuple[str, ...],
    types: dict[str, pa.DataType],
    checks: dict[str, Check],
    *,
    skip_header: bool,
    diagnose: bool = True,
) -> pa.Table:
    """Stream the CSV through pyarrow's reader block by block, keeping only the typed columns
    the format needs; refuse it past the row or byte ceiling. A parse failure is re-read line by
    line to name the first bad line (``diagnose``), or re-raised for the caller to retry."""
    with _open_stream(src.path, limits) as stream:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    column_names=list(names),
                    skip_rows=1 if skip_header else 0,
                    block_size=limits.block_bytes,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, include_columns=list(types), strings_can_be_null=False
                ),
            )
            batches: list[pa.RecordBatch] = []
            rows = 0
            for batch in reader:
                rows += batch.num_rows
                if rows > limits.max_rows:
                    raise DataFormatError(
                        src.path,
                        f"at most {limits.max_rows:,} rows per file (BTI_IMPORT_MAX_ROWS; split "
                        "the file or raise the limit)",
                        got=f"more than {limits.max_rows:,} rows",
                    )
                batches.append(batch)
            schema = reader.schema
        except pa.ArrowException as exc:
            stream.check(src.path, limits)  # a cut-off or corrupt stream is the real cause
            if not diagnose:
                raise
            raise _diagnose(src, limits, names, checks, skip_header=skip_header, cause=exc) from exc
        stream.check(src.path, limits)
    return pa.Table.from_batches(batches, schema=schema)


def _line_of(src: SourceFile, limits: ImportLimits, row: int, *, skip_header: bool) -> int:
    """The line number of data row ``row`` (0-based), counting the blank lines the reader
    skipped; only called to report an error."""
    seen = -1
    with _open_stream(src.path, limits) as stream:
        for lineno, raw in enumerate(io.BufferedReader(stream), start=1):
            if (lineno == 1 and skip_header) or not raw.strip():
                continue
            seen += 1
            if seen == row:
                return lineno
    return row + 1 + int(skip_header)


def _check_times(
    src: SourceFile,
    us: np.ndarray,
    *,
    now: pd.Timestamp | None,
    where: Callable[[int], dict[str, int]],
    raw: Callable[[int], str] | None = None,
) -> None:
    """Refuse a time before `EARLIEST_TIME` or after the present (plus clock skew): a bar
    from the future would pay claims on prices nobody has seen, and a year like 1970 or 5138
    is a unit mistake. ``us``: microseconds since the epoch (nulls filled with a valid time);
    ``raw``: the value as written, for integer times."""
    lo, hi = allowed_times(now)
    lo_us, hi_us = lo.value // 1000, hi.value // 1000
    bad = (us < lo_us) | (us > hi_us)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    moment = str(np.datetime64(int(us[i]), "us")).replace("T", " ")[:19] + " UTC"
    skew = int(CLOCK_SKEW.total_seconds() // 60)
    raise DataFormatError(
        src.path,
        f"times from {lo:%Y-%m-%d} to now ({hi:%Y-%m-%d %H:%M} UTC, {skew} minutes' clock "
        "skew allowed)"
        + ("; open times are milliseconds or microseconds since 1970" if raw else ""),
        **where(i),
        got=f"{raw(i)}, which is {moment}" if raw else moment,
    )


def _utc_series(us: np.ndarray, nulls: np.ndarray) -> pd.Series:
    """``datetime64[us, UTC]`` from microseconds since the epoch, NaT where ``nulls``."""
    t = us.astype("datetime64[us]")
    t[nulls] = np.datetime64("NaT")
    return pd.Series(t).dt.tz_localize("UTC")


def _times(
    src: SourceFile,
    column: pa.ChunkedArray,
    limits: ImportLimits,
    *,
    now: pd.Timestamp | None,
    skip_header: bool,
    epoch: bool = False,
) -> pd.Series:
    """A time column as ``datetime64[us, UTC]`` (NaT where empty), after checking every time
    is plausible. ``epoch``: Binance integers, milliseconds or (since 2025) microseconds."""
    if epoch:
        v = pc.fill_null(column, 0).to_numpy().astype(np.int64, copy=False)
        # ms until the year 5138; negative values are refused, so keep them from overflowing
        us = np.where(v >= _MICROSECOND_THRESHOLD, v, np.maximum(v, -1) * 1000)
        nulls = column.is_null().to_numpy(zero_copy_only=False)
    else:
        ts = column.cast(pa.timestamp("us", tz="UTC"))
        nulls = ts.is_null().to_numpy(zero_copy_only=False)
        us = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy().astype(np.int64, copy=False)
    checked = np.where(nulls, EARLIEST_TIME.value // 1000, us)
    _check_times(
        src,
        checked,
        now=now,
        where=lambda i: {"line": _line_of(src, limits, i, skip_header=skip_header)},
        raw=(lambda i: str(column[i])) if epoch else None,
    )
    return _utc_series(checked, nulls)


def _frame(ts: pd.Series, values: list[pa.Table]) -> pd.DataFrame:
    """The canonical frame from ``ts`` and a table of the value columns, handed over in a list
    that is emptied, so that the table's last reference is here: Arrow then frees each column's
    buffers as it is converted (one copy of the data in memory at a time, not three)."""
    frame = values.pop().to_pandas(split_blocks=True, self_destruct=True)
    frame.insert(0, "ts", ts)
    return frame


def _read_normalised(
    src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None
) -> pd.DataFrame:
    cols = columns_for(src.kind)
    expected = ("timestamp_utc", *cols[1:])
    names = _header_names(src, _head(src, limits), expected)
    value_types = dict.fromkeys(cols[1:], pa.float64())
    checks: dict[str, Check] = {"timestamp_utc": _iso_times(), **dict.fromkeys(cols[1:], _number)}
    try:  # times with a zone (…Z, +00:00), the format's own
        types = {"timestamp_utc": pa.timestamp("us", tz="UTC"), **value_types}
        table = _read_table(src, limits, names, types, checks, skip_header=True, diagnose=False)
    except pa.ArrowException:  # naive times are taken as UTC
        types = {"timestamp_utc": pa.timestamp("us"), **value_types}
        table = _read_table(src, limits, names, types, checks, skip_header=True)
    ts = _times(src, table.column("timestamp_utc"), limits, now=now, skip_header=True)
    values = [table.select(list(cols[1:]))]
    del table
    return _frame(ts, values)


def _read_binance_klines(
    src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None
) -> pd.DataFrame:
    header = _head(src, limits)
    first_field = header.split(",", 1)[0].strip()
    has_header = not first_field.lstrip("+-").isdigit()
    names = (
        _header_names(
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
        "open_time": _integer,
        **dict.fromkeys(("open", "high", "low", "close", "volume"), _number),
        "close_time": _integer,
    }
    table = _read_table(src, limits, names, types, checks, skip_header=has_header)
    ts = _times(src, table.column("open_time"), limits, now=now, skip_header=has_header, epoch=True)
    values = [table.select(list(BAR_COLUMNS[1:]))]
    del table
    return _frame(ts, values)


def _read_binance_funding(
    src: SourceFile, limits: ImportLimits, now: pd.Timestamp | None
) -> pd.DataFrame:
    names = _header_names(src, _head(src, limits), BINANCE_FUNDING_COLUMNS)
    types = {"calc_time": pa.int64(), "last_funding_rate": pa.float64()}
    checks: dict[str, Check] = {
        "calc_time": _integer,
        "funding_interval_hours": _integer,
        "last_funding_rate": _number,
    }
    table = _read_table(src, limits, names, types, checks, skip_header=True)
    ts = _times(src, table.column("calc_time"), limits, now=now, skip_header=True, epoch=True)
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
    _check_times(
        src,
        us.astype(np.int64, copy=False),
        now=now,
        where=lambda i: {"row": i + 1},
    )
    frame = pd.DataFrame(
        {c: table.column(c).to_numpy(zero_copy_only=False).astype("float64") for c in cols[1:]}
    )
    frame.insert(0, "ts", _utc_series(us.astype(np.int64, copy=False), nulls))
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
        if not _head(src, limits):
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
    path: str | Path,
    *,
    kind: Kind | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    now: pd.Timestamp | None = None,
) -> tuple[SourceFile, pd.DataFrame]:
    """Identify and read one file: ``src, frame = read_file("BTCUSDT_1h_ohlcv.csv.gz")``."""
    src = identify(path, kind=kind, symbol=symbol, timeframe=timeframe)
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
