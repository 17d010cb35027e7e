"""The ingest service: read → clean → store in the warehouse → record the run and its report.

Files are all read and checked before anything is written, so a malformed file in a folder stops
the import with nothing half-written. Within a symbol, mark-price bars are stored before
last-price bars so that the last-price cleaning can check wicks against the mark price.
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
    clean_funding,
)
from bti_core.market.schema import Kind, canonical_symbol
from bti_core.market.sources import SourceFile, discover, identify, read_source
from bti_core.market.warehouse import Warehouse, WriteResult

Progress = Callable[[int, int, str], None]
_KIND_ORDER = {Kind.MARK: 0, Kind.OHLCV: 1, Kind.FUNDING: 2}


@dataclass(frozen=True)
class IngestResult:
    source: str
    symbol: str
    kind: Kind
    timeframe: str
    report: CleaningReport
    write: WriteResult
    run_id: int | None


class Ingestor:
    """Stores market data; one per warehouse and database."""

    def __init__(
        self,
        warehouse: Warehouse,
        engine: Engine | None,
        *,
        wick_tolerance: float = DEFAULT_WICK_TOLERANCE,
    ) -> None:
        self.warehouse = warehouse
        self.engine = engine
        self.wick_tolerance = wick_tolerance

    def ingest_frame(
        self, frame: pd.DataFrame, *, symbol: str, kind: Kind, timeframe: str, source: str
    ) -> IngestResult:
        """Clean one canonical frame and merge it into the warehouse."""
        symbol = canonical_symbol(symbol)
        kind = Kind(kind)
        if kind is Kind.FUNDING:
            clean, report = clean_funding(frame, symbol=symbol, interval=timeframe)
        else:
            mark = None
            stored_first = self._stored_first(kind, symbol, timeframe)
            first_new = pd.to_datetime(frame["ts"], utc=True).min() if len(frame) else None
            at_listing = stored_first is None or (
                first_new is not None and first_new <= stored_first
            )
            if (
                kind is Kind.OHLCV
                and self.warehouse.exists(Kind.MARK, symbol, timeframe)
                and len(frame)
            ):
                ts = pd.to_datetime(frame["ts"], utc=True)
                mark = self.warehouse.query(
                    Kind.MARK, symbol, timeframe, ts.min(), ts.max() + pd.Timedelta(microseconds=1)
                )
            clean, report = clean_bars(
                frame,
                symbol=symbol,
                timeframe=timeframe,
                kind=kind,
                mark=mark,
                wick_tolerance=self.wick_tolerance,
                at_listing=at_listing,
            )
        written = self.warehouse.write(kind, symbol, timeframe, clean)
        run_id = self._record(source, symbol, kind, timeframe, report, written)
        return IngestResult(source, symbol, kind, timeframe, report, written, run_id)

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
        """Import files and folders. Every file is read and checked before the first write."""
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
            loaded.append((src, read_source(src)))
        loaded.sort(key=lambda sf: (sf[0].symbol, _KIND_ORDER[sf[0].kind], sf[0].path.name))
        results = []
        for j, (src, frame) in enumerate(loaded):
            if progress:
                progress(len(files) + j, total, f"storing {src.path.name}")
            results.append(
                self.ingest_frame(
                    frame,
                    symbol=src.symbol,
                    kind=src.kind,
                    timeframe=src.timeframe,
                    source=str(src.path),
                )
            )
        if progress:
            progress(total, total, "done")
        return results
