"""Live download through ccxt, against recorded Binance responses (never the network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import ccxt
import pandas as pd
import pytest

from bti_core.errors import ExchangeError
from bti_core.market.exchange import download, make_exchange
from bti_core.market.schema import Kind

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "binanceusdm"


class Replay:
    """Stands in for Binance's HTTP API: answers ccxt's requests from the recorded files and
    honours ``startTime``/``limit`` the way the exchange does, so paging is exercised."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        self.calls.append(url)
        u = urlparse(url)
        endpoint = u.path.rsplit("/", 1)[-1]
        if endpoint == "exchangeInfo":
            return json.loads((GOLDEN / "exchangeInfo.json").read_text())
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        rows = json.loads((GOLDEN / f"{endpoint}.json").read_text())

        def time_of(r: Any) -> int:
            if isinstance(r, dict):
                return int(r.get("fundingTime", r.get("timestamp", 0)))
            return int(r[0])

        start, limit = int(q.get("startTime", 0)), int(q.get("limit", 500))
        end = int(q.get("endTime", 2**62))
        return [r for r in rows if start <= time_of(r) <= end][:limit]


@pytest.fixture
def exchange() -> Any:
    ex = make_exchange("binanceusdm")
    ex.fetch = Replay()
    return ex


def test_ohlcv_pages_through_history(exchange: Any) -> None:
    df = download(
        exchange, "BTCUSDT", Kind.OHLCV, since="2024-01-01", until="2024-01-01 06:00", page_limit=3
    )
    assert len(df) == 6
    assert df["ts"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert df["ts"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    assert df["close"].iloc[0] == pytest.approx(42398.6)
    assert sum("klines" in c for c in exchange.fetch.calls) == 2  # 3 + 3 bars, two pages


def test_mark_price_uses_the_mark_endpoint(exchange: Any) -> None:
    df = download(exchange, "BTC/USDT:USDT", Kind.MARK, since="2024-01-01", until="2024-01-02")
    assert len(df) == 8 and (df["volume"] == 0).all()
    assert any("markPriceKlines" in c for c in exchange.fetch.calls)


def test_funding_history(exchange: Any) -> None:
    df = download(
        exchange, "BTCUSDT", Kind.FUNDING, timeframe="8h", since="2024-01-01", until="2024-01-03"
    )
    assert df["funding_rate"].tolist()[:2] == [0.00037409, 0.00022]
    assert len(df) == 6


def test_open_interest_and_long_short_history(exchange: Any) -> None:
    from bti_core.market.ingest import Ingestor
    from bti_core.market.warehouse import Warehouse

    oi = download(exchange, "BTCUSDT", Kind.OPEN_INTEREST, since="2024-01-01", until="2024-01-03")
    assert len(oi) == 48 and list(oi.columns) == ["ts", "open_interest", "open_interest_value"]
    assert oi["ts"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    first = json.loads((GOLDEN / "openInterestHist.json").read_text())[0]
    assert oi["open_interest"].iloc[0] == pytest.approx(float(first["sumOpenInterest"]))
    assert oi["open_interest_value"].iloc[0] == pytest.approx(float(first["sumOpenInterestValue"]))
    assert any("openInterestHist" in c for c in exchange.fetch.calls)
    ls = download(exchange, "BTCUSDT", Kind.LONG_SHORT, since="2024-01-01", until="2024-01-03")
    assert len(ls) == 49  # as sent: one repeated, one zero
    assert ls["long_account"].between(0, 1).all()
    # through the importer: the repeat and the zero reading are dropped and reported
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ing = Ingestor(Warehouse(tmp), None)
        res = ing.ingest_frame(
            ls, symbol="BTCUSDT", kind=Kind.LONG_SHORT, timeframe="1h", source="t"
        )
        assert res.report.rows_out == 47
        text = "\n".join(res.report.lines())
        assert "not positive" in text and "duplicate times" in text
        stored = ing.warehouse.query(Kind.LONG_SHORT, "BTCUSDT", "1h")
        assert len(stored) == 47 and (stored["long_short_ratio"] > 0).all()
        ing.ingest_frame(oi, symbol="BTCUSDT", kind=Kind.OPEN_INTEREST, timeframe="1h", source="t")
        assert len(ing.warehouse.query(Kind.OPEN_INTEREST, "BTCUSDT", "1h")) == 48


def test_unknown_market_and_exchange(exchange: Any) -> None:
    with pytest.raises(ExchangeError, match="no market DOGE/USDT:USDT"):
        download(exchange, "DOGEUSDT", Kind.OHLCV, since="2024-01-01", until="2024-01-02")
    with pytest.raises(ExchangeError, match="unknown exchange"):
        make_exchange("no-such-exchange")


def test_network_failure_becomes_exchange_error() -> None:
    ex = make_exchange("binanceusdm")

    def down(*_a: Any, **_k: Any) -> Any:
        raise ccxt.NetworkError("connection refused")

    ex.fetch = down
    with pytest.raises(ExchangeError, match="NetworkError"):
        download(ex, "BTCUSDT", Kind.OHLCV, since="2024-01-01", until="2024-01-02")
