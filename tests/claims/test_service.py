"""Claims end to end on a synthetic crash, with the real chain (anvil) and database; roles;
appeals; and exactly-once payment when the process is interrupted at every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session, select

from bti_core.auth import AuthError, User
from bti_core.chain.client import ChainClient
from bti_core.chain.types import OnChainStatus
from bti_core.claims.service import ClaimError, ClaimsService
from bti_core.claims.state import TransitionError
from bti_core.db.models import Claim, ClaimAudit, Policy
from bti_core.orders import Cover, Order
from tests.crashes import dies_at
from tests.worlds import (
    CLAIM_STEPS,
    NOW,
    UNDERWRITER,
    World,
    buy,
    claim_of,
    claim_paid_events,
    crash,
)


@pytest.mark.both_databases
def test_crash_opens_decides_and_pays_claims(world: World) -> None:
    w = world
    small = buy(w, "alice", coverage="100")
    big = buy(w, "bob", coverage="140", leverage="20")
    w.claims.auto_limit = Decimal(120)  # bob's payout goes to an underwriter
    safe = buy(w, "carol", leverage="2", coverage="50")  # far from liquidation
    wallet = w.ins.wallet_of("alice").address
    before = w.chain.balance(wallet)
    assert w.claims.run().opened == []  # no move yet, no claim

    crash(w)
    report = w.claims.run()
    assert len(report.opened) == 2 and report.paid == [claim_of(w, small).id]
    assert report.referred == [claim_of(w, big).id]
    c = claim_of(w, small)
    assert c.state == "paid" and c.payout_tx and c.amount_approved == small.payout
    assert w.chain.balance(wallet) == before + small.payout
    assert w.chain.policy(small.chain_policy_id or 0).status == OnChainStatus.PAID
    events = [e.event for e in w.ins.events(small.id or 0)]
    assert events[-2:] == ["claimed", "paid"]
    assert {ch["name"]: ch["outcome"] for ch in c.checks}["mark_confirms"] == "pass"

    # the same event never opens two claims
    assert w.claims.run().opened == []
    with Session(w.db) as s:
        assert len(s.exec(select(Claim)).all()) == 2
        assert s.get(Policy, safe.id).status == "active"  # type: ignore[union-attr]

    # the referred claim waits for an underwriter, soonest due first
    queue = w.claims.queue(["referred", "appealed"])
    assert queue["claim"].tolist() == [claim_of(w, big).id]
    b = claim_of(w, big)
    assert b.due_at is not None and b.due_at > datetime.now(UTC)
    with pytest.raises(AuthError, match="only underwriters"):
        w.claims.decide(b.id or 0, User("bob", "Bob", "trader"), "approve", "I say so")
    with pytest.raises(ClaimError, match="write the reason"):
        w.claims.decide(b.id or 0, UNDERWRITER, "approve", "  ")
    paid = w.claims.decide(b.id or 0, UNDERWRITER, "approve", "mark confirms, terms match")
    assert paid.state == "paid" and paid.decided_by == "uw"
    assert len(claim_paid_events(w)) == 2
    stats = w.chain.pool_stats()
    assert stats.claims_paid == small.payout + big.payout
    assert stats.locked == safe.payout  # paid cover released; the safe policy still locked
    assert w.claims.verify_log().ok


def test_a_last_price_wick_record_is_refused_and_uses_up_nothing(world: World) -> None:
    """It used to open a claim that was denied: the policy's only claim, used up by a record
    the mark never confirmed. Now the record is refused with the reason, and a true crash
    later still pays."""
    w = world
    p = buy(w, "dave", leverage="20")
    lp = float(p.liquidation_price)
    spot = w.ins.risk.spot("BTCUSDT")
    # the mark falls to 1 % above the liquidation price; the last price wicks 5 % below it
    crash(w, drop=1 - lp * 1.01 / spot / 0.999, wick=0.05)
    assert w.claims.run().opened == []  # the mark never reached LP: no automatic claim
    claim_time = NOW + timedelta(hours=3 + 5)
    record = (
        f"symbol,side,quantity,price,time\nBTCUSDT,long,0.1,{lp:.2f},{claim_time.isoformat()}\n"
    ).encode()
    with pytest.raises(ClaimError, match="record refused, and policy #1 can still be claimed") as e:
        w.claims.file_claim(User("dave", "Dave", "trader"), p.id or 0, record, "liq.csv")
    assert "a last-price wick liquidates nobody" in str(e.value)
    with Session(w.db) as s:
        assert s.exec(select(Claim)).all() == []
        assert s.get(Policy, p.id).status == "active"  # type: ignore[union-attr]
    crash(w, drop=0.3, after_hours=12)  # the true crash, later in the window
    (cid,) = w.claims.run().opened
    assert w.claims.get(cid).state == "paid"


def test_a_mis_dated_record_is_refused_and_uses_up_nothing(world: World) -> None:
    """A trader's record dated inside the window, of a liquidation the bars show after it (or
    at a time no bar of the window proves), was claim enough to deny — and use up — the
    policy's only claim."""
    w = world
    p = buy(w, "dora", leverage="20", hours=6)
    lp = float(p.liquidation_price)
    crash(w, drop=0.3, after_hours=8)  # after the 6-hour window
    assert w.claims.run().opened == []
    for when in (NOW + timedelta(hours=2), NOW + timedelta(hours=9)):
        record = (
            f"symbol,side,quantity,price,time\nBTCUSDT,long,0.1,{lp:.2f},{when.isoformat()}\n"
        ).encode()
        with pytest.raises(ClaimError, match="can still be claimed"):
            w.claims.file_claim(User("dora", "Dora", "trader"), p.id or 0, record, "liq.csv")
    with Session(w.db) as s:
        assert s.exec(select(Claim)).all() == []


def test_a_claim_on_an_ended_cover_is_filed_within_the_filing_period(world: World) -> None:
    """Late filing: an expired cover still takes a record of a liquidation inside its window
    for 72 hours after its end (its cover stays locked that long, so the claim can be paid);
    after that the record is refused with the period and nothing is written."""
    w = world
    p = buy(w, "fay", leverage="20", hours=6)
    lp = float(p.liquidation_price)
    now = w.claims.clock()
    record = (
        f"symbol,side,quantity,price,time\nBTCUSDT,long,0.1,{lp:.2f},"
        f"{(now - timedelta(hours=80)).isoformat()}\n"
    ).encode()
    fay = User("fay", "Fay", "trader")
    with Session(w.db) as s:  # it ended 73 hours ago
        pol = s.get(Policy, p.id)
        assert pol is not None
        pol.start_at, pol.end_at, pol.status = (
            now - timedelta(hours=85),
            now - timedelta(hours=73),
            "expired",
        )
        s.add(pol)
        s.commit()
    with pytest.raises(
        ClaimError, match=r"filing period of policy #\d+ ended at .* within 72 hours"
    ):
        w.claims.file_claim(fay, p.id or 0, record, "liq.csv")
    with Session(w.db) as s:  # 71 hours ago: the period is open, the record is read on its merits
        pol = s.get(Policy, p.id)
        assert pol is not None
        pol.end_at = now - timedelta(hours=71)
        s.add(pol)
        s.commit()
    with pytest.raises(ClaimError) as refused:
        w.claims.file_claim(fay, p.id or 0, record, "liq.csv")
    assert "filing period" not in str(refused.value)  # refused for what the bars show
    with Session(w.db) as s:
        assert s.exec(select(Claim)).all() == []


def test_a_policy_token_sold_during_an_open_claim_pays_its_new_holder(world: World) -> None:
    """Defined: the cover pays whoever holds the policy token when the claim is paid (the
    token is the cover, as a Nexus Mutual cover NFT is). A sale while the claim waits for an
    underwriter moves the payout with it and the seller gets nothing (changing or cancelling
    the cover is the holder's alone too: tests/chain/test_amend.py)."""
    w = world
    p = buy(w, "gus", leverage="20", coverage="140")
    w.claims.auto_limit = Decimal(100)  # referred: it waits for an underwriter
    crash(w)
    (cid,) = w.claims.run().opened
    assert w.claims.get(cid).state == "referred"
    seller, buyer = w.ins.wallet_of("gus"), w.ins.wallet_of("hal")
    w.chain.transact(
        w.chain.policy_token.functions.transferFrom(
            seller.address, buyer.address, p.chain_policy_id or 0
        ),
        seller,
        "sell the policy token",
    )
    before = w.chain.balance(seller.address), w.chain.balance(buyer.address)
    paid = w.claims.decide(cid, UNDERWRITER, "approve", "liquidated in the window")
    assert paid.state == "paid"
    amount = w.chain.policy(p.chain_policy_id or 0).paid
    assert amount > 0
    assert w.chain.balance(seller.address) == before[0]
    assert w.chain.balance(buyer.address) == before[1] + amount


def test_an_underwriters_denial_can_be_appealed_once(world: World) -> None:
    w = world
    p = buy(w, "dave", leverage="20", coverage="140")
    w.claims.auto_limit = Decimal(100)  # the payout goes to an underwriter
    crash(w)
    (cid,) = w.claims.run().opened
    assert w.claims.get(cid).state == "referred"
    denied = w.claims.decide(cid, UNDERWRITER, "deny", "the order was closed before the fall")
    assert denied.state == "denied"
    with pytest.raises(AuthError, match="not eve's"):
        w.claims.appeal(cid, User("eve", "Eve", "trader"), "not mine but let me try")
    c = w.claims.appeal(cid, User("dave", "Dave", "trader"), "my exchange liquidated me")
    assert c.state == "appealed" and c.due_at is not None
    assert w.claims.why(cid)[-1] == "Appealed by dave: my exchange liquidated me"
    partial = w.claims.decide(cid, UNDERWRITER, "adjust", "goodwill: half", Decimal("50"))
    assert partial.state == "paid" and partial.amount_approved == Decimal("50.00")
    assert w.chain.policy(p.chain_policy_id or 0).paid == Decimal(50)
    with pytest.raises(TransitionError):
        w.claims.appeal(cid, User("dave", "Dave", "trader"), "again please")


@pytest.mark.both_databases
def test_bad_records_are_refused_and_write_nothing(world: World) -> None:
    w = world
    p = buy(w, "erin")
    me = User("erin", "Erin", "trader")
    cases = [
        (b"symbol,side\nBTCUSDT,long\n", "x.csv", "missing quantity, price, time"),
        (b"{not json", "x.json", "not valid JSON"),
        (
            b'{"symbol":"BTCUSDT","side":"up","quantity":1,"price":1,"time":"2026-01-01"}',
            "x.json",
            "side must be long or short",
        ),
        (
            b'{"symbol":"BTCUSDT","side":"long","quantity":-1,"price":1,"time":"2026-01-01"}',
            "x.json",
            "must be positive",
        ),
        (b"whatever", "x.txt", "upload a .csv or .json"),
    ]
    for content, name, msg in cases:
        with pytest.raises(ClaimError, match=msg):
            w.claims.file_claim(me, p.id or 0, content, name)
    good = b"symbol,side,quantity,price,time\nBTCUSDT,long,0.1,1,2026-01-01T00:00:00Z\n"
    with pytest.raises(ClaimError, match="no policy"):
        w.claims.file_claim(User("frank", "F", "trader"), p.id or 0, good, "x.csv")
    with Session(w.db) as s:
        assert s.exec(select(Claim)).all() == []


@pytest.mark.parametrize(
    "where",
    [
        "after the claim is opened",
        "after paying is recorded, before the payment is sent",
        "after the payment is mined, before it is recorded",
    ],
)
@pytest.mark.both_databases
def test_interrupted_at_each_step_pays_exactly_once(
    world: World, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    w = world
    p = buy(w, "gina")
    wallet = w.ins.wallet_of("gina").address
    before = w.chain.balance(wallet)
    crash(w)
    with dies_at(monkeypatch, *CLAIM_STEPS[where]):
        w.claims.run()
    c = claim_of(w, p)  # never lost: the claim is there whatever step died
    assert c.state in ("opened", "paying")
    # the restart: a new service object over the same database and chain
    again = ClaimsService(w.db, w.wh, w.chain)
    again.reconcile()
    again.reconcile()  # and a second restart changes nothing
    c = claim_of(w, p)
    assert c.state == "paid" and c.payout_tx
    assert w.chain.balance(wallet) == before + p.payout
    assert len(claim_paid_events(w)) == 1
    assert again.run().opened == []
    assert again.verify_log().ok


@pytest.mark.both_databases
def test_the_audit_log_detects_an_edit_and_a_removal(world: World) -> None:
    w = world
    buy(w, "hank")
    crash(w)
    w.claims.run()
    assert w.claims.verify_log().ok
    with Session(w.db) as s:
        entries = s.exec(select(ClaimAudit).order_by(ClaimAudit.id)).all()  # type: ignore[arg-type]
        assert len(entries) >= 4
        e = entries[1]
        e.actor = "mallory"
        s.add(e)
        s.commit()
        bad = w.claims.verify_log()
        assert not bad.ok and bad.entry_id == e.id and "edited" in str(bad)
        e.actor = "system"
        s.add(e)
        s.commit()
        assert w.claims.verify_log().ok
        s.delete(entries[2])
        s.commit()
    bad = w.claims.verify_log()
    assert not bad.ok and "removed" in str(bad)


@pytest.mark.both_databases
def test_queue_orders_by_due_time_then_amount(world: World) -> None:
    w = world
    w.claims.auto_limit = Decimal(1)  # everything goes to an underwriter
    for user, cov in (("ivy", "60"), ("jon", "120")):
        buy(w, user, coverage=cov)
    crash(w)
    w.claims.run()
    q = w.claims.queue(["referred"])
    assert len(q) == 2
    assert list(q["due"]) == sorted(q["due"])  # soonest due first
    assert w.claims.queue(symbol="ETHUSDT").empty


def test_records_of_one_exchange_account_from_two_traders_are_referred(world: World) -> None:
    w = world
    a, b = buy(w, "olga"), buy(w, "olga2")
    crash(w)
    t = (NOW + timedelta(hours=3 + 2)).isoformat()

    def record(qty: str, lp: Decimal) -> bytes:
        return f'{{"symbol":"BTCUSDT","side":"long","quantity":{qty},"price":{lp},"time":"{t}","account":"binance-uid-77"}}'.encode()

    first = w.claims.file_claim(
        User("olga", "O", "trader"), a.id or 0, record("0.1", a.liquidation_price), "r.json"
    )
    assert w.claims.process(first).state == "paid"
    second = w.claims.file_claim(
        User("olga2", "O2", "trader"), b.id or 0, record("0.1", b.liquidation_price), "r.json"
    )
    c = w.claims.process(second)
    assert c.state == "referred"
    signals = {ch["name"]: ch for ch in c.checks}["user_signals"]
    assert "olga" in signals["reason"] and signals["outcome"] == "unsure"


def test_the_model_score_before_the_trigger_is_recorded(world: World) -> None:
    w = world
    w.claims.risk = w.ins.risk
    buy(w, "pia")
    crash(w)
    (cid,) = w.claims.run().opened
    score = {ch["name"]: ch for ch in w.claims.get(cid).checks}["model_score"]
    p = score["evidence"]["probability_before_trigger"]
    assert p is not None and 0 <= p <= 1


def test_a_denial_upheld_on_appeal_releases_the_cover(world: World) -> None:
    w = world
    w.claims.auto_limit = Decimal(1)
    p = buy(w, "quinn")
    crash(w)
    (cid,) = w.claims.run().referred
    locked = w.chain.pool_stats().locked
    w.claims.decide(cid, UNDERWRITER, "deny", "bought into the move")
    assert w.chain.pool_stats().locked == locked  # an appeal may still come: cover stays
    w.claims.appeal(cid, User("quinn", "Q", "trader"), "please look again")
    final = w.claims.decide(cid, UNDERWRITER, "deny", "upheld after review")
    assert final.state == "denied"
    assert w.chain.pool_stats().locked == locked - p.payout
    assert w.chain.policy(p.chain_policy_id or 0).status == OnChainStatus.RELEASED
    assert [e.event for e in w.ins.events(p.id or 0)][-1] == "cover_released"


# --- the audit log cannot be rewritten quietly --------------------------------------------


def _paid_claim(w: World, user: str) -> Claim:
    buy(w, user)
    crash(w)
    w.claims.run()
    (c,) = [c for c in _claims(w) if c.user_id == user]
    assert c.state == "paid"
    return c


def _claims(w: World) -> list[Claim]:
    with Session(w.db) as s:
        return list(s.exec(select(Claim)).all())


@pytest.mark.both_databases
def test_a_rewritten_log_with_every_hash_recomputed_is_caught_by_the_chain(world: World) -> None:
    from bti_core.claims.ledger import GENESIS, entry_hash
    from bti_core.db.models import ClaimAuditHead

    w = world
    c = _paid_claim(w, "rita")
    with Session(w.db) as s:  # the forger edits an amount and recomputes the whole chain
        entries = s.exec(select(ClaimAudit).order_by(ClaimAudit.id)).all()  # type: ignore[arg-type]
        prev = GENESIS
        from bti_core.claims.audit_log import entry_dict

        for e in entries:
            if e.event == "auto_approve":
                e.detail = {**e.detail, "amount": "99999"}
            e.prev_hash = prev
            e.hash = entry_hash(prev, entry_dict(e))
            prev = e.hash
            s.add(e)
        head = s.get(ClaimAuditHead, 1)
        assert head is not None
        head.last_hash = prev
        s.add(head)
        s.commit()
    bad = w.claims.verify_log()
    assert not bad.ok
    assert f"claim #{c.id}'s payout" in str(bad) and "rewritten" in str(bad)


@pytest.mark.both_databases
def test_deleting_the_whole_log_and_its_head_is_caught(world: World) -> None:
    from sqlalchemy import delete

    from bti_core.db.models import ClaimAuditHead

    w = world
    c = _paid_claim(w, "sam")
    with Session(w.db) as s:
        s.exec(delete(ClaimAudit))  # type: ignore[call-overload]
        s.exec(delete(ClaimAuditHead))  # type: ignore[call-overload]
        s.commit()
    bad = w.claims.verify_log()
    assert not bad.ok and "head row is missing" in str(bad)
    with Session(w.db) as s:  # put an empty head back: the claims still have no entries
        s.add(ClaimAuditHead(id=1))
        s.commit()
    bad = w.claims.verify_log()
    assert not bad.ok and f"claim #{c.id} has no audit entries" in str(bad)


def test_a_missing_head_stops_claim_work_with_a_message_not_a_traceback(world: World) -> None:
    from sqlalchemy import delete

    from bti_core.claims.audit_log import AuditLogError
    from bti_core.db.models import ClaimAuditHead

    w = world
    buy(w, "tess")
    crash(w)
    with Session(w.db) as s:
        s.exec(delete(ClaimAuditHead))  # type: ignore[call-overload]
        s.commit()
    with pytest.raises(AuditLogError, match=r"no head row.*bti claims verify"):
        w.claims.run()
    assert _claims(w) == []  # the claim's opening was rolled back whole, nothing half-written


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_approved", Decimal("5000")),
        ("decided_by", "mallory"),
        ("payout_tx", "0x" + "1" * 64),
    ],
)
@pytest.mark.both_databases
def test_an_edit_of_the_claim_row_itself_is_caught(world: World, field: str, value: object) -> None:
    w = world
    c = _paid_claim(w, f"uma-{field}")
    with Session(w.db) as s:
        row = s.get(Claim, c.id)
        setattr(row, field, value)
        s.add(row)
        s.commit()
    bad = w.claims.verify_log()
    assert not bad.ok and field in str(bad) and "changed outside BTI" in str(bad)


@pytest.mark.both_databases
def test_the_payout_carries_the_audit_head_on_chain(world: World) -> None:
    w = world
    c = _paid_claim(w, "vic")
    (paid,) = claim_paid_events(w)
    pay_entry = [e for e in w.claims.log_of(c.id or 0) if e.event == "pay"]
    assert paid.args["claimRef"] == "0x" + pay_entry[0].hash == c.claim_ref


# --- roles ----------------------------------------------------------------------------------


def test_nobody_decides_a_claim_on_their_own_policy(world: World) -> None:
    w = world
    w.claims.auto_limit = Decimal(1)
    buy(w, "uw")  # the underwriter's name on a policy (bought before roles were checked)
    crash(w)
    (cid,) = w.claims.run().referred
    with pytest.raises(AuthError, match="own policy: another underwriter must decide it"):
        w.claims.decide(cid, UNDERWRITER, "approve", "looks fine to me")
    assert w.claims.get(cid).state == "referred"
    other = User("uw2", "Other", "underwriter")
    assert w.claims.decide(cid, other, "approve", "checked the evidence").state == "paid"


def test_the_underwriter_account_cannot_buy_cover(world: World) -> None:
    from bti_core.auth import add_user

    w = world
    add_user(w.db, username="boss", name="Boss", role="underwriter", password="pw-boss-123")
    spot = Decimal(str(round(w.ins.risk.spot("BTCUSDT"), 2)))
    with pytest.raises(AuthError, match="underwriters decide claims and do not buy cover"):
        w.ins.quote(
            user_id="boss",
            order=Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(20)),
            cover=Cover(coverage="100", duration_hours=24),
        )


# --- records that crashed or used up a claim -------------------------------------------------


@pytest.mark.parametrize(
    ("time", "message"),
    [
        ("NaT", "is not a date-time"),
        ("", "missing time"),
        ("9999-01-01T00:00:00Z", "not a liquidation that can have happened"),
        ("1970-01-01T00:00:00Z", "not a liquidation that can have happened"),
        ("5138-11-16T09:46:40Z", "not a liquidation that can have happened"),
    ],
)
def test_records_with_impossible_times_are_refused_and_use_up_nothing(
    world: World, time: str, message: str
) -> None:
    w = world
    p = buy(w, "walt")
    rec = f"symbol,side,quantity,price,time\nBTCUSDT,long,0.1,1,{time}\n".encode()
    with pytest.raises(ClaimError, match=message):
        w.claims.file_claim(User("walt", "W", "trader"), p.id or 0, rec, "r.csv")
    assert _claims(w) == []  # the policy's only claim is still there to be made


def test_a_failed_payment_is_counted_as_failed_not_approved(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    buy(w, "xena")
    crash(w)

    def refuse(*_: object, **__: object) -> str:
        from bti_core.chain.artifacts import refusal_type

        raise refusal_type("EnforcedPause")("pay claim refused: paused", reason="EnforcedPause")

    monkeypatch.setattr(ChainClient, "pay_claim", refuse)
    monkeypatch.setattr(ChainClient, "pay_claims", refuse)
    report = w.claims.run()
    assert len(report.failed) == 1 and report.approved == [] and report.paid == []
    assert "payment failed 1" in str(report)


def test_a_release_that_fails_after_a_final_denial_is_logged(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bti_core.errors import ChainError

    w = world
    w.claims.auto_limit = Decimal(1)
    buy(w, "yuri")
    crash(w)
    (cid,) = w.claims.run().referred
    w.claims.decide(cid, UNDERWRITER, "deny", "bought into the move")
    w.claims.appeal(cid, User("yuri", "Y", "trader"), "please look again")

    def down(*_: object, **__: object) -> str:
        raise ChainError("chain node at x is not answering")

    monkeypatch.setattr(ChainClient, "release_cover", down)
    with caplog.at_level("WARNING", logger="bti.claims"):
        assert w.claims.decide(cid, UNDERWRITER, "deny", "upheld").state == "denied"
    assert "releasing the cover" in caplog.text and "not answering" in caplog.text


@pytest.mark.both_databases
def test_paid_liquidations_and_denied_claims_count_in_the_trader_history(world: World) -> None:
    """Before, only `claimed` policies counted: a paid liquidation vanished from the risk
    index's trader factor, and liquidations and claims were always the same number."""
    w = world
    _paid_claim(w, "zed")
    h = w.ins.trader_history("zed")
    assert (h.policies, h.liquidations, h.claims) == (1, 1, 1)
    p = buy(w, "zed")  # a second policy, a record the market does not confirm: refused
    record = f"symbol,side,quantity,price,time\nBTCUSDT,long,0.1,1,{NOW.isoformat()}\n".encode()
    with pytest.raises(ClaimError, match="record refused"):
        w.claims.file_claim(User("zed", "Z", "trader"), p.id or 0, record, "r.csv")
    h = w.ins.trader_history("zed")
    assert (h.policies, h.liquidations, h.claims) == (2, 1, 2)  # the refused filing counts
