"""`bti stream replay` as a real process, killed with SIGKILL at random points and started
again: every liquidated policy gets one claim, paid once on the chain, and every alert is
stored once; the checkpoint ends at the source's last tick."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlmodel import Session, select

from bti_core.chain.types import DecodedEvent
from bti_core.config import get_settings
from bti_core.db.models import Alert, Claim, Policy
from bti_core.market.ingest import Ingestor
from bti_core.market.replay import crash_now
from bti_core.market.schema import Kind
from bti_core.market.warehouse import Warehouse
from bti_core.orders import Cover, Order
from bti_core.services import build_services
from bti_core.stream.store import load_checkpoint

BTI = str(Path(sys.executable).parent / "bti")


def _insure_and_crash() -> None:
    """Three BTC longs (20×, 25×, 2×) bought an hour ago, then a 40 % crash replayed now."""
    svc = build_services(get_settings())
    try:
        for user, lev in (("alice", "20"), ("bob", "25"), ("carol", "2")):
            svc.chain.faucet(svc.insurance.wallet_of(user).address, Decimal(1000))
            spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
            q = svc.insurance.quote(
                user_id=user,
                order=Order("BTCUSDT", "long", Decimal("0.05"), spot, Decimal(lev)),
                cover=Cover(coverage="60", duration_hours=48),
            )
            svc.insurance.buy(user_id=user, quote_id=q.record.id)
        with Session(svc.db) as s:  # bought an hour ago, so that the crash comes after
            for p in s.exec(select(Policy)).all():
                p.start_at -= timedelta(hours=1)
                s.add(p)
            s.commit()
        wh = Warehouse(svc.settings.warehouse_dir)
        crash_now(wh, Ingestor(wh, svc.db), "BTCUSDT", drop=0.4, minutes=20)
    finally:
        svc.close()


def _publish(bootstrap: str, env: dict[str, str]) -> int:
    """The market into the ticks topic as an exchange's feed would bring it: the stored hours
    before the replayed crash through `bti stream publish`, then the crash's minutes a tick a
    second (the minute bars' open, extreme and close joined), ending at the present. (The
    minute bars' own four ticks a quarter-minute apart would jump by whole percents in a
    replay squeezed into the minutes since the last hour: outliers to a tick stream.)"""
    from bti_core.stream.kafka import publish_ticks

    svc = build_services(get_settings())
    try:
        minutes = svc.warehouse.query(Kind.MARK, "BTCUSDT", "1m")
    finally:
        svc.close()
    first = pd.Timestamp(minutes["ts"].iloc[0])
    since = (pd.Timestamp.now("UTC") - pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    until = (first - pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    pub = subprocess.run(
        [BTI, "stream", "publish", "--since", since, "--until", until],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert pub.returncode == 0, pub.stdout + pub.stderr
    n = int(pub.stdout.split("published ")[1].split(" ")[0].replace(",", ""))
    ticks = []
    now_ms = int(time.time() * 1000)
    for _, b in minutes.iterrows():
        t0 = int(pd.Timestamp(b["ts"]).timestamp() * 1000)
        path = np.concatenate(
            [np.linspace(b["open"], b["low"], 31)[:-1], np.linspace(b["low"], b["close"], 30)]
        )
        ticks += [
            ("BTCUSDT", t0 + 1000 * i, float(px))
            for i, px in enumerate(path)
            if t0 + 1000 * i <= now_ms
        ]
    return n + publish_ticks(bootstrap, ticks)


def _outcome() -> tuple[list[Claim], int, list[str]]:
    """The claims, the pool's ClaimPaid events and the alert keys after a stream ran."""
    svc = build_services(get_settings())
    try:
        with Session(svc.db) as s:
            claims = list(s.exec(select(Claim)).all())
            keys = list(s.exec(select(Alert.key)).all())
        paid_events = [
            e for e in svc.chain.events() if isinstance(e, DecodedEvent) and e.name == "ClaimPaid"
        ]
        return claims, len(paid_events), keys
    finally:
        svc.close()


def _crash_then_replay(batch: int, name: str) -> list[str]:
    """Insure and crash (`_insure_and_crash`); the `bti stream replay` of the last two days."""
    _insure_and_crash()
    since = (pd.Timestamp.now("UTC") - pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    return [BTI, "stream", "replay", "--since", since, "--batch", str(batch), "--name", name]


@pytest.mark.slow
def test_a_killed_stream_pays_each_claim_once(recent: Path) -> None:
    cmd = _crash_then_replay(batch=3, name="kill")
    rng = random.Random(7)
    for _ in range(4):  # started and killed at a random point, four times
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.5, 6.0))  # start-up takes about 2.5 s, a full run 5–6 s
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    svc = build_services(get_settings())
    try:
        with Session(svc.db) as s:
            claims = s.exec(select(Claim)).all()
            keys = s.exec(select(Alert.key)).all()
            users = {c.user_id for c in claims}
        assert users == {"alice", "bob"}  # the 2× long is far from liquidation
        assert len(claims) == 2 and all(c.source == "stream" for c in claims)
        paid = [c for c in claims if c.state == "paid"]
        events = [
            e for e in svc.chain.events() if isinstance(e, DecodedEvent) and e.name == "ClaimPaid"
        ]
        # each paid claim paid once (claims the audit referred wait for an underwriter: the
        # policies were back-dated an hour, which its adverse-selection check cannot judge)
        assert len(events) == len(paid)
        assert keys and len(keys) == len(set(keys))
        offset, state = load_checkpoint(svc.db, "kill")
        assert offset > 0 and "BTCUSDT" in state
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert "0 new alerts, 0 claims opened" in again.stdout  # nothing left to do
    finally:
        svc.close()


@pytest.mark.slow
def test_two_streams_at_once_claim_and_alert_once(recent: Path) -> None:
    cmd = _crash_then_replay(batch=2, name="both")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        out, errs = p.communicate(timeout=300)
        assert p.returncode == 0, out + errs
    claims, paid_events, keys = _outcome()
    assert sorted(c.user_id for c in claims) == ["alice", "bob"]  # one claim a policy
    assert paid_events == sum(c.state == "paid" for c in claims)
    assert keys and len(keys) == len(set(keys))


def test_the_worker_opens_the_claim_at_the_tick(recent: Path) -> None:
    from bti_core.worker import Worker

    svc = build_services(get_settings())
    try:
        svc.chain.faucet(svc.insurance.wallet_of("alice").address, Decimal(1000))
        spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
        q = svc.insurance.quote(
            user_id="alice",
            order=Order("BTCUSDT", "long", Decimal("0.05"), spot, Decimal("20")),
            cover=Cover(coverage="60", duration_hours=48),
        )
        svc.insurance.buy(user_id="alice", quote_id=q.record.id)
        with Session(svc.db) as s:
            for p in s.exec(select(Policy)).all():
                p.start_at -= timedelta(hours=1)
                s.add(p)
            s.commit()
        w = Worker(svc)
        assert "claims" not in w.round()  # nothing has happened yet
        wh = Warehouse(svc.settings.warehouse_dir)
        crash_now(wh, Ingestor(wh, svc.db), "BTCUSDT", drop=0.4, minutes=20)
        line = w.round()
        assert line.startswith("stream: ")  # the stream scored the crash's minute bars
        with Session(svc.db) as s:
            claim = s.exec(select(Claim)).one()
            alerts = s.exec(select(Alert).where(Alert.user_id == "alice")).all()
        # audited and decided in the same round (referred here: the policy was back-dated an
        # hour, so the audit cannot tell whether it was bought into the move)
        assert claim.source == "stream" and claim.state in ("paid", "referred") and claim.checks
        assert {"near_liquidation", "liquidation"} <= {a.kind for a in alerts}
        assert "stream" not in w.round()  # nothing new to score
    finally:
        svc.close()


@pytest.mark.kafka
def test_the_kafka_stream_killed_and_restarted_claims_once(recent: Path) -> None:
    """`bti stream publish` into a real broker, then `bti stream kafka` killed mid-run and
    started again: the offsets in the checkpoint carry it on without a duplicate."""
    from bti_core.stream.broker import LocalBroker
    from bti_core.stream.kafka import ALERTS, read_all

    _insure_and_crash()
    with LocalBroker() as broker:
        env = {**os.environ, "BTI_KAFKA_BOOTSTRAP": broker.bootstrap}
        n = _publish(broker.bootstrap, env)
        cmd = [BTI, "stream", "kafka", "--batch", "40", "--idle-exit", "4"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(random.Random(11).uniform(3.0, 5.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, check=False, env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        claims, paid_events, keys = _outcome()
        assert sorted(c.user_id for c in claims) == ["alice", "bob"]
        assert paid_events == sum(c.state == "paid" for c in claims)
        assert keys and len(keys) == len(set(keys))
        svc = build_services(get_settings())
        try:
            offset, state = load_checkpoint(svc.db, "kafka")
        finally:
            svc.close()
        assert offset == n and sum(state["__cursor__"].values()) == n
        assert {m["key"] for m in read_all(broker.bootstrap, ALERTS)} <= set(keys)
