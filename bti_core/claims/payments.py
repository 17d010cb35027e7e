"""Paying approved claims through the pool, exactly once, from any number of processes.

The protocol: (1) in one write transaction the claim moves to ``paying``, its ``pay`` entry's
hash becomes the payout's ``claimRef`` (the audit head anchored on-chain) and this process
takes the claim's lease; (2) the payout is sent; (3) the claim moves to ``paid`` with the
transaction. A process that finds a claim ``paying`` under a lease that is still held by a
live process leaves it alone; one that takes a claim over (the lease ran out, or its owner
died) first asks the pool whether the payout already happened (`ChainClient.claim_payment`)
and records it if so. The pool pays a policy at most once (``InsurancePoolPolicyNotActive``), so
even a lease that was wrongly broken cannot pay twice.

This module and `release_cover` are the claims side's only callers of the chain.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from hexbytes import HexBytes
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bti_core.chain.artifacts import refusal_type
from bti_core.chain.client import ChainClient
from bti_core.claims.audit_log import move
from bti_core.claims.parts import continue_cover, kept_of, rest_terms
from bti_core.claims.records import ClaimError
from bti_core.claims.state import Event, State
from bti_core.db.engine import write_scope
from bti_core.db.models import Claim, Policy
from bti_core.db.repository import add_policy_event
from bti_core.errors import ChainError, ContractRefusalError
from bti_core.policies.lifecycle import LifecycleEvent, move_policy

SYSTEM = "system"
#: a part's payout: the cover it keeps on-chain and the rest's terms hash
Part = tuple[Decimal, bytes]
log = logging.getLogger("bti.claims")


def process_token() -> str:
    """Who holds a lease: ``host:pid:random`` (the random part tells restarts apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class _Sent:
    """A batch payout mined and not yet recorded: its claims (claim, chain id, amount, ref),
    its transaction and the chain ids the pool paid."""

    send: list[tuple[int, int, Decimal, str]]
    tx: str
    paid: set[int]


_SENDING: set[str] = set()  # leases this process holds now (each `pay` call has its own)
_SENDING_LOCK = threading.Lock()


def owner_alive(owner: str) -> bool:
    """Whether the lease owner may still be sending: a process of another host is assumed
    alive until its lease runs out; one of this host is alive while its pid is; this
    process's own lease is alive while the `pay` call that took it is running."""
    host, _, rest = owner.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return True
    if int(pid_s) == os.getpid():
        with _SENDING_LOCK:
            return owner in _SENDING
    try:
        os.kill(int(pid_s), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locked_claim(s: Session, claim_id: int) -> Claim:
    """The claim, row-locked for the rest of the write transaction (PostgreSQL; SQLite's write
    transaction is exclusive already)."""
    claim = s.exec(select(Claim).where(Claim.id == claim_id).with_for_update()).first()
    if claim is None:
        raise ClaimError(f"no claim #{claim_id}")
    return claim


def locked_claims(s: Session, claim_ids: Sequence[int]) -> dict[int, Claim]:
    """`locked_claim` of many claims, a query for 500 (each must exist)."""
    ids = list(dict.fromkeys(claim_ids))
    out: dict[int, Claim] = {}
    for i in range(0, len(ids), 500):
        stmt = select(Claim).where(col(Claim.id).in_(ids[i : i + 500])).with_for_update()
        out.update({c.id or 0: c for c in s.exec(stmt).all()})
    missing = [i for i in ids if i not in out]
    if missing:
        raise ClaimError(f"no claim #{missing[0]}")
    return out


def load_policies(
    s: Session, policy_ids: Iterable[int], *, lock: bool = False
) -> dict[int, Policy]:
    """The policies, a query for 500 (into the session, so that `Session.get` needs none
    while the caller holds the returned dict: the session's identity map holds them weakly)."""
    ids = list(dict.fromkeys(policy_ids))
    out: dict[int, Policy] = {}
    for i in range(0, len(ids), 500):
        stmt = select(Policy).where(col(Policy.id).in_(ids[i : i + 500]))
        out.update({p.id or 0: p for p in s.exec(stmt.with_for_update() if lock else stmt).all()})
    return out


class Payments:
    def __init__(
        self,
        db: Engine,
        chain: ChainClient,
        *,
        clock: Callable[[], datetime],
        lease: timedelta = timedelta(seconds=120),
    ) -> None:
        self.db = db
        self.chain = chain
        self.clock = clock
        self.lease = lease
        # payouts a transaction: ~46k gas each (benchmarks/crash.py), so 500 take ~23M gas,
        # inside a 30M-gas block
        self.batch = 500

    def _may_take(self, claim: Claim, now: datetime) -> bool:
        if claim.lease_owner is None:
            return True
        if claim.lease_until is not None and claim.lease_until <= now:
            return True
        return not owner_alive(claim.lease_owner)

    def pay(self, claim_id: int) -> Claim | None:
        """Pay an approved, adjusted, failed or interrupted (``paying``) claim. The claim as
        this call left it; None when another live sender holds its payment."""
        owner = process_token()
        with _SENDING_LOCK:
            _SENDING.add(owner)
        try:
            return self._pay(claim_id, owner)
        finally:
            with _SENDING_LOCK:
                _SENDING.discard(owner)

    def _take(
        self, s: Session, claim: Claim, policy: Policy, owner: str, now: datetime
    ) -> tuple[int | None, Decimal, str, bool, Part | None] | None:
        """Take ``claim``'s payment under ``owner``'s lease in the caller's write transaction:
        (on-chain policy id, amount, claimRef, resumed, the cover a part keeps and its terms);
        None when there is nothing to pay or another live sender holds it."""
        state = State(claim.state)
        if state in (State.APPROVED, State.ADJUSTED):
            anchor = move(
                s,
                claim,
                Event.PAY,
                actor=SYSTEM,
                at=now,
                detail={"amount": claim.amount_approved},
            )
            claim.claim_ref = "0x" + anchor  # the audit head the payout carries on-chain
            resumed = False
        elif state is State.FAILED:
            move(s, claim, Event.RETRY, actor=SYSTEM, at=now)
            resumed = True
        elif state is State.PAYING:
            if not self._may_take(claim, now):
                return None
            resumed = True
        else:
            return None
        claim.lease_owner, claim.lease_until = owner, now + self.lease
        s.add(claim)
        assert claim.amount_approved is not None
        kept = kept_of(claim, policy)
        part = None if kept is None else (kept, rest_terms(policy, claim))
        return policy.chain_policy_id, claim.amount_approved, claim.claim_ref, resumed, part

    def _pay(self, claim_id: int, owner: str) -> Claim | None:
        now = self.clock()
        with write_scope(self.db) as s:
            claim = locked_claim(s, claim_id)
            policy = s.get(Policy, claim.policy_id)
            assert policy is not None
            taken = self._take(s, claim, policy, owner, now)
            if taken is None:
                return None if State(claim.state) is State.PAYING else claim
            chain_id, amount, ref, resumed, part = taken
        # committed as `paying`, under this process's lease, before anything is sent
        if chain_id is None:
            return self._fail(claim_id, "the policy has no on-chain record to pay from")
        if resumed:
            found = self.chain.claim_payment(chain_id, ref)
            if found is not None:  # paid before a crash: record it, never pay again
                return self.confirm(claim_id, found[0])
        return self._send(claim_id, chain_id, amount, ref, part)

    def pay_many(self, claim_ids: Sequence[int], *, batch: int | None = None) -> list[Claim]:
        """Pay many claims with few transactions (`ChainClient.pay_claims`, ``batch`` a
        transaction), under the same protocol as `pay`: every claim is committed ``paying``
        under this process's lease before its batch is sent, and recorded ``paid`` with the
        transaction after. The batches are sent one after another and made durable together
        (`ChainClient.persist`: one snapshot of a local node, not one a batch) before any is
        recorded, so nothing is recorded paid that a restarted node could have lost. A policy
        the pool skips (already paid: a crash between a batch and its record) is recorded with
        the payout found on-chain; a batch the pool refuses is paid claim by claim, so one bad
        claim fails alone. The claims as left, in no order; claims another live sender holds
        are left out."""
        owner = process_token()
        size = batch or self.batch
        with _SENDING_LOCK:
            _SENDING.add(owner)
        out: list[Claim] = []
        sent: list[_Sent] = []
        try:
            for i in range(0, len(claim_ids), size):
                done, batch_sent = self._send_batch(list(claim_ids[i : i + size]), owner)
                out += done
                if batch_sent is not None:
                    sent.append(batch_sent)
        finally:
            try:
                if sent:  # what was mined is recorded even if a later batch failed
                    self.chain.persist()
                    for b in sent:
                        out += self._record_batch(b)
            finally:
                with _SENDING_LOCK:
                    _SENDING.discard(owner)
        return out

    def _send_batch(self, claim_ids: list[int], owner: str) -> tuple[list[Claim], _Sent | None]:
        """Take the claims (``paying`` under ``owner``'s lease) and send their batch, not yet
        made durable: the claims settled without it, and the batch sent."""
        now = self.clock()
        send: list[tuple[int, int, Decimal, str]] = []  # claim, chain id, amount, ref
        resumed: list[tuple[int, int, Decimal, str]] = []
        parts: dict[int, Part] = {}  # claims that pay a part: sent one by one
        done: list[Claim] = []
        no_record: list[int] = []
        with write_scope(self.db) as s:
            locked = locked_claims(s, claim_ids)
            policies = load_policies(s, (c.policy_id for c in locked.values()))
            for cid in dict.fromkeys(claim_ids):
                claim = locked[cid]
                taken = self._take(s, claim, policies[claim.policy_id], owner, now)
                if taken is None:
                    if State(claim.state) is not State.PAYING:
                        done.append(claim)
                    continue
                chain_id, amount, ref, again, part = taken
                if part is not None:
                    parts[cid] = part
                if chain_id is None:
                    no_record.append(cid)
                elif again:
                    resumed.append((cid, chain_id, amount, ref))
                else:
                    send.append((cid, chain_id, amount, ref))
        done += [self._fail(c, "the policy has no on-chain record to pay from") for c in no_record]
        landed = (
            self.chain.claim_payments((r[1] for r in resumed), {r[1]: r[3] for r in resumed})
            if resumed
            else {}
        )
        for cid, chain_id, amount, ref in resumed:  # a crash or a refusal left these
            found = landed.get(chain_id)
            if found is not None:  # paid before a crash: record it, never pay again
                done.append(self.confirm(cid, found[0]))
            else:
                send.append((cid, chain_id, amount, ref))
        # a part keeps the policy active: it goes alone (`payClaimPart`), never in a batch
        done += [self._send(c, i, a, r, parts[c]) for c, i, a, r in send if c in parts]
        send = [x for x in send if x[0] not in parts]
        if not send:
            return done, None
        try:
            tx, paid = self.chain.pay_claims(
                [(chain_id, amount, bytes(HexBytes(ref))) for _, chain_id, amount, ref in send],
                persist=False,
            )
        except ChainError as exc:
            if not (isinstance(exc, ContractRefusalError) or exc.reason == "out_of_gas"):
                raise  # node down: the claims stay `paying` under a lease; reconcile settles
            log.info("a batch of %d payouts was refused (%s): paying one by one", len(send), exc)
            return done + [
                self._send(cid, chain_id, a, ref) for cid, chain_id, a, ref in send
            ], None
        return done, _Sent(send, tx, paid)

    def _record_batch(self, b: _Sent) -> list[Claim]:
        """Record a durable batch: its paid claims with its transaction; the policies the pool
        skipped with the payout found on-chain, or failed when there is none."""
        confirmed = self.confirm_many(
            [(cid, b.tx) for cid, chain_id, _, _ in b.send if chain_id in b.paid]
        )
        skipped = [(cid, chain_id) for cid, chain_id, _, _ in b.send if chain_id not in b.paid]
        refs = {chain_id: ref for _, chain_id, _, ref in b.send}
        landed = (  # no longer active: paid by this claim's sender, or by someone before
            self.chain.claim_payments((c for _, c in skipped), refs, any_payout=True)
            if skipped
            else {}
        )
        for cid, chain_id in skipped:  # paid by another sender first, or earlier in the batch
            found = landed.get(chain_id)
            confirmed.append(
                self.confirm(cid, found[0])
                if found is not None
                else self._fail(cid, f"the pool skipped policy {chain_id}: it is not active")
            )
        return confirmed

    def _send(
        self, claim_id: int, chain_id: int, amount: Decimal, ref: str, part: Part | None = None
    ) -> Claim:
        try:
            if part is None:
                tx = self.chain.pay_claim(chain_id, amount, bytes(HexBytes(ref)))
            else:  # the share of a partial liquidation; the rest stays covered
                tx = self.chain.pay_claim_part(
                    chain_id, amount, part[0], part[1], bytes(HexBytes(ref))
                )
        except ChainError as exc:
            ended = isinstance(exc, refusal_type("InsurancePoolPolicyNotActive"))
            if ended or isinstance(exc, refusal_type("InsurancePoolPolicyExists")):
                # another sender's payout landed first (a part's: this claim's own, by its ref)
                found = self.chain.claim_payment(chain_id, ref, any_payout=ended)
                if found is not None:
                    return self.confirm(claim_id, found[0])
            if isinstance(exc, ContractRefusalError) or exc.reason == "out_of_gas":
                return self._fail(claim_id, str(exc))  # the pool refused, with its reason
            raise  # node down or an undecoded revert: stays `paying`; reconcile settles it
        return self.confirm(claim_id, tx)

    def confirm(self, claim_id: int, tx: str) -> Claim:
        """Record the payout ``tx`` (once: a paid claim is returned as it is)."""
        return self.confirm_many([(claim_id, tx)])[0]

    def confirm_many(self, paid: Sequence[tuple[int, str]]) -> list[Claim]:
        """Record each ``(claim, payout tx)``, in one write transaction."""
        now = self.clock()
        out: list[Claim] = []
        with write_scope(self.db) as s:
            locked = locked_claims(s, [c for c, _ in paid])
            policies = load_policies(s, (c.policy_id for c in locked.values()))
            for claim_id, tx in paid:
                claim = locked[claim_id]
                out.append(claim)
                if claim.state == State.PAID.value:
                    continue
                if claim.state == State.FAILED.value:  # a refusal raced a payout that landed
                    move(s, claim, Event.RETRY, actor=SYSTEM, at=now)
                claim.payout_tx, claim.paid_at = tx, now
                claim.lease_owner = claim.lease_until = None
                move(s, claim, Event.CONFIRM, actor=SYSTEM, at=now, detail={"tx": tx})
                move_policy(
                    s,
                    policy=policies[claim.policy_id],
                    event=LifecycleEvent.PAY,
                    detail={"claim_id": claim_id, "amount": str(claim.amount_approved), "tx": tx},
                )
                continue_cover(s, policies[claim.policy_id], claim, tx)  # a part: the rest
        return out

    def _fail(self, claim_id: int, reason: str) -> Claim:
        with write_scope(self.db) as s:
            claim = locked_claim(s, claim_id)
            if claim.state != State.PAYING.value:
                return claim
            claim.lease_owner = claim.lease_until = None
            move(s, claim, Event.FAIL, actor=SYSTEM, at=self.clock(), detail={"reason": reason})
            return claim

    def release_cover(self, policy_id: int, claim_id: int) -> str | None:
        """Release a policy's cover on-chain after a final denial; the transaction, or None
        when the chain refused or did not answer (logged: anyone may release it after expiry
        plus the pool's grace, and reconcile retries)."""
        with write_scope(self.db) as s:
            p = s.get(Policy, policy_id)
            chain_id = None if p is None else p.chain_policy_id
        if chain_id is None:
            return None
        try:
            tx = self.chain.release_cover(chain_id)
        except ChainError as exc:
            log.warning(
                "releasing the cover of policy %s (claim #%s) failed: %s", policy_id, claim_id, exc
            )
            return None
        with write_scope(self.db) as s:
            p = s.get(Policy, policy_id)
            assert p is not None
            add_policy_event(
                s, policy=p, event="cover_released", detail={"tx": tx, "claim_id": claim_id}
            )
        return tx
