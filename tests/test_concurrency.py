"""Money under concurrency, with real processes: workers and CLI runs over the same claims
decide each once and pay each once; simultaneous purchases cannot pass a limit together. Each
runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlmodel import Session, col, select

from bti_core.chain.node import AnvilNode
from bti_core.chain.runtime import connect
from bti_core.chain.types import DecodedEvent
from bti_core.config import Settings
from bti_core.db.models import Claim, ClaimAudit, Policy, PolicyChange, PolicyEvent
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets, replay_crash
from bti_core.orders import Cover, Order
from bti_core.services import Services, build_services

BTI = str(Path(sys.executable).parent / "bti")
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def env(
    data_dir: Path, db_url: str, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setenv("BTI_DATABASE_URL", db_url)
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    return {**os.environ}


def _services() -> Services:
    """Services from the environment, over 60 days of a generated BTCUSDT market (a smaller
    Monte Carlo table: these tests are about concurrency, not prices)."""
    svc = build_services(Settings())
    m = generate_demo_markets(start=NOW - timedelta(days=60), periods=24 * 60, seed=5)["BTCUSDT"]
    m.ingest(svc.ingestor, source="d")
    svc.risk.n_paths = 4_000
    return svc


def _order(svc: Services, qty: str = "0.1", leverage: str = "20") -> Order:
    spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
    return Order("BTCUSDT", "long", Decimal(qty), spot, Decimal(leverage))


def _run_all(cmds: list[list[str]], env: dict[str, str]) -> list[tuple[int, str]]:
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd in cmds
    ]
    return [(p.wait(timeout=300), p.communicate()[0]) for p in procs]


@pytest.mark.slow
@pytest.mark.both_databases
def test_workers_and_cli_runs_at_once_decide_and_pay_each_claim_once(
    env: dict[str, str],
) -> None:
    svc = _services()
    n = 10
    for i in range(n):
        user = f"t{i}"
        svc.chain.faucet(svc.insurance.wallet_of(user).address, Decimal(1000))
        q = svc.insurance.quote(
            user_id=user, order=_order(svc), cover=Cover(coverage="100", duration_hours=48)
        )
        svc.insurance.buy(user_id=user, quote_id=q.record.id)
    last, mark = replay_crash(
        # three hours after the purchases, whatever the time now (the audit refers a claim
        # liquidated within an hour of buying; NOW is the hour the module was imported in)
        svc.risk.spot("BTCUSDT"),
        start=datetime.now(UTC) + timedelta(hours=3),
        hours=6,
        drop=0.3,
    )
    # a feed whose clock runs ahead of the workers' (the importer refuses bars after its present)
    feed = Ingestor(
        svc.warehouse, svc.db, clock=lambda: pd.Timestamp.now("UTC") + pd.Timedelta(hours=24)
    )
    feed.ingest_frame(mark, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="r")
    feed.ingest_frame(last, symbol="BTCUSDT", kind=Kind.OHLCV, timeframe="1h", source="r")

    cmds = [[BTI, "worker", "--once"]] * 4 + [[BTI, "claims", "run"]] * 2
    results = _run_all(cmds, env)
    assert [rc for rc, _ in results] == [0] * len(cmds), results
    assert not any("nonce too low" in out.lower() for _, out in results)

    with Session(svc.db) as s:
        claims = s.exec(select(Claim)).all()
        entries = s.exec(select(ClaimAudit).order_by(col(ClaimAudit.id))).all()
        policies = s.exec(select(Policy)).all()
    assert len(claims) == n and {c.state for c in claims} == {"paid"}
    per_claim = Counter((e.claim_id, e.event) for e in entries)
    for c in claims:  # each step once: no claim audited again, approved twice or re-paid
        steps = [e.event for e in entries if e.claim_id == c.id]
        assert steps == ["open", "audit", "auto_approve", "pay", "confirm"], steps
    assert max(per_claim.values()) == 1
    paid = [e for e in svc.chain.events() if isinstance(e, DecodedEvent) and e.name == "ClaimPaid"]
    assert sorted(int(e.args["policyId"]) for e in paid) == sorted(
        p.chain_policy_id for p in policies if p.chain_policy_id
    )
    assert svc.claims.verify_log().ok
    svc.close()


BUYER = """
import sys, time
from bti_core.config import get_settings
from bti_core.services import build_services
svc = build_services(get_settings())
ins = svc.insurance  # connects before the start signal
user, quote, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
try:
    print("bought", ins.buy(user_id=user, quote_id=quote).status)
except Exception as exc:
    print("refused", type(exc).__name__, exc)
"""


CHANGER = """
import sys, time
from bti_core.config import get_settings
from bti_core.services import build_services
svc = build_services(get_settings())
ins = svc.insurance
svc.chain  # connected before the start signal
user, change, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
try:
    print("done", ins.confirm_change(user_id=user, change_id=change).status)
except Exception as exc:
    print("refused", type(exc).__name__, exc)
"""


@pytest.mark.both_databases
def test_changes_to_one_cover_confirmed_by_four_processes_at_once_move_money_once(
    env: dict[str, str],
) -> None:
    """Two processes confirm the same extension and two the same cancellation, all priced on
    the cover as bought, at the same instant: exactly one change is made, charged or
    refunded once; the rest are refused with nothing moved."""
    svc = _services()
    wallet = svc.insurance.wallet_of("cy").address
    svc.chain.faucet(wallet, Decimal(5000))
    q = svc.insurance.quote(user_id="cy", order=_order(svc), cover=Cover("100", 24))
    p = svc.insurance.buy(user_id="cy", quote_id=q.record.id)
    ext = svc.insurance.price_change(user_id="cy", policy_id=p.id or 0, kind="extend", hours=6)
    stop = svc.insurance.price_change(user_id="cy", policy_id=p.id or 0, kind="cancel")
    changes = {ext.change.id: ext.change, stop.change.id: stop.change}
    before = svc.chain.balance(wallet)
    start = time.time() + 9  # each process has connected by then
    cmds = [
        [sys.executable, "-c", CHANGER, "cy", cid, str(start)]
        for cid in (ext.change.id, ext.change.id, stop.change.id, stop.change.id)
    ]
    outs = [out for _, out in _run_all(cmds, env)]
    assert all(o.split()[0] in ("done", "refused") for o in outs), outs
    with Session(svc.db) as s:
        states = {c.id: c.state for c in s.exec(select(PolicyChange)).all()}
        policy = s.get(Policy, p.id)
        logged = [
            e.event
            for e in s.exec(select(PolicyEvent).where(PolicyEvent.policy_id == p.id)).all()
            if e.event in ("extended", "cancelled")
        ]
    made = [cid for cid, state in states.items() if state == "done"]
    assert len(made) == 1 and len(logged) == 1, (states, outs)
    c = changes[made[0]]
    assert svc.chain.balance(wallet) == before - c.charge + c.refund  # moved once
    assert policy is not None and policy.premium == p.premium + c.charge - c.refund
    on_chain = svc.chain.policy(p.chain_policy_id or 0)
    assert on_chain.premium == policy.premium
    other = next(cid for cid in states if cid != made[0])
    assert states[other] in ("priced", "refused"), states  # never half-made
    svc.close()


RENEWER = """
import sys, time
from bti_core.config import get_settings
from bti_core.services import build_services
svc = build_services(get_settings())
ins = svc.insurance
svc.chain  # connected before the start signal
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
try:
    print("ran", ins.renewals.run())
except Exception as exc:
    print("refused", type(exc).__name__, exc)
"""


def test_a_consented_renewal_run_by_three_processes_at_once_is_bought_once(
    env: dict[str, str],
) -> None:
    """Three workers' renewal duties at the same instant over one ended cover: one new
    cover, one premium, the consent moved once (SQLite; its compare-and-set statements are
    plain SQL, the same on PostgreSQL)."""
    svc = _services()
    wallet = svc.insurance.wallet_of("di").address
    svc.chain.faucet(wallet, Decimal(5000))
    q = svc.insurance.quote(user_id="di", order=_order(svc), cover=Cover("100", 24))
    p = svc.insurance.buy(user_id="di", quote_id=q.record.id)
    svc.insurance.renewals.consent(
        user_id="di", policy_id=p.id or 0, max_premium=p.premium * 3, times=3
    )
    with Session(svc.db) as s:  # as if its window had ended and the expiry duty had run
        row = s.get(Policy, p.id)
        assert row is not None
        row.end_at, row.status = datetime.now(UTC) - timedelta(minutes=1), "expired"
        s.add(row)
        s.commit()
    before = svc.chain.balance(wallet)
    start = time.time() + 9  # each process has connected by then
    cmds = [[sys.executable, "-c", RENEWER, str(start)] for _ in range(3)]
    outs = [out for _, out in _run_all(cmds, env)]
    assert all(o.startswith("ran") for o in outs), outs
    with Session(svc.db) as s:
        mine = s.exec(select(Policy).where(Policy.user_id == "di")).all()
        renewed = [
            e
            for e in s.exec(select(PolicyEvent).where(PolicyEvent.policy_id == p.id)).all()
            if e.event == "renewed"
        ]
    new = [x for x in mine if x.id != p.id]
    assert len(new) == 1 and len(renewed) == 1, (outs, [(x.id, x.status) for x in mine])
    assert new[0].status == "active"
    assert svc.chain.balance(wallet) == before - new[0].premium  # one premium
    moved = svc.insurance.renewals.of("di", new[0].id or 0)
    assert moved is not None and moved.times_left == 2
    svc.close()


@pytest.mark.slow
@pytest.mark.both_databases
def test_purchases_from_two_processes_at_once_cannot_both_pass_the_pool_limit(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the chain has far more reserves than BTI sells against: only the database check stands
    connect(Settings(), seed_capital=Decimal(1_000_000))
    monkeypatch.setenv("BTI_POOL_CAPACITY", "1000")  # 900 sellable at 90 % utilisation
    for cap in ("SYMBOL", "BAND", "CRASH"):  # the pool's capacity alone, no concentration cap
        monkeypatch.setenv(f"BTI_MAX_{cap}_SHARE", "1")
    env = {**os.environ}
    svc = _services()
    quotes = []
    for user in ("ann", "ben"):
        svc.chain.faucet(svc.insurance.wallet_of(user).address, Decimal(5000))
        q = svc.insurance.quote(
            user_id=user,
            order=_order(svc, qty="0.2", leverage="5"),
            cover=Cover(coverage="600", duration_hours=24),
        )
        assert q.insurable, q.failed
        quotes.append((user, q.record.id))
    start = time.time() + 12
    cmds = [[sys.executable, "-c", BUYER, u, qid, str(start)] for u, qid in quotes]
    outs = [out for _, out in _run_all(cmds, env)]
    assert sorted(o.split()[0] for o in outs) == ["bought", "refused"], outs
    assert any("capacity exhausted" in o for o in outs), outs
    with Session(svc.db) as s:
        active = s.exec(select(Policy).where(Policy.status == "active")).all()
    assert sum(p.coverage for p in active) == Decimal(600)
    svc.close()


@pytest.mark.both_databases
def test_purchases_from_threads_at_once_cannot_both_pass_the_trader_limit(
    env: dict[str, str],
) -> None:
    import dataclasses
    import threading

    svc = _services()
    ins = svc.insurance
    ins.limits = dataclasses.replace(ins.limits, max_exposure_per_user=Decimal(1000))
    svc.chain.faucet(ins.wallet_of("cat").address, Decimal(5000))
    ids = [
        ins.quote(
            user_id="cat",
            order=_order(svc, qty="0.2", leverage="5"),
            cover=Cover(coverage="600", duration_hours=24),
        ).record.id
        for _ in range(2)
    ]
    outcome: list[str] = []
    barrier = threading.Barrier(2)

    def buy(qid: str) -> None:
        barrier.wait()
        try:
            outcome.append(ins.buy(user_id="cat", quote_id=qid).status)
        except Exception as exc:
            outcome.append(f"refused: {exc}")

    threads = [threading.Thread(target=buy, args=(q,)) for q in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[0] for o in outcome) == ["active", "refused"], outcome
    assert any("above the 1,000.00 USDT limit per trader" in o for o in outcome)
    svc.close()


@pytest.mark.slow
def test_a_slow_webhook_holds_back_no_claim_and_sigterm_stops_the_worker(
    data_dir: Path, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver answering one byte every two seconds used to hold `bti worker` in its webhook
    step (no claim opened or paid anywhere) and SIGTERM was ignored. Here the receiver holds its
    connection the whole time while a crash is claimed and paid, and SIGTERM ends the worker."""
    import signal

    from bti_core.auth import User
    from bti_core.db.models import AppUser
    from bti_core.outbound import networks
    from bti_core.stream.store import write_batch
    from bti_core.stream.types import Event
    from bti_core.stream.webhooks import subscribe
    from tests.stream.receivers import Slow

    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    monkeypatch.setenv("BTI_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")  # the receiver's
    monkeypatch.setenv("BTI_WEBHOOK_TIMEOUT_SECONDS", "120")  # longer than the test
    svc = _services()
    svc.chain.faucet(svc.insurance.wallet_of("tara").address, Decimal(1000))
    q = svc.insurance.quote(
        user_id="tara", order=_order(svc), cover=Cover(coverage="100", duration_hours=48)
    )
    policy = svc.insurance.buy(user_id="tara", quote_id=q.record.id)
    # as if bought three hours ago: the crash below is then a fact of the past, not a forecast
    bought = datetime.now(UTC) - timedelta(hours=3)
    with Session(svc.db) as s:
        row = s.get(Policy, policy.id)
        assert row is not None
        row.start_at = row.created_at = bought
        s.add(row)
        s.add(
            AppUser(username="desk", name="Desk", email="", role="underwriter", password_hash="!")
        )
        s.commit()
    desk = User("desk", "Desk", "underwriter")
    with Slow() as slow:
        subscribe(svc.db, desk, webhook_url=slow.url, scope="all", allowed=networks("127.0.0.0/8"))
        spike = Event("volatility_spike", "BTCUSDT", int(time.time() * 1000), 1.0, None, -5.0)
        write_batch(svc.db, "other", [spike], owners={}, offset=1, state={})
        worker = subprocess.Popen(
            [BTI, "worker", "--every", "1"],
            env={**os.environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while slow.open < 1:  # the worker is inside the receiver's answer
                assert time.monotonic() < deadline and worker.poll() is None, "no webhook sent"
                time.sleep(0.2)
            # 90 minutes after the purchase, a 30 % fall over 20 minutes, in minute mark bars
            spot = float(q.record.spot)
            ts = pd.date_range(
                pd.Timestamp(bought + timedelta(minutes=90)).floor("1min"), periods=20, freq="1min"
            )
            closes = [spot * (1 - 0.3 * (i + 1) / 20) for i in range(20)]
            bars = pd.DataFrame({"ts": ts, "open": closes, "high": closes, "low": closes})
            bars["close"], bars["volume"] = closes, 0.0
            svc.ingestor.ingest_frame(
                bars, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1m", source="exchange"
            )
            deadline = time.monotonic() + 120
            while True:
                with Session(svc.db) as s:
                    claims = s.exec(select(Claim).where(Claim.policy_id == policy.id)).all()
                if claims and claims[0].state == "paid":
                    break
                assert time.monotonic() < deadline, f"not paid: {[c.state for c in claims]}"
                assert worker.poll() is None
                time.sleep(0.5)
            assert slow.open >= 1 and slow.requests == 1  # still answering, byte by byte
            worker.send_signal(signal.SIGTERM)
            out, _ = worker.communicate(timeout=30)  # STOP_GRACE is 5 s
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert worker.returncode == 0, out
    assert "stopping (SIGTERM)" in out
    svc.close()
