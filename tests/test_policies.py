"""The insurance service end to end on demo markets, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from bti_core.db.models import Policy, QuoteRecord
from bti_core.errors import NoDataError, UnknownSymbolError
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets
from bti_core.market.warehouse import Warehouse
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService, QuoteError
from bti_core.risk.engine import RiskEngine
from bti_core.underwriting import CapacityError, Limits, UnderwritingError


@pytest.fixture(scope="module")
def risk(tmp_path_factory: pytest.TempPathFactory, demo: dict) -> RiskEngine:
    wh = Warehouse(tmp_path_factory.mktemp("wh"))
    ing = Ingestor(wh, None)
    for sym in ("BTCUSDT", "ETHUSDT"):
        m = demo[sym]
        ing.ingest_frame(m.mark, symbol=sym, kind=Kind.MARK, timeframe="1h", source="demo")
        ing.ingest_frame(m.ohlcv, symbol=sym, kind=Kind.OHLCV, timeframe="1h", source="demo")
        ing.ingest_frame(m.funding, symbol=sym, kind=Kind.FUNDING, timeframe="8h", source="demo")
    eng = RiskEngine(wh, n_paths=4_000)
    eng.symbol_risk("BTCUSDT")
    return eng


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(engine: Engine, risk: RiskEngine, clock: Clock) -> InsuranceService:
    return InsuranceService(engine, risk, clock=clock, limits=Limits(pool_capacity=Decimal(20_000)))


def btc_order(
    risk: RiskEngine, leverage: str = "20", side: str = "long", qty: str = "0.1"
) -> Order:
    spot = Decimal(str(round(risk.spot("BTCUSDT"), 2)))
    return Order("BTCUSDT", side, Decimal(qty), spot, Decimal(leverage))


def count(engine: Engine, table: type) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(table)).one())


def test_quote_explains_itself(svc: InsuranceService, risk: RiskEngine, engine: Engine) -> None:
    o = btc_order(risk)
    q = svc.quote(user_id="alice", order=o, cover=Cover(coverage="100", duration_hours=72))
    assert q.insurable
    assert 0 < q.record.probability < 1 and q.record.probability_se > 0
    assert float(q.record.liquidation_price) < float(o.entry_price)
    assert q.risk.value == pytest.approx(sum(c.points for c in q.risk.contributions))
    assert 0 <= q.risk.value <= 100 and len(q.risk.contributions) == 14
    assert q.premium.total > q.premium.fee
    assert q.premium.payout == Decimal("100.00")
    assert count(engine, QuoteRecord) == 1


def test_premium_rises_with_leverage_duration_and_coverage(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    def prem(lev: str, hours: int, cov: str) -> Decimal:
        return svc.quote(
            user_id="bob",
            order=btc_order(risk, lev),
            cover=Cover(coverage=cov, duration_hours=hours),
        ).premium.total

    by_lev = [prem(lev, 72, "50") for lev in ("5", "10", "20", "50")]
    by_time = [prem("20", h, "50") for h in (6, 24, 72, 168)]
    by_cov = [prem("20", 72, c) for c in ("10", "50", "100")]
    for seq in (by_lev, by_time, by_cov):
        assert seq == sorted(seq), seq


def test_buy_activates_logs_and_is_idempotent(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    q = svc.quote(
        user_id="alice", order=btc_order(risk), cover=Cover(coverage="100", duration_hours=24)
    )
    p = svc.buy(user_id="alice", quote_id=q.record.id)
    assert p.status == "active"
    assert p.end_at - p.start_at == timedelta(hours=24)
    assert [e.event for e in svc.events(p.id)] == ["created", "premium_collected", "active"]
    again = svc.buy(user_id="alice", quote_id=q.record.id)  # a double click
    assert again.id == p.id and count(engine, Policy) == 1
    with pytest.raises(QuoteError, match="no quote"):
        svc.buy(user_id="mallory", quote_id=q.record.id)
    table = svc.policies("alice")
    assert table["status"].tolist() == ["active"]
    assert 0 < table["distance_to_liquidation"].iloc[0] < 1


def test_capacity_exhausted_is_declined_with_what_is_left(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    big = btc_order(risk, leverage="5", qty="10")
    first = svc.quote(user_id="whale", order=big, cover=Cover(coverage="15000", duration_hours=24))
    second = svc.quote(user_id="carol", order=big, cover=Cover(coverage="8000", duration_hours=24))
    svc.buy(user_id="whale", quote_id=first.record.id)  # 15,000 of 20,000 now locked
    with pytest.raises(
        CapacityError, match=r"capacity exhausted: the pool has 5,000.00 USDT of cover left"
    ):
        svc.buy(user_id="carol", quote_id=second.record.id)
    declined = [p for p in svc.policies("carol").itertuples()]
    assert [p.status for p in declined] == ["declined"]
    third = svc.quote(user_id="carol", order=big, cover=Cover(coverage="8000", duration_hours=24))
    assert [c.name for c in third.failed] == ["pool_capacity"]


def test_expired_quote_and_policy_expiry(
    svc: InsuranceService, risk: RiskEngine, clock: Clock
) -> None:
    q = svc.quote(
        user_id="dave", order=btc_order(risk), cover=Cover(coverage="50", duration_hours=2)
    )
    clock.now += timedelta(minutes=10)
    with pytest.raises(UnderwritingError, match="quote expired"):
        svc.buy(user_id="dave", quote_id=q.record.id)
    q2 = svc.quote(
        user_id="dave", order=btc_order(risk), cover=Cover(coverage="50", duration_hours=2)
    )
    p = svc.buy(user_id="dave", quote_id=q2.record.id)
    clock.now += timedelta(hours=3)
    assert svc.expire_due() == 1
    assert [e.event for e in svc.events(p.id)][-1] == "expired"
    assert svc.policies("dave")["status"].tolist() == ["expired", "declined"]  # newest first


def test_bad_input_writes_nothing(svc: InsuranceService, risk: RiskEngine, engine: Engine) -> None:
    with pytest.raises(UnknownSymbolError):
        svc.quote(
            user_id="eve",
            order=Order("FOO", "long", "1", "1", "2"),
            cover=Cover(coverage="1", duration_hours=1),
        )
    with pytest.raises(NoDataError, match="SOLUSDT"):
        svc.quote(
            user_id="eve",
            order=Order("SOLUSDT", "long", "1", "100", "2"),
            cover=Cover(coverage="1", duration_hours=1),
        )
    assert count(engine, QuoteRecord) == 0 and count(engine, Policy) == 0


def test_liquidation_already_reached_is_not_insurable(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    spot = risk.spot("BTCUSDT")
    # a long entered far above the market at 50×: its liquidation price is above the mark now
    o = Order("BTCUSDT", "long", Decimal("0.01"), Decimal(str(round(spot * 1.2, 2))), Decimal(50))
    q = svc.quote(user_id="frank", order=o, cover=Cover(coverage="10", duration_hours=24))
    assert q.record.probability == 1.0
    assert "not_already_liquidated" in [c.name for c in q.failed]


def test_engine_refreshes_only_when_a_newer_bar_arrives(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Minute bars: the hourly fit's last bucket starts before the last minute bar, yet a second
    quote must reuse the tables until new data is stored."""
    m = generate_demo_markets(start="2025-01-01", periods=60 * 24 * 35, timeframe="1m", seed=2)[
        "BTCUSDT"
    ]
    wh = Warehouse(tmp_path_factory.mktemp("wh1m"))
    ing = Ingestor(wh, None)
    ing.ingest_frame(
        m.mark.iloc[:-60], symbol="BTCUSDT", kind=Kind.MARK, timeframe="1m", source="t"
    )
    eng = RiskEngine(wh, n_paths=2_000)
    first = eng.symbol_risk("BTCUSDT")
    assert eng.symbol_risk("BTCUSDT") is first
    ing.ingest_frame(
        m.mark.iloc[-60:], symbol="BTCUSDT", kind=Kind.MARK, timeframe="1m", source="t"
    )
    assert eng.symbol_risk("BTCUSDT") is not first
