"""The claims service books a waiting claim's reserve in the pool (`claims.reserves`): a
referred claim is reserved, a denial releases it, an appeal books it again, the payout
clears it; a process that dies between the chain and the database books it once; a refused
reserve holds no other claim's up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlmodel import Session, select

from bti_core.auth import User
from bti_core.claims.reserves import Reserves
from bti_core.db.models import Claim
from tests.crashes import dies_at
from tests.worlds import UNDERWRITER, World, buy, crash


def _reserved(w: World, cid: int) -> Decimal | None:
    with Session(w.db) as s:
        c = s.get(Claim, cid)
        assert c is not None
        return c.reserved


def test_a_waiting_claim_is_reserved_until_it_is_decided_and_paid(world: World) -> None:
    w = world
    p = buy(w, "ivy", leverage="20", coverage="140")
    w.claims.auto_limit = Decimal(100)  # referred: it waits for an underwriter
    crash(w)
    (cid,) = w.claims.run().referred
    assert w.chain.pool_stats().claims_reserved == 0  # not yet: the worker's next duty
    price = w.chain.share_price()
    assert w.claims.reserves.sync() == 1
    assert w.chain.pool_stats().claims_reserved == p.payout
    assert w.chain.policy(p.chain_policy_id or 0).reserved == p.payout
    assert _reserved(w, cid) == p.payout
    assert w.chain.share_price() < price
    assert w.claims.reserves.sync() == 0  # nothing differs: nothing sent

    w.claims.decide(cid, UNDERWRITER, "deny", "closed before the fall")
    assert w.claims.reserves.sync() == 1
    assert w.chain.pool_stats().claims_reserved == 0 and _reserved(w, cid) is None
    assert w.chain.share_price() == price

    w.claims.appeal(cid, User("ivy", "Ivy", "trader"), "the exchange liquidated me")
    w.claims.reserves.sync()
    assert w.chain.pool_stats().claims_reserved == p.payout
    paid = w.claims.decide(cid, UNDERWRITER, "adjust", "half, goodwill", Decimal(60))
    assert paid.state == "paid"
    assert w.chain.pool_stats().claims_reserved == 0  # the payout released it
    assert w.claims.reserves.sync() == 0  # a paid claim is never reserved again


def test_a_sync_that_dies_after_the_chain_books_the_reserve_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    p = buy(w, "jay", leverage="20", coverage="140")
    w.claims.auto_limit = Decimal(100)
    crash(w)
    (cid,) = w.claims.run().referred
    with dies_at(monkeypatch, Reserves, "_record"):
        w.claims.reserves.sync()
    assert w.chain.pool_stats().claims_reserved == p.payout  # on-chain, not recorded
    assert _reserved(w, cid) is None
    again = Reserves(w.db, w.chain)  # the restart
    assert again.sync() == 1  # sent again: set, not added
    assert w.chain.pool_stats().claims_reserved == p.payout
    assert _reserved(w, cid) == p.payout


def test_a_refused_reserve_holds_no_other_claim_up(world: World) -> None:
    """A claim whose recorded payout is above its on-chain cover (a row edited by hand) is
    refused by the pool; the batch is sent claim by claim and the other one is booked."""
    w = world
    a = buy(w, "kim", leverage="20", coverage="140")
    b = buy(w, "lou", leverage="20", coverage="140")
    w.claims.auto_limit = Decimal(100)
    crash(w)
    w.claims.run()
    with Session(w.db) as s:
        bad = s.exec(select(Claim).where(Claim.policy_id == a.id)).one()
        bad.amount_claimed = a.payout * 10
        s.add(bad)
        s.commit()
        bad_id = bad.id or 0
    assert w.claims.reserves.sync() == 1
    assert w.chain.pool_stats().claims_reserved == b.payout
    assert _reserved(w, bad_id) is None  # tried again next round
