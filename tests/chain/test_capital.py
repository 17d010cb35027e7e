"""A capital provider's report and actions against the pool on anvil: the share price history
rebuilt from the pool's events is the contract's own price at every block, the yield and flows
add up, and a withdrawal goes request → cooldown → withdraw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from eth_account.signers.local import LocalAccount

from bti_core.capital import (
    CapitalError,
    CapitalService,
    PoolPoint,
    flows,
    parse_amount,
    realised_yields,
)
from bti_core.chain.client import ChainClient
from bti_core.chain.units import from_units
from bti_core.errors import ChainError
from tests.chain.test_pool import buy, funded, warp


@pytest.fixture
def capital(chain: ChainClient) -> tuple[CapitalService, dict[str, LocalAccount]]:
    wallets = {"lp": funded(chain, "lp", "5000"), "trader": funded(chain, "trader", "500")}
    return CapitalService(chain, wallets.__getitem__), wallets


def test_the_history_is_the_contracts_price_at_every_block(
    chain: ChainClient, capital: tuple[CapitalService, dict[str, LocalAccount]]
) -> None:
    svc, w = capital
    start = chain.w3.eth.block_number  # anvil keeps no state from before a revert
    svc.deposit("lp", "1000")
    policy = buy(chain, w["trader"], coverage="100", premium="5")
    chain.pay_claim(policy, Decimal(60), b"\x07" * 32)
    h = svc.history()
    assert [p.kind for p in h] == ["deposit", "deposit", "premium", "claim"]  # seed, lp, …
    assert [p.amount for p in h[1:]] == [Decimal(1000), Decimal(5), Decimal(60)]
    for p in h[1:]:  # the contract's convertToAssets(1 share) at that block, rounded down
        assert p.block > start
        on_chain = chain.pool.functions.convertToAssets(10**18).call(block_identifier=p.block)
        assert p.price.quantize(Decimal("1e-18"), rounding="ROUND_FLOOR") == from_units(on_chain)
    assert h[2].price > h[1].price > h[3].price  # a premium raises it; only the claim lowers it
    assert h[1].provider == w["lp"].address

    r = svc.report_of("lp")
    assert r.net_deposited == Decimal(1000)
    assert r.gain == r.position.total_value - Decimal(1000)
    assert r.pool_share == pytest.approx(1000 / 1_001_000, rel=1e-9)
    assert r.stress_loss(10_000.0) == pytest.approx(10_000 * r.pool_share)
    assert r.stress_loss(1e12) == float(r.position.total_value)  # never more than it holds
    f = flows(h)
    assert (f.premiums, f.claims, f.deposits) == (Decimal(5), Decimal(60), Decimal(1_001_000))
    week = r.yields[0]
    assert not any(y.full_window for y in r.yields)  # the pool is minutes old
    assert week.start == h[0].time
    assert week.ret == pytest.approx(float(h[-1].price / h[0].price - 1))


def test_a_withdrawal_is_requested_waits_and_is_taken(
    chain: ChainClient, capital: tuple[CapitalService, dict[str, LocalAccount]]
) -> None:
    svc, w = capital
    svc.deposit("lp", "1000")
    svc.request("lp", "400")
    r = svc.report_of("lp").position
    assert r.request_state == "cooling down" and r.requested_value == Decimal(400)
    with pytest.raises(ChainError, match="cooling down until"):
        svc.withdraw("lp")
    warp(chain, 7 * 86400 + 60)
    assert svc.report_of("lp").position.request_state == "ready"
    _, got = svc.withdraw("lp")
    assert got == Decimal(400)
    after = svc.report_of("lp")
    assert after.position.request_state == "none" and after.net_deposited == Decimal(600)
    assert chain.balance(w["lp"].address) == Decimal(4400)


def test_bad_amounts_are_refused_with_what_is_allowed_and_change_nothing(
    chain: ChainClient, capital: tuple[CapitalService, dict[str, LocalAccount]]
) -> None:
    svc, w = capital
    before = (chain.pool_stats(), chain.balance(w["lp"].address))
    for bad, says in [
        ("abc", "must be a number of BTI"),
        ("-5", "must be a positive number"),
        ("0", "must be a positive number"),
        ("nan", "must be a positive number"),
        ("1e12", "at most 1,000,000,000"),
        ("1.123456789", "at most 8 decimals"),
        ("5000.01", "above the wallet's 5,000.00 BTI"),
    ]:
        with pytest.raises(CapitalError, match=says):
            svc.deposit("lp", bad)
    with pytest.raises(ChainError, match="holds no pool shares"):
        svc.request("lp")
    assert (chain.pool_stats(), chain.balance(w["lp"].address)) == before
    assert parse_amount(" 1,000.5 ", "x") == Decimal("1000.5")


def test_yields_over_windows_use_the_price_at_the_windows_start() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def pt(days: float, reserves: str) -> PoolPoint:
        return PoolPoint(
            t0 + timedelta(days=days),
            0,
            "premium",
            Decimal(1),
            Decimal(reserves),
            Decimal(100),
            None,
        )

    h = [pt(0, "100"), pt(300, "102"), pt(340, "103"), pt(361, "103.5")]
    now = t0 + timedelta(days=365)
    week, month, year = realised_yields(h, now)
    assert week.full_window and float(week.start_price) == pytest.approx(1.03, rel=1e-12)
    assert month.full_window and float(month.start_price) == pytest.approx(1.02, rel=1e-12)
    assert year.full_window and float(year.start_price) == pytest.approx(1.00, rel=1e-12)
    assert year.ret == pytest.approx(0.035, rel=1e-9)
    assert year.annualised(now) == pytest.approx(0.035, rel=1e-9)
    assert week.annualised(now) == pytest.approx((103.5 / 103 - 1) * 365 / 7, rel=1e-9)
    assert realised_yields([], now) == []


def test_a_history_whose_clock_was_moved_back_reads_in_time_order() -> None:
    """The demo chain's clock is moved back after the pool is deployed (to buy the demo book
    in the past): the deployment's deposit is then stamped after the purchases that follow it,
    and the yields read a pool minutes old with a year of premiums."""
    from bti_core.capital import pool_history
    from bti_core.chain.types import DecodedEvent

    def ev(block: int, name: str, **args: int | str) -> DecodedEvent:
        return DecodedEvent("InsurancePool", name, dict(args), block, "0x", 0, "0xpool")

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        ev(1, "CapitalDeposited", provider="0xseed", assets=10**24, shares=10**24),
        ev(2, "PolicyPurchased", premium=10**21),
        ev(3, "PolicyPurchased", premium=10**21),
    ]
    times = {1: t0 + timedelta(days=300), 2: t0, 3: t0 + timedelta(days=200)}
    h = pool_history(events, times)
    assert [p.time for p in h] == [t0, t0, t0 + timedelta(days=200)]
    year = realised_yields(h, t0 + timedelta(days=250))[-1]
    assert year.full_window is False and year.start == t0 and year.start_price == 1
    assert year.ret == pytest.approx(0.002, rel=1e-6)  # both premiums, over the pool's life


def test_the_kept_history_follows_new_blocks_and_a_chain_that_went_back(
    chain: ChainClient, capital: tuple[CapitalService, dict[str, LocalAccount]]
) -> None:
    """The events older than a few blocks are kept between calls (a page draws the history
    on every run); the history read that way is the one read from scratch, and a node
    restored from an older snapshot is read again."""
    from bti_core.chain.node import rpc_call

    svc, w = capital
    first = len(svc.history())
    svc.deposit("lp", "100")
    for _ in range(8):  # past the confirmations: the deposit is kept, not read again
        rpc_call(chain.url, "evm_mine")
    kept = svc.history()
    assert len(kept) == first + 1 and svc._settled_to >= kept[-1].block
    snapshot = rpc_call(chain.url, "evm_snapshot")
    buy(chain, w["trader"], coverage="100", premium="5")
    for _ in range(8):
        rpc_call(chain.url, "evm_mine")
    grown = svc.history()
    scratch = CapitalService(chain, w.__getitem__).history()
    assert [(p.kind, p.amount, p.block) for p in grown] == [
        (p.kind, p.amount, p.block) for p in scratch
    ]
    assert grown[-1].kind == "premium"
    assert rpc_call(chain.url, "evm_revert", [snapshot])  # the node goes back: no premium
    assert [p.kind for p in svc.history()] == [p.kind for p in kept]
