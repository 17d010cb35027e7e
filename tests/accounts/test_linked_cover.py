"""Cover on a linked exchange position, end to end on the local chain: quoted from the
exchange's numbers, bought once per margin, declined when the position changed since the
quote, and paid on the exchange's own liquidation record — or, without one, referred to an
underwriter after the wait."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session, select

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.chain.types import OnChainStatus
from bti_core.claims.payments import Payments
from bti_core.claims.service import ClaimsService
from bti_core.claims.state import State
from bti_core.db.models import Policy
from bti_core.orders import Cover, OrderError
from bti_core.underwriting import UnderwritingError
from tests.accounts.conftest import CRASH_AT, buy_on, liquidate_on_the_exchange
from tests.crashes import dies_at
from tests.worlds import World, claim_of, claim_paid_events, crash


def test_the_exchanges_record_pays_the_claim_without_an_underwriter(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, _, _, position = linked
    q = world.ins.quote_position(
        user_id="ada", position_id=position.id, cover=Cover(coverage="100", duration_hours=48)
    )
    assert q.record.liquidation_price == position.liquidation_price  # the exchange's own
    assert q.position is not None and q.warnings == []
    assert q.record.inputs["position"]["position_id"] == str(position.id)
    policy = world.ins.buy(user_id="ada", quote_id=q.record.id)
    assert policy.position_id == position.id and policy.status == "active"
    crash(world)
    liquidate_on_the_exchange(exchange)
    world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.PAID.value, claim.checks
    assert claim.amount_approved == policy.payout
    [check] = [c for c in claim.checks if c["name"] == "exchange_confirms"]
    assert (
        check["outcome"] == "pass" and "the exchange liquidated 0.1 BTCUSDT long" in check["reason"]
    )


def test_without_the_exchanges_record_the_claim_waits_then_goes_to_an_underwriter(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, _, _, position = linked
    policy = buy_on(world, position.id)
    crash(world)  # the mark falls through the liquidation price; the exchange shows nothing
    world.claims.exchange_wait = timedelta(days=2)
    world.claims.run()
    assert claim_of(world, policy).state == State.OPENED.value  # waiting for the record
    world.claims.exchange_wait = timedelta(minutes=30)
    world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.REFERRED.value
    checks = {c["name"]: c for c in claim.checks}
    assert checks["mark_confirms"]["outcome"] == "pass"  # both facts, side by side
    assert checks["exchange_confirms"]["outcome"] == "unsure"
    assert "no liquidation of this position" in checks["exchange_confirms"]["reason"]
    assert any("The exchange's own record" in r for r in world.claims.why(claim.id or 0))


def test_an_exchange_that_cannot_be_read_refers_the_claim_with_the_reason(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, _, _, position = linked
    policy = buy_on(world, position.id)
    crash(world)
    exchange.down = True
    world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.REFERRED.value and claim.amount_approved is None
    [check] = [c for c in claim.checks if c["name"] == "exchange_confirms"]
    assert "could not be read" in check["reason"]


def test_cover_on_one_position_stays_within_its_margin(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, _, _, position = linked
    margin = position.size * position.entry_price / position.leverage
    half = (margin / 2).quantize(Decimal("0.01"))
    buy_on(world, position.id, str(half))
    buy_on(world, position.id, str(half))
    q = world.ins.quote_position(
        user_id="ada", position_id=position.id, cover=Cover(coverage="50", duration_hours=48)
    )
    assert [c.name for c in q.failed] == ["position_cover"], q.failed
    assert "already has" in q.failed[0].reason


def test_a_position_changed_since_the_quote_is_not_bought(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, uid, account, position = linked
    q = world.ins.quote_position(
        user_id="ada", position_id=position.id, cover=Cover(coverage="50", duration_hours=48)
    )
    exchange.change(uid, "BTCUSDT", "long", leverage=50)
    accounts.sync(account.id)
    with pytest.raises(
        UnderwritingError, match=r"position changed since the quote \(leverage 20× → 50×\)"
    ):
        world.ins.buy(user_id="ada", quote_id=q.record.id)
    exchange.close(uid, "BTCUSDT", "long")
    accounts.sync(account.id)
    with pytest.raises(OrderError, match="is closed"):
        buy_on(world, position.id)
    with pytest.raises(OrderError, match="you have no linked position #999"):
        buy_on(world, 999)


def test_a_position_shrunk_after_purchase_pays_in_proportion(
    world: World, exchange: DemoExchange, linked
) -> None:
    _, uid, _, position = linked
    policy = buy_on(world, position.id, "200")
    exchange.change(uid, "BTCUSDT", "long", size="0.025")  # three quarters closed by the trader
    crash(world)
    liquidate_on_the_exchange(exchange)
    world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.PAID.value
    assert claim.amount_approved == (policy.margin / 4).quantize(Decimal("0.01"))


def test_margin_withdrawn_after_purchase_pays_only_what_the_insured_terms_would(
    world: World, exchange: DemoExchange, linked
) -> None:
    """The trader withdraws margin, so the exchange liquidates early, at a mark the insured
    liquidation price was never reached at: the cover pays nothing."""
    _, uid, _, position = linked
    policy = buy_on(world, position.id)
    exchange.change(uid, "BTCUSDT", "long", margin=position.margin / 4)
    assert position.liquidation_price is not None
    exchange.set_mark("BTCUSDT", position.liquidation_price * Decimal("1.02"))
    assert exchange.position(uid, "BTCUSDT", "long") is None  # liquidated on the exchange
    crash(world, drop=0.02)  # the mark dips, but not to the insured liquidation price
    assert world.claims.run().opened == []
    with Session(world.db) as s:
        assert s.get(Policy, policy.id).status == "active"  # type: ignore[union-attr]


def test_a_position_the_trader_closes_ends_the_cover_and_its_changes_are_in_its_lifecycle(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, uid, account, position = linked
    world.ins.accounts = accounts
    policy = buy_on(world, position.id)
    assert world.ins.end_closed() == 0  # open: nothing to end
    exchange.change(uid, "BTCUSDT", "long", size="0.05")
    accounts.sync(account.id)
    exchange.close(uid, "BTCUSDT", "long")
    accounts.sync(account.id)
    assert world.ins.end_closed() == 1
    assert world.ins.end_closed() == 0  # once
    events = [e.event for e in world.ins.events(policy.id or 0)]
    assert events[3:6] == ["position reduced", "position closed", "expired"], events
    assert "cover_released" in events[6:]
    with Session(world.db) as s:
        ended = s.get(Policy, policy.id)
    assert ended is not None and ended.status == "expired" and ended.end_at < policy.end_at
    crash(world)  # after the closing: no claim on cover that ended
    assert world.claims.run().opened == []


def test_a_position_the_exchange_liquidated_is_left_to_the_claims(
    world: World, exchange: DemoExchange, linked
) -> None:
    accounts, _, account, position = linked
    world.ins.accounts = accounts
    policy = buy_on(world, position.id)
    exchange.set_mark("BTCUSDT", 1.0)  # liquidated now, on the exchange
    accounts.sync(account.id)
    exchange.down = True
    assert world.ins.end_closed() == 0  # cannot tell how it closed: asked again later
    exchange.down = False
    assert world.ins.end_closed() == 0  # the exchange's record: a liquidation
    with Session(world.db) as s:
        assert s.get(Policy, policy.id).status == "active"  # type: ignore[union-attr]


def test_a_purchase_that_dies_before_paying_holds_the_positions_cover_and_is_paid_once(
    world: World, exchange: DemoExchange, linked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies right after the pending policy is written: its cover still counts
    against the position's margin (a second purchase cannot take it), and the restart's
    reconciliation activates it once, charging the premium once."""
    from bti_core.policies.purchase import Purchases
    from tests.crashes import dies_at

    _, _, _, position = linked
    margin = (position.size * position.entry_price / position.leverage).quantize(Decimal("0.01"))
    q = world.ins.quote_position(
        user_id="ada", position_id=position.id, cover=Cover(coverage=str(margin), duration_hours=48)
    )
    wallet = world.ins.wallet_of("ada").address
    before = world.chain.balance(wallet)
    with dies_at(monkeypatch, Purchases, "_pay"):
        world.ins.buy(user_id="ada", quote_id=q.record.id)
    again = world.ins.quote_position(
        user_id="ada", position_id=position.id, cover=Cover(coverage="10", duration_hours=48)
    )
    assert [c.name for c in again.failed] == ["position_cover"]  # the pending one holds it
    assert len(world.ins.reconcile().activated) == 1
    assert world.ins.reconcile().activated == []
    [policy] = world.ins.policies("ada").itertuples()
    assert policy.status == "active" and policy.linked_position == position.id
    assert world.chain.balance(wallet) == before - Decimal(str(policy.premium))


@pytest.mark.both_databases
def test_a_partial_liquidation_pays_its_share_and_the_rest_stays_covered(
    world: World, exchange: DemoExchange, linked
) -> None:
    """The exchange takes 0.04 of the insured 0.1 and leaves 0.06 open: the claim pays the
    share, the cover goes on for the rest (on-chain: the same policy, its cover lowered under
    the rest's terms); when the rest is liquidated later, its claim pays what was kept — and
    the two never exceed what the cover was bought for."""
    _, uid, _, position = linked
    policy = buy_on(world, position.id, "200")
    crash(world)
    at = int(CRASH_AT.timestamp() * 1000)
    exchange.liquidate_part(uid, "BTCUSDT", "long", "0.04", at_ms=at)
    world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.PAID.value, claim.checks
    part = claim.evidence["part"]
    assert (Decimal(part["liquidated"]), Decimal(part["rest"])) == (
        Decimal("0.04"),
        Decimal("0.06"),
    )
    share = (policy.margin * Decimal("0.4")).quantize(Decimal("0.01"))
    assert claim.amount_approved == min(policy.payout, share)
    with Session(world.db) as s:
        rest = s.exec(
            select(Policy).where(Policy.position_id == position.id, Policy.id != policy.id)
        ).one()
        first = s.get(Policy, policy.id)
    assert first is not None and first.status == "paid"
    assert rest.status == "active" and rest.quantity == Decimal("0.06")
    assert rest.chain_policy_id == policy.chain_policy_id and rest.premium == 0
    assert rest.payout == Decimal(part["kept"]) > 0
    assert claim.amount_approved + rest.payout <= policy.payout
    on_chain = world.chain.policy(policy.chain_policy_id or 0)
    assert (on_chain.status, on_chain.coverage, on_chain.paid) == (
        OnChainStatus.ACTIVE,
        rest.payout,
        claim.amount_approved,
    )
    assert on_chain.terms_hash == rest.terms_hash
    assert [e.event for e in world.ins.events(policy.id or 0)][-1] == "continued"
    # the mark falls on through the rest's liquidation price: the rest's claim opens and waits
    # for the exchange's record (the part already paid is not read again as the rest's)
    world.claims.exchange_wait = timedelta(days=2)
    assert len(world.claims.run().opened) == 1
    assert claim_of(world, rest).state == State.OPENED.value
    # the exchange liquidates the rest two hours later: its claim pays what was kept
    exchange.set_mark("BTCUSDT", 1.0, at_ms=at + 2 * 3600 * 1000)
    world.claims.run()
    second = claim_of(world, rest)
    assert second.state == State.PAID.value, [
        c["reason"] for c in second.checks if c["outcome"] != "pass"
    ]
    assert second.amount_approved == rest.payout
    on_chain = world.chain.policy(policy.chain_policy_id or 0)
    assert on_chain.status == OnChainStatus.PAID
    assert on_chain.paid == claim.amount_approved + rest.payout <= policy.payout
    assert len(claim_paid_events(world)) == 2


def test_a_part_whose_sender_died_after_the_chain_is_recorded_once_with_one_continuation(
    world: World, exchange: DemoExchange, linked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the pool paid the part, before it was recorded: the restart
    finds the payout by the claim's reference (the policy is still active: its earlier
    payouts are not this claim's), records it, and writes the rest's cover once."""
    _, uid, _, position = linked
    policy = buy_on(world, position.id, "200")
    crash(world)
    exchange.liquidate_part(uid, "BTCUSDT", "long", "0.04", at_ms=int(CRASH_AT.timestamp() * 1000))
    wallet = world.ins.wallet_of("ada").address
    before = world.chain.balance(wallet)
    with dies_at(monkeypatch, Payments, "confirm"):
        world.claims.run()
    claim = claim_of(world, policy)
    assert claim.state == State.PAYING.value
    again = ClaimsService(world.db, world.wh, world.chain)
    again.reconcile()
    again.reconcile()
    claim = claim_of(world, policy)
    assert claim.state == State.PAID.value and claim.amount_approved is not None
    assert world.chain.balance(wallet) == before + claim.amount_approved  # paid once
    with Session(world.db) as s:
        mine = s.exec(select(Policy).where(Policy.position_id == position.id)).all()
    assert sorted(p.status for p in mine) == ["active", "paid"]  # one continuation
    assert len(claim_paid_events(world)) == 1
