"""Fixtures for page tests: a data folder filled with demo markets, and a chain."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from bti_core.chain.node import AnvilNode
from bti_core.db.engine import make_engine, migrate
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets
from bti_core.market.warehouse import Warehouse


@pytest.fixture(scope="session")
def demo_now() -> dict:
    """60 days of hourly demo bars up to the last full hour (for crashes replayed now)."""
    last = pd.Timestamp.now(tz="UTC").floor("1h") - pd.Timedelta("1h")
    return generate_demo_markets(
        start=last - pd.Timedelta(hours=24 * 60 - 1), periods=24 * 60, seed=3
    )


@pytest.fixture
def recent(
    data_dir: Path, demo_now: dict, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """`filled`, with markets that reach the present."""
    return _fill(data_dir, demo_now, anvil, monkeypatch)


@pytest.fixture
def filled(data_dir: Path, demo: dict, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Demo markets in a fresh data folder; the chain is the session's anvil node, where the
    app deploys its own contracts for this folder."""
    return _fill(data_dir, demo, anvil, monkeypatch)


def _fill(data_dir: Path, demo: dict, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
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


def sign_in(at: AppTest, username: str = "trader", password: str = "trader-demo") -> AppTest:
    """Fill the sign-in form as a person would (the demo accounts exist on first use)."""
    at.run()
    assert not at.exception, at.exception
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at
