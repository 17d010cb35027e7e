"""Changing a policy on-chain (`InsurancePool.amendPolicy`): extend, raise and cancel as the
quoter priced them, by the policy token's holder only, once, and the pool's books after each."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from eth_account import Account

from bti_core.capital import CapitalService
from bti_core.chain.client import ChainClient
from bti_core.chain.types import AmendmentTerms, OnChainStatus
from bti_core.chain.units import from_units
from bti_core.errors import ChainError
from tests.chain.test_pool import buy, fresh_terms, funded, warp


def books(chain: ChainClient) -> None:
    s = chain.pool_stats()
    assert s.reserves == (
        s.capital_in + s.premiums_in - s.claims_paid - s.capital_out - s.premiums_refunded
    )
    assert s.reserves == chain.balance(chain.deployment.pool)


def change(chain: ChainClient, pid: int, **kw: object) -> AmendmentTerms:
    p = chain.policy(pid)
    now = int(time.time())
    values: dict[str, object] = {
        "policy_id": pid,
        "from_terms": bytes.fromhex(p.terms_hash.removeprefix("0x")),
        "terms": fresh_terms(),
        "coverage": p.coverage,
        "charge": Decimal(0),
        "refund": Decimal(0),
        "expiry": p.expiry,
        "deadline": now + 300,
    }
    values.update(kw)
    return AmendmentTerms(**values)  # type: ignore[arg-type]


def test_extend_raise_and_cancel_move_the_cover_and_the_premium(chain: ChainClient) -> None:
    w = funded(chain, "holder")
    start = chain.w3.eth.block_number
    pid = buy(chain, w, coverage="100", premium="5")
    before = chain.pool_stats()
    first = chain.policy(pid)

    longer = change(chain, pid, expiry=first.expiry + 3600, charge=Decimal(3))
    chain.amend_policy(w, longer)
    p = chain.policy(pid)
    assert (p.expiry, p.coverage, p.premium) == (first.expiry + 3600, 100, 8)
    assert p.terms_hash == "0x" + longer.terms.hex()
    s = chain.pool_stats()
    assert (s.premiums_in, s.locked) == (before.premiums_in + 3, before.locked)
    books(chain)
    # the same change again is priced on terms the policy no longer has: refused, no charge
    with pytest.raises(ChainError, match="changed since this change was priced"):
        chain.amend_policy(w, longer)
    assert chain.balance(w.address) == Decimal(992)

    chain.amend_policy(w, change(chain, pid, coverage=Decimal(150), charge=Decimal(2)))
    assert chain.policy(pid).coverage == 150
    assert chain.pool_stats().locked == before.locked + 50
    books(chain)

    chain.amend_policy(w, change(chain, pid, coverage=Decimal(0), refund=Decimal(4)))
    p = chain.policy(pid)
    assert p.status == OnChainStatus.RELEASED and p.premium == 6  # 5 + 3 + 2 − 4
    s = chain.pool_stats()
    assert s.locked == before.locked - 100 and s.premiums_refunded == 4
    assert chain.balance(w.address) == Decimal(994)
    books(chain)
    with pytest.raises(ChainError, match="not active"):  # a cancelled policy pays nothing
        chain.pay_claim(pid, Decimal(1), b"\x01" * 32)
    # the providers' share price follows each change: the contract's own price at each block
    h = [p for p in CapitalService(chain, lambda _: w).history() if p.block > start]
    assert [(p.kind, p.amount) for p in h] == [
        ("premium", 5),
        ("premium", 3),
        ("premium", 2),
        ("refund", 4),
    ]
    for p in h:
        on_chain = chain.pool.functions.convertToAssets(10**18).call(block_identifier=p.block)
        assert p.price.quantize(Decimal("1e-18"), rounding="ROUND_FLOOR") == from_units(on_chain)
    assert h[-1].price < h[-2].price  # a refund lowers it


def test_only_the_holder_changes_and_only_as_priced(chain: ChainClient) -> None:
    w, heir = funded(chain, "holder"), funded(chain, "heir", "100")
    pid = buy(chain, w, coverage="100", premium="5")
    chain.transact(
        chain.policy_token.functions.transferFrom(w.address, heir.address, pid), w, "transfer"
    )
    with pytest.raises(ChainError, match="only its holder may change or cancel it"):
        chain.amend_policy(w, change(chain, pid, coverage=Decimal(0), refund=Decimal(1)))
    with pytest.raises(ChainError, match=r"above the 5\.00 BTI premium paid"):
        chain.amend_policy(heir, change(chain, pid, coverage=Decimal(0), refund=Decimal(6)))
    free = chain.pool_stats().free  # a raise may use it, its own cover and what it pays
    with pytest.raises(ChainError, match="pool capacity exhausted"):
        chain.amend_policy(heir, change(chain, pid, coverage=free + 102, charge=Decimal(1)))
    with pytest.raises(ChainError, match="deadline passed"):
        chain.amend_policy(heir, change(chain, pid, deadline=int(time.time()) - 1))
    # a change the quoter did not sign
    forged = change(chain, pid, coverage=Decimal(0), refund=Decimal(5))
    real_quoter = chain.quoter
    chain.quoter = Account.create("not the quoter")
    try:
        with pytest.raises(ChainError, match="not signed by BTI's quoter"):
            chain.amend_policy(heir, forged)
    finally:
        chain.quoter = real_quoter
    assert chain.policy(pid).status == OnChainStatus.ACTIVE
    chain.amend_policy(heir, change(chain, pid, coverage=Decimal(0), refund=Decimal(5)))
    assert chain.balance(heir.address) == Decimal(105)  # the refund goes to the holder
    books(chain)


def test_an_ended_policy_cannot_be_changed(chain: ChainClient) -> None:
    w = funded(chain, "holder")
    pid = buy(chain, w, coverage="100", premium="5", expiry_in=600)
    late = change(chain, pid, expiry=int(time.time()) + 7200, charge=Decimal(1), deadline=2**40)
    warp(chain, 700)
    with pytest.raises(ChainError, match=r"ended at .*renew it as a new cover"):
        chain.amend_policy(w, late)
    assert from_units(chain.pool.functions.premiumsRefunded().call()) == 0
