"""The market-data warehouse: one Parquet file per kind, symbol and timeframe, read with DuckDB.

Layout: ``<root>/<kind>/<SYMBOL>/<timeframe>.parquet`` (kind: ohlcv, mark, funding), rows sorted
by ``ts`` and written in row groups of `ROW_GROUP_SIZE`, so that DuckDB skips every row group a
range query does not touch (Parquet min/max statistics): a one-day query over ten million bars
reads one row group.

Writes merge with what is stored (the newer row wins on equal ``ts``), so re-importing a file
adds nothing. A write goes to a temporary file in the same folder, is fsync'd and then renamed
over the old file (``os.replace`` is atomic on POSIX): a reader sees the old file or the new
one, never half of one, and an import killed halfway leaves the previous state readable. An
``flock`` on a lock file beside the data serialises writers of one file across processes. A
writer killed mid-write leaves a ``.tmp-<pid>-…`` file, which no listing counts and `sweep` (or
the next write of that file) deletes.
"""

from __future__ import annotations

import atexit
import gc
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bti_core import files
from bti_core.errors import NoDataError, WarehouseError
from bti_core.filelock import file_lock
from bti_core.market.schema import TIMEFRAMES, Kind, canonical_symbol, timeframe_delta
from bti_core.timeutil import to_utc

ROW_GROUP_SIZE = 131_072
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class WriteResult:
    path: Path
    rows_added: int  # times that were not stored before
    rows_updated: int  # times stored before whose values changed
    rows_total: int


@dataclass(frozen=True)
class Dataset:
    kind: Kind
    symbol: str
    timeframe: str
    path: Path
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    bytes: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _version(path: Path) -> tuple[int, int, int]:
    """What names one version of a stored file: a write replaces the file (a new inode), so
    (inode, mtime, size) changes with every write and a cache keyed by it is never stale."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


@lru_cache(maxsize=4096)
def _meta(
    path: str, version: tuple[int, int, int]
) -> tuple[int, pd.Timestamp | None, pd.Timestamp | None]:
    """Row count and time range of one version of a file, from its Parquet metadata (the
    pages list symbols and ranges on every run: 12 % of the Market's script read the same
    footers again)."""
    meta = pq.ParquetFile(path).metadata
    if not meta.num_rows:
        return 0, None, None
    stats = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
    first = pd.Timestamp(min(s.min for s in stats if s is not None)).tz_convert("UTC")
    last = pd.Timestamp(max(s.max for s in stats if s is not None)).tz_convert("UTC")
    return meta.num_rows, first, last


@lru_cache(maxsize=1024)
def _last_row(path: str, version: tuple[int, int, int]) -> pd.Series | None:
    """The last row of one version of a file (None: no rows); callers get a copy."""
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return None
    group = pf.read_row_group(pf.metadata.num_row_groups - 1)
    return Warehouse._fix_ts(group.slice(group.num_rows - 1).to_pandas()).iloc[-1]


_OPEN: weakref.WeakSet[Warehouse] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close every DuckDB connection before the interpreter's teardown: one still open then
    (held by a cache or a daemon thread) makes DuckDB's bindings print a leak report."""
    for wh in list(_OPEN):
        wh.close()
    gc.collect()


class Warehouse:
    """Parquet files under ``root``, queried with an in-process DuckDB."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()  # one DuckDB connection; cursors per call
        _OPEN.add(self)

    def close(self) -> None:
        """Close the DuckDB connection (the Parquet files stay; reads after this fail)."""
        with self._lock:
            con = self.__dict__.pop("_con", None)
            if con is not None:
                con.close()

    # --- paths and catalogue ----------------------------------------------------------------

    def path(self, kind: Kind | str, symbol: str, timeframe: str) -> Path:
        timeframe_delta(timeframe)  # validates
        return self.root / str(Kind(kind)) / canonical_symbol(symbol) / f"{timeframe}.parquet"

    def exists(self, kind: Kind | str, symbol: str, timeframe: str) -> bool:
        return self.path(kind, symbol, timeframe).exists()

    def dataset(self, kind: Kind | str, symbol: str, timeframe: str) -> Dataset | None:
        """One stored file with its row count and time range (Parquet metadata only)."""
        path = self.path(kind, symbol, timeframe)
        try:
            version = _version(path)
        except FileNotFoundError:
            return None
        rows, first, last = _meta(str(path), version)
        return Dataset(Kind(kind), path.parent.name, timeframe, path, rows, first, last, version[2])

    def datasets(self) -> list[Dataset]:
        """Every stored file, by kind, symbol and timeframe."""
        out: list[Dataset] = []
        for kind in Kind:
            base = self.root / str(kind)
            if not base.is_dir():
                continue
            for f in sorted(base.glob("*/*.parquet")):
                if f.stem in TIMEFRAMES and (d := self.dataset(kind, f.parent.name, f.stem)):
                    out.append(d)
        return out

    @staticmethod
    def _has_rows(path: Path) -> bool:
        """A data file (not a writer's temp file) holding at least one row."""
        if path.stem not in TIMEFRAMES:
            return False
        try:
            return _meta(str(path), _version(path))[0] > 0
        except (pa.ArrowInvalid, OSError):
            return False

    def symbols(self, kind: Kind = Kind.OHLCV) -> list[str]:
        """Symbols with at least one non-empty dataset of ``kind``. A folder holding only an
        interrupted writer's temp file, or an empty file, lists nothing."""
        base = self.root / str(kind)
        if not base.is_dir():
            return []
        return sorted(
            d.name
            for d in base.iterdir()
            if d.is_dir() and not d.name.startswith(".") and any(map(self._has_rows, d.iterdir()))
        )

    def timeframes(self, symbol: str, kind: Kind = Kind.OHLCV) -> list[str]:
        base = self.root / str(kind) / canonical_symbol(symbol)
        have = (
            {f.stem for f in base.glob("*.parquet") if self._has_rows(f)}
            if base.is_dir()
            else set()
        )
        return [tf for tf in TIMEFRAMES if tf in have]

    def stamp(self, symbol: str) -> tuple[tuple[str, int, int, int], ...]:
        """The version of every file stored for ``symbol`` (all kinds and timeframes): equal
        stamps, equal data, so a view computed from them can be kept until the stamp changes
        (a few ``stat`` calls, no read)."""
        out = []
        name = canonical_symbol(symbol)
        for kind in Kind:
            try:
                with os.scandir(self.root / str(kind) / name) as entries:
                    for e in entries:
                        if e.name.endswith(".parquet"):
                            try:
                                st = e.stat()
                            except FileNotFoundError:  # replaced since the listing
                                continue
                            out.append((f"{kind}/{e.name}", st.st_ino, st.st_mtime_ns, st.st_size))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return tuple(sorted(out))

    def sweep(self) -> int:
        """Delete temp files left by writers that died (their process is gone); returns how
        many. A live writer's temp file is left alone."""
        removed = 0
        for tmp in self.root.glob(f"*/*/{_TMP_PREFIX}*"):
            pid = tmp.name[len(_TMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    # --- writing ------------------------------------------------------------------------------

    @contextmanager
    def _writer_lock(self, path: Path) -> Iterator[None]:
        with file_lock(path.parent / f".{path.name}.lock"):
            yield

    def write(
        self, kind: Kind | str, symbol: str, timeframe: str, frame: pd.DataFrame
    ) -> WriteResult:
        """Merge ``frame`` into the stored file atomically; returns what changed."""
        path = self.path(kind, symbol, timeframe)
        if "ts" not in frame.columns:
            raise WarehouseError(f"cannot store {path.name}: the frame has no 'ts' column")
        with self._writer_lock(path):
            # Under the lock no other writer of this file is alive: leftovers are from a crash.
            for stale in path.parent.glob(f"{_TMP_PREFIX}*-{path.name}"):
                stale.unlink(missing_ok=True)
            old = self._read_all(path)
            new = frame.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
            if (old is None or old.empty) and new.empty:  # never create an empty dataset
                return WriteResult(path, 0, 0, 0)
            if old is None or old.empty:
                merged, added, updated = new, len(new), 0
            elif new.empty:
                merged, added, updated = old, 0, 0
            elif old["ts"].iloc[-1] < new["ts"].iloc[0]:  # pure append, the common case
                merged, added, updated = pd.concat([old, new], ignore_index=True), len(new), 0
            else:
                old = old.reindex(columns=new.columns)
                joined = new.merge(old, on="ts", how="left", suffixes=("", "__old"), indicator=True)
                is_new = (joined["_merge"] == "left_only").to_numpy()
                added = int(is_new.sum())
                value_cols = [c for c in new.columns if c != "ts"]
                same = pd.Series(True, index=joined.index)
                for c in value_cols:
                    a, b = joined[c], joined[f"{c}__old"]
                    same &= (a == b) | (a.isna() & b.isna())
                updated = int((~same.to_numpy() & ~is_new).sum())
                if added == 0 and updated == 0:
                    return WriteResult(path, 0, 0, len(old))
                merged = (
                    pd.concat([old, new], ignore_index=True)
                    .drop_duplicates("ts", keep="last")
                    .sort_values("ts", kind="stable")
                )
            self._atomic_write(path, merged.reset_index(drop=True))
            return WriteResult(path, added, updated, len(merged))

    def _atomic_write(self, path: Path, frame: pd.DataFrame) -> None:
        # the writer's pid leads the temporary name, for `sweep`
        with files.replacing(path, prefix=f"{_TMP_PREFIX}{os.getpid()}-") as tmp:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd")

    def delete(self, kind: Kind | str, symbol: str, timeframe: str) -> bool:
        path = self.path(kind, symbol, timeframe)
        with self._writer_lock(path):
            if path.exists():
                path.unlink()
                return True
        return False

    # --- reading -----------------------------------------------------------------------------

    def _read_all(self, path: Path) -> pd.DataFrame | None:
        if not path.exists():
            return None
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise WarehouseError(
                f"cannot read {path}: {exc}; re-import the data to rebuild it"
            ) from exc

    def _source(self, kind: Kind | str, symbol: str, timeframe: str) -> Path:
        path = self.path(kind, symbol, timeframe)
        if not path.exists():
            have = ", ".join(self.timeframes(symbol, Kind(kind))) or "none"
            raise NoDataError(
                f"no {Kind(kind)} data for {canonical_symbol(symbol)} at {timeframe} "
                f"(stored timeframes: {have}); import some with `bti ingest` or `bti demo`"
            )
        return path

    def sql(self, query: str, params: list[object] | None = None) -> pd.DataFrame:
        """Run DuckDB SQL with parameters (never string-formatted values)."""
        with self._lock:
            cur = self._con.cursor()
        try:
            cur.execute("SET TimeZone = 'UTC'")
            return cur.execute(query, params or []).df()
        finally:
            cur.close()

    @staticmethod
    def _utc(t: pd.Timestamp | str | None) -> pd.Timestamp | None:
        if t is None:
            return None
        return to_utc(t)

    def query(
        self,
        kind: Kind | str,
        symbol: str,
        timeframe: str,
        start: pd.Timestamp | str | None = None,
        end: pd.Timestamp | str | None = None,
        *,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows with ``start <= ts < end`` (either bound optional), in time order."""
        path = self._source(kind, symbol, timeframe)
        where, params = self._range(start, end)
        sql = f"SELECT * FROM read_parquet(?){where}"
        if limit is None:
            sql += " ORDER BY ts"
        else:  # the last `limit` rows, returned in time order
            sql = f"SELECT * FROM ({sql} ORDER BY ts DESC LIMIT {int(limit)}) ORDER BY ts"
        return self._fix_ts(self.sql(sql, [str(path), *params]))

    def _range(
        self, start: pd.Timestamp | str | None, end: pd.Timestamp | str | None
    ) -> tuple[str, list[object]]:
        conds: list[str] = []
        params: list[object] = []
        s, e = self._utc(start), self._utc(end)
        if s is not None:
            conds.append("ts >= ?")
            params.append(s.floor("us").to_pydatetime())  # Parquet holds µs
        if e is not None:
            conds.append("ts < ?")
            params.append(e.floor("us").to_pydatetime())
        return (" WHERE " + " AND ".join(conds) if conds else ""), params

    @staticmethod
    def _fix_ts(df: pd.DataFrame) -> pd.DataFrame:
        if "ts" in df.columns and len(df.columns):
            ts = df["ts"]
            if ts.dt.tz is None:
                ts = ts.dt.tz_localize("UTC")
            df["ts"] = ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        return df

    def latest(self, kind: Kind | str, symbol: str, timeframe: str) -> pd.Series:
        """The last stored row, read from the file's last row group only (rows are sorted),
        once per version of the file (quotes and purchases ask for every symbol's mark)."""
        path = self._source(kind, symbol, timeframe)
        row = _last_row(str(path), _version(path))
        if row is None:
            raise NoDataError(f"{canonical_symbol(symbol)} {Kind(kind)} {timeframe} is empty")
        return row.copy()

    def resample(
        self,
        symbol: str,
        source_timeframe: str,
        target_timeframe: str,
        start: pd.Timestamp | str | None = None,
        end: pd.Timestamp | str | None = None,
        *,
        kind: Kind | str = Kind.OHLCV,
    ) -> pd.DataFrame:
        """Aggregate bars to a longer timeframe in DuckDB (1m → 5m/1h/1d, 1h → 4h/1d, …).

        open = first open, high = max, low = min, close = last close, volume = sum, flags = OR
        of the bars' flags, ``bars`` = how many source bars each holds (fewer than expected where
        a gap falls inside). Buckets are aligned to the Unix epoch (days start at 00:00 UTC).
        """
        src_step, dst_step = timeframe_delta(source_timeframe), timeframe_delta(target_timeframe)
        if dst_step < src_step or dst_step % src_step:
            raise ValueError(
                f"cannot resample {source_timeframe} to {target_timeframe}: the target must be a "
                f"whole multiple of the source"
            )
        if Kind(kind) is Kind.FUNDING:
            raise ValueError("funding rates are events, not bars; query them instead")
        path = self._source(kind, symbol, source_timeframe)
        where, params = self._range(start, end)
        seconds = int(dst_step.total_seconds())
        sql = f"""
            SELECT time_bucket(to_seconds({seconds}), ts, TIMESTAMPTZ '1970-01-01 00:00+00')
                       AS ts,
                   arg_min(open, ts) AS open, max(high) AS high, min(low) AS low,
                   arg_max(close, ts) AS close, sum(volume) AS volume,
                   bit_or(flags) AS flags, count(*) AS bars
            FROM read_parquet(?){where}
            GROUP BY 1 ORDER BY 1
        """
        df = self._fix_ts(self.sql(sql, [str(path), *params]))
        if "flags" in df.columns:
            df["flags"] = df["flags"].fillna(0).astype("uint8")
        return df

    def bars(
        self,
        symbol: str,
        timeframe: str,
        start: pd.Timestamp | str | None = None,
        end: pd.Timestamp | str | None = None,
        *,
        kind: Kind | str = Kind.OHLCV,
    ) -> pd.DataFrame:
        """Bars at ``timeframe``: stored ones if present, else resampled from the coarsest shorter
        stored timeframe that divides it."""
        if self.exists(kind, symbol, timeframe):
            return self.query(kind, symbol, timeframe, start, end)
        target = timeframe_delta(timeframe)
        for tf in reversed(self.timeframes(symbol, Kind(kind))):  # coarsest first: fewer rows
            step = timeframe_delta(tf)
            if step < target and target % step == pd.Timedelta(0):
                return self.resample(symbol, tf, timeframe, start, end, kind=kind)
        return self.query(kind, symbol, timeframe, start, end)  # raises NoDataError, with advice
