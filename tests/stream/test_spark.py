"""The Spark Structured Streaming job in local mode, reading the ticks topic of a real
Kafka-compatible broker (Tansu on 127.0.0.1) through the ``bti_kafka`` Python data source:
its alerts and claims equal the embedded engine's on the same ticks; restarted from its
checkpoint it adds nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from bti_core.db.models import Alert, Claim
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.kafka import TICKS, encode_tick, publish_ticks, read_dead_letters
from bti_core.stream.sources import ArraySource
from bti_core.stream.store import load_checkpoint
from tests.stream.test_engine import extreme_market
from tests.stream.test_kafka import replay
from tests.worlds import World, buy, claim_paid_events, crash, stream_services

pytest.importorskip("pyspark")
from bti_core.stream import spark as bti_spark

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    s = bti_spark.session()
    yield s
    s.stop()


def run_until(query: Any, run: bti_spark.SparkRun, n: int, timeout: float = 120.0) -> None:
    """Wait until the query has scored ``n`` ticks, then stop it."""
    deadline = time.monotonic() + timeout
    try:
        while run.ticks < n:
            if query.exception() is not None:
                raise AssertionError(f"the Spark query failed: {query.exception()}")
            assert time.monotonic() < deadline, f"scored {run.ticks} of {n} ticks in {timeout} s"
            time.sleep(0.2)
    finally:
        query.stop()


def events_key(reports: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (e.kind, e.symbol, e.policy, e.at_ms, round(e.value, 9)) for r in reports for e in r.events
    )


def test_spark_raises_the_alerts_and_claims_of_the_embedded_engine(
    world: World,
    broker: str,
    spark: Any,
    tmp_path: Path,
) -> None:
    w = world
    hit = buy(w, "alice", leverage="20", coverage="100")
    buy(w, "carol", leverage="2", coverage="50")
    crash(w, drop=0.3, after_hours=3)
    extreme_market(w)  # a funding extreme and a forecast band the crash breaches
    src = replay(w)
    ticks = list(zip(src.symbols, src.ts.tolist(), src.price.tolist(), strict=True))
    # a message that is not a tick, a late repeat of the first tick, a tick from the year 2100
    # and one of a market that does not exist: skipped, and none of them stops the query or
    # makes the true ticks after them look late
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker, "log_level": 3})
    p.produce(TICKS, key=b"BTCUSDT", value=b"not json")
    p.flush(10)
    n = publish_ticks(broker, ticks[:10])
    p.produce(TICKS, key=b"BTCUSDT", value=encode_tick(*ticks[0]))
    p.produce(TICKS, key=b"BTCUSDT", value=encode_tick("BTCUSDT", 4_102_444_800_000, 1.0))
    p.produce(TICKS, key=b"ZZZ9USDT", value=encode_tick("ZZZ9USDT", ticks[10][1], 5.0))
    p.flush(10)
    del p  # before the broker stops: the client would keep reconnecting
    n += publish_ticks(broker, ticks[10:])
    assert n == len(src)

    services = stream_services(w)

    def start(**kw: Any) -> Any:
        cp = tmp_path / "cp"
        return bti_spark.start(spark, services, bootstrap=broker, checkpoint=cp, **kw)

    query, run = start(max_ticks=8, trigger_seconds=0.1)
    run_until(query, run, n)
    assert run.ticks == n  # every valid tick scored once; the late repeat and 2100 dropped
    dead = {v: h["x-bti-reason"] for v, h in read_dead_letters(broker)}
    assert dead[b"not json"].startswith("not JSON")
    assert "ZZZ9USDT is no market here" in dead[encode_tick("ZZZ9USDT", ticks[10][1], 5.0)]
    assert len(run.batches) > 1  # in several micro-batches
    with Session(w.db) as s:
        claims = s.exec(select(Claim)).all()
        alerts = s.exec(select(Alert)).all()
    assert [c.policy_id for c in claims] == [hit.id]
    assert claims[0].state == "paid" and len(claim_paid_events(w)) == 1
    assert {"near_liquidation", "funding_extreme", "forecast_breach"} <= {a.kind for a in alerts}
    assert {a.policy_id for a in alerts if a.kind == "liquidation"} == {hit.id}

    # the embedded engine on the same ticks raises the same events (its claims exist already)
    same = ArraySource(src.symbols, src.ts, src.price)
    embedded = EmbeddedEngine(services, same, name="ticks", batch=7).run()
    assert events_key(run.batches) == events_key(embedded)
    with Session(w.db) as s:
        stored = s.exec(select(Alert)).all()
        assert len(s.exec(select(Claim)).all()) == 1
    # an event both engines raised is stored once: the replay added no alert
    assert sorted(a.key for a in stored) == sorted(a.key for a in alerts)

    # restarted from its checkpoint, the query reads nothing again
    q2, run2 = start(trigger_seconds=0.1)
    time.sleep(3)
    q2.stop()
    assert run2.ticks == 0
    with Session(w.db) as s:
        assert len(s.exec(select(Claim)).all()) == 1
        assert len(s.exec(select(Alert)).all()) == len(stored)
    assert load_checkpoint(w.db, "spark")[1]["engine"] == "spark"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bootstrap", "localhost"], "bootstrap must be host:port"),
        (["--bootstrap", "127.0.0.1:9", "--name", "a/b"], "--name must be letters"),
        (["--bootstrap", "127.0.0.1:9", "--batch", "0"], "--batch"),
    ],
)
def test_the_spark_command_refuses_bad_options_before_starting(
    data_dir: Path, args: list[str], says: str
) -> None:
    from typer.testing import CliRunner

    from bti_core.cli import app

    res = CliRunner().invoke(app, ["stream", "spark", *args])
    assert res.exit_code != 0
    assert says in " ".join(res.output.split())
    assert not (data_dir / "spark").exists()
