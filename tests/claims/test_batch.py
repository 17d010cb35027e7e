"""Claims of a crash at scale, in batches, on the real chain and database: opened from a
stream's ticks in few transactions, decided in chunks, paid a batch a transaction — each
policy once, whatever was paid before, refused, or interrupted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from bti_core.chain.client import ChainClient
from bti_core.claims.hits import TickHit
from bti_core.claims.service import ClaimsService
from bti_core.db.models import Claim, Policy
from tests.crashes import dies_at
from tests.worlds import CLAIM_STEPS, NOW, World, buy, claim_paid_events, crash


def insured(w: World, n: int) -> list[Policy]:
    return [buy(w, f"trader{i}", leverage="20", coverage="100") for i in range(n)]


def hits_of(policies: list[Policy]) -> list[TickHit]:
    at = NOW + timedelta(hours=4, minutes=30)  # inside the replayed crash's bar
    return [TickHit(p.id or 0, "BTCUSDT", at, float(p.liquidation_price) * 0.99) for p in policies]


def claims_of(w: World) -> list[Claim]:
    with Session(w.db) as s:
        return list(s.exec(select(Claim).order_by(Claim.id)).all())  # type: ignore[arg-type]


@pytest.mark.both_databases
def test_a_crash_pays_every_claim_once_in_few_transactions(world: World) -> None:
    w = world
    pols = insured(w, 5)
    crash(w, drop=0.3, after_hours=3)
    w.claims.payments.batch = 2
    opened = w.claims.open_from_ticks(hits_of(pols), "test")
    assert len(opened) == 5
    assert w.claims.open_from_ticks(hits_of(pols), "test") == []  # a policy is claimed once
    report = w.claims.process_many(opened)
    assert sorted(report.paid) == sorted(opened), report
    claims = claims_of(w)
    assert all(c.state == "paid" for c in claims)
    assert len({c.payout_tx for c in claims}) == 3  # 2 + 2 + 1 a transaction
    assert len(claim_paid_events(w)) == 5
    for p in pols:
        assert w.chain.balance(w.ins.wallet_of(p.user_id).address) >= p.payout
    assert w.claims.verify_log().ok  # each payout anchors its own audit head


def _three_claims_decided(w: World) -> tuple[list[Policy], list[int]]:
    """Three insured longs liquidated by a crash: their claims opened from the ticks and
    decided (not paid yet)."""
    pols = insured(w, 3)
    crash(w, drop=0.3, after_hours=3)
    opened = w.claims.open_from_ticks(hits_of(pols), "test")
    w.claims._audit_and_decide_many(opened)
    return pols, opened


@pytest.mark.both_databases
def test_a_claim_paid_meanwhile_is_recorded_not_paid_again(world: World) -> None:
    w = world
    pols, opened = _three_claims_decided(w)
    decided = [w.claims.get(i) for i in opened]
    assert all(c.state == "approved" for c in decided)
    # another sender paid the first policy on-chain before this batch went out
    other_tx = w.chain.pay_claim(pols[0].chain_policy_id or 0, pols[0].payout, b"\x09" * 32)
    w.claims.payments.pay_many(opened)
    claims = {c.policy_id: c for c in claims_of(w)}
    assert claims[pols[0].id].state == "paid" and claims[pols[0].id].payout_tx == other_tx
    assert all(c.state == "paid" for c in claims.values())
    assert len(claim_paid_events(w)) == 3


@pytest.mark.parametrize(
    "where",
    [
        "after paying is recorded, before the payment is sent",
        "after the payment is mined, before it is recorded",
    ],
)
@pytest.mark.both_databases
def test_a_batch_interrupted_is_settled_once_by_reconcile(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    w = world
    pols = insured(w, 4)
    crash(w, drop=0.3, after_hours=3)
    opened = w.claims.open_from_ticks(hits_of(pols), "test")
    with dies_at(monkeypatch, *CLAIM_STEPS[where]):
        w.claims.process_many(opened)
    assert {c.state for c in claims_of(w)} == {"paying"}
    again = ClaimsService(w.db, w.wh, w.chain)
    again.payments.lease = timedelta(0)  # the dead process's leases have run out
    again.reconcile()
    again.reconcile()
    assert {c.state for c in claims_of(w)} == {"paid"}
    assert len(claim_paid_events(w)) == 4


@pytest.mark.both_databases
def test_a_refused_batch_is_paid_claim_by_claim(world: World) -> None:
    w = world
    pols, opened = _three_claims_decided(w)
    # one amount above its policy's coverage makes the pool refuse the whole batch
    with Session(w.db) as s:
        c = s.exec(select(Claim).where(Claim.policy_id == pols[1].id)).one()
        c.amount_approved = pols[1].payout * 2  # as if an edit slipped past the checks
        s.add(c)
        s.commit()
    w.claims.payments.pay_many(opened)
    states = {c.policy_id: c.state for c in claims_of(w)}
    assert states == {pols[0].id: "paid", pols[1].id: "failed", pols[2].id: "paid"}
    assert len(claim_paid_events(w)) == 2


@pytest.mark.both_databases
def test_batches_mined_before_a_failing_one_are_recorded_once(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batches of a round are made durable together and then recorded: when the node stops
    answering at the second batch, the first is still recorded paid (after the snapshot), the
    rest stay ``paying`` and a restart pays them, each policy once."""
    from bti_core.errors import ChainError

    w = world
    pols = insured(w, 4)
    crash(w, drop=0.3, after_hours=3)
    opened = w.claims.open_from_ticks(hits_of(pols), "test")
    w.claims._audit_and_decide_many(opened)
    w.claims.payments.batch = 2
    real = ChainClient.pay_claims
    calls: list[bool] = []
    persisted: list[int] = []

    def second_fails(self: ChainClient, items: object, **kw: object) -> object:
        calls.append(bool(kw.get("persist", True)))
        if len(calls) == 2:
            raise ChainError("chain node at … is not answering (ConnectionError)")
        return real(self, items, **kw)  # type: ignore[arg-type]

    def persist(self: ChainClient) -> None:
        persisted.append(len(calls))

    monkeypatch.setattr(ChainClient, "pay_claims", second_fails)
    monkeypatch.setattr(ChainClient, "persist", persist)
    with pytest.raises(ChainError, match="not answering"):
        w.claims.payments.pay_many(opened)
    assert calls == [False, False] and persisted == [2]  # one snapshot, after the batches
    states = sorted(c.state for c in claims_of(w))
    assert states == ["paid", "paid", "paying", "paying"]
    monkeypatch.undo()
    again = ClaimsService(w.db, w.wh, w.chain)
    again.payments.lease = timedelta(0)
    again.reconcile()
    assert {c.state for c in claims_of(w)} == {"paid"}
    assert len(claim_paid_events(w)) == 4
