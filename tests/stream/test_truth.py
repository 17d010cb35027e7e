"""A trigger is a fact, not one message: forged and glitched ticks through a real broker (Tansu
on 127.0.0.1) and the live feed use up no claim; a tick from the year 2100 and ticks of markets
that do not exist neither stop `bti stream kafka` nor move its checkpoint; a held crossing is
settled by the stored bars."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlmodel import Session, select

from bti_core.claims import holds
from bti_core.claims.hits import TickHit
from bti_core.config import get_settings
from bti_core.db.models import Claim, HeldTrigger, Policy
from bti_core.market.schema import Kind
from bti_core.services import build_services
from bti_core.stream import kafka
from bti_core.stream.broker import LocalBroker
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.store import load_checkpoint
from bti_core.stream.types import SymbolState
from tests.stream.test_stream_kill import BTI, _insure_and_crash, _outcome, _publish
from tests.worlds import NOW, World, buy, claim_paid_events, stream_services

YEAR_2100 = 4_102_444_800_000


TICK_PARTITIONS = 1  # one partition: the forged and true ticks keep their order


def claims_of(w: World) -> list[Claim]:
    with Session(w.db) as s:
        return list(s.exec(select(Claim)).all())


def held_of(w: World) -> list[HeldTrigger]:
    with Session(w.db) as s:
        return list(s.exec(select(HeldTrigger)).all())


def test_forged_ticks_on_kafka_use_up_no_claim_and_a_true_crash_still_pays(
    world: World,
    broker: str,
) -> None:
    """One tick on the topic used to open the policy's only claim (denied on its bars, or paid
    on its own evidence). Now: a far print is held as an outlier, a near one that does not
    persist is held for the bars; the true fall that follows stays beyond the level for the
    confirmation window and pays, once."""
    w = world
    p = buy(w, "alice", leverage="20", coverage="100")
    lp = float(p.liquidation_price)
    t0 = int(pd.Timestamp(NOW + timedelta(hours=3)).timestamp() * 1000)
    above = lp * 1.012
    quiet = [("BTCUSDT", t0 + 1000 * i, above) for i in range(20)]
    forged = [
        ("BTCUSDT", t0 + 20_500, lp * 0.6),  # a print 40 % off every other reading
        ("BTCUSDT", t0 + 21_500, lp * 0.999),  # a glitch just through the level
    ]
    after = [("BTCUSDT", t0 + 22_000 + 1000 * i, above) for i in range(10)]
    kafka.publish_ticks(broker, quiet + forged + after)
    services = stream_services(w)
    source, sink = kafka.KafkaTickSource(broker), kafka.KafkaSink(broker)
    try:
        eng = EmbeddedEngine(services, source, name="kafka", batch=7, sink=sink)
        eng.run(follow=lambda: source.stats.messages < 32)
        assert claims_of(w) == []  # nothing used up
        (held,) = held_of(w)
        assert held.policy_id == p.id and held.state == "held" and held.stream == "kafka"
        state = SymbolState.from_json(load_checkpoint(w.db, "kafka")[1]["BTCUSDT"])
        assert state.held_outliers == 1 and state.liquidated == {}
        # the true crash: 40 s beyond the level
        crash = [("BTCUSDT", t0 + 40_000 + 1000 * i, lp * (0.998 - 0.001 * i)) for i in range(40)]
        kafka.publish_ticks(broker, crash)
        eng.run(follow=lambda: source.stats.messages < 72)
    finally:
        source.close()
        sink.close()
    (c,) = claims_of(w)
    assert c.policy_id == p.id and c.state == "paid" and len(claim_paid_events(w)) == 1
    assert c.evidence["confirmation"]["by"] == "persistence"
    assert pd.Timestamp(c.trigger_at) == pd.Timestamp(t0 + 40_000, unit="ms", tz="UTC")
    assert {h.state for h in held_of(w)} == {"confirmed"}


def test_a_held_crossing_is_refuted_by_its_bars_or_lapses(world: World) -> None:
    w = world
    p = buy(w, "bea", leverage="20", coverage="100", hours=6)
    lp = float(p.liquidation_price)
    bars = w.wh.query(Kind.MARK, "BTCUSDT", "1h")
    assert float(bars["low"].iloc[-2]) > lp  # that hour the market never went there
    # a forged crossing dated inside a stored, closed hour: refuted by that hour's bar
    stored = pd.Timestamp(bars["ts"].iloc[-2]) + pd.Timedelta(minutes=17)
    # and one in the window's future hours, where nothing is stored yet: held, then lapses
    ahead = pd.Timestamp(NOW + timedelta(hours=2))
    hits = [
        TickHit(p.id or 0, "BTCUSDT", stored.to_pydatetime(), lp * 0.99),
        TickHit(p.id or 0, "BTCUSDT", ahead.to_pydatetime(), lp * 0.99),
    ]
    assert w.claims.open_from_ticks(hits, "kafka") == []
    assert len(holds.held(w.db)) == 2
    report = w.claims.recheck_held()
    assert (report.refuted, report.confirmed, report.lapsed) == (1, 0, 0)
    later = w.claims.clock
    w.claims.clock = lambda: later() + timedelta(days=2)  # a day past the window
    try:
        assert w.claims.recheck_held().lapsed == 1
    finally:
        w.claims.clock = later
    assert claims_of(w) == []
    with Session(w.db) as s:
        assert s.get(Policy, p.id).status == "active"  # type: ignore[union-attr]


def test_a_2100_tick_and_made_up_symbols_neither_stop_nor_move_the_kafka_stream(
    recent: Path,
) -> None:
    """`bti stream kafka` exited with 2 on every restart after a tick of a symbol that is no
    market; a tick stamped 2100 made every true tick after it "late" (no claims); every made-up
    symbol stayed in the checkpoint for ever."""
    _insure_and_crash()
    now_ms = int(time.time() * 1000)
    with LocalBroker() as broker:
        env = {**os.environ, "BTI_KAFKA_BOOTSTRAP": broker.bootstrap}
        kafka.ensure_topics(broker.bootstrap, {kafka.TICKS: 1})
        bad = [
            ("ABC", now_ms - 5_000_000, 1.0),  # not a market name BTI reads
            *[(f"FAKE{i}USDT", now_ms - 5_000_000, 1.0) for i in range(5)],  # valid-looking
            ("BTCUSDT", YEAR_2100, 1.0),  # from the future
        ]
        kafka.publish_ticks(broker.bootstrap, bad)
        _publish(broker.bootstrap, env)
        cmd = [BTI, "stream", "kafka", "--batch", "500", "--idle-exit", "3"]
        runs = [
            subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
            for _ in range(2)  # and again after a restart
        ]
        assert [r.returncode for r in runs] == [0, 0], runs[0].stdout + runs[0].stderr
        said = " ".join(runs[0].stdout.split())
        assert "skipped 7 messages (6 of no market here, 1 from the future" in said
        assert "7 dead-lettered to bti.ticks.dead" in said
        claims, paid_events, _ = _outcome()
        assert sorted(c.user_id for c in claims) == ["alice", "bob"]  # the true crash paid
        assert paid_events == sum(c.state == "paid" for c in claims)  # each once at most
        svc = build_services(get_settings())
        try:
            _, state = load_checkpoint(svc.db, "kafka")
        finally:
            svc.close()
        # no made-up symbol keeps state: only the markets stored here
        assert set(state) == {"BTCUSDT", "ETHUSDT", "__cursor__"}
        btc = SymbolState.from_json(state["BTCUSDT"])
        assert btc.last_ms < YEAR_2100
        dead = [h["x-bti-reason"] for _, h in kafka.read_dead_letters(broker.bootstrap)]
        assert len(dead) == 7
        assert sum("is no market here" in r for r in dead) == 6
        assert sum("past the clock" in r for r in dead) == 1


def test_a_glitched_live_tick_uses_up_nothing(
    world: World,
    binance_ws: Any,
) -> None:
    """A live feed's single print through the level used to open the claim with the feed's
    own bar as its evidence."""
    from bti_core.stream.live import LiveSource
    from tests.stream.test_live import client, update, wait_for

    w = world
    p = buy(w, "cy", leverage="20", coverage="100")
    lp = float(p.liquidation_price)
    t0 = int(pd.Timestamp(NOW + timedelta(hours=3)).timestamp() * 1000)
    prices = [lp * 1.01] * 10 + [lp * 0.995] + [lp * 1.01] * 10
    messages = [update(t0 + 1000 * i, px) for i, px in enumerate(prices)]
    ahead = time.time() + 12 * 3600
    src = LiveSource(client(binance_ws.url), ["BTCUSDT"], mode="ws", clock=lambda: ahead)
    with src as source:
        wait_for(lambda: len(binance_ws.clients) == 1, "the subscription")
        for part in (messages[:10], messages[10:11], messages[11:]):  # the glitch on its own
            binance_ws.push(part)
            wait_for(lambda p=part: source.stats.newest.get("BTCUSDT") == p[-1]["E"], "it")
        EmbeddedEngine(stream_services(w), source, name="live", batch=4).run()
    assert claims_of(w) == []
    assert [h.state for h in held_of(w)] == ["held"]
