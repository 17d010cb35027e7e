"""The insurance pool's invariants, fuzzed against the real contract on anvil.

Hypothesis draws sequences of what providers, traders, the claims service and strangers can do
— deposits (from one wei up), withdrawal requests, cancellations and withdrawals, purchases,
single, partial (the cover kept for the rest) and batch payouts, open claims' reserves (booked, changed, released), releases, changes
(extend, raise, lower, cancel, with a charge and a refund), BTI sent straight to the pool, a pause, and the clock moving past
cooldowns, windows and expiries — from an empty pool. After every step, refused or not:

- the books: reserves = capital in + premiums − claims paid − capital out, and the pool's
  token balance is the reserves plus what was sent to it outside the books;
- total assets ≥ locked cover = the active policies' coverage;
- a payout is at most the policy's coverage; what a policy was paid and the cover it has left
  never exceed the cover it had (a part paid keeps the rest, under new terms); a policy is paid
  in full at most once, and every payout on-chain is a full one or a part;
- nobody may withdraw more than the free capital, nor more than their ready request is worth,
  nor before the cooldown is over;
- the open claims' reserves are the active policies' own (each at most its coverage; a paid
  or released policy holds none) and are netted out of the total assets;
- the share price falls only by a claim reserved or paid, or by unused premium given back when
  a cover is changed or cancelled (at most the premium that policy paid);
- no step mints shares from nothing: shares appear only by a deposit, at most
  ``assets · (supply + 1) / (reserves + 1)`` of them, and every share is a provider's or in
  the escrow of the requests (which holds exactly the requested shares);
- a refused step changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given
from hypothesis import strategies as st

from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode, free_port, rpc_call
from bti_core.chain.types import AmendmentTerms, OnChainStatus, QuoteTerms, terms_hash
from bti_core.chain.units import from_units, to_units
from bti_core.errors import ChainError
from tests.fuzz.conftest import cases, tally

COOLDOWN = 3600
PROVIDERS = 3
TRADERS = 2
_terms = count()

wei = st.integers(1, 10**6).map(lambda n: from_units(n))
bti = st.integers(1, 4000).map(Decimal)
big = st.integers(1000, 200_000).map(Decimal)
huge = st.just(Decimal(10**7))  # more than anyone has
#: a part of what a step could use (free cover, a holding, a request, a coverage): mostly
#: inside it, sometimes all of it or just over
part = st.one_of(
    st.sampled_from(["0.5", "0.99", "1", "0.001", "1.01", "1.2"]),
    st.decimals(Decimal("0.0001"), Decimal("1.2"), places=4).map(str),
).map(lambda f: ("part", Decimal(f)))
# (Hypothesis starts from the first branch of a `one_of` and the first of a `sampled_from`:
# the ordinary cases lead, the edges follow)
amount = st.one_of(part, part, part, wei, huge)
who = st.integers(0, PROVIDERS - 1)
policy = st.integers(0, 30)
DEPOSIT = st.tuples(st.just("deposit"), who, st.one_of(big, bti, big, wei, huge))
BUY = st.tuples(
    st.just("buy"),
    st.integers(0, TRADERS - 1),
    amount,
    st.one_of(wei, st.integers(1, 60).map(Decimal)),
    st.sampled_from([600, 3600, 86400]),
)
REQUEST = st.tuples(st.just("request"), who, st.one_of(st.none(), amount))
WITHDRAW = st.tuples(st.just("withdraw"), who, st.one_of(st.none(), amount))
WARP = st.tuples(st.just("warp"), st.sampled_from([COOLDOWN, 60, COOLDOWN, 2 * 86400, 8 * 86400]))
# a change to a policy: new coverage (a part of its own, or 0: cancel), a charge, a refund (a
# part of its premium), a later expiry
AMEND = st.tuples(
    st.just("amend"),
    policy,
    st.one_of(part, st.just(Decimal(0)), wei),
    st.one_of(st.just(Decimal(0)), wei, st.integers(1, 20).map(Decimal)),
    st.one_of(st.just(Decimal(0)), part),
    st.sampled_from([0, 600, 86400]),
)
# weighted towards the steps that build on each other (capital, cover, a request, time)
STEP = st.one_of(
    DEPOSIT,
    BUY,
    BUY,
    BUY,
    REQUEST,
    REQUEST,
    WITHDRAW,
    WITHDRAW,
    WARP,
    WARP,
    st.tuples(st.just("cancel"), who),
    st.tuples(st.just("pay"), policy, st.one_of(st.none(), amount)),
    st.tuples(st.just("pay_batch"), st.lists(policy, min_size=1, max_size=4)),
    st.tuples(st.just("pay_part"), policy, part, st.one_of(part, st.just(Decimal(0)))),
    st.tuples(
        st.just("reserve"),
        st.lists(st.tuples(policy, st.one_of(part, st.just(Decimal(0)))), min_size=1, max_size=3),
    ),
    st.tuples(st.just("release"), policy, st.booleans()),
    st.tuples(st.just("donate"), bti),
    st.tuples(st.just("pause_cycle"), who),
    AMEND,
)


READY = ("warp", COOLDOWN)
#: what one step of the story is: a single call, or the few calls that only mean something
#: together (a request and the cooldown it waits out; cover bought, then all of the capital
#: asked back and the clock moved on, which is where a withdrawal meets locked capital)
CHUNK = st.one_of(
    st.tuples(BUY, who, WITHDRAW).map(lambda t: [t[0], ("request", t[1], None), READY, t[2]]),
    STEP.map(lambda s: [s]),
    st.tuples(REQUEST, WITHDRAW).map(lambda t: [t[0], READY, t[1]]),
    st.tuples(BUY, AMEND, AMEND).map(list),
    # a claim reserved on new cover, then its payout, a change or a release tried
    st.tuples(BUY, st.sampled_from(["pay", "pay_part", "amend", "release"]), part).map(
        lambda t: [
            t[0],
            ("reserve", [(-1, t[2])]),
            {
                "pay": ("pay", -1, None),
                "pay_part": ("pay_part", -1, ("part", Decimal("0.4")), ("part", Decimal("0.5"))),
                "release": ("release", -1, False),
            }.get(t[1], ("amend", -1, Decimal(0), Decimal(0), Decimal(0), 0)),
        ]
    ),
    # a partial liquidation, another part, then the rest (or more than is left)
    st.tuples(BUY, part, part, st.one_of(st.none(), part)).map(
        lambda t: [
            t[0],
            ("pay_part", -1, t[1], t[2]),
            ("pay_part", -1, t[2], t[1]),
            ("pay", -1, t[3]),
        ]
    ),
    STEP.map(lambda s: [s]),
    STEP.map(lambda s: [s]),
)


@st.composite
def steps_of(draw: st.DrawFn) -> list[tuple]:
    """Capital from one to all providers first, a cover on part of it (so that the steps on
    policies have one to act on: without it, most stories' payouts, reserves and changes met
    an empty book), then a story of calls."""
    n = draw(st.integers(1, PROVIDERS))
    first = [draw(DEPOSIT.map(lambda d, i=i: (d[0], i, d[2]))) for i in range(n)]
    share = st.decimals(Decimal("0.01"), Decimal("0.5"), places=2).map(lambda f: ("part", f))
    cover = draw(BUY.map(lambda b: (b[0], b[1], draw(share), b[3], b[4])))
    story = draw(st.lists(CHUNK, min_size=2, max_size=10))
    return [*first, cover, *(s for chunk in story for s in chunk)]


def resolve(a: tuple | Decimal | None, base: Decimal) -> Decimal | None:
    """An amount: ``("part", f)`` of ``base`` (at least one wei), or as drawn."""
    if not isinstance(a, tuple):
        return a
    return max((base * a[1]).quantize(Decimal("1e-18")), Decimal("1e-18"))


@dataclass
class World:
    chain: ChainClient
    providers: list[LocalAccount]
    traders: list[LocalAccount]
    stranger: LocalAccount
    snapshot: str
    policies: list[int] = field(default_factory=list)
    donated: int = 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """An empty pool on its own node (the steps move its clock), funded accounts, a snapshot."""
    node = AnvilNode(Path(tmp_path_factory.mktemp("pool-fuzz")), port=free_port()).start()
    try:
        chain = ChainClient(node.url)
        chain.deploy(Decimal(0), withdrawal_cooldown=COOLDOWN)

        def funded(n: str) -> LocalAccount:
            w: LocalAccount = Account.create(n)
            chain.faucet(w.address, Decimal(1_000_000))
            chain.ensure_allowance(w, Decimal(1))
            return w

        providers = [funded(f"lp{i}") for i in range(PROVIDERS)]
        traders = [funded(f"t{i}") for i in range(TRADERS)]
        stranger = funded("stranger")
        yield World(chain, providers, traders, stranger, rpc_call(node.url, "evm_snapshot"))
    finally:
        node.stop(snapshot=False)


@dataclass(frozen=True)
class State:
    """Everything a step may change, read at one block."""

    reserves: int
    locked: int
    free: int
    capital_in: int
    capital_out: int
    premiums_in: int
    refunded: int
    claims_paid: int
    balance: int
    supply: int
    price: int
    escrow: int
    requested: int
    shares: tuple[int, ...]
    requests: tuple[tuple[int, int, int], ...]
    max_withdraw: tuple[int, ...]
    request_value: tuple[int, ...]
    reserved: int
    total_assets: int
    policies: tuple[tuple[int, int, int, int, int], ...]  # status, coverage, paid, premium, reserve
    now: int  # the block's time


def read(w: World) -> State:
    """Everything the invariants look at, read at one block in one JSON-RPC batch (call by
    call, it was two thirds of the suite's time)."""
    c = w.chain
    f = c.pool.functions
    block = c.w3.eth.get_block("latest")
    at = int(block["number"])
    pool = c.deployment.pool
    lps = [p.address for p in w.providers]
    n, k = len(lps), len(w.policies)
    first = [
        f.reserves(),
        f.lockedCoverage(),
        f.freeReserves(),
        f.capitalIn(),
        f.capitalOut(),
        f.premiumsIn(),
        f.premiumsRefunded(),
        f.claimsPaid(),
        c.token.functions.balanceOf(pool),
        f.totalSupply(),
        f.convertToAssets(10**18),
        f.balanceOf(pool),
        f.requestedShares(),
        f.claimsReserved(),
        f.totalAssets(),
        *(f.balanceOf(a) for a in lps),
        *(f.withdrawalRequest(a) for a in lps),
        *(f.maxWithdraw(a) for a in lps),
        *(f.policy(pid) for pid in w.policies),
    ]
    got = _batch(c, first, at)
    (reserves, locked, free, cap_in, cap_out, prem_in, refunded, paid, balance, supply) = got[:10]
    price, escrow, requested, reserved, total_assets = got[10:15]
    shares = tuple(got[15 : 15 + n])
    requests = tuple(tuple(int(x) for x in r) for r in got[15 + n : 15 + 2 * n])
    max_withdraw = tuple(got[15 + 2 * n : 15 + 3 * n])
    policies = tuple(
        (int(p[3]), int(p[4]), int(p[6]), int(p[5]), int(p[8]))
        for p in got[15 + 3 * n : 15 + 3 * n + k]
    )
    request_value = tuple(_batch(c, [f.previewRedeem(r[0]) for r in requests], at))
    return State(
        reserves=reserves,
        locked=locked,
        free=free,
        capital_in=cap_in,
        capital_out=cap_out,
        premiums_in=prem_in,
        refunded=refunded,
        claims_paid=paid,
        balance=balance,
        supply=supply,
        price=price,
        escrow=escrow,
        requested=requested,
        shares=shares,
        requests=requests,  # type: ignore[arg-type]
        max_withdraw=max_withdraw,
        request_value=request_value,
        reserved=reserved,
        total_assets=total_assets,
        policies=policies,
        now=int(block["timestamp"]),
    )


def _batch(c: ChainClient, calls: list[Any], at: int) -> list[Any]:
    """The calls' results at block ``at``, in one JSON-RPC batch."""
    with c.w3.batch_requests() as b:
        for fn in calls:
            b.add(fn.call(block_identifier=at))
        return list(b.execute())


def pick_provider(w: World, n: int, having: str) -> LocalAccount:
    """The ``n``-th provider (round) of those with shares or a request; with none, the ``n``-th
    of all (whose call is then refused)."""
    some = [p for p in w.providers if getattr(w.chain.provider(p.address), having) > 0]
    return some[n % len(some)] if some else w.providers[n]


def run(w: World, step: tuple) -> tuple[bool, bool]:
    """Do ``step``; (done, whether it meant to pay a claim)."""
    c = w.chain
    kind = step[0]
    pick = (
        w.policies[step[1] % len(w.policies)]
        if w.policies and kind in ("pay", "pay_part", "release", "amend")
        else 0
    )
    if kind in ("pay", "pay_part", "release", "pay_batch", "amend", "reserve") and not w.policies:
        return False, False
    if kind == "deposit":
        c.deposit(w.providers[step[1]], step[2])
    elif kind == "request":
        lp = pick_provider(w, step[1], "shares")
        c.request_withdrawal(lp, resolve(step[2], c.provider(lp.address).value))
    elif kind == "cancel":
        c.cancel_withdrawal(pick_provider(w, step[1], "requested"))
    elif kind == "withdraw":
        lp = pick_provider(w, step[1], "requested")
        c.withdraw(lp, resolve(step[2], c.provider(lp.address).requested_value))
    elif kind == "buy":
        now = int(c.w3.eth.get_block("latest")["timestamp"])
        cover = resolve(step[2], c.pool_stats().free + step[3])
        assert cover is not None
        q = QuoteTerms(terms_hash({"fuzz": next(_terms)}), cover, step[3], now + step[4], now + 300)
        w.policies.append(c.buy_policy(w.traders[step[1]], q).policy_id)
    elif kind == "pay":
        cover = c.policy(pick).coverage
        c.pay_claim(pick, resolve(step[2], cover) or cover, b"\x01" * 32)
        return True, True
    elif kind == "reserve":
        items = []
        for i, share in step[1]:
            pid = w.policies[i % len(w.policies)]
            items.append(
                (pid, resolve(share, c.policy(pid).coverage) if share != 0 else Decimal(0))
            )
        c.set_claim_reserves(items)  # type: ignore[arg-type]
    elif kind == "pay_part":  # a partial liquidation's share; the rest stays covered
        cover = c.policy(pick).coverage
        amount = resolve(step[2], cover)
        assert amount is not None
        keep = resolve(step[3], cover - amount) if step[3] != 0 and cover > amount else Decimal(0)
        c.pay_claim_part(
            pick, amount, keep or Decimal(0), terms_hash({"fuzz": next(_terms)}), b"\x03" * 32
        )
        return True, True
    elif kind == "pay_batch":
        ids = [w.policies[i % len(w.policies)] for i in step[1]]
        c.pay_claims([(p, c.policy(p).coverage, b"\x02" * 32) for p in ids])
        return True, True
    elif kind == "release":
        c.release_cover(pick, None if step[2] else w.stranger)
    elif kind == "donate":
        c.transact(
            c.token.functions.transfer(c.deployment.pool, to_units(step[1])), w.stranger, "donate"
        )
        w.donated += to_units(step[1])
    elif kind == "amend":
        p = c.policy(pick)
        holder = next(t for t in w.traders if t.address == p.owner)
        coverage = resolve(step[2], p.coverage) if step[2] != 0 else Decimal(0)
        assert coverage is not None
        now = int(c.w3.eth.get_block("latest")["timestamp"])
        c.amend_policy(
            holder,
            AmendmentTerms(
                pick,
                bytes.fromhex(p.terms_hash.removeprefix("0x")),
                terms_hash({"fuzz": next(_terms)}),
                coverage,
                step[3],
                resolve(step[4], p.premium) if step[4] != 0 else Decimal(0),  # type: ignore[arg-type]
                p.expiry + step[5],
                now + 300,
            ),
        )
    elif kind == "pause_cycle":  # while paused, no capital moves and nothing may be withdrawn
        c.pause()
        try:
            assert c.pool.functions.maxWithdraw(w.providers[step[1]].address).call() == 0
            with pytest.raises(ChainError, match=r"paused|closed"):
                c.deposit(w.providers[step[1]], Decimal(1))
        finally:
            c.unpause()
    elif kind == "warp":
        rpc_call(c.url, "evm_increaseTime", [step[1]])
        rpc_call(c.url, "evm_mine")
    return True, False


def check(w: World, before: State, after: State, step: tuple, done: bool, paying: bool) -> None:
    s = after
    assert s.reserves == (s.capital_in + s.premiums_in - s.refunded - s.claims_paid - s.capital_out)
    assert s.balance == s.reserves + w.donated
    active = sum(cov for st_, cov, *_ in s.policies if st_ == OnChainStatus.ACTIVE)
    assert s.locked == active <= s.reserves
    assert s.free == s.reserves - s.locked
    assert s.reserved == sum(p[4] for p in s.policies)
    assert s.total_assets == s.reserves - s.reserved
    for status, cov, paid, _, reserve in s.policies:
        assert reserve <= cov  # a reserve is at most the cover
        assert status != OnChainStatus.PAID or paid > 0
        assert reserve == 0 or status == OnChainStatus.ACTIVE
    for old, new in zip(before.policies, s.policies, strict=False):
        if old[0] != OnChainStatus.ACTIVE:
            assert new == old  # paid or released: final, never paid again
        elif step[0] != "amend":  # paid + cover left never grows but by a change
            assert new[2] + (new[1] if new[0] == OnChainStatus.ACTIVE else 0) <= old[2] + old[1]
    for mw, rv in zip(s.max_withdraw, s.request_value, strict=True):
        assert mw <= s.free and mw <= rv
    for mw, (shares, ready_at, expires_at) in zip(s.max_withdraw, s.requests, strict=True):
        assert mw == 0 or (shares > 0 and ready_at <= s.now < expires_at)
    if s.capital_out > before.capital_out:  # only by a request ready at that block
        assert step[0] == "withdraw"
        assert any(r[0] and r[1] <= s.now < r[2] for r in before.requests)
    assert s.escrow == s.requested == sum(r[0] for r in s.requests)
    assert sum(s.shares) + s.escrow == s.supply
    if s.price < before.price:  # only a claim reserved or paid, or unused premium given back
        paid = paying and s.claims_paid > before.claims_paid
        reserved = step[0] == "reserve" and s.reserved > before.reserved
        assert paid or reserved or s.refunded > before.refunded, f"price fell on {step}"
    assert s.refunded - before.refunded <= s.premiums_in - before.premiums_in + sum(
        o[3] for o in before.policies
    )  # a refund is at most the premium its policy paid
    if s.supply > before.supply:
        assert step[0] == "deposit" and done
        minted = s.supply - before.supply
        assert s.reserves - before.reserves == to_units(step[2])
        assert minted * (before.reserves + 1) <= to_units(step[2]) * (before.supply + 1)


@cases(60)
@given(steps=steps_of())
def test_random_calls_keep_the_pools_invariants(world: World, steps: list[tuple]) -> None:
    w = world
    w.policies.clear()
    w.donated = 0
    try:
        before = read(w)
        for step in steps:
            try:
                done, paying = run(w, step)
            except ChainError:
                tally("Pool: a call on anvil", "refused")
                assert read(w) == before, f"the refused {step} changed the pool"
                continue
            tally("Pool: a call on anvil", "accepted" if done else "refused")
            after = read(w)
            check(w, before, after, step, done, paying)
            before = after
        ev = w.chain.pool.events
        start = w.chain.deployment.block
        paid = Counter(
            int(lg["args"]["policyId"]) for lg in ev.ClaimPaid().get_logs(from_block=start)
        )
        parts = Counter(
            int(lg["args"]["policyId"]) for lg in ev.CoverReduced().get_logs(from_block=start)
        )
        for pid in w.policies:  # each payout a part or the one full payment of a paid policy
            full = int(w.chain.policy(pid).status == OnChainStatus.PAID)
            assert paid[pid] == parts[pid] + full, (pid, paid[pid], parts[pid], full)
    finally:
        rpc_call(w.chain.url, "evm_revert", [w.snapshot])
        w.snapshot = rpc_call(w.chain.url, "evm_snapshot")
