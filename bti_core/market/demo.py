"""Storing the demo markets so that the demo is complete or absent.

A demo killed halfway must not leave a symbol without its funding that ``bti demo --if-missing``
(what ``make run`` runs) then keeps forever. So:

- a marker, ``<warehouse>/.demo.json``, says ``pending`` before the first write and ``complete``
  after the last (written atomically);
- each symbol is stored mark price, funding, open interest, long/short ratio, then last price:
  a symbol is listed once its last-price bars exist (`Warehouse.symbols`), so a listed demo
  symbol always has all five;
- ``--if-missing`` keeps a complete demo, and any warehouse without a marker (the user's own
  data), but redoes an interrupted one, first deleting what it had stored;
- one lock serialises demos, so two ``make run`` at once make one demo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from bti_core import files
from bti_core.filelock import file_lock
from bti_core.market.ingest import Ingestor, IngestResult
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind
from bti_core.market.synthetic import DemoMarket, market_context
from bti_core.market.warehouse import Warehouse

MARKER = ".demo.json"
DEMO_FILES = 5  # per symbol: mark, funding, open interest, long/short ratio, last price


class DemoState(StrEnum):
    ABSENT = "absent"  # no demo was ever started here
    PENDING = "pending"  # a demo started and did not finish
    COMPLETE = "complete"


@dataclass(frozen=True)
class DemoMarker:
    state: DemoState
    symbols: tuple[str, ...] = ()
    timeframe: str = ""
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "seed": self.seed,
            "written": pd.Timestamp.now("UTC").isoformat(),
        }


def read_marker(warehouse: Warehouse) -> DemoMarker:
    path = warehouse.root / MARKER
    try:
        d = json.loads(path.read_text())
        return DemoMarker(
            DemoState(d["state"]),
            tuple(d.get("symbols", ())),
            d.get("timeframe", ""),
            d.get("seed"),
        )
    except FileNotFoundError:
        return DemoMarker(DemoState.ABSENT)
    except (ValueError, KeyError, TypeError):  # a torn or foreign file: treat as unfinished
        return DemoMarker(DemoState.PENDING)


def _write_marker(warehouse: Warehouse, marker: DemoMarker) -> None:
    files.write_text(warehouse.root / MARKER, json.dumps(marker.to_json()))


@contextmanager
def demo_lock(warehouse: Warehouse) -> Iterator[None]:
    with file_lock(warehouse.root / ".demo.lock"):
        yield


def store_demo(
    ingestor: Ingestor,
    markets: dict[str, DemoMarket],
    *,
    timeframe: str,
    seed: int,
    on_file: Callable[[int, str, Kind], None] | None = None,
) -> list[IngestResult]:
    """Store generated markets (hold `demo_lock`); the marker is ``complete`` only after the
    last file. ``on_file(files_done, symbol, kind)`` is called before each file (a progress bar)."""
    wh = ingestor.warehouse
    previous = read_marker(wh)
    if previous.state is DemoState.PENDING:  # an interrupted demo's leftovers go first
        for symbol in previous.symbols:
            for kind, tf in (
                (Kind.OHLCV, previous.timeframe),
                (Kind.LONG_SHORT, previous.timeframe),
                (Kind.OPEN_INTEREST, previous.timeframe),
                (Kind.FUNDING, FUNDING_TIMEFRAME),
                (Kind.MARK, previous.timeframe),
            ):
                if tf:
                    wh.delete(kind, symbol, tf)
    marker = DemoMarker(DemoState.PENDING, tuple(markets), timeframe, seed)
    _write_marker(wh, marker)
    wh.sweep()
    results: list[IngestResult] = []
    for symbol, m in markets.items():
        oi, ls = market_context(m, seed)
        for kind, frame, tf in (
            (Kind.MARK, m.mark, timeframe),
            (Kind.FUNDING, m.funding, FUNDING_TIMEFRAME),
            (Kind.OPEN_INTEREST, oi, timeframe),
            (Kind.LONG_SHORT, ls, timeframe),
            (Kind.OHLCV, m.ohlcv, timeframe),  # last: this lists the symbol
        ):
            if on_file:
                on_file(len(results), symbol, kind)
            results.append(
                ingestor.ingest_frame(
                    frame, symbol=symbol, kind=kind, timeframe=tf, source=f"demo seed={seed}"
                )
            )
    _write_marker(wh, DemoMarker(DemoState.COMPLETE, tuple(markets), timeframe, seed))
    return results


def marker_path(warehouse: Warehouse) -> Path:
    return warehouse.root / MARKER
