"""Reading an imported file within bounds, and saying exactly what is wrong with it: a size and
decompression cap (`ImportLimits`), CSV tables read by Arrow with each bad cell named by its
line, and times checked against the allowed span."""

from __future__ import annotations

import csv
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bti_core.errors import DataFormatError
from bti_core.market.identify import SourceFile
from bti_core.market.schema import CLOCK_SKEW, EARLIEST_TIME, allowed_times

# Open times above this are microseconds (Binance switched in 2025); ms until the year 5138.
MICROSECOND_THRESHOLD = 10**14


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
READ_ERRORS = (
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)


def too_big(path: Path, limits: ImportLimits, got: str) -> DataFormatError:
    return DataFormatError(
        path,
        f"at most {limits.max_bytes >> 20:,} MiB of data per file once decompressed "
        "(BTI_IMPORT_MAX_MB; split the file or raise the limit)",
        got=got,
    )


class BoundedStream(io.RawIOBase):
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
        except READ_ERRORS as exc:
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
            raise too_big(path, limits, got=f"more than {self.limit:,} bytes")
        if self.error is not None:
            raise DataFormatError(
                path, "a readable CSV, .csv.gz or .zip file", got=str(self.error)
            ) from self.error


@contextmanager
def open_stream(path: Path, limits: ImportLimits) -> Iterator[BoundedStream]:
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
                    raise too_big(path, limits, got=f"{members[0].file_size:,} bytes")
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
        except READ_ERRORS as exc:
            raise DataFormatError(
                path, "a readable CSV, .csv.gz or .zip file", got=str(exc)
            ) from exc
        yield BoundedStream(raw, limits.max_bytes)


def read_head(src: SourceFile, limits: ImportLimits) -> str:
    """The first non-blank line, without a byte-order mark; '' for an empty file."""
    with open_stream(src.path, limits) as stream:
        for raw in io.BufferedReader(stream):
            line = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff").strip()
            if line:
                return line
            if stream.count > 1 << 20:  # a megabyte of blank lines is not a CSV file
                break
        stream.check(src.path, limits)
    return ""


def header_names(
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


def iso_times() -> Check:
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


def number_error(value: str) -> str | None:
    try:
        float(value)
    except ValueError:
        return "a number"
    return None


def integer_error(value: str) -> str | None:
    return None if re.fullmatch(r"\s*[+-]?\d+\s*", value) else "an integer"


def explain_bad_cells(
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
    with open_stream(src.path, limits) as stream:
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


def read_table(
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
    with open_stream(src.path, limits) as stream:
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
            raise explain_bad_cells(
                src, limits, names, checks, skip_header=skip_header, cause=exc
            ) from exc
        stream.check(src.path, limits)
    return pa.Table.from_batches(batches, schema=schema)


def line_of(src: SourceFile, limits: ImportLimits, row: int, *, skip_header: bool) -> int:
    """The line number of data row ``row`` (0-based), counting the blank lines the reader
    skipped; only called to report an error."""
    seen = -1
    with open_stream(src.path, limits) as stream:
        for lineno, raw in enumerate(io.BufferedReader(stream), start=1):
            if (lineno == 1 and skip_header) or not raw.strip():
                continue
            seen += 1
            if seen == row:
                return lineno
    return row + 1 + int(skip_header)


def check_times(
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


def utc_series(us: np.ndarray, nulls: np.ndarray) -> pd.Series:
    """``datetime64[us, UTC]`` from microseconds since the epoch, NaT where ``nulls``."""
    t = us.astype("datetime64[us]")
    t[nulls] = np.datetime64("NaT")
    return pd.Series(t).dt.tz_localize("UTC")


def parse_times(
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
        us = np.where(v >= MICROSECOND_THRESHOLD, v, np.maximum(v, -1) * 1000)
        nulls = column.is_null().to_numpy(zero_copy_only=False)
    else:
        ts = column.cast(pa.timestamp("us", tz="UTC"))
        nulls = ts.is_null().to_numpy(zero_copy_only=False)
        us = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy().astype(np.int64, copy=False)
    checked = np.where(nulls, EARLIEST_TIME.value // 1000, us)
    check_times(
        src,
        checked,
        now=now,
        where=lambda i: {"line": line_of(src, limits, i, skip_header=skip_header)},
        raw=(lambda i: str(column[i])) if epoch else None,
    )
    return utc_series(checked, nulls)


def bar_frame(ts: pd.Series, held: list[pa.Table], columns: Sequence[str]) -> pd.DataFrame:
    """The canonical frame from ``ts`` and the value ``columns`` of the table ``held`` in a list
    (its caller's only reference), which is emptied so that the table's last reference is here:
    Arrow then frees each column's buffers as it is converted (one copy of the data in memory
    at a time, not three)."""
    frame = held.pop().select(list(columns)).to_pandas(split_blocks=True, self_destruct=True)
    frame.insert(0, "ts", ts)
    return frame
