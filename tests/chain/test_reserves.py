"""Open claims' reserves in the pool (`setClaimReserves`): a claim that waits is netted out of
the share price, so a provider who leaves before it is paid leaves with their part of it;
a reserve is set, not added (sent twice, it is booked once), released by a denial or the
payout, and blocks changing or publicly releasing the cover while it stands."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bti_core.capital import CapitalService
from bti_core.chain.client import ChainClient
from bti_core.chain.types import AmendmentTerms, OnChainStatus
from bti_core.chain.units import from_units, to_units
from bti_core.errors import ChainError
from tests.chain.test_pool import buy, fresh_terms, funded, warp


def test_a_provider_who_leaves_while_a_claim_waits_bears_their_share_of_it(
    chain: ChainClient,
) -> None:
    """Without the reserve the provider below left with half the pool at the price before the
    claim, and the claim was then paid from the half that stayed."""
    seed = chain.pool_stats().reserves
    lp = funded(chain, "lp", str(seed))
    chain.deposit(lp, seed)  # half the pool
    trader = funded(chain, "trader", "10000")
    pid = buy(chain, trader, coverage="200000", premium="2000")
    chain.request_withdrawal(lp)
    warp(chain, chain.provider(lp.address).cooldown)  # ready: a crash starts now
    price = chain.share_price()
    chain.set_claim_reserves([(pid, Decimal(200000))])
    stats = chain.pool_stats()
    assert stats.claims_reserved == Decimal(200000) and stats.reserves == 2 * seed + 2000
    assert chain.share_price() < price
    _, got = chain.withdraw(lp)  # before the claim is paid
    assert got == (2 * seed + 2000 - 200000) / 2  # half of what the claim will leave
    chain.pay_claim(pid, Decimal(200000), b"\x01" * 32)
    after = chain.pool_stats()
    assert after.claims_reserved == 0 and after.reserves == got  # the other half: the admin's


def test_a_reserve_is_set_not_added_and_a_denial_gives_the_price_back(chain: ChainClient) -> None:
    trader = funded(chain, "trader", "1000")
    pid = buy(chain, trader, coverage="300", premium="5")
    price = chain.share_price()
    for _ in range(2):  # sent again after a crash: booked once
        chain.set_claim_reserves([(pid, Decimal(300))])
    assert chain.pool_stats().claims_reserved == 300
    assert chain.policy(pid).reserved == 300
    chain.set_claim_reserves([(pid, Decimal(120))])  # an underwriter's adjusted amount
    assert chain.pool_stats().claims_reserved == 120
    chain.set_claim_reserves([(pid, Decimal(0))])  # denied
    assert chain.pool_stats().claims_reserved == 0 and chain.share_price() == price
    with pytest.raises(ChainError, match=r"claim reserve of 301\.00 BTI on policy .* above its"):
        chain.set_claim_reserves([(pid, Decimal(301))])
    with pytest.raises(ChainError, match="no policy 999999 on-chain"):
        chain.set_claim_reserves([(999_999, Decimal(1))])
    with pytest.raises(ChainError, match="lacks the role this call needs"):
        chain.transact(
            chain.pool.functions.setClaimReserves([pid], [to_units(Decimal(1))]),
            trader,
            "reserve",
        )
    assert chain.pool_stats().claims_reserved == 0


def test_a_paid_claim_releases_its_reserve_and_a_paid_policy_is_skipped(
    chain: ChainClient,
) -> None:
    trader = funded(chain, "trader", "1000")
    a, b = (buy(chain, trader, coverage="300", premium="5") for _ in range(2))
    chain.set_claim_reserves([(a, Decimal(300)), (b, Decimal(200))])
    assert chain.pool_stats().claims_reserved == 500
    chain.pay_claim(a, Decimal(250), b"\x02" * 32)  # paid below its reserve
    assert chain.pool_stats().claims_reserved == 200
    chain.set_claim_reserves([(a, Decimal(300))])  # paid: skipped, nothing booked
    assert chain.pool_stats().claims_reserved == 200 and chain.policy(a).reserved == 0


def test_an_open_claim_blocks_changing_or_publicly_releasing_the_cover(
    chain: ChainClient,
) -> None:
    trader = funded(chain, "trader", "1000")
    pid = buy(chain, trader, coverage="300", premium="5", expiry_in=3600)
    chain.set_claim_reserves([(pid, Decimal(300))])
    on = chain.policy(pid)
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    cancel = AmendmentTerms(
        policy_id=pid,
        from_terms=bytes.fromhex(on.terms_hash[2:]),
        terms=fresh_terms(),
        coverage=Decimal(0),
        charge=Decimal(0),
        refund=Decimal(1),
        expiry=on.expiry,
        deadline=now + 300,
    )
    with pytest.raises(ChainError, match="has a claim open"):
        chain.amend_policy(trader, cancel)
    warp(chain, 3600 + 7 * 86400 + 1)  # past the grace: anyone could release an unclaimed one
    with pytest.raises(ChainError, match="has a claim open"):
        chain.release_cover(pid, sender=trader)
    chain.release_cover(pid)  # the claims service may: it released the claim (final denial)
    assert chain.pool_stats().claims_reserved == 0


def test_the_history_follows_reserves_at_every_block(chain: ChainClient) -> None:
    trader = funded(chain, "trader", "1000")
    svc = CapitalService(chain, {"trader": trader}.__getitem__)
    a, b = (buy(chain, trader, coverage="300", premium="5") for _ in range(2))
    chain.set_claim_reserves([(a, Decimal(300))])
    chain.set_claim_reserves([(b, Decimal(200))])
    chain.set_claim_reserves([(b, Decimal(0))])
    chain.pay_claim(a, Decimal(300), b"\x03" * 32)
    h = svc.history()
    assert [p.kind for p in h][-6:] == [
        "premium",
        "premium",
        "reserve",
        "reserve",
        "release",
        "claim",
    ]
    assert [p.amount for p in h][-4:] == [Decimal(300), Decimal(200), Decimal(200), Decimal(300)]
    for p in h[-4:]:
        on_chain = chain.pool.functions.convertToAssets(10**18).call(block_identifier=p.block)
        assert p.price == from_units(on_chain)
    assert h[-3].price < h[-4].price < h[-5].price  # an opened claim lowers the price
    assert h[-2].price > h[-3].price  # a released reserve gives it back
    assert h[-1].price == h[-4].price  # paid as reserved: no second fall


def test_a_part_paid_keeps_the_rest_of_the_cover_and_is_never_paid_twice(
    chain: ChainClient,
) -> None:
    """A partial liquidation's share is paid and the rest stays covered under new terms; the
    same part sent again after a crash is refused, and paid plus kept never exceeds the cover."""
    trader = funded(chain, "trader", "1000")
    pid = buy(chain, trader, coverage="300", premium="5")
    locked = chain.pool_stats().locked
    before = chain.balance(trader.address)
    chain.set_claim_reserves([(pid, Decimal(120))])
    terms = fresh_terms()
    chain.pay_claim_part(pid, Decimal(120), Decimal(180), terms, b"\x04" * 32)
    p = chain.policy(pid)
    assert (p.status, p.coverage, p.paid, p.reserved) == (OnChainStatus.ACTIVE, 180, 120, 0)
    assert p.terms_hash == "0x" + terms.hex()
    assert chain.balance(trader.address) == before + 120
    stats = chain.pool_stats()
    assert stats.locked == locked - 120 and stats.claims_reserved == 0
    with pytest.raises(ChainError, match="already bought as policy"):  # sent again: refused
        chain.pay_claim_part(pid, Decimal(120), Decimal(60), terms, b"\x04" * 32)
    with pytest.raises(ChainError, match="above the policy's coverage"):
        chain.pay_claim_part(pid, Decimal(100), Decimal(81), fresh_terms(), b"\x05" * 32)
    chain.pay_claim(pid, Decimal(180), b"\x06" * 32)  # the rest, liquidated later
    p = chain.policy(pid)
    assert (p.status, p.paid) == (OnChainStatus.PAID, 300)
    assert chain.balance(trader.address) == before + 300
