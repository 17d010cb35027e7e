"""The Kafka transport against a real Kafka-compatible broker (Tansu, started on 127.0.0.1):
ticks in through the ticks topic, the replayed crash's claims and alerts out, exactly the
embedded replay's; a restart resumes from the offsets in the checkpoint without a duplicate;
bad and late messages are skipped and counted, never stop the stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from sqlmodel import Session, select

from bti_core.db.models import Alert, Claim
from bti_core.stream.engine import CURSOR, EmbeddedEngine
from bti_core.stream.kafka import (
    ALERTS,
    CLAIMS,
    TICKS,
    KafkaSink,
    KafkaTickSource,
    decode_tick,
    publish_ticks,
    read_all,
)
from bti_core.stream.ports import BatchReport
from bti_core.stream.sources import ReplaySource
from bti_core.stream.store import load_checkpoint
from tests.worlds import NOW, World, buy, claim_paid_events, crash, stream_services


def replay(w: World) -> ReplaySource:
    return ReplaySource(
        w.wh, ["BTCUSDT"], pd.Timestamp(NOW), pd.Timestamp(NOW + timedelta(hours=12))
    )


@pytest.fixture
def engines() -> Iterator[list[EmbeddedEngine]]:
    """The Kafka engines a test made, their clients closed before the broker stops."""
    made: list[EmbeddedEngine] = []
    yield made
    for e in made:
        assert isinstance(e.source, KafkaTickSource) and isinstance(e.sink, KafkaSink)
        e.source.close()
        e.sink.close()


def kafka_engine(w: World, bootstrap: str, made: list[EmbeddedEngine], **kw: Any) -> EmbeddedEngine:
    services = stream_services(w)
    eng = EmbeddedEngine(
        services,  # type: ignore[arg-type]
        KafkaTickSource(bootstrap),
        name="kafka",
        batch=5,
        sink=KafkaSink(bootstrap),
        **kw,
    )
    made.append(eng)
    return eng


def run_until(eng: EmbeddedEngine, n: int, timeout: float = 60.0) -> list[BatchReport]:
    """Run a Kafka engine until it has read ``n`` messages (a live source never ends)."""
    done: list[BatchReport] = []
    deadline = time.monotonic() + timeout

    def more() -> bool:
        return sum(r.read for r in done) < n and time.monotonic() < deadline

    eng.run(progress=lambda _d, _t, r: done.append(r), follow=more)
    return done


def test_the_crash_through_kafka_opens_the_claims_and_alerts_of_the_replay(
    world: World,
    broker: str,
    engines: list[EmbeddedEngine],
) -> None:
    w = world
    hit = buy(w, "alice", leverage="20", coverage="100")
    buy(w, "carol", leverage="2", coverage="50")
    crash(w, drop=0.3, after_hours=3)
    src = replay(w)
    n = publish_ticks(broker, zip(src.symbols, src.ts.tolist(), src.price.tolist(), strict=True))
    assert n == len(src)

    reports = run_until(kafka_engine(w, broker, engines), n)
    assert sum(r.read for r in reports) == n  # every message, counted from what was read
    with Session(w.db) as s:
        claims = s.exec(select(Claim)).all()
        alerts = s.exec(select(Alert).where(Alert.kind != "liquidation")).all()
    assert [c.policy_id for c in claims] == [hit.id]
    assert claims[0].state == "paid" and len(claim_paid_events(w)) == 1
    # out through Kafka: the same claim and every alert the database holds
    out_claims = read_all(broker, CLAIMS)
    assert [(m["claim"], m["policy"], m["state"]) for m in out_claims] == [
        (claims[0].id, hit.id, "paid")
    ]
    assert {m["key"] for m in read_all(broker, ALERTS)} == {a.key for a in alerts}

    # through Kafka the ticks are ticks: the run beyond the level confirmed it by persistence
    assert claims[0].evidence["confirmation"]["by"] == "persistence"
    assert claims[0].evidence["confirmation"]["seconds"] >= 30
    # the embedded replay of the same stored bars raises the same alerts (its claim exists:
    # the bars prove what the ticks made of them hint at). Not always at the same tick: ticks
    # a quarter of an hour apart through a 6 % fall are outliers to a tick stream until the
    # new level has held for three of them; the bars were checked when they were imported
    services = stream_services(w)
    embedded = EmbeddedEngine(services, src, name="replay", batch=7).run()
    proofs = ("liquidation", "crossing")
    key = [
        (e.kind, e.policy, round(e.value, 9))
        for r in reports
        for e in r.events
        if e.kind not in proofs
    ]
    assert sorted(key) == sorted(
        (e.kind, e.policy, round(e.value, 9))
        for r in embedded
        for e in r.events
        if e.kind not in proofs
    )
    assert sum(len(r.claims) for r in embedded) == 0

    # a restart from the checkpoint finds nothing new; new ticks go on from the offsets
    offset, state = load_checkpoint(w.db, "kafka")
    assert offset == n and sum(state[CURSOR].values()) == n
    again = kafka_engine(w, broker, engines)
    assert again.step() is None
    last = int(src.ts[-1])
    publish_ticks(broker, [("BTCUSDT", last + 1000, float(src.price[-1]))])
    r = again.step()
    assert r is not None and r.read == 1 and r.claims == []
    with Session(w.db) as s:
        assert len(s.exec(select(Claim)).all()) == 1
    assert len(claim_paid_events(w)) == 1


@pytest.mark.both_databases
def test_a_kill_between_the_sink_and_the_checkpoint_adds_nothing(
    world: World,
    broker: str,
    engines: list[EmbeddedEngine],
) -> None:
    w = world
    buy(w, "alice", leverage="20", coverage="100")
    crash(w, drop=0.3, after_hours=3)
    src = replay(w)
    n = publish_ticks(broker, zip(src.symbols, src.ts.tolist(), src.price.tolist(), strict=True))

    class KilledError(Exception):
        pass

    def die(r: Any) -> None:
        if r.claims:
            raise KilledError

    with pytest.raises(KilledError):
        run_until(kafka_engine(w, broker, engines, before_commit=die), n)
    # the restart reads that batch again from the offsets
    run_until(kafka_engine(w, broker, engines), n - load_checkpoint(w.db, "kafka")[0])
    with Session(w.db) as s:
        assert len(s.exec(select(Claim)).all()) == 1
        keys = s.exec(select(Alert.key)).all()
    assert len(keys) == len(set(keys)) and len(claim_paid_events(w)) == 1
    # Kafka got the batch twice (at least once); its keys dedupe to the stored alerts
    out = read_all(broker, ALERTS)
    assert {m["key"] for m in out} <= set(keys)
    assert len({m["claim"] for m in read_all(broker, CLAIMS)}) == 1  # produced before the kill


def test_bad_and_late_messages_are_skipped_and_counted(broker: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker, "log_level": 3})
    good = [("BTCUSDT", 2_000, 100.0), ("BTCUSDT", 1_000, 99.0), ("BTCUSDT", 3_000, 101.0)]
    for raw in (b"not json", b"[1, 2]", json.dumps({"symbol": "BTCUSDT", "ts": 5}).encode()):
        p.produce(TICKS, key=b"BTCUSDT", value=raw)
    for sym, ts, mark in good:
        p.produce(
            TICKS, key=sym.encode(), value=json.dumps({"symbol": sym, "ts": ts, "mark": mark})
        )
    p.produce(TICKS, key=b"BTCUSDT", value=b'{"symbol": "BTCUSDT", "ts": 4000, "mark": -1}')
    p.flush(10)
    src = KafkaTickSource(broker)
    seen: list[int] = []
    read = 0
    cursor: dict[str, int] | None = None
    while True:
        _, ts, _, cursor, n = src.read_from(cursor, 100, {})
        if n == 0:
            break
        read += n
        seen += ts.tolist()
    src.close()
    assert read == 7 and seen == [2_000, 3_000]  # 1,000 came after 2,000: late
    assert src.stats.skipped == 4 and src.stats.late == 1
    assert any("missing mark" in r for r in src.stats.reasons)
    assert any("above 0" in r for r in src.stats.reasons)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"symbol": "BTC/USDT", "ts": 1, "mark": 1}', "letters and digits"),
        (b'{"symbol": "BTCUSDT", "ts": 1.5, "mark": 1}', "whole milliseconds"),
        (b'{"symbol": "BTCUSDT", "ts": 1, "mark": "1"}', "must be a number"),
        (b'{"symbol": "BTCUSDT", "ts": 1, "mark": NaN}', "must be a number"),
        (b'{"symbol": "BTCUSDT", "ts": true, "mark": 1}', "whole milliseconds"),
    ],
)
def test_a_tick_message_says_what_is_wrong(raw: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        decode_tick(raw)
    assert decode_tick(b'{"symbol": "btcusdt", "ts": 1, "mark": 2}') == ("BTCUSDT", 1, 2.0)


def test_a_batch_decodes_as_its_messages_one_by_one() -> None:
    from bti_core.stream.kafka import _reason, decode_ticks, encode_tick

    good = [encode_tick("BTCUSDT", i, 100.0 + i) for i in range(5)]
    odd = [
        b'{"symbol": "ETHUSDT", "ts": 7, "mark": 3}',  # an integer mark: still a tick
        b'{"symbol": "ETHUSDT", "ts": 7, "mark": 1e400}',  # infinite
        b'{"symbol": "ETHUSDT", "ts": 7, "mark": 3.0, "extra": 1}',  # an extra field is fine
        b"1, 2",  # two JSON values: would shift a joined array by one
        None,
    ]
    for batch in (good, good + odd, odd[:3], [odd[3], *good]):
        assert decode_ticks(batch) == [_reason(v) for v in batch]
    assert decode_ticks(good)[2] == ("BTCUSDT", 2, 102.0)


def test_a_batch_read_but_not_committed_is_read_again(broker: str) -> None:
    publish_ticks(broker, [("BTCUSDT", t, 100.0 + t) for t in range(1, 11)])
    src = KafkaTickSource(broker)
    try:
        first = src.read_from(None, 4, {})
        assert first[4] == 4
        # the engine died before committing: it asks again from the checkpoint's cursor
        again = src.read_from(None, 4, {})
        assert again[1].tolist() == first[1].tolist()
        after = src.read_from(again[3], 100, {})
        assert sorted(first[1].tolist() + after[1].tolist()) == list(range(1, 11))
    finally:
        src.close()
