"""The live source against Binance USDT-M's protocols served on 127.0.0.1 (never the network):
its market-stream websocket (aiohttp, answering ``SUBSCRIBE`` as Binance does and pushing
``markPriceUpdate`` messages) and its REST API (ccxt's ``fetch`` answered from the golden
files). A live crash opens its claim at the crossing tick once; a restart adds nothing; a dead
websocket gives way to polling."""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from bti_core.db.models import Alert, Claim
from bti_core.errors import ExchangeError
from bti_core.market.schema import Kind
from bti_core.stream import live
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.live import WS_FAILURES, LiveSource, make_pro_exchange
from bti_core.stream.ports import BatchReport
from bti_core.stream.store import load_checkpoint
from bti_core.stream.types import SymbolState
from tests.stream.exchange_ws import BinanceWs
from tests.worlds import NOW, World, buy, claim_paid_events, stream_services

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "binanceusdm"
UPDATES = [json.loads(x) for x in (GOLDEN / "markPriceUpdate.jsonl").read_text().splitlines()]


def update(at_ms: int, price: float) -> dict[str, Any]:
    """A ``markPriceUpdate`` in the golden messages' format, at ``at_ms`` and ``price``."""
    return {**UPDATES[0], "E": at_ms, "p": f"{price:.8f}"}


def client(ws_url: str, premium: Callable[[], Any] | None = None) -> Any:
    """ccxt's binanceusdm with its websocket at ``ws_url`` and its REST API answered here:
    the markets from the golden ``exchangeInfo``, mark prices (``premiumIndex``) from
    ``premium``."""
    ex = make_pro_exchange("binanceusdm")

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        endpoint = urlparse(url).path.rsplit("/", 1)[-1]
        if endpoint == "exchangeInfo":
            return json.loads((GOLDEN / "exchangeInfo.json").read_text())
        if endpoint == "premiumIndex" and premium is not None:
            return premium()
        raise AssertionError(f"unexpected request {url}")

    ex.fetch = fetch
    ex.urls["api"]["ws"]["linear"] = ws_url
    return ex


def wait_for(ok: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def drain(source: LiveSource) -> list[tuple[int, float]]:
    _, ts, px = source.read_after({}, 10_000)
    return list(zip(ts.tolist(), px.tolist(), strict=True))


def test_recorded_format_messages_become_ticks(binance_ws: BinanceWs) -> None:
    with LiveSource(client(binance_ws.url), ["BTCUSDT"], mode="ws") as source:
        wait_for(binance_ws.subscribed.is_set, "the subscription")
        assert binance_ws.params == ["btcusdt@markPrice@1s"]
        binance_ws.push(UPDATES, gap=0.05)
        last = UPDATES[-1]["E"]
        wait_for(lambda: source.stats.newest.get("BTCUSDT") == last, "the last update")
        ticks = drain(source)
        assert source.stats.mode == "ws" and source.stats.errors == 0
    sent = [(u["E"], float(u["p"])) for u in UPDATES]
    # ccxt keeps a symbol's newest update: one that arrives while the thread is busy gives way
    # to the next, so what is read is the sent messages in order, ending with the newest
    assert ticks and ticks[-1] == sent[-1] and set(ticks) <= set(sent)
    assert [t for t, _ in ticks] == sorted({t for t, _ in ticks})


def test_a_live_crash_opens_its_claim_at_the_tick_once(
    world: World,
    binance_ws: BinanceWs,
) -> None:
    w = world
    hit = buy(w, "alice", leverage="20", coverage="100")
    safe = buy(w, "carol", leverage="2", coverage="50")
    spot = w.ins.risk.spot("BTCUSDT")
    t0 = int(pd.Timestamp(NOW + timedelta(hours=3)).timestamp() * 1000)
    # −1 % a second for 15 seconds (the 20× long's liquidation price is about 4 % down), then
    # held at −15 % for 40 s: beyond the level past the 30 s that confirm a liquidation
    prices = [spot * (1 - 0.01 * i) for i in range(15)] + [spot * 0.85] * 40
    first = [update(t0 + 1000 * i, p) for i, p in enumerate(prices)]

    def run_live(messages: list[dict[str, Any]]) -> list[BatchReport]:
        reports: list[BatchReport] = []
        # the crash is replayed hours ahead: the source's clock runs with the claims service's
        ahead = time.time() + 12 * 3600
        src = LiveSource(client(binance_ws.url), ["BTCUSDT"], mode="ws", clock=lambda: ahead)
        with src as source:
            wait_for(lambda: len(binance_ws.clients) == 1, "the subscription")
            binance_ws.push(messages)
            last = messages[-1]["E"]
            wait_for(lambda: source.stats.newest.get("BTCUSDT") == last, "the last update")
            engine = EmbeddedEngine(stream_services(w), source, name="live", batch=4)
            engine.run(progress=lambda _d, _t, r: reports.append(r))
        wait_for(lambda: not binance_ws.clients, "the client to leave")
        return reports

    reports = run_live(first)
    claims = [c for r in reports for c in r.claims]
    assert len(claims) == 1
    crossing = {u["E"] for u in first if float(u["p"]) <= float(hit.liquidation_price)}
    with Session(w.db) as s:
        c = s.get(Claim, claims[0])
        assert c is not None and c.policy_id == hit.id and c.source == "stream"
        assert c.state == "paid" and c.trigger_price <= hit.liquidation_price
        assert int(pd.Timestamp(c.trigger_at).timestamp() * 1000) in crossing
        # confirmed by the run of ticks beyond the level; the feed's own bars are context
        run = c.evidence["confirmation"]
        assert run["by"] == "persistence" and run["seconds"] >= 30 and run["stream"] == "live"
        feed = [b for b in c.evidence["bars"] if b.get("feed") == "live binanceusdm"]
        assert feed and min(b["low"] for b in feed) <= float(hit.liquidation_price)
        alerts = s.exec(select(Alert)).all()
    assert {a.kind for a in alerts} >= {"liquidation", "near_liquidation"}
    assert all(a.policy_id != safe.id for a in alerts if a.kind == "liquidation")
    assert len(claim_paid_events(w)) == 1
    _, state = load_checkpoint(w.db, "live")
    assert SymbolState.from_json(state["BTCUSDT"]).last_ms == first[-1]["E"]

    # a reconnecting feed sends the last minutes again, then goes on: what the checkpoint
    # holds is dropped, the rest is scored, nothing is raised twice
    alerts_before = len(alerts)
    later = [update(t0 + 1000 * (len(prices) + i), spot * 0.84) for i in range(5)]
    again = run_live(first + later)
    assert 0 < sum(r.ticks for r in again) <= len(later)
    assert [c for r in again for c in r.claims] == [] and len(claim_paid_events(w)) == 1
    with Session(w.db) as s:
        keys = s.exec(select(Alert.key)).all()
    assert len(keys) == len(set(keys)) and len(keys) >= alerts_before
    offset, state = load_checkpoint(w.db, "live")
    assert offset == sum(r.read for r in reports + again)
    assert SymbolState.from_json(state["BTCUSDT"]).last_ms == later[-1]["E"]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/ws"


def test_auto_mode_polls_when_the_websocket_fails() -> None:
    """The websocket's port refuses connections: after `WS_FAILURES` failures the source polls
    ``premiumIndex``; a reading polled again before the exchange updates it is dropped."""
    golden = json.loads((GOLDEN / "premiumIndex.json").read_text())
    calls = {"n": 0}

    def premium() -> Any:
        calls["n"] += 1
        k = calls["n"] // 2  # each reading is returned twice
        return [{**golden[0], "time": golden[0]["time"] + 1000 * k, "markPrice": f"{42398.6 + k}"}]

    ex = client(closed_port_url(), premium)
    with LiveSource(ex, ["BTCUSDT"], mode="auto", poll=0.05) as source:
        wait_for(
            lambda: len(source.stats.newest) and source.stats.per_symbol["BTCUSDT"] >= 3, "polls"
        )
        ticks = drain(source)
        stats = source.stats
    assert stats.mode == "poll" and stats.errors >= WS_FAILURES and stats.repeated >= 1
    assert ticks[0] == (golden[0]["time"], 42398.6)
    assert all(
        b[0] - a[0] == 1000 and b[1] - a[1] == pytest.approx(1)
        for a, b in itertools.pairwise(ticks)
    )


def test_ws_mode_keeps_retrying_a_failing_websocket() -> None:
    with LiveSource(client(closed_port_url()), ["BTCUSDT"], mode="ws") as source:
        wait_for(lambda: source.stats.errors >= WS_FAILURES + 1, "retries", timeout=60)
        assert source.stats.mode == "ws" and source.alive
        assert "Error" in source.stats.last_error


def test_what_cannot_be_followed_is_refused(binance_ws: BinanceWs) -> None:
    with pytest.raises(ExchangeError, match="binanceusdm lists no market ETH/USDT:USDT"):
        LiveSource(client(binance_ws.url), ["BTCUSDT", "ETHUSDT"]).start()
    with pytest.raises(ExchangeError, match="unknown exchange 'binancex'"):
        make_pro_exchange("binancex")
    for kw, msg in [
        ({"mode": "fast"}, "mode must be one of auto, ws, poll; got 'fast'"),
        ({"poll": 0.0}, "poll must be between 0.05 and 3600 seconds; got 0.0"),
        ({"poll": float("nan")}, "poll must be between"),
    ]:
        with pytest.raises(ValueError, match=msg):
            LiveSource(object(), ["BTCUSDT"], **kw)
    with pytest.raises(ValueError, match="at least one symbol"):
        LiveSource(object(), [])
    with pytest.raises(ValueError, match="unknown symbol 'BTC USDT!'"):
        LiveSource(object(), ["BTC USDT!"])


def test_ticks_make_minute_bars_and_odd_tickers_are_skipped() -> None:
    m0 = int(pd.Timestamp("2024-01-01", tz="UTC").timestamp() * 1000)
    source = LiveSource(object(), ["BTCUSDT"], clock=lambda: m0 / 1000 + 300)

    def tick(sec: float, price: Any, symbol: str = "BTC/USDT:USDT") -> bool:
        return source.add({"symbol": symbol, "timestamp": m0 + int(sec * 1000), "markPrice": price})

    assert [tick(10, 100.0), tick(50, 103.0), tick(65, 99.0), tick(90, 101.0)] == [True] * 4
    assert not tick(90, 102.0) and not tick(30, 1.0)  # a repeat, a tick from before
    assert not tick(95, None) and not tick(96, float("nan")) and not tick(97, -1.0)
    assert not tick(98, 100.0, symbol="ETH/USDT:USDT")  # a symbol not followed
    assert not source.add({"symbol": "BTC/USDT:USDT", "markPrice": 100.0})  # no time
    assert not tick(361, 100.0)  # over a minute past the clock
    assert source.take_bars() == {}  # the first minute lacks its start; the second is open
    assert tick(121, 104.0)
    bars = source.take_bars()["BTCUSDT"]
    assert bars["ts"].tolist() == [pd.Timestamp("2024-01-01 00:01", tz="UTC")]
    assert bars[["open", "high", "low", "close"]].values.tolist() == [[99.0, 101.0, 99.0, 101.0]]
    assert source.take_bars() == {}
    assert tick(150, 102.0) and tick(185, 103.0)
    assert source.take_bars()["BTCUSDT"][["open", "close"]].values.tolist() == [[104.0, 102.0]]
    s = source.stats
    assert (s.received, s.skipped, s.repeated, s.per_symbol) == (15, 6, 2, {"BTCUSDT": 7})
    # the engine's checkpoint already holds the first two: they are not read again
    _, ts, px = source.read_after({"BTCUSDT": m0 + 50_000}, 3)
    assert ts.tolist() == [m0 + 65_000, m0 + 90_000, m0 + 121_000]
    assert px.tolist() == [99.0, 101.0, 104.0]
    assert source.read_after({}, 10)[1].tolist() == [m0 + 150_000, m0 + 185_000]
    assert len(source.read_after({}, 10)[1]) == 0  # each is read once


runner = CliRunner()


def test_bti_stream_live_scores_ticks_and_stores_their_minute_bars(
    data_dir: Path, binance_ws: BinanceWs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bti_core.cli import app
    from bti_core.config import get_settings
    from bti_core.market.warehouse import Warehouse

    # the exchange's address is the one thing replaced: ccxt speaks to the local server
    monkeypatch.setattr(live, "make_pro_exchange", lambda exchange_id: client(binance_ws.url))
    minute = pd.Timestamp.now("UTC").floor("1min") - pd.Timedelta(minutes=4)
    t0 = int(minute.timestamp() * 1000)
    messages = [update(t0 + 20_000 * i, 42_000 + i) for i in range(10)]  # into a 4th minute

    def feed() -> None:
        binance_ws.subscribed.wait(30)
        binance_ws.push(messages, gap=0.05)

    pusher = threading.Thread(target=feed)
    pusher.start()
    res = runner.invoke(
        app, ["stream", "live", "--symbols", "btcusdt", "--duration", "4", "--name", "l"]
    )
    pusher.join()
    assert res.exit_code == 0, res.output
    assert "stream l: following BTCUSDT on binanceusdm (websocket" in res.output
    assert re.search(r"stream l: \d+ ticks \(newest BTCUSDT [^)]+\), 0 new alerts", res.output), (
        res.output
    )
    bars = Warehouse(get_settings().warehouse_dir).query(Kind.MARK, "BTCUSDT", "1m", minute, None)
    # the first minute (not heard from its start) is left out; the fourth is still open
    assert bars["ts"].tolist() == [minute + pd.Timedelta(minutes=k) for k in (1, 2)]
    for k, (low, high) in enumerate(zip(bars["low"], bars["high"], strict=True), start=1):
        assert 42_000 + 3 * k <= low <= high <= 42_002 + 3 * k  # the minute's prices


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", ""], "--symbols: name at least one symbol"),
        (["--symbols", "BTCUSDT", "--mode", "fast"], "'fast' is not one of"),
        (["--symbols", "BTCUSDT", "--exchange", "nowhere"], "unknown exchange 'nowhere'"),
        (["--symbols", "BTCUSDT", "--poll", "0"], "0.05"),
        (["--symbols", "BTC USDT"], "--symbols"),
    ],
)
def test_bti_stream_live_refuses_bad_options(data_dir: Path, args: list[str], message: str) -> None:
    from bti_core.cli import app

    res = runner.invoke(app, ["stream", "live", *args, "--duration", "1"])
    assert res.exit_code != 0 and message in res.output, res.output
