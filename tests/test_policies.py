"""The insurance service end to end on demo markets, on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from bti_core.chain.client import ChainClient
from bti_core.chain.types import OnChainStatus
from bti_core.db.models import Policy, PolicyChange, PolicyEvent, QuoteRecord, Renewal
from bti_core.errors import ChainError, NoDataError, PaymentError, UnknownSymbolError
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets
from bti_core.market.warehouse import Warehouse
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService, QuoteError
from bti_core.policies.changes import ChangeError, Changes, unused_premium
from bti_core.policies.expiry import EXPIRY_DATA_GRACE
from bti_core.policies.lifecycle import FILING_PERIOD
from bti_core.policies.purchase import Purchases
from bti_core.policies.quoting import QuoteView
from bti_core.policies.renewals import Renewals
from bti_core.risk.engine import RiskEngine
from bti_core.underwriting import CONCENTRATION, CapacityError, Limits, UnderwritingError
from tests.crashes import dies_at


@pytest.fixture(scope="module")
def risk(tmp_path_factory: pytest.TempPathFactory, demo: dict) -> RiskEngine:
    wh = Warehouse(tmp_path_factory.mktemp("wh"))
    ing = Ingestor(wh, None)
    for sym in ("BTCUSDT", "ETHUSDT"):
        m = demo[sym]
        m.ingest(ing)
    eng = RiskEngine(wh, n_paths=4_000)
    eng.symbol_risk("BTCUSDT")
    return eng


class Clock:
    """The service's clock, starting at the real time: the chain's blocks carry real time and
    the pool refuses a policy whose expiry is already past."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(engine: Engine, risk: RiskEngine, clock: Clock, chain: ChainClient) -> InsuranceService:
    return InsuranceService(
        engine, risk, clock=clock, limits=Limits(pool_capacity=Decimal(20_000)), chain=chain
    )


def fund(svc: InsuranceService, *users: str, bti: str = "5000") -> None:
    assert svc.chain is not None
    for u in users:
        svc.chain.faucet(svc.wallet_of(u).address, Decimal(bti))


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
    assert q.model == risk.symbol_risk("BTCUSDT").model_summary()


def test_model_summary_states_the_volatility_and_the_trend(risk: RiskEngine) -> None:
    sr = risk.symbol_risk("BTCUSDT")
    fit = dataclasses.replace(sr.fit, sigma2_next=0.6**2 / 8760, mu=1e-4)
    trending = dataclasses.replace(sr, fit=fit).model_summary()
    assert "volatility now 60% a year" in trending
    assert "trend of +1.7% a week" in trending  # e^(168·1e-4) − 1
    flat = dataclasses.replace(sr, fit=dataclasses.replace(fit, mu=0.0)).model_summary()
    assert "no trend" in flat and f"on {len(sr.fit.residuals) / 24:.0f} days" in flat


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


@pytest.mark.both_databases
def test_buy_activates_logs_and_is_idempotent(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    fund(svc, "alice")
    chain = svc.chain
    assert chain is not None
    wallet = svc.wallet_of("alice").address
    q = svc.quote(
        user_id="alice", order=btc_order(risk), cover=Cover(coverage="100", duration_hours=24)
    )
    p = svc.buy(user_id="alice", quote_id=q.record.id)
    assert p.status == "active"
    assert p.end_at - p.start_at == timedelta(hours=24)
    assert [e.event for e in svc.events(p.id)] == ["created", "premium_collected", "active"]
    # the premium was paid on-chain, and the policy there carries the insured payout
    assert chain.balance(wallet) == Decimal(5000) - p.premium
    assert p.chain_policy_id is not None and p.tx_hash is not None
    onchain = chain.policy(p.chain_policy_id)
    assert (onchain.premium, onchain.coverage, onchain.owner) == (p.premium, p.payout, wallet)
    assert onchain.expiry == int(p.end_at.timestamp())
    again = svc.buy(user_id="alice", quote_id=q.record.id)  # a double click
    assert again.id == p.id and count(engine, Policy) == 1
    assert chain.balance(wallet) == Decimal(5000) - p.premium
    with pytest.raises(QuoteError, match="no quote"):
        svc.buy(user_id="mallory", quote_id=q.record.id)
    table = svc.policies("alice")
    assert table["status"].tolist() == ["active"]
    assert 0 < table["distance_to_liquidation"].iloc[0] < 1


def test_a_stored_quote_is_restored_for_its_trader_while_it_can_be_bought(
    svc: InsuranceService, risk: RiskEngine, clock: Clock
) -> None:
    """What the Buy page shows again after a reload: the same quote, or the reason it cannot."""
    fund(svc, "alice")
    cover = Cover(coverage="100", duration_hours=24, share="0.8", deductible="5")
    order = btc_order(risk, leverage="25")
    q = svc.quote(user_id="alice", order=order, cover=cover)
    again = svc.restore_quote(user_id="alice", quote_id=q.record.id)
    assert (again.order, again.cover, again.peril, again.position) == (order, cover, q.peril, None)
    assert again.premium == q.premium and again.risk == q.risk and again.checks == q.checks
    assert again.model == q.model and again.record.id == q.record.id
    with pytest.raises(QuoteError, match=f"no quote {q.record.id[:8]} of yours"):
        svc.restore_quote(user_id="mallory", quote_id=q.record.id)
    with pytest.raises(QuoteError, match="no quote 00000000 of yours"):
        svc.restore_quote(user_id="alice", quote_id="0" * 32)
    p = svc.buy(user_id="alice", quote_id=q.record.id)
    with pytest.raises(QuoteError, match=f"was bought: it is policy #{p.id}"):
        svc.restore_quote(user_id="alice", quote_id=q.record.id)
    later = svc.quote(user_id="alice", order=order, cover=cover)
    clock.now = later.record.expires_at
    with pytest.raises(QuoteError, match=r"expired at \d\d:\d\d:\d\d UTC; ask for a new one"):
        svc.restore_quote(user_id="alice", quote_id=later.record.id)


@pytest.mark.both_databases
def test_capacity_exhausted_is_declined_with_what_is_left(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    # the pool's capacity alone: no concentration cap (one symbol, one band) in the way
    svc.ctx.limits = dataclasses.replace(
        svc.ctx.limits,
        max_symbol_share=Decimal(1),
        max_band_share=Decimal(1),
        max_crash_share=Decimal(1),
    )
    fund(svc, "whale", "carol")
    big = btc_order(risk, leverage="5", qty="10")
    first = svc.quote(user_id="whale", order=big, cover=Cover(coverage="15000", duration_hours=24))
    second = svc.quote(user_id="carol", order=big, cover=Cover(coverage="8000", duration_hours=24))
    svc.buy(user_id="whale", quote_id=first.record.id)  # 15,000 of 20,000 now locked
    with pytest.raises(
        CapacityError,
        match=r"capacity exhausted: .* 90% of its 20,000.00 USDT capacity and has 3,000.00 USDT left",
    ):
        svc.buy(user_id="carol", quote_id=second.record.id)
    declined = [p for p in svc.policies("carol").itertuples()]
    assert [p.status for p in declined] == ["declined"]
    third = svc.quote(user_id="carol", order=big, cover=Cover(coverage="8000", duration_hours=24))
    # (over the whole capacity, it is over the caps at 100 % of it too)
    assert [c.name for c in third.failed if c.name not in CONCENTRATION] == ["pool_capacity"]


def _sized(risk: RiskEngine, symbol: str, side: str, leverage: int, margin: int) -> Order:
    """An order on ``symbol`` at the mark whose margin is about ``margin`` USDT."""
    spot = Decimal(str(round(risk.spot(symbol), 2)))
    qty = (Decimal(margin) * leverage / spot).quantize(Decimal("0.001"))
    return Order(symbol, side, qty, spot, Decimal(leverage))


@pytest.mark.both_databases
def test_concentration_caps_say_which_cap_and_what_is_left(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    """On a 20,000 USDT pool: one side's leverage band at most 25 % (5,000), one symbol 40 %
    (8,000), and what a 30 % market-wide move would claim 50 % (10,000) — at quote and again at
    purchase, where two quotes that each fit cannot both be bought."""
    fund(svc, "whale", "carol", "dave", "erin", "fay")

    def quote(user: str, order: Order, coverage: int) -> QuoteView:
        return svc.quote(
            user_id=user, order=order, cover=Cover(coverage=str(coverage), duration_hours=24)
        )

    def caps(q: QuoteView) -> dict[str, str]:
        return {c.name: c.reason for c in q.failed if c.name in CONCENTRATION}

    svc.buy(
        user_id="whale",
        quote_id=quote("whale", _sized(risk, "BTCUSDT", "long", 5, 4_500), 4_000).record.id,
    )
    crowded = quote("carol", _sized(risk, "BTCUSDT", "long", 4, 2_500), 2_000)
    assert list(caps(crowded)) == ["band_cap"]
    assert "longs at ≤5× leverage already carry 4,000.00 USDT" in caps(crowded)["band_cap"]
    assert "1,000.00 USDT left (asked 2,000.00 USDT)" in caps(crowded)["band_cap"]
    other_side = quote("carol", _sized(risk, "BTCUSDT", "short", 5, 2_500), 2_000)
    assert caps(other_side) == {}  # shorts are liquidated by the other move

    # two quotes that each fit the 5–10× band (5,000): the second purchase is declined
    first = quote("dave", _sized(risk, "BTCUSDT", "long", 10, 3_500), 3_000)
    second = quote("erin", _sized(risk, "BTCUSDT", "long", 8, 3_500), 3_000)
    assert caps(first) == caps(second) == {}
    svc.buy(user_id="dave", quote_id=first.record.id)
    with pytest.raises(CapacityError, match=r"longs at 5–10× .* 2,000.00 USDT left"):
        svc.buy(user_id="erin", quote_id=second.record.id)
    assert [p.status for p in svc.policies("erin").itertuples()] == ["declined"]

    # 7,000 of longs a 30 % fall claims; 3,500 more on ETH (its own symbol and band) is over
    # the 10,000 one such fall may claim, while a short on ETH is not claimed by it
    eth = quote("fay", _sized(risk, "ETHUSDT", "long", 20, 4_000), 3_500)
    assert list(caps(eth)) == ["crash_cap"]
    assert (
        "a 30% fall of every symbol within the hour would claim this cover and 7,000.00"
        in (caps(eth)["crash_cap"])
    )
    assert "3,000.00 USDT left (asked 3,500.00 USDT)" in caps(eth)["crash_cap"]
    assert caps(quote("fay", _sized(risk, "ETHUSDT", "short", 20, 4_000), 3_500)) == {}
    # and the symbol: 7,000 on BTC, 8,000 at most
    assert list(caps(quote("fay", _sized(risk, "BTCUSDT", "short", 3, 2_000), 1_500))) == [
        "symbol_cap"
    ]

    # a symbol whose mark is unknown counts whole; a 1 % fall reaches no liquidation here
    from bti_core.db.repository import open_cover_summary
    from bti_core.underwriting import LEVERAGE_BUCKETS

    with Session(svc.ctx.db) as s:
        unknown = open_cover_summary(s, LEVERAGE_BUCKETS, falls_to={}, rises_to={})
        shallow = open_cover_summary(
            s, LEVERAGE_BUCKETS, falls_to={"BTCUSDT": risk.spot("BTCUSDT") * 0.99}, rises_to={}
        )
    assert sum(r[4] for r in unknown if r[1] == "long") == Decimal(7_000)
    assert sum(r[4] for r in shallow if r[1] == "long") == 0
    # a stored mark that is no price (NaN, zero, negative) is not trusted: a short is then
    # judged as claimed by the rise (its crash cap applies), not waved through
    short = _sized(risk, "ETHUSDT", "short", 20, 4_000)
    short_cover = Cover(coverage="100", duration_hours=24)
    lp = float(short.entry_price) * 1.04  # a 20× short is liquidated about 4-5 % up
    for bad in (float("nan"), 0.0, -5.0):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(svc.ctx.risk, "spot", lambda symbol, bad=bad: bad)
            with Session(svc.ctx.db) as s:
                exposure = svc.quoting.exposure_now(s)
            names = [c.name for c in svc.quoting.concentration(short, short_cover, lp, exposure)]
        assert "crash_cap" in names, (bad, names)


def test_expired_quote_and_policy_expiry(
    svc: InsuranceService, risk: RiskEngine, clock: Clock
) -> None:
    fund(svc, "dave")
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
    assert svc.chain is not None and p.chain_policy_id is not None
    locked = svc.chain.pool_stats().locked
    clock.now += timedelta(hours=3)
    # the market data (it ends before the purchase) does not cover the window yet: the policy
    # waits, in case a liquidation inside the window is still to be seen
    assert svc.expire_due() == 0
    clock.now += timedelta(days=1)
    assert svc.expire_due() == 1
    # a late claim may still be filed: the cover stays locked for the filing period
    assert [e.event for e in svc.events(p.id)][-1] == "expired"
    assert svc.chain.pool_stats().locked == locked
    assert svc.reconcile().released == []
    clock.now = p.end_at + FILING_PERIOD + timedelta(minutes=1)
    assert svc.reconcile().released == [p.id]
    assert [e.event for e in svc.events(p.id)][-2:] == ["expired", "cover_released"]
    # the expired policy's cover no longer locks the pool's capital
    assert svc.chain.pool_stats().locked == locked - p.payout
    assert svc.chain.policy(p.chain_policy_id).status == OnChainStatus.RELEASED
    assert svc.policies("dave")["status"].tolist() == ["expired", "declined"]  # newest first


@pytest.mark.both_databases
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


def quote_btc(svc: InsuranceService, risk: RiskEngine, user: str, cov: str = "100"):  # type: ignore[no-untyped-def]
    return svc.quote(
        user_id=user, order=btc_order(risk), cover=Cover(coverage=cov, duration_hours=24)
    )


def test_too_few_bti_is_refused_before_anything_is_written(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    q = quote_btc(svc, risk, "pauper")
    with pytest.raises(PaymentError, match=r"holds 0\.00 BTI; the premium is .* faucet"):
        svc.buy(user_id="pauper", quote_id=q.record.id)
    assert count(engine, Policy) == 0
    fund(svc, "pauper")
    assert svc.buy(user_id="pauper", quote_id=q.record.id).status == "active"  # still valid


@pytest.mark.both_databases
def test_a_refusal_by_the_pool_declines_and_takes_nothing(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    fund(svc, "grace")
    assert svc.chain is not None
    q = quote_btc(svc, risk, "grace")
    svc.chain.pause()
    with pytest.raises(PaymentError, match=r"the pool is paused.*no premium was taken"):
        svc.buy(user_id="grace", quote_id=q.record.id)
    assert svc.chain.balance(svc.wallet_of("grace").address) == Decimal(5000)
    assert svc.policies("grace")["status"].tolist() == ["declined"]


def _dead_chain(svc: InsuranceService) -> ChainClient:
    from tests.conftest import free_port

    assert svc.chain is not None
    return ChainClient(f"http://127.0.0.1:{free_port()}", svc.chain.deployment, timeout=2)


def test_node_down_at_purchase_is_a_clear_error_and_writes_nothing(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    fund(svc, "heidi")
    q = quote_btc(svc, risk, "heidi")
    svc.chain = _dead_chain(svc)
    with pytest.raises(ChainError, match="is not answering"):
        svc.buy(user_id="heidi", quote_id=q.record.id)
    assert count(engine, Policy) == 0


def _buy_dying_at(
    svc: InsuranceService, risk: RiskEngine, user: str, step: str, mp: pytest.MonkeyPatch
) -> str:
    """Fund ``user``, quote, and buy with the process dying in ``Purchases.step``: the
    policy is left pending. Returns the quote's id."""
    fund(svc, user)
    q = quote_btc(svc, risk, user)
    with dies_at(mp, Purchases, step):
        svc.buy(user_id=user, quote_id=q.record.id)
    assert svc.policies(user)["status"].tolist() == ["pending"]
    return q.record.id


@pytest.mark.both_databases
def test_a_crash_before_the_payment_is_sent_is_paid_once_by_reconcile(
    svc: InsuranceService, risk: RiskEngine, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _buy_dying_at(svc, risk, "ivan", "_pay", monkeypatch)  # right after the pending row
    chain = svc.chain
    assert chain is not None
    assert chain.balance(svc.wallet_of("ivan").address) == Decimal(5000)
    assert len(svc.reconcile().activated) == 1  # the restart
    (p,) = svc.policies("ivan").itertuples()
    assert p.status == "active"
    assert chain.balance(svc.wallet_of("ivan").address) == Decimal(5000) - Decimal(str(p.premium))
    assert svc.reconcile().activated == []  # nothing left to settle
    assert count(engine, Policy) == 1


@pytest.mark.both_databases
def test_a_crash_after_the_chain_took_the_premium_is_recorded_without_a_second_charge(
    svc: InsuranceService, risk: RiskEngine, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    quote_id = _buy_dying_at(svc, risk, "judy", "_activate", monkeypatch)  # after it was mined
    chain = svc.chain
    assert chain is not None
    wallet = svc.wallet_of("judy").address
    paid_once = chain.balance(wallet)
    assert paid_once < Decimal(5000)
    # a double click before the reconciler ran: the pool refuses the same terms, the policy is
    # recorded from the chain's purchase
    p = svc.buy(user_id="judy", quote_id=quote_id)
    assert p.status == "active" and p.tx_hash is not None
    assert chain.balance(wallet) == paid_once
    assert Decimal(5000) - paid_once == p.premium
    assert svc.reconcile().activated == []
    assert count(engine, Policy) == 1


def test_a_payment_that_never_left_is_declined_after_its_deadline(
    svc: InsuranceService, risk: RiskEngine, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _buy_dying_at(svc, risk, "kim", "_pay", monkeypatch)
    chain = svc.chain
    assert chain is not None
    clock.now += timedelta(minutes=3)  # restarted after the signed quote's deadline
    assert len(svc.reconcile().declined) == 1
    assert svc.policies("kim")["status"].tolist() == ["declined"]
    assert chain.balance(svc.wallet_of("kim").address) == Decimal(5000)


# --- quotes that cannot be absurd ------------------------------------------------------------


def test_at_high_utilisation_the_premium_stays_below_the_payout(
    engine: Engine, risk: RiskEngine, chain: ChainClient
) -> None:
    """Before the cap, a 50,000 payout at 96 % utilisation was quoted 343,176 and insurable."""
    svc = InsuranceService(
        engine,
        risk,
        chain=chain,
        limits=Limits(
            pool_capacity=Decimal(52_000),
            max_exposure_per_user=Decimal(10**6),
            max_coverage_per_policy=Decimal(10**6),
        ),
    )
    q = svc.quote(
        user_id="ola",
        order=btc_order(risk, leverage="50", qty="60"),
        cover=Cover(coverage="50000", duration_hours=720),
    )
    assert q.record.premium < q.record.payout or not q.insurable
    assert not q.insurable  # 96 % utilisation is above the 90 % the pool sells to
    assert "capacity exhausted" in " ".join(c.reason for c in q.failed)


def test_dust_and_unliquidatable_orders_are_refused_with_a_reason(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    spot = Decimal(str(round(risk.spot("BTCUSDT"), 2)))
    dust = svc.quote(
        user_id="pat",
        order=Order("BTCUSDT", "long", Decimal("1e-12"), spot, Decimal(20)),
        cover=Cover(coverage="0.01", duration_hours=24),
    )
    assert not dust.insurable
    assert {c.name for c in dust.failed} >= {"payout_positive", "premium_below_payout"}
    one_x = svc.quote(
        user_id="pat",
        order=Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(1)),
        cover=Cover(coverage="100", duration_hours=24),
    )
    assert not one_x.insurable
    assert "cannot be liquidated" in " ".join(c.reason for c in one_x.failed)
    with pytest.raises(UnderwritingError, match="cannot be liquidated"):
        svc.buy(user_id="pat", quote_id=one_x.record.id)  # refused before anything is sent


@pytest.mark.parametrize("field", ["entry_price", "quantity"])
def test_absurd_prices_and_sizes_are_refused_with_the_bound(field: str) -> None:
    from bti_core.orders import OrderError

    kw = {"entry_price": "50000", "quantity": "1", field: "1e308"}
    with pytest.raises(
        OrderError, match=f"{field.replace('_', ' ')} must be at most 1,000,000,000"
    ):
        Order("BTCUSDT", "long", kw["quantity"], kw["entry_price"], "10", order_type="limit")


def test_listing_policies_writes_nothing_and_sends_nothing(
    svc: InsuranceService, clock: Clock, engine: Engine
) -> None:
    from bti_core.db.models import PolicyEvent

    fund(svc, "rex")
    q = svc.quote(
        user_id="rex", order=btc_order(svc.risk), cover=Cover(coverage="50", duration_hours=1)
    )
    svc.buy(user_id="rex", quote_id=q.record.id)
    clock.now += timedelta(hours=3)  # ended: expiring it is the worker's job, not the page's
    assert svc.chain is not None
    block, events = svc.chain.w3.eth.block_number, count(engine, PolicyEvent)
    listing = svc.policies("rex")
    assert list(listing["status"]) == ["active"]
    assert svc.chain.w3.eth.block_number == block and count(engine, PolicyEvent) == events


@pytest.mark.both_databases
def test_open_cover_is_summed_exactly(engine: Engine) -> None:
    """SQLite keeps money as text; its SUM would add floats (0.1 + 0.2 = 0.30000000000000004)."""
    from bti_core.db.repository import open_cover, open_cover_summary
    from bti_core.underwriting import LEVERAGE_BUCKETS

    with Session(engine) as s:
        amounts = (("a", "0.1"), ("a", "0.2"), ("b", "0.7"), ("b", "49999.99999999"), ("c", "1E-8"))
        for i, (user, cov) in enumerate(amounts):
            quote = QuoteRecord(
                id=f"q{i}",
                expires_at=datetime.now(UTC),
                user_id=user,
                symbol="BTCUSDT",
                liquidation_price=Decimal(1),
                spot=Decimal(1),
                probability=0.1,
                probability_se=0.0,
                baseline_probability=0.1,
                risk_index=1.0,
                payout=Decimal(cov),
                premium=Decimal(1),
            )
            s.add(quote)
            s.flush()
            s.add(
                Policy(
                    quote_id=quote.id,
                    user_id=user,
                    symbol="BTCUSDT",
                    side="long",
                    quantity=Decimal(1),
                    entry_price=Decimal(1),
                    leverage=Decimal(2),
                    margin_mode="isolated",
                    order_type="market",
                    margin=Decimal(1),
                    liquidation_price=Decimal(1),
                    coverage=Decimal(cov),
                    share=Decimal(1),
                    deductible=Decimal(0),
                    payout=Decimal(cov),
                    premium=Decimal(1),
                    probability=0.1,
                    risk_index=1.0,
                    start_at=datetime.now(UTC),
                    end_at=datetime.now(UTC),
                    status="active",
                )
            )
        s.commit()
        assert open_cover(s, user_id="a") == (Decimal("0.3"), Decimal("50001"))
        assert open_cover(s, user_id="c") == (Decimal("0.00000001"), Decimal("50001"))
        # the caps' one read gives the pool's total as exactly (a quote reads it there)
        rows = open_cover_summary(s, LEVERAGE_BUCKETS, falls_to={}, rises_to={})
        assert sum((r[3] for r in rows), Decimal(0)) == Decimal("50001")


def test_a_market_order_away_from_the_mark_is_not_insurable(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    """A form that kept another symbol's price (BTC's entry for an ETH order) is refused with
    the mark it should have used; a limit order may name any price."""
    spot = risk.spot("ETHUSDT")
    far = Decimal(str(round(spot * 20, 2)))
    o = Order("ETHUSDT", "long", Decimal("0.1"), far, Decimal(20))
    q = svc.quote(user_id="gina", order=o, cover=Cover(coverage="1", duration_hours=24))
    (failed,) = [c for c in q.failed if c.name == "market_entry"]
    assert f"{spot:,.2f} USDT now" in failed.reason and "limit order" in failed.reason
    near = Order("ETHUSDT", "long", Decimal("0.1"), Decimal(str(round(spot, 2))), Decimal(20))
    ok = svc.quote(user_id="gina", order=near, cover=Cover(coverage="1", duration_hours=24))
    assert "market_entry" not in [c.name for c in ok.failed]
    limit = dataclasses.replace(near, order_type="limit", entry_price=Decimal(str(spot * 0.9)))
    assert "market_entry" not in [
        c.name
        for c in svc.quote(
            user_id="gina", order=limit, cover=Cover(coverage="1", duration_hours=24)
        ).failed
    ]


def test_the_what_if_curve_matches_the_quote_and_rises_with_leverage_and_time(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    q = svc.quote(user_id="hugo", order=btc_order(risk), cover=Cover("40", 72))
    stored = count(engine, QuoteRecord)
    curve = svc.premium_curve(q, [5, 10, 20, 50], [24, 72, 168])
    assert count(engine, QuoteRecord) == stored  # a read
    here = curve[(curve["leverage"] == 20) & (curve["hours"] == 72)].iloc[0]
    assert here["probability"] == pytest.approx(q.record.probability)
    assert here["payout"] == pytest.approx(float(q.premium.payout))
    assert here["premium"] == pytest.approx(float(q.premium.total), abs=0.02)
    for hours, g in curve.groupby("hours"):
        # p rises with leverage; the payout falls with the margin: the price per payout rises
        assert (g["probability"].diff().dropna() >= 0).all(), (hours, g)
        per = (g["premium"] / g["payout"]).to_numpy()
        assert (per[1:] >= per[:-1]).all()
    for _, g in curve.groupby("leverage"):
        assert (g["premium"].diff().dropna() >= 0).all()


def test_the_what_if_curve_of_a_tiny_order_shows_no_cover_where_it_rounds_to_none(
    svc: InsuranceService, risk: RiskEngine
) -> None:
    """Found by fuzzing the Buy form: 0.001 BTC covered for 0.05 USDT at 2× leaves a cent or
    less of cover at 125×, which used to raise 'coverage must be positive' inside the page."""
    q = svc.quote(
        user_id="hugo", order=btc_order(risk, leverage="2", qty="0.001"), cover=Cover("0.05", 24)
    )
    curve = svc.premium_curve(q, [2, 50, 125], [24])
    assert curve["payout"].iloc[0] > 0
    assert curve["payout"].iloc[-1] == 0 and curve["premium"].iloc[-1] == 0


# ------------------------------------------------------------------ bought before the risk, once


@pytest.fixture
def live(tmp_path: Path, demo: dict, engine: Engine, clock: Clock, chain: ChainClient):  # type: ignore[no-untyped-def]
    """A service over its own warehouse, so a test can write the minutes after a quote."""
    wh = Warehouse(tmp_path / "wh")
    ing = Ingestor(wh, None)
    m = demo["BTCUSDT"]
    m.ingest(ing, funding=False)
    risk = RiskEngine(wh, n_paths=2_000)
    svc = InsuranceService(
        engine, risk, clock=clock, limits=Limits(pool_capacity=Decimal(20_000)), chain=chain
    )
    return svc, risk, ing


def _minutes(ing: Ingestor, start: datetime, closes: list[float]) -> None:
    """Mark-price minutes from ``start`` (each bar's low and high are its close)."""
    ts = pd.date_range(pd.Timestamp(start).floor("1min"), periods=len(closes), freq="1min")
    bars = pd.DataFrame({"ts": ts, "open": closes, "high": closes, "low": closes})
    bars["close"], bars["volume"] = closes, 0.0
    ing.ingest_frame(bars, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1m", source="test")


def test_a_quote_is_not_bought_after_the_mark_passed_its_liquidation_price(
    live: tuple[InsuranceService, RiskEngine, Ingestor], engine: Engine, clock: Clock
) -> None:
    """A five-minute quote used to buy cover on a position the market had already liquidated:
    the purchase re-reads the mark when it is bought, and the pool's deadline is the quote's."""
    svc, risk, ing = live
    fund(svc, "rita")
    wallet = svc.wallet_of("rita").address
    q = quote_btc(svc, risk, "rita")  # 20× long: liquidated about 4.5 % below the mark
    spot, lp = float(q.record.spot), float(q.record.liquidation_price)
    assert lp < spot
    # a wick through the liquidation price two minutes after the quote, then a rebound
    _minutes(ing, clock.now + timedelta(minutes=1), [spot, lp * 0.995, spot * 1.001])
    clock.now += timedelta(minutes=4)
    with pytest.raises(UnderwritingError, match="already liquidated and cannot be insured"):
        svc.buy(user_id="rita", quote_id=q.record.id)
    assert svc.policies("rita")["status"].tolist() == ["declined"]  # on record, not sold
    assert svc.chain is not None and svc.chain.balance(wallet) == Decimal(5000)  # not charged


def test_a_quote_is_not_bought_once_the_mark_came_much_closer(
    live: tuple[InsuranceService, RiskEngine, Ingestor], engine: Engine, clock: Clock
) -> None:
    svc, risk, ing = live
    fund(svc, "rita")
    q = quote_btc(svc, risk, "rita")
    spot, lp = float(q.record.spot), float(q.record.liquidation_price)
    closer = lp + (spot - lp) * 0.7  # 70 % of the quoted distance left: more than 20 % used
    _minutes(ing, clock.now + timedelta(minutes=1), [spot, closer])
    clock.now += timedelta(minutes=3)
    with pytest.raises(UnderwritingError, match=r"moved from .* ask for a new quote"):
        svc.buy(user_id="rita", quote_id=q.record.id)
    assert svc.policies("rita")["status"].tolist() == ["declined"]
    # a small move is what a quote allows: a fresh quote at the new mark buys
    _minutes(ing, clock.now, [spot * 0.999])
    clock.now += timedelta(minutes=1)
    q2 = quote_btc(svc, risk, "rita")
    p = svc.buy(user_id="rita", quote_id=q2.record.id)
    assert p.status == "active"
    assert p.pay_deadline is not None and p.pay_deadline <= q2.record.expires_at + timedelta(
        minutes=1
    )  # the pool refuses the signed purchase soon after the quote ends


@pytest.mark.both_databases
def test_one_position_is_insured_once_up_to_its_margin(
    svc: InsuranceService, risk: RiskEngine, engine: Engine
) -> None:
    """Several policies on one described position used to pay several times: all the cover on
    (account, symbol, side, size, entry) together stays within its margin."""
    fund(svc, "pat", "quinn")
    order = btc_order(risk)
    margin = order.margin.quantize(Decimal("0.01"))
    first = (margin * Decimal("0.6")).quantize(Decimal("0.01"))

    def quote(user: str, o: Order, cov: Decimal):  # type: ignore[no-untyped-def]
        return svc.quote(user_id=user, order=o, cover=Cover(coverage=cov, duration_hours=24))

    assert svc.buy(user_id="pat", quote_id=quote("pat", order, first).record.id).status == "active"
    again = quote("pat", order, first)
    (cap,) = [c for c in again.failed if c.name == "position_cover"]
    left = margin - first
    assert f"allows at most {left:,.2f} USDT more" in cap.reason, cap.reason
    with pytest.raises(UnderwritingError, match="one position is insured once"):
        svc.buy(user_id="pat", quote_id=again.record.id)
    # the same position quoted a little later (a market entry moved by 0.2 %) is still the same
    nudged = dataclasses.replace(order, entry_price=(order.entry_price * Decimal("1.002")))
    assert "position_cover" in [c.name for c in quote("pat", nudged, first).failed]
    # what is left is sold; then nothing more
    rest = quote("pat", order, left)
    assert "position_cover" not in [c.name for c in rest.failed]
    assert svc.buy(user_id="pat", quote_id=rest.record.id).status == "active"
    assert "position_cover" in [c.name for c in quote("pat", order, Decimal("1")).failed]
    # another account's position, or another size, is another position
    assert "position_cover" not in [c.name for c in quote("quinn", order, first).failed]
    bigger = dataclasses.replace(order, quantity=order.quantity * 2)
    assert "position_cover" not in [c.name for c in quote("pat", bigger, first).failed]
    assert (svc.policies("pat")["status"] == "active").sum() == 2


# --- changes to a bought cover (`policies.changes`): extend, raise and cancel priced by today's
# quote with a credit for the unused premium, made once on anvil and logged in the lifecycle;
# wrong requests refused with what is allowed; a crash between chain and database reconciled


def bought(svc: InsuranceService, risk: RiskEngine, user: str = "alice") -> Policy:
    fund(svc, user)
    q = svc.quote(user_id=user, order=btc_order(risk), cover=Cover("100", 24))
    return svc.buy(user_id=user, quote_id=q.record.id)


def events(engine: Engine, policy_id: int) -> list[PolicyEvent]:
    with Session(engine) as s:
        return list(s.exec(select(PolicyEvent).where(PolicyEvent.policy_id == policy_id)))


def test_extend_then_raise_then_cancel(
    svc: InsuranceService, risk: RiskEngine, engine: Engine, clock: Clock, chain: ChainClient
) -> None:
    p = bought(svc, risk)
    wallet = svc.wallet_of("alice").address
    clock.now += timedelta(hours=6)  # a quarter of the window used
    fee = Decimal("1.00")
    ext = svc.price_change(user_id="alice", policy_id=p.id or 0, kind="extend", hours=24)
    c = ext.change
    assert ext.allowed, ext.failed
    assert c.credit == unused_premium(p, fee, clock.now) == ((p.premium - fee) * Decimal("0.75"))
    assert c.charge == c.new_premium - c.credit > 0 and c.refund == 0
    assert c.end_at == p.end_at + timedelta(hours=24)
    before = chain.balance(wallet)
    after = svc.confirm_change(user_id="alice", change_id=c.id)
    assert after.end_at == p.end_at + timedelta(hours=24)
    assert after.premium == p.premium + c.charge
    assert chain.balance(wallet) == before - c.charge
    on_chain = chain.policy(p.chain_policy_id or 0)
    assert on_chain.expiry == int(after.end_at.timestamp())
    assert on_chain.terms_hash == after.terms_hash == c.terms_hash
    # a second click, or the same change again: made once, charged once
    assert svc.confirm_change(user_id="alice", change_id=c.id).premium == after.premium
    assert chain.balance(wallet) == before - c.charge

    up = svc.price_change(user_id="alice", policy_id=p.id or 0, kind="raise", coverage="150")
    assert up.allowed, up.failed
    raised = svc.confirm_change(user_id="alice", change_id=up.change.id)
    assert raised.coverage == 150 and raised.payout == up.change.payout
    assert chain.policy(p.chain_policy_id or 0).coverage == raised.payout

    stop = svc.price_change(user_id="alice", policy_id=p.id or 0, kind="cancel")
    s = stop.change
    assert s.refund == unused_premium(raised, fee, clock.now) > 0 and s.charge == 0
    before = chain.balance(wallet)
    done = svc.confirm_change(user_id="alice", change_id=s.id)
    assert done.status == "cancelled" and done.premium == raised.premium - s.refund
    assert chain.balance(wallet) == before + s.refund
    assert chain.policy(p.chain_policy_id or 0).status == OnChainStatus.RELEASED
    logged = [e.event for e in events(engine, p.id or 0)]
    assert logged[-3:] == ["extended", "raised", "cancelled"]
    assert events(engine, p.id or 0)[-3].detail["end"]["to"] == c.end_at.isoformat()
    with pytest.raises(ChangeError, match="is cancelled: only an active cover can be changed"):
        svc.price_change(user_id="alice", policy_id=p.id or 0, kind="extend", hours=1)


def test_wrong_changes_are_refused_with_what_is_allowed(
    svc: InsuranceService, risk: RiskEngine, clock: Clock
) -> None:
    p = bought(svc, risk)
    pid = p.id or 0
    for kw, says in [
        ({"kind": "shrink"}, "one of extend, raise, cancel"),
        ({"kind": "extend"}, "needs the hours to add"),
        ({"kind": "extend", "hours": "abc"}, "whole number of hours"),
        ({"kind": "extend", "hours": 0}, "from 1 to 720 hours"),
        ({"kind": "extend", "hours": 710}, "at most 720 hours from now"),
        ({"kind": "raise", "coverage": "50"}, "must be above the cover's 100.00 USDT"),
        ({"kind": "raise", "coverage": "-3"}, "positive number of USDT"),
    ]:
        with pytest.raises(ChangeError, match=says):
            svc.price_change(user_id="alice", policy_id=pid, **kw)  # type: ignore[arg-type]
    with pytest.raises(ChangeError, match=f"no policy {pid} of yours"):
        svc.price_change(user_id="mallory", policy_id=pid, kind="cancel")
    # two prices of the same cover: the first made, the second priced on terms now gone
    a = svc.price_change(user_id="alice", policy_id=pid, kind="extend", hours=2).change
    b = svc.price_change(user_id="alice", policy_id=pid, kind="extend", hours=3).change
    with pytest.raises(ChangeError, match="no change"):
        svc.confirm_change(user_id="mallory", change_id=a.id)
    svc.confirm_change(user_id="alice", change_id=a.id)
    with pytest.raises(ChangeError, match="changed since this change was priced"):
        svc.confirm_change(user_id="alice", change_id=b.id)
    late = svc.price_change(user_id="alice", policy_id=pid, kind="cancel").change
    clock.now += timedelta(minutes=6)
    with pytest.raises(ChangeError, match=r"expired at .* price it again"):
        svc.confirm_change(user_id="alice", change_id=late.id)
    clock.now += timedelta(days=3)
    with pytest.raises(ChangeError, match=r"ended at .* renew it instead"):
        svc.price_change(user_id="alice", policy_id=pid, kind="extend", hours=1)


def test_a_change_made_on_chain_before_a_crash_is_settled_by_reconcile(
    svc: InsuranceService,
    risk: RiskEngine,
    engine: Engine,
    chain: ChainClient,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = bought(svc, risk)
    wallet = svc.wallet_of("alice").address
    c = svc.price_change(user_id="alice", policy_id=p.id or 0, kind="extend", hours=5).change
    lost = svc.price_change(user_id="alice", policy_id=p.id or 0, kind="cancel").change
    before = chain.balance(wallet)
    # the process dies after the pool made the change, before the policy took it
    with dies_at(monkeypatch, Changes, "_apply"):
        svc.confirm_change(user_id="alice", change_id=c.id)
    assert chain.balance(wallet) == before - c.charge
    # the other one dies after it was marked sent, before it reached the chain
    with dies_at(monkeypatch, Changes, "_terms"):
        svc.confirm_change(user_id="alice", change_id=lost.id)
    with pytest.raises(ChangeError, match="is sent"):  # a second click while it is unsettled
        svc.confirm_change(user_id="alice", change_id=lost.id)
    changes = svc.changes
    assert changes.reconcile() == 1  # the made one applied; the other still inside its time
    with Session(engine) as s:
        assert s.get(Policy, p.id).end_at == p.end_at + timedelta(hours=5)  # type: ignore[union-attr]
        assert s.get(PolicyChange, c.id).state == "done"  # type: ignore[union-attr]
    assert chain.balance(wallet) == before - c.charge  # charged once
    clock.now += timedelta(minutes=10)  # past its deadline: it can never land
    assert changes.reconcile() == 1
    with Session(engine) as s:
        assert s.get(PolicyChange, lost.id).state == "lapsed"  # type: ignore[union-attr]
        assert s.get(Policy, p.id).status == "active"  # type: ignore[union-attr]
    assert chain.balance(wallet) == before - c.charge  # no refund without the change
    assert changes.reconcile() == 0


# --- automatic renewal with the trader's consent (`policies.renewals`) ----------------------


def _ended(svc: InsuranceService, clock: Clock, p: Policy) -> None:
    """The clock past the cover's end (and the day it may wait for market data to cover it:
    this market's bars end now) and the expiry duty run, as the worker's round does."""
    clock.now = p.end_at + EXPIRY_DATA_GRACE + timedelta(minutes=1)
    svc.expire_due()


def test_a_consented_cover_is_renewed_when_it_ends_at_most_as_often_as_agreed(
    svc: InsuranceService, risk: RiskEngine, engine: Engine, clock: Clock, chain: ChainClient
) -> None:
    p = bought(svc, risk)
    wallet = svc.wallet_of("alice").address
    r = svc.renewals.consent(
        user_id="alice", policy_id=p.id or 0, max_premium=p.premium * 3, times=2
    )
    assert (r.state, r.times_left) == ("standing", 2)
    assert svc.renewals.run().renewed == []  # not ended yet
    _ended(svc, clock, p)
    before = chain.balance(wallet)
    (first,) = svc.renewals.run().renewed
    with Session(engine) as s:
        new = s.get(Policy, first)
    assert new is not None and new.status == "active" and new.id != p.id
    assert (new.symbol, new.side, new.quantity, new.coverage) == (
        p.symbol,
        p.side,
        p.quantity,
        p.coverage,
    )
    assert new.start_at == clock.now and new.end_at == clock.now + timedelta(hours=24)
    assert chain.balance(wallet) == before - new.premium  # bought once, from the wallet
    assert chain.policy(new.chain_policy_id or 0).status == OnChainStatus.ACTIVE
    assert [e.event for e in events(engine, p.id or 0)][-1] == "renewed"
    assert events(engine, first)[-1].event == "renewal_of"
    assert svc.renewals.run().renewed == []  # the new cover has not ended: nothing twice
    moved = svc.renewals.of("alice", first)
    assert moved is not None and (moved.times_left, moved.state) == (1, "standing")

    _ended(svc, clock, new)
    (second,) = svc.renewals.run().renewed
    done = svc.renewals.of("alice", second)
    assert done is not None and (done.times_left, done.state) == (0, "done")
    with Session(engine) as s:
        last = s.get(Policy, second)
    assert last is not None
    _ended(svc, clock, last)
    assert svc.renewals.run().renewed == []  # used up


def test_a_renewal_that_would_cost_more_than_agreed_is_not_bought_and_says_why(
    svc: InsuranceService, risk: RiskEngine, engine: Engine, clock: Clock, chain: ChainClient
) -> None:
    p = bought(svc, risk)
    wallet = svc.wallet_of("alice").address
    svc.renewals.consent(user_id="alice", policy_id=p.id or 0, max_premium="0.01")
    _ended(svc, clock, p)
    before = chain.balance(wallet), count(engine, Policy)
    report = svc.renewals.run()
    assert report.renewed == [] and len(report.stopped) == 1
    assert (chain.balance(wallet), count(engine, Policy)) == before
    r = svc.renewals.of("alice", p.id or 0)
    assert r is not None and r.state == "stopped"
    assert r.reason is not None and "above the 0.01 BTI you agreed to" in r.reason
    last = events(engine, p.id or 0)[-1]
    assert last.event == "renewal_stopped" and "agreed to" in last.detail["reason"]
    assert svc.renewals.run().stopped == []  # stopped once


def test_consents_are_refused_with_what_is_allowed_and_can_be_withdrawn(
    svc: InsuranceService, risk: RiskEngine, engine: Engine, clock: Clock
) -> None:
    p = bought(svc, risk)
    pid = p.id or 0
    for kw, says in [
        ({"max_premium": "abc"}, "must be a number of BTI"),
        ({"max_premium": "-1"}, "above 0 and at most 1,000,000 BTI"),
        ({"max_premium": "1e9"}, "above 0 and at most 1,000,000 BTI"),
        ({"max_premium": "5", "times": 0}, "from 1 to 12"),
        ({"max_premium": "5", "times": "x"}, "whole number"),
    ]:
        with pytest.raises(ChangeError, match=says):
            svc.renewals.consent(user_id="alice", policy_id=pid, **kw)  # type: ignore[arg-type]
    with pytest.raises(ChangeError, match=f"no policy {pid} of yours"):
        svc.renewals.consent(user_id="mallory", policy_id=pid, max_premium="5")
    with pytest.raises(ChangeError, match="has no automatic renewal to stop"):
        svc.renewals.withdraw(user_id="alice", policy_id=pid)
    svc.renewals.consent(user_id="alice", policy_id=pid, max_premium="50")
    svc.renewals.consent(user_id="alice", policy_id=pid, max_premium="60", times=3)  # replaced
    with Session(engine) as s:
        standing = s.exec(select(func.count()).select_from(Renewal)).one()
    assert standing == 1
    svc.renewals.withdraw(user_id="alice", policy_id=pid)
    _ended(svc, clock, p)
    assert svc.renewals.run().renewed == []
    with pytest.raises(ChangeError, match="only an active cover can be renewed"):
        svc.renewals.consent(user_id="alice", policy_id=pid, max_premium="50")


def test_a_renewal_interrupted_after_its_quote_or_its_purchase_is_bought_once(
    svc: InsuranceService,
    risk: RiskEngine,
    engine: Engine,
    clock: Clock,
    chain: ChainClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = bought(svc, risk)
    wallet = svc.wallet_of("alice").address
    svc.renewals.consent(user_id="alice", policy_id=p.id or 0, max_premium=p.premium * 3, times=2)
    _ended(svc, clock, p)
    before = chain.balance(wallet), count(engine, Policy)
    with dies_at(monkeypatch, Purchases, "buy"):  # quoted and stored, never bought
        svc.renewals.run()
    assert (chain.balance(wallet), count(engine, Policy)) == before
    with dies_at(monkeypatch, Renewals, "_moved"):  # bought, the consent not yet moved
        svc.renewals.run()
    assert count(engine, Policy) == before[1] + 1
    (new,) = svc.renewals.run().renewed  # the restart finds it bought: moves on
    with Session(engine) as s:
        renewed = s.get(Policy, new)
    assert renewed is not None
    assert count(engine, Policy) == before[1] + 1
    assert chain.balance(wallet) == before[0] - renewed.premium  # paid once
    assert [e.event for e in events(engine, p.id or 0)].count("renewed") == 1
