"""The claims world the claims and stream tests share: a warehouse with 60 days of BTCUSDT, a
risk engine, the insurance and claims services over the test's database and chain (`world`,
registered for every test by ``pytest_plugins`` in tests/conftest.py), and the steps those
tests take in it (buy cover, replay a crash, read the claims and payouts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core.auth import User
from bti_core.chain.client import ChainClient
from bti_core.chain.types import DecodedEvent
from bti_core.claims.payments import Payments
from bti_core.claims.service import ClaimsService
from bti_core.db.models import Claim, Policy
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets, replay_crash
from bti_core.market.warehouse import Warehouse
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService
from bti_core.risk.engine import RiskEngine
from bti_core.stream.ports import StreamDeps

UNDERWRITER = User("uw", "Una Underwriter", "underwriter")
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
# the steps of a claims run a process can die after (`tests.crashes.dies_at`): the method that
# runs next, which dies instead
CLAIM_STEPS: dict[str, tuple[type, str]] = {
    "after the claim is opened": (ClaimsService, "_audit_and_decide_many"),
    "after paying is recorded, before the payment is sent": (ChainClient, "pay_claims"),
    "after the payment is mined, before it is recorded": (Payments, "confirm_many"),
}


@dataclass
class World:
    ins: InsuranceService
    claims: ClaimsService
    chain: ChainClient
    wh: Warehouse
    ingest: Ingestor
    db: Engine


@pytest.fixture
def world(tmp_path: Path, engine: Engine, chain: ChainClient) -> World:
    wh = Warehouse(tmp_path / "wh")
    # the replayed feed runs a day ahead of the wall clock (the importer refuses bars from
    # after its present), as the claims service's clock below runs 12 hours ahead
    ing = Ingestor(wh, None, clock=lambda: pd.Timestamp.now("UTC") + pd.Timedelta(hours=24))
    markets = generate_demo_markets(start=NOW - timedelta(days=60), periods=24 * 60, seed=5)
    m = markets["BTCUSDT"]
    m.ingest(ing)
    risk = RiskEngine(wh, n_paths=4_000)
    ins = InsuranceService(engine, risk, chain=chain)
    # the crash is replayed a few hours ahead (as a live feed would bring it): the claims
    # service's clock is after it, so records of it are not from the future
    claims = ClaimsService(engine, wh, chain, clock=lambda: datetime.now(UTC) + timedelta(hours=12))
    return World(ins, claims, chain, wh, ing, engine)


def stream_services(w: World) -> StreamDeps:
    """What the streaming engines use, over this world (forecasts: none cached, in a folder
    beside the warehouse)."""
    return StreamDeps(w.db, w.wh, w.ins.risk, w.claims, w.wh.root.parent / "forecasts")


def buy(
    w: World, user: str, leverage: str = "20", coverage: str = "100", hours: int = 48
) -> Policy:
    w.chain.faucet(w.ins.wallet_of(user).address, Decimal(1000))
    spot = Decimal(str(round(w.ins.risk.spot("BTCUSDT"), 2)))
    q = w.ins.quote(
        user_id=user,
        order=Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(leverage)),
        cover=Cover(coverage=coverage, duration_hours=hours),
    )
    return w.ins.buy(user_id=user, quote_id=q.record.id)


def crash(w: World, *, drop: float = 0.3, after_hours: int = 3, wick: float = 0.0) -> None:
    """Replay a crash starting a few hours after the purchases (as a live feed would bring it)."""
    close0 = w.ins.risk.spot("BTCUSDT")
    last, mark = replay_crash(
        close0, start=NOW + timedelta(hours=after_hours), hours=6, drop=drop, last_wick=wick
    )
    w.ingest.ingest_frame(mark, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="replay")
    w.ingest.ingest_frame(last, symbol="BTCUSDT", kind=Kind.OHLCV, timeframe="1h", source="replay")


def claim_of(w: World, policy: Policy) -> Claim:
    with Session(w.db) as s:
        return s.exec(select(Claim).where(Claim.policy_id == policy.id)).one()


def claim_paid_events(w: World) -> list[DecodedEvent]:
    return [e for e in w.chain.events() if isinstance(e, DecodedEvent) and e.name == "ClaimPaid"]
