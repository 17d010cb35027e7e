"""Auto-deleveraging cover on a linked position, end to end on the local chain: priced from the
crash in the position's favour and its place in the ADL queue, capped at a quarter of the
margin, paid on the exchange's ADL record (in proportion to what it deleveraged) without an
underwriter, never claimed by the mark, and ended without a claim by a liquidation."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_CEILING, Decimal

import pytest
from sqlmodel import Session, select

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.auth import User
from bti_core.claims.records import ClaimError
from bti_core.claims.state import State
from bti_core.db.models import Claim, Policy
from bti_core.db.statuses import Peril
from bti_core.orders import Cover, Order, OrderError
from bti_core.risk.adl import CAP_SHARE, FLOOR, P_FUND_EMPTY, REACH
from tests.accounts.conftest import buy_on
from tests.worlds import World, claim_of, crash


def quote_adl(world: World, position_id: int, coverage: str = "10", hours: int = 48):
    return world.ins.quote_position(
        user_id="ada",
        position_id=position_id,
        cover=Cover(coverage=coverage, duration_hours=hours),
        peril=Peril.ADL,
    )


def buy_adl(world: World, position_id: int, coverage: str = "10") -> Policy:
    q = quote_adl(world, position_id, coverage)
    assert q.insurable, q.failed
    return world.ins.buy(user_id="ada", quote_id=q.record.id)


def test_adl_cover_is_priced_from_the_crash_in_its_favour_and_the_queue(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, uid, account, position = linked
    q = quote_adl(world, position.id, hours=720)
    adl = q.record.inputs["adl"]
    assert q.record.inputs["peril"] == "adl" and q.peril is Peril.ADL
    assert adl["quantile"] == 2 and adl["reach"] == REACH[2]  # the demo exchange's quantile
    spot = world.ins.risk.spot("BTCUSDT")
    assert adl["crash_level"] == pytest.approx(spot * 1.15)  # a long profits from a rally
    expected = max(FLOOR, P_FUND_EMPTY * adl["crash_probability"] * REACH[2])
    assert q.record.probability == pytest.approx(expected)
    assert q.premium.payout == Decimal("10.00")  # pays its amount: no share, no deductible
    assert q.insurable, q.failed
    # first in the queue: a higher probability, never a lower one
    exchange.position(uid, "BTCUSDT", "long").adl_quantile = 4  # type: ignore[union-attr]
    accounts.sync(account.id)
    first = quote_adl(world, position.id, hours=720)
    assert first.record.inputs["adl"]["reach"] == 1.0
    assert first.record.probability >= q.record.probability
    if not adl["floored"]:
        assert first.record.probability > q.record.probability


@pytest.mark.both_databases  # its query differs on PostgreSQL (no DISTINCT over JSON)
def test_the_exchanges_adl_record_pays_in_proportion_without_an_underwriter(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, uid, account, position = linked
    policy = buy_adl(world, position.id, "10")
    assert policy.status == "active" and policy.peril == "adl"
    assert world.claims.run().opened == []  # nothing deleveraged yet
    exchange.deleverage(uid, "BTCUSDT", "long", "0.05", 99_000)
    accounts.sync(account.id)  # the worker sees the position reduced
    report = world.claims.run()
    claim = claim_of(world, policy)
    assert report.opened == [claim.id]
    assert claim.source == "exchange_adl" and claim.state == State.PAID.value, claim.checks
    assert claim.amount_approved == Decimal("5.00")  # half the insured 0.1 deleveraged
    assert claim.trigger_price == Decimal("99000")
    checks = {c["name"]: c for c in claim.checks}
    assert set(checks) == {"in_window", "exchange_confirms", "user_signals"}
    assert (
        "the exchange auto-deleveraged 0.05 BTCUSDT long at 99,000.00"
        in (checks["exchange_confirms"]["reason"])
    )
    assert world.claims.run().opened == []  # once


def test_a_mark_through_the_liquidation_price_opens_no_claim_on_adl_cover(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, _, _, position = linked
    adl = buy_adl(world, position.id, "10")
    liquidation = buy_on(world, position.id, "20")
    crash(world)  # the mark falls through the liquidation price both policies name
    world.claims.exchange_wait = timedelta(0)
    world.claims.run()
    with Session(world.db) as s:
        claimed = {c.policy_id for c in s.exec(select(Claim)).all()}
    assert claimed == {liquidation.id}  # the liquidation cover's claim; none on the ADL cover
    with pytest.raises(ClaimError, match="covers auto-deleveraging: its claim opens by itself"):
        world.claims.file_claim(User("ada", "Ada", "trader"), adl.id or 0, b"", "x.csv")


def test_adl_cover_on_a_position_is_capped_at_a_quarter_of_its_margin(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, _, _, position = linked
    cap = (position.margin * CAP_SHARE).quantize(Decimal("0.01"), rounding=ROUND_CEILING)
    over = quote_adl(world, position.id, str(cap + 1))
    assert [c.name for c in over.failed] == ["adl_cap"], over.failed
    assert f"at most 25% of its margin, {cap:,.2f} USDT" in over.failed[0].reason
    buy_adl(world, position.id, str(cap - 1))
    again = quote_adl(world, position.id, "2")
    assert [c.name for c in again.failed] == ["adl_cap"]
    assert "so 1.00 more can be bought" in again.failed[0].reason
    # liquidation cover on the same position is its own: the whole margin is still open to it
    full = world.ins.quote_position(
        user_id="ada",
        position_id=position.id,
        cover=Cover(coverage=str(position.margin.quantize(Decimal("0.01"))), duration_hours=48),
    )
    assert full.insurable, full.failed


def test_adl_cover_is_sold_on_a_linked_position_only_and_pays_its_whole_amount(
    world: World, linked
) -> None:
    _, _, _, position = linked
    spot = Decimal(str(round(world.ins.risk.spot("BTCUSDT"), 2)))
    with pytest.raises(OrderError, match="sold on a linked exchange position only"):
        world.ins.quote(
            user_id="ada",
            order=Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(20)),
            cover=Cover(coverage="10", duration_hours=24),
            peril=Peril.ADL,
        )
    with pytest.raises(OrderError, match="leave the covered share at 1 and the deductible at 0"):
        world.ins.quote_position(
            user_id="ada",
            position_id=position.id,
            cover=Cover(coverage="10", duration_hours=24, deductible="1"),
            peril=Peril.ADL,
        )


def test_a_liquidation_ends_adl_cover_without_a_claim(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, _, account, position = linked
    world.ins.accounts = accounts
    policy = buy_adl(world, position.id, "10")
    exchange.set_mark("BTCUSDT", 1.0)  # liquidated, not deleveraged
    accounts.sync(account.id)
    assert world.ins.end_closed() == 1
    assert world.claims.run().opened == []
    with Session(world.db) as s:
        assert s.get(Policy, policy.id).status == "expired"  # type: ignore[union-attr]


def test_a_closed_position_the_exchange_deleveraged_keeps_its_cover_for_the_claim(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, uid, account, position = linked
    world.ins.accounts = accounts
    policy = buy_adl(world, position.id, "10")
    exchange.deleverage(uid, "BTCUSDT", "long", "0.1", 99_000)  # all of it
    accounts.sync(account.id)
    assert world.ins.end_closed() == 0  # the claims' to judge
    world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.PAID.value and claim.amount_approved == Decimal("10.00")
