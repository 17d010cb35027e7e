"""InsurancePool, BTIToken and BTIPolicy through web3 against a real anvil node."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal
from itertools import count
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bti_core.chain.artifacts import artifact
from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode, free_port, rpc_call
from bti_core.chain.types import DecodedEvent, OnChainStatus, QuoteTerms, terms_hash
from bti_core.chain.units import to_units
from bti_core.errors import ChainError

ROOT = Path(__file__).resolve().parents[2]
_terms = count()


def fresh_terms() -> bytes:
    return terms_hash({"test": next(_terms), "at": time.time()})


def funded(chain: ChainClient, name: str, bti: str = "1000") -> LocalAccount:
    w: LocalAccount = Account.create()
    chain.faucet(w.address, Decimal(bti))
    return w


def buy(
    chain: ChainClient,
    w: LocalAccount,
    *,
    coverage: str = "100",
    premium: str = "5",
    terms: bytes | None = None,
    expiry_in: int = 3600,
    deadline_in: int = 300,
) -> int:
    now = int(time.time())
    q = QuoteTerms(
        terms or fresh_terms(),
        Decimal(coverage),
        Decimal(premium),
        expiry=now + expiry_in,
        deadline=now + deadline_in,
    )
    return chain.buy_policy(w, q).policy_id


def test_committed_artifacts_match_the_sources() -> None:
    """Recompiles with the pinned solc; fails when contracts/out is stale."""
    r = subprocess.run(
        ["node", "compile.js", "--check"], cwd=ROOT / "contracts", capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "up to date" in r.stdout


def test_buy_takes_the_premium_locks_cover_and_mints_the_policy_token(chain: ChainClient) -> None:
    w = funded(chain, "buyer")
    before = chain.pool_stats()
    pid = buy(chain, w, coverage="250", premium="12.5")
    p = chain.policy(pid)
    assert (p.buyer, p.owner, p.status) == (w.address, w.address, OnChainStatus.ACTIVE)
    assert (p.coverage, p.premium, p.paid) == (Decimal(250), Decimal("12.5"), Decimal(0))
    assert chain.balance(w.address) == Decimal("987.5")
    after = chain.pool_stats()
    assert after.reserves - before.reserves == Decimal("12.5")
    assert after.locked - before.locked == Decimal(250)
    assert after.policies == before.policies + 1
    names = [e.name for e in chain.events() if isinstance(e, DecodedEvent)]
    assert "PolicyPurchased" in names
    # the policy NFT's Transfer (3 indexed args) is told apart from the premium's ERC-20 one
    nft = [
        e
        for e in chain.events()
        if isinstance(e, DecodedEvent) and e.name == "Transfer" and e.contract == "BTIPolicy"
    ]
    assert nft[-1].args["tokenId"] == pid


def test_the_same_terms_are_never_bought_twice(chain: ChainClient) -> None:
    w = funded(chain, "twice")
    terms = fresh_terms()
    pid = buy(chain, w, terms=terms)
    left = chain.balance(w.address)
    with pytest.raises(ChainError, match=f"already bought as policy {pid}") as e:
        buy(chain, w, terms=terms)
    assert e.value.reason == "InsurancePoolPolicyExists"
    assert chain.balance(w.address) == left
    assert chain.purchase_of(terms) is not None
    assert chain.purchase_of(fresh_terms()) is None


def test_a_quote_not_signed_by_the_quoter_is_refused(chain: ChainClient) -> None:
    w = funded(chain, "forger")
    forger = ChainClient(chain.url, chain.deployment, quoter_key=Account.create().key.hex())
    with pytest.raises(ChainError, match="not signed by BTI's quoter") as e:
        buy(forger, w)
    assert e.value.reason == "InsurancePoolBadQuoteSignature"


def test_a_quote_for_someone_else_or_past_its_deadline_is_refused(chain: ChainClient) -> None:
    w, other = funded(chain, "a"), funded(chain, "b")
    now = int(time.time())
    quote = {
        "holder": other.address,
        "termsHash": fresh_terms(),
        "coverage": to_units(Decimal(10)),
        "premium": to_units(Decimal(1)),
        "expiry": now + 3600,
        "deadline": now + 300,
    }
    chain.ensure_allowance(w, Decimal(1))
    sig = chain.sign_quote(quote)
    call = chain.pool.functions.buyPolicy(tuple(quote.values()), sig)
    with pytest.raises(ChainError, match="the quote is for"):
        chain.transact(call, w, "buy policy")
    with pytest.raises(ChainError, match="deadline passed") as e:
        buy(chain, w, deadline_in=-10)
    assert e.value.reason == "InsurancePoolQuoteExpired"


def test_too_few_bti_and_too_little_capacity_give_clear_errors(chain: ChainClient) -> None:
    poor = funded(chain, "poor", "3")
    with pytest.raises(ChainError, match=r"holds 3\.00 BTI; 5\.00 BTI needed \(get BTI"):
        buy(chain, poor, premium="5")
    w = funded(chain, "big")
    free = chain.pool_stats().free
    with pytest.raises(ChainError, match="pool capacity exhausted") as e:
        buy(chain, w, coverage=str(free + 100), premium="5")
    assert e.value.reason == "InsurancePoolInsufficientCapacity"
    assert chain.balance(w.address) == Decimal(1000)


def test_claims_are_paid_once_to_the_policy_tokens_owner(chain: ChainClient) -> None:
    w, heir = funded(chain, "holder"), funded(chain, "heir", "0.01")
    pid = buy(chain, w, coverage="100", premium="5")
    # the holder gives the policy away: the payout follows the token
    chain.transact(
        chain.policy_token.functions.transferFrom(w.address, heir.address, pid), w, "transfer"
    )
    before = chain.pool_stats()
    chain.pay_claim(pid, Decimal(80), b"\x01" * 32)
    assert chain.balance(heir.address) == Decimal("80.01")
    after = chain.pool_stats()
    assert after.reserves == before.reserves - 80
    assert after.locked == before.locked - 100  # a paid policy's cover is released
    assert chain.policy(pid).status == OnChainStatus.PAID
    with pytest.raises(ChainError, match="paid at most once") as e:
        chain.pay_claim(pid, Decimal(1), b"\x02" * 32)
    assert e.value.reason == "InsurancePoolPolicyNotActive"
    assert chain.balance(heir.address) == Decimal("80.01")


def test_a_batch_payout_pays_each_policy_once_and_skips_the_paid(chain: ChainClient) -> None:
    a, b, c = (funded(chain, n) for n in "abc")
    pa, pb, pc = (buy(chain, w, coverage="100", premium="5") for w in (a, b, c))
    chain.pay_claim(pa, Decimal(40), b"\x01" * 32)  # paid before: the batch skips it
    before = chain.pool_stats()
    bal = {w.address: chain.balance(w.address) for w in (a, b, c)}
    tx, paid = chain.pay_claims(
        [
            (pa, Decimal(100), b"\x02" * 32),
            (pb, Decimal(100), b"\x03" * 32),
            (pc, Decimal(60), b"\x04" * 32),
            (pb, Decimal(100), b"\x05" * 32),  # twice in one batch: paid once
        ]
    )
    assert paid == {pb, pc} and tx.startswith("0x")
    assert chain.balance(a.address) == bal[a.address]
    assert chain.balance(b.address) == bal[b.address] + 100
    assert chain.balance(c.address) == bal[c.address] + 60
    after = chain.pool_stats()
    assert after.reserves == before.reserves - 160 and after.locked == before.locked - 200
    skipped = [
        e for e in chain.events() if isinstance(e, DecodedEvent) and e.name == "ClaimSkipped"
    ]
    assert sorted(int(e.args["policyId"]) for e in skipped) == sorted([pa, pb])
    assert chain.claim_payment(pb) == (tx, Decimal(100))


def test_a_refused_claim_reverts_the_whole_batch(chain: ChainClient) -> None:
    a, b = funded(chain, "a"), funded(chain, "b")
    pa, pb = buy(chain, a, coverage="100"), buy(chain, b, coverage="100")
    bal = chain.balance(a.address)
    with pytest.raises(ChainError, match="above the policy's coverage"):
        chain.pay_claims([(pa, Decimal(100), b"\x01" * 32), (pb, Decimal(101), b"\x02" * 32)])
    assert chain.balance(a.address) == bal and chain.policy(pa).status == OnChainStatus.ACTIVE
    with pytest.raises(ChainError, match="no policy 999"):
        chain.pay_claims([(pa, Decimal(1), b"\x01" * 32), (999, Decimal(1), b"\x02" * 32)])
    with pytest.raises(ChainError, match="as many amounts"):
        chain.transact(
            chain.pool.functions.payClaims([pa, pb], [to_units(Decimal(1))], [b"\x01" * 32] * 2),
            chain.claims,
            "pay",
        )
    stranger = ChainClient(chain.url, chain.deployment, claims_key=a.key.hex())
    with pytest.raises(ChainError, match="lacks the role"):
        stranger.pay_claims([(pa, Decimal(1), b"\x01" * 32)])
    assert chain.policy(pa).status == OnChainStatus.ACTIVE


def test_payout_attacks_revert(chain: ChainClient) -> None:
    w = funded(chain, "victim")
    pid = buy(chain, w, coverage="100", premium="5")
    stranger = ChainClient(chain.url, chain.deployment, claims_key=w.key.hex())
    with pytest.raises(ChainError, match="lacks the role") as e:
        stranger.pay_claim(pid, Decimal(10), b"\x00" * 32)
    assert e.value.reason == "AccessControlUnauthorizedAccount"
    with pytest.raises(ChainError, match="above the policy's coverage"):
        chain.pay_claim(pid, Decimal("100.000000000000000001"), b"\x00" * 32)
    with pytest.raises(ChainError, match="no policy 999"):
        chain.pay_claim(999, Decimal(1), b"\x00" * 32)
    assert chain.policy(pid).status == OnChainStatus.ACTIVE


def test_capital_can_leave_only_when_not_locked_by_cover(anvil: AnvilNode) -> None:
    chain = ChainClient(anvil.url)
    chain.deploy(Decimal(0), withdrawal_cooldown=0)
    lp = funded(chain, "lp", "1000")
    chain.deposit(lp, Decimal(1000))
    trader = funded(chain, "trader")
    buy(chain, trader, coverage="900", premium="10")
    stats = chain.pool_stats()
    assert (stats.reserves, stats.locked, stats.free) == (Decimal(1010), Decimal(900), Decimal(110))
    assert chain.max_withdraw(lp.address) == 0  # nothing requested yet
    chain.request_withdrawal(lp)
    assert chain.max_withdraw(lp.address) == Decimal(110)
    with pytest.raises(ChainError, match="never capital backing active cover"):
        chain.withdraw(lp, Decimal(111))
    chain.withdraw(lp, Decimal(110))
    assert chain.balance(lp.address) == Decimal(110)
    assert chain.pool_stats().free == 0


def test_pause_stops_business_and_only_the_admin_may_pause(chain: ChainClient) -> None:
    w = funded(chain, "paused")
    intruder = ChainClient(chain.url, chain.deployment, admin_key=w.key.hex())
    with pytest.raises(ChainError, match="lacks the role"):
        intruder.pause()
    chain.pause()
    assert chain.pool_stats().paused
    with pytest.raises(ChainError, match="the pool is paused") as e:
        buy(chain, w)
    assert e.value.reason == "EnforcedPause"
    with pytest.raises(ChainError, match="deposits are closed"):
        chain.deposit(w, Decimal(1))
    chain.unpause()
    buy(chain, w)


@pytest.mark.parametrize(
    ("mode", "what"), [(1, "buy again"), (2, "request a withdrawal"), (3, "release cover")]
)
def test_reentrant_token_callbacks_are_refused(chain: ChainClient, mode: int, what: str) -> None:
    """A holder contract re-enters the pool from onERC721Received (mode 0 does not re-enter and
    succeeds, so the refusals are the guard's doing)."""
    art = artifact("ReentrantHolder")
    ctor = chain.w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(
        chain.deployment.pool
    )
    addr = chain.transact(ctor, chain.admin, "deploy attacker")["contractAddress"]
    attacker = chain.w3.eth.contract(address=addr, abi=art.abi)
    chain.faucet(addr, Decimal(100), gas=Decimal(0))

    def attack(m: int) -> None:
        now = int(time.time())
        q = {
            "holder": addr,
            "termsHash": fresh_terms(),
            "coverage": to_units(Decimal(10)),
            "premium": to_units(Decimal(1)),
            "expiry": now + 3600,
            "deadline": now + 300,
        }
        call = attacker.functions.attack(
            tuple(q.values()), chain.sign_quote(q), m, to_units(Decimal(5))
        )
        chain.transact(call, chain.admin, f"attack ({what})")

    before = chain.pool_stats()
    with pytest.raises(ChainError, match="re-entrant call refused"):
        attack(mode)
    assert chain.pool_stats() == before
    attack(0)
    assert chain.pool_stats().policies == before.policies + 1


def test_release_after_the_grace_period_is_open_to_anyone(tmp_path: Path) -> None:
    with AnvilNode(tmp_path, port=free_port()) as node:  # own node: this test moves time
        chain = ChainClient(node.url)
        chain.deploy(Decimal(1000))
        w = funded(chain, "late")
        pid = buy(chain, w, coverage="100", expiry_in=3600)
        anyone = ChainClient(node.url, chain.deployment, claims_key=w.key.hex())
        with pytest.raises(ChainError, match="only after") as e:
            anyone.release_cover(pid)
        assert e.value.reason == "InsurancePoolReleaseTooEarly"
        chain.w3.provider.make_request("evm_increaseTime", [3600 + 7 * 86400 + 1])  # type: ignore[arg-type]
        chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        anyone.release_cover(pid)
        assert chain.policy(pid).status == OnChainStatus.RELEASED
        assert chain.pool_stats().locked == 0
        with pytest.raises(ChainError, match="released, not active"):
            chain.pay_claim(pid, Decimal(1), b"\x00" * 32)


def test_node_down_is_a_clear_error() -> None:
    chain = ChainClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ChainError, match="is not answering"):
        _ = chain.chain_id


def test_a_restart_keeps_balances_and_policies_and_a_crash_keeps_the_last_snapshot(
    tmp_path: Path,
) -> None:
    node = AnvilNode(tmp_path, port=free_port()).start()
    try:
        chain = ChainClient(node.url, on_commit=node.snapshot)
        d = chain.deploy(Decimal(1000))
        w = funded(chain, "durable")
        pid = buy(chain, w, coverage="100", premium="7")
        node.stop()  # clean stop
        node.start()
        again = ChainClient(node.url, d)
        assert again.is_deployed()
        assert again.balance(w.address) == Decimal(993)
        assert again.policy(pid).coverage == Decimal(100)
        # a transaction after the last snapshot, then a crash: the snapshot is what survives
        again.faucet(w.address, Decimal(5), gas=Decimal(0))
        node.kill()
        node.start()
        assert ChainClient(node.url, d).balance(w.address) == Decimal(993)
    finally:
        node.stop(snapshot=False)


def test_refusals_are_types_decoded_from_the_abi(chain: ChainClient) -> None:
    """Every custom error of the contracts is its own `ContractRefusalError` subclass; a node
    that does not answer is a plain `ChainError`, never a refusal."""
    from bti_core.chain.artifacts import error_table, refusal_type
    from bti_core.errors import ContractRefusalError

    w = funded(chain, "typed")
    terms = fresh_terms()
    buy(chain, w, terms=terms)
    with pytest.raises(refusal_type("InsurancePoolPolicyExists")) as e:
        buy(chain, w, terms=terms)
    assert isinstance(e.value, ContractRefusalError) and isinstance(e.value, ChainError)
    assert e.value.details["policyId"] >= 1
    names = {err.name for err in error_table().values()}
    assert {
        "InsurancePoolInsufficientCapacity",
        "InsurancePoolPolicyNotActive",
        "ERC20InsufficientBalance",
    } <= names
    assert refusal_type("InsurancePoolPolicyExists") is refusal_type("InsurancePoolPolicyExists")
    with pytest.raises(KeyError, match="not a custom error"):
        refusal_type("NoSuchError")
    down = ChainClient(f"http://127.0.0.1:{free_port()}", chain.deployment)
    with pytest.raises(ChainError) as gone:
        down.balance(w.address)
    assert not isinstance(gone.value, ContractRefusalError)


def test_a_first_depositor_cannot_inflate_the_share_price_against_the_next(
    anvil: AnvilNode,
) -> None:
    """The ERC-4626 inflation attack: the first depositor puts in one wei, then sends a large
    amount of BTI straight to the pool so that the next deposit rounds to no shares. Here the
    pool values shares by its own books (`totalAssets` = reserves, which a plain transfer does
    not move) over OpenZeppelin's virtual share: the donation is lost to the attacker, the
    victim's shares are worth what the victim paid, and the attacker gains nothing."""
    chain = ChainClient(anvil.url)
    chain.deploy(Decimal(0), withdrawal_cooldown=0)
    attacker = funded(chain, "attacker", "100001")
    victim = funded(chain, "victim", "1000")
    wei = Decimal("1e-18")
    chain.deposit(attacker, wei)
    donation = chain.transact(
        chain.token.functions.transfer(chain.deployment.pool, to_units(Decimal(100_000))),
        attacker,
        "donate",
    )
    assert donation["status"] == 1
    assert chain.pool_stats().reserves == wei  # the books did not move

    chain.deposit(victim, Decimal(1000))
    assert chain.provider(victim.address).value == Decimal(1000)  # nothing rounded away
    assert chain.provider(attacker.address).value <= wei  # the donation bought nothing
    chain.request_withdrawal(victim)
    chain.withdraw(victim, Decimal(1000))
    assert chain.balance(victim.address) == Decimal(1000)


def warp(chain: ChainClient, seconds: int) -> None:
    """Move the node's clock on and mine a block there (the `chain` fixture sets it back)."""
    rpc_call(chain.url, "evm_increaseTime", [seconds])
    rpc_call(chain.url, "evm_mine")


def test_a_withdrawal_waits_out_the_cooldown_then_has_a_window(chain: ChainClient) -> None:
    """Request → cooling down (7 days) → ready (2 days) → lapsed; the requested shares sit in
    escrow meanwhile (they cannot be sent to another account), and every wrong step is refused
    with the reason and the time it may happen."""
    lp = funded(chain, "lp", "1000")
    chain.deposit(lp, Decimal(1000))
    with pytest.raises(ChainError, match="has no withdrawal request"):
        chain.withdraw(lp, Decimal(1))
    chain.request_withdrawal(lp, Decimal(600))
    p = chain.provider(lp.address)
    assert (p.request_state, p.requested_value, p.value) == ("cooling down", 600, 400)
    assert p.ready_at - p.now == p.cooldown == 7 * 24 * 3600
    assert p.expires_at - p.ready_at == p.window == 2 * 24 * 3600
    assert p.can_withdraw_now == 0
    with pytest.raises(ChainError, match="cooling down until 20"):
        chain.withdraw(lp)
    other = Account.create()
    chain.send_gas(lp.address, Decimal(1))
    with pytest.raises(ChainError, match=r"wallet .* holds 400\.00 BTI"):  # escrowed: not its own
        chain.transact(
            chain.pool.functions.transfer(other.address, to_units(Decimal(401))), lp, "move"
        )

    warp(chain, p.cooldown)
    p = chain.provider(lp.address)
    assert (p.request_state, p.can_withdraw_now) == ("ready", Decimal(600))
    with pytest.raises(ChainError, match=r"above what .* may withdraw now"):
        chain.withdraw(lp, Decimal(601))
    _, got = chain.withdraw(lp, Decimal(250))
    assert got == 250 and chain.provider(lp.address).requested_value == 350

    warp(chain, p.window)
    assert chain.provider(lp.address).request_state == "lapsed"
    with pytest.raises(ChainError, match=r"lapsed at .* cancel it or request again"):
        chain.withdraw(lp)
    chain.cancel_withdrawal(lp)
    p = chain.provider(lp.address)
    assert (p.request_state, p.value, p.requested) == ("none", 750, 0)
    with pytest.raises(ChainError, match="has no withdrawal request"):
        chain.cancel_withdrawal(lp)
    with pytest.raises(ChainError, match=r"above the 750\.00 BTI"):
        chain.request_withdrawal(lp, Decimal(751))


def test_claims_paid_while_a_withdrawal_waits_come_first(chain: ChainClient) -> None:
    """A provider who asks to leave when a crash starts still bears its claims: the claim is
    paid in full from the cover it locked, and the request is taken at the share price after
    it. A second request made later restarts the clock for all pending shares."""
    seed = chain.pool_stats().reserves  # the session pool's own capital (the admin's)
    lp = funded(chain, "lp", str(seed))
    chain.deposit(lp, seed)  # half the pool
    trader = funded(chain, "trader", "10000")
    pid = buy(chain, trader, coverage="200000", premium="2000")
    chain.request_withdrawal(lp)
    chain.pay_claim(pid, Decimal(200000), b"\x01" * 32)
    assert chain.balance(trader.address) == Decimal(10000 - 2000 + 200000)
    warp(chain, chain.provider(lp.address).cooldown)
    _, got = chain.withdraw(lp)
    assert got == (2 * seed + 2000 - 200000) / 2  # half of what the claim left
    assert chain.pool_stats().reserves == got  # the other half stays with the admin

    chain.deposit(lp, Decimal(1000))
    chain.request_withdrawal(lp, Decimal(400))
    warp(chain, 3600)
    chain.request_withdrawal(lp, Decimal(100))  # restarts the clock for all 500
    p = chain.provider(lp.address)
    assert p.requested_value == 500 and p.ready_at == p.now + p.cooldown
