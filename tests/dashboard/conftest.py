"""Fixtures for page tests: a data folder filled with demo markets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bti_core.db.engine import make_engine, migrate
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.warehouse import Warehouse


@pytest.fixture
def filled(data_dir: Path, demo: dict) -> Path:
    engine = make_engine()
    migrate(engine)
    ingestor = Ingestor(Warehouse(data_dir / "warehouse"), engine)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        m = demo[symbol]
        ingestor.ingest_frame(m.mark, symbol=symbol, kind=Kind.MARK, timeframe="1h", source="demo")
        ingestor.ingest_frame(
            m.ohlcv, symbol=symbol, kind=Kind.OHLCV, timeframe="1h", source="demo"
        )
        ingestor.ingest_frame(
            m.funding, symbol=symbol, kind=Kind.FUNDING, timeframe="8h", source="demo"
        )
    engine.dispose()
    return data_dir
