"""The ingest service: read → clean → store in the warehouse → record the run and its report.

Files are all read, checked and cleaned before anything is written, so a malformed file in a
folder, or one whose every row is dropped, stops the import with nothing written. Within a
symbol, mark-price bars come first (the last-price cleaning checks wicks against them) and
last-price bars last (they are what lists a symbol).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from bti_core.db.engine import session_scope
from bti_core.db.models import IngestRun
from bti_core.db.repository import add_ingest_run
from bti_core.errors import DataFormatError
from bti_core.market.cleaning import (
    DEFAULT_WICK_TOLERANCE,
    CleaningReport,
    clean_bars,
    clean_context,
    clean_funding,
)
from bti_core.market.identify import SourceFile, discover, identify
from bti_core.market.reading import DEFAULT_LIMITS, ImportLimits
from bti_core.market.schema import CONTEXT_KINDS, Kind, allowed_times, canonical_symbol
from bti_core.market.sources import read_source
from bti_core.market.warehouse import Warehouse, WriteResult

Progress = Callable[[int, int, str], None]
# Mark first (last-price wicks are checked against it), funding next, last price last: a symbol
# is listed once its last-price bars exist, so an import killed halfway never lists a symbol
# without its mark price and funding.
_KIND_ORDER = {
    Kind.MARK: 0,
    Kind.FUNDING: 1,
    Kind.OPEN_INTEREST: 2,
    Kind.LONG_SHORT: 3,
    Kind.OHLCV: 4,
}


def _check_frame_times(frame: pd.DataFrame, source: str, now: pd.Timestamp) -> None:
    """The importers' time rule for frames from elsewhere (an exchange, the demo, a replay)."""
    if "ts" not in frame.columns or not len(frame):
        return
    ts = pd.to_datetime(frame["ts"], utc=True)
    lo, hi = allowed_times(now)
    bad = ((ts < lo) | (ts > hi)).to_numpy()
    if bad.any():
        i = int(bad.argmax())
        raise DataFormatError(
            source,
            f"times from {lo:%Y-%m-%d} to now ({hi:%Y-%m-%d %H:%M} UTC)",
            row=i + 1,
            got=f"{ts.iloc[i]:%Y-%m-%d %H:%M:%S} UTC",
        )


@dataclass(frozen=True)
class IngestResult:
    source: str
    symbol: str
    kind: Kind
    timeframe: str
    report: CleaningReport
    write: WriteResult
    run_id: int | None


@dataclass(frozen=True)
class _Prepared:
    """A frame cleaned and checked, not yet stored."""

    source: str
    symbol: str
    kind: Kind
    timeframe: str
    clean: pd.DataFrame
    report: CleaningReport


class Ingestor:
    """Stores market data; one per warehouse and database.

    ``limits``: ceilings per imported file; ``clock``: the present, which no stored time may
    pass (tests set it)."""

    def __init__(
        self,
        warehouse: Warehouse,
        engine: Engine | None,
        *,
        wick_tolerance: float = DEFAULT_WICK_TOLERANCE,
        limits: ImportLimits = DEFAULT_LIMITS,
        clock: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.engine = engine
        self.wick_tolerance = wick_tolerance
        self.limits = limits
        self.clock = clock or (lambda: pd.Timestamp.now("UTC"))

    def ingest_frame(
        self, frame: pd.DataFrame, *, symbol: str, kind: Kind, timeframe: str, source: str
    ) -> IngestResult:
        """Clean one canonical frame and merge it into the warehouse. A frame with a time
        outside 2009..now, or whose every row is dropped, is refused and nothing is stored."""
        symbol = canonical_symbol(symbol)
        kind = Kind(kind)
        _check_frame_times(frame, source, self.clock())
        prepared = self._prepare(frame, source, symbol, kind, timeframe, pending=[])
        return self._store(prepared)

    def _prepare(
        self,
        frame: pd.DataFrame,
        source: str,
        symbol: str,
        kind: Kind,
        timeframe: str,
        *,
        pending: list[_Prepared],
    ) -> _Prepared:
        """Clean a frame against what is stored and what ``pending`` (earlier files of the same
        import, not yet stored) holds; refuse it if no row survives."""
        if kind is Kind.FUNDING:
            clean, report = clean_funding(frame, symbol=symbol, interval=timeframe)
        elif kind in CONTEXT_KINDS:
            clean, report = clean_context(frame, symbol=symbol, kind=kind, timeframe=timeframe)
        else:
            same = [
                p.clean
                for p in pending
                if (p.symbol, p.kind, p.timeframe) == (symbol, kind, timeframe) and len(p.clean)
            ]
            firsts = [f for f in [self._stored_first(kind, symbol, timeframe)] if f is not None]
            firsts += [c["ts"].iloc[0] for c in same]
            first_new = pd.to_datetime(frame["ts"], utc=True).min() if len(frame) else None
            at_listing = not firsts or (first_new is not None and first_new <= min(firsts))
            mark = self._mark(symbol, timeframe, frame, pending) if kind is Kind.OHLCV else None
            clean, report = clean_bars(
                frame,
                symbol=symbol,
                timeframe=timeframe,
                kind=kind,
                mark=mark,
                wick_tolerance=self.wick_tolerance,
                at_listing=at_listing,
            )
        if report.rows_out == 0:
            what = "; ".join(line.strip() for line in report.lines()[1:]) or "no rows"
            raise DataFormatError(
                source,
                f"at least one valid {kind} row at {timeframe} "
                "(times on the timeframe's grid, positive prices with low ≤ open, close ≤ high)",
                got=f"none kept of {report.rows_in:,}: {what}",
            )
        return _Prepared(source, symbol, kind, timeframe, clean, report)

    def _mark(
        self, symbol: str, timeframe: str, frame: pd.DataFrame, pending: list[_Prepared]
    ) -> pd.DataFrame | None:
        """Mark-price bars over the frame's span, stored or about to be, to check wicks."""
        if not len(frame):
            return None
        ts = pd.to_datetime(frame["ts"], utc=True)
        parts = []
        if self.warehouse.exists(Kind.MARK, symbol, timeframe):
            parts.append(
                self.warehouse.query(
                    Kind.MARK, symbol, timeframe, ts.min(), ts.max() + pd.Timedelta(microseconds=1)
                )
            )
        parts += [
            p.clean
            for p in pending
            if (p.symbol, p.kind, p.timeframe) == (symbol, Kind.MARK, timeframe)
        ]
        if not parts:
            return None
        mark = pd.concat([p[["ts", "low", "high"]] for p in parts], ignore_index=True)
        return mark.drop_duplicates("ts", keep="last")

    def _store(self, p: _Prepared) -> IngestResult:
        written = self.warehouse.write(p.kind, p.symbol, p.timeframe, p.clean)
        run_id = self._record(p.source, p.symbol, p.kind, p.timeframe, p.report, written)
        return IngestResult(p.source, p.symbol, p.kind, p.timeframe, p.report, written, run_id)

    def _stored_first(self, kind: Kind, symbol: str, timeframe: str) -> pd.Timestamp | None:
        d = self.warehouse.dataset(kind, symbol, timeframe)
        return d.first if d is not None else None

    def _record(
        self,
        source: str,
        symbol: str,
        kind: Kind,
        timeframe: str,
        report: CleaningReport,
        written: WriteResult,
    ) -> int | None:
        if self.engine is None:
            return None
        run = IngestRun(
            source=source[-500:],
            symbol=symbol,
            kind=str(kind),
            timeframe=timeframe,
            rows_in=report.rows_in,
            rows_stored=report.rows_out,
            rows_added=written.rows_added,
            rows_updated=written.rows_updated,
            rows_total=written.rows_total,
            first_ts=report.first.to_pydatetime() if report.first is not None else None,
            last_ts=report.last.to_pydatetime() if report.last is not None else None,
            report=report.to_dict(),
        )
        with session_scope(self.engine) as session:
            add_ingest_run(session, run=run)
            return run.id

    def ingest_paths(
        self,
        paths: Iterable[str | Path],
        *,
        kind: Kind | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        progress: Progress | None = None,
    ) -> list[IngestResult]:
        """Import files and folders. Every file is read, checked and cleaned before the first
        write, so a bad file anywhere stores nothing."""
        paths = list(paths)
        files = [f for p in paths for f in discover(p)]
        if not files:
            where = ", ".join(map(str, paths))
            raise DataFormatError(
                where, "at least one .csv, .csv.gz, .zip or .parquet file", got="none"
            )
        total = 2 * len(files)
        loaded: list[tuple[SourceFile, pd.DataFrame]] = []
        for i, f in enumerate(files):
            if progress:
                progress(i, total, f"reading {f.name}")
            src = identify(f, kind=kind, symbol=symbol, timeframe=timeframe)
            loaded.append((src, read_source(src, limits=self.limits, now=self.clock())))
        loaded.sort(key=lambda sf: (sf[0].symbol, _KIND_ORDER[sf[0].kind], sf[0].path.name))
        prepared: list[_Prepared] = []
        for src, frame in loaded:
            prepared.append(
                self._prepare(
                    frame, str(src.path), src.symbol, src.kind, src.timeframe, pending=prepared
                )
            )
        del loaded
        self.warehouse.sweep()
        results = []
        for j, p in enumerate(prepared):
            if progress:
                progress(len(files) + j, total, f"storing {Path(p.source).name}")
            results.append(self._store(p))
        if progress:
            progress(total, total, "done")
        return results
