"""The claims service: open claims from the market or a trader's record, audit and decide them,
pay approved ones through the pool contract exactly once, and keep the hash-chained audit log.

Exactly once: a payment is first recorded as ``paying`` (durable) and only then sent; the pool
pays a policy at most once on-chain. A crash before the send leaves ``paying`` with no payment
on-chain, and `reconcile` sends it; a crash after the send leaves ``paying`` with the payment
on-chain, and `reconcile` finds the pool's ``ClaimPaid`` event and records it. Claims are never
lost: each is committed with its first audit entry before anything else happens to it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bti_core.auth import AuthError, User, require_underwriter
from bti_core.chain.client import ChainClient
from bti_core.claims.checks import (
    HARD,
    AuditCheck,
    ClaimFacts,
    Outcome,
    PolicyFacts,
    TraderFacts,
    audit,
)
from bti_core.claims.ledger import Verdict, entry_hash, verify
from bti_core.claims.state import OPEN_FOR_UNDERWRITER, ClaimState, Event, State, transition
from bti_core.claims.triggers import Insured, Trigger, evidence_window, find_triggers
from bti_core.db.engine import session_scope
from bti_core.db.models import Claim, ClaimAudit, ClaimAuditHead, Policy
from bti_core.db.repository import add_policy_event
from bti_core.db.types import utcnow
from bti_core.errors import BTIError, ChainError
from bti_core.market.schema import Kind
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine

SYSTEM = "system"


class ClaimError(BTIError, ValueError):
    """A claim action that cannot be done (unknown claim, not yours, bad record, no reason)."""


@dataclass
class RunReport:
    opened: list[int] = field(default_factory=list)
    approved: list[int] = field(default_factory=list)
    denied: list[int] = field(default_factory=list)
    referred: list[int] = field(default_factory=list)
    paid: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"opened {len(self.opened)}, auto-approved {len(self.approved)}, auto-denied "
            f"{len(self.denied)}, referred {len(self.referred)}, paid {len(self.paid)}"
        )


def _entry(e: ClaimAudit) -> dict[str, Any]:
    return {
        "id": e.id,
        "claim_id": e.claim_id,
        "at": e.at,
        "actor": e.actor,
        "event": e.event,
        "from": e.from_state,
        "to": e.to_state,
        "detail": e.detail,
    }


def _claim_ref(claim_id: int) -> str:
    return HexBytes(keccak(text=f"bti-claim/{claim_id}")).to_0x_hex()


class ClaimsService:
    def __init__(
        self,
        db: Engine,
        warehouse: Warehouse,
        chain: ChainClient,
        *,
        clock: Callable[[], datetime] = utcnow,
        auto_limit: Decimal = Decimal(1000),
        review_hours: int = 24,
        risk: RiskEngine | None = None,
    ) -> None:
        self.db = db
        self.warehouse = warehouse
        self.chain = chain
        self.clock = clock
        self.auto_limit = auto_limit  # larger payouts always go to an underwriter
        self.review_hours = review_hours
        self.risk = risk  # for the model's score just before the trigger (optional)

    # ------------------------------------------------------------------ audit log

    def _log(
        self,
        s: Session,
        claim: Claim,
        *,
        actor: str,
        event: str,
        from_state: str | None,
        to_state: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        # the head row is locked for the rest of the transaction: appends never fork the chain
        head = s.exec(select(ClaimAuditHead).where(ClaimAuditHead.id == 1).with_for_update()).one()
        entry = ClaimAudit(
            claim_id=claim.id or 0,
            at=self.clock(),
            actor=actor,
            event=event,
            from_state=from_state,
            to_state=to_state,
            detail=json.loads(json.dumps(detail or {}, default=str)),
            prev_hash=head.last_hash,
            hash="",
        )
        s.add(entry)
        s.flush()
        entry.hash = entry_hash(head.last_hash, _entry(entry))
        head.last_id, head.last_hash = entry.id or 0, entry.hash
        s.add(head)

    def _move(
        self,
        s: Session,
        claim: Claim,
        event: Event,
        actor: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        new = transition(ClaimState(State(claim.state), claim.appealed), event)
        self._log(
            s,
            claim,
            actor=actor,
            event=event.value,
            from_state=claim.state,
            to_state=new.state.value,
            detail=detail,
        )
        claim.state, claim.appealed, claim.updated_at = new.state.value, new.appealed, self.clock()
        s.add(claim)

    def verify_log(self) -> Verdict:
        """Recompute every hash and link of the audit log and compare with its head."""
        with session_scope(self.db) as s:
            rows = s.exec(select(ClaimAudit).order_by(col(ClaimAudit.id))).all()
            head = s.get(ClaimAuditHead, 1)
            return verify(
                ((e.id or 0, e.prev_hash, e.hash, _entry(e)) for e in rows),
                None if head is None else (head.last_id, head.last_hash),
            )

    def log_of(self, claim_id: int) -> list[ClaimAudit]:
        with session_scope(self.db) as s:
            stmt = select(ClaimAudit).where(ClaimAudit.claim_id == claim_id)
            return list(s.exec(stmt.order_by(col(ClaimAudit.id))).all())

    # ------------------------------------------------------------------ opening

    def _mark_tf(self, symbol: str) -> str:
        tfs = self.warehouse.timeframes(symbol, Kind.MARK)
        if not tfs:
            raise ClaimError(f"no mark-price data for {symbol}: claims are judged on the mark")
        return tfs[0]  # the finest stored

    def _bars(
        self, symbol: str, start: datetime, end: datetime
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        tf = self._mark_tf(symbol)
        t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
        mark = self.warehouse.query(Kind.MARK, symbol, tf, t0, t1)
        try:
            last = self.warehouse.query(Kind.OHLCV, symbol, tf, t0, t1)
        except BTIError:
            last = pd.DataFrame(columns=["ts", "high", "low", "close"])
        return mark, last

    def scan(self) -> list[int]:
        """Open a claim for every active policy whose mark price reached its liquidation price
        inside its window (the first such bar is the evidence). Returns the new claims' ids."""
        with session_scope(self.db) as s:
            active = list(s.exec(select(Policy).where(Policy.status == "active")).all())
        opened: list[int] = []
        for symbol in sorted({p.symbol for p in active}):
            mine = [p for p in active if p.symbol == symbol]
            start = min(p.start_at for p in mine) - timedelta(days=1)
            end = max(p.end_at for p in mine) + timedelta(hours=1)
            try:
                mark, last = self._bars(symbol, start, end)
            except BTIError:
                continue
            insured = [
                Insured(p.id or 0, p.side, float(p.liquidation_price), p.start_at, p.end_at)
                for p in mine
            ]
            for trig in find_triggers(insured, mark, last):
                cid = self._open(trig, source="market_scan", actor=SYSTEM)
                if cid is not None:
                    opened.append(cid)
        return opened

    def _open(self, trig: Trigger, *, source: str, actor: str) -> int | None:
        """Write the claim and its first audit entry; None when the policy has a claim."""
        now = self.clock()
        try:
            with session_scope(self.db) as s:
                policy = s.get(Policy, trig.policy_id)
                assert policy is not None
                claim = Claim(
                    policy_id=trig.policy_id,
                    user_id=policy.user_id,
                    source=source,
                    state=State.OPENED.value,
                    opened_at=now,
                    trigger_at=trig.at,
                    trigger_price=trig.mark_price,
                    liquidation_price=policy.liquidation_price,
                    evidence=json.loads(json.dumps(trig.evidence, default=str)),
                    amount_claimed=policy.payout,
                    claim_ref="",
                    updated_at=now,
                )
                s.add(claim)
                s.flush()
                claim.claim_ref = _claim_ref(claim.id or 0)
                self._log(
                    s,
                    claim,
                    actor=actor,
                    event="open",
                    from_state=None,
                    to_state=State.OPENED.value,
                    detail={"source": source, "trigger_at": trig.at, "price": trig.mark_price},
                )
                policy.status = "claimed"
                s.add(policy)
                add_policy_event(
                    s,
                    policy=policy,
                    event="claimed",
                    detail={"claim_id": claim.id, "source": source},
                )
                return claim.id
        except IntegrityError:
            return None  # the same policy's claim exists: an event never opens two claims

    def file_claim(self, user: User, policy_id: int, content: bytes, filename: str) -> int:
        """A trader files a claim with their exchange's liquidation record (CSV with a header
        row, or a JSON object) with ``symbol, side, quantity, price, time``."""
        record = parse_record(content, filename)
        with session_scope(self.db) as s:
            policy = s.get(Policy, policy_id)
            if policy is None or policy.user_id != user.username:
                raise ClaimError(f"no policy #{policy_id} of {user.username}")
            if policy.status not in ("active", "expired"):
                existing = s.exec(select(Claim).where(Claim.policy_id == policy_id)).first()
                if existing is not None:
                    raise ClaimError(f"policy #{policy_id} already has claim #{existing.id}")
                raise ClaimError(f"policy #{policy_id} is {policy.status}: nothing to claim")
            symbol, side = policy.symbol, policy.side
            lp = float(policy.liquidation_price)
        at = record["time"]
        mark, last = self._bars(symbol, at - timedelta(hours=12), at + timedelta(hours=12))
        i = int(pd.DatetimeIndex(mark["ts"]).searchsorted(pd.Timestamp(at), side="right")) - 1
        bars = evidence_window(mark, last, max(i, 0)) if len(mark) else []
        trig = Trigger(
            policy_id,
            at.to_pydatetime() if isinstance(at, pd.Timestamp) else at,
            Decimal(str(record["price"])),
            {
                "kind": "trader_record",
                "record": {k: str(v) for k, v in record.items()},
                "liquidation_price": lp,
                "side": side,
                "bars": bars,
            },
        )
        cid = self._open(trig, source="trader", actor=user.username)
        if cid is None:
            raise ClaimError(f"policy #{policy_id} already has a claim")
        return cid

    # ------------------------------------------------------------------ audit & decision

    def _facts(
        self, s: Session, claim: Claim, policy: Policy
    ) -> tuple[PolicyFacts, ClaimFacts, TraderFacts]:
        pf = PolicyFacts(
            side=policy.side,
            symbol=policy.symbol,
            quantity=float(policy.quantity),
            entry_price=float(policy.entry_price),
            leverage=float(policy.leverage),
            liquidation_price=float(policy.liquidation_price),
            start=policy.start_at,
            end=policy.end_at,
            probability=policy.probability,
            risk_index=policy.risk_index,
        )
        move = distance = None
        try:
            before, _ = self._bars(
                policy.symbol, policy.start_at - timedelta(hours=25), policy.start_at
            )
            if len(before) >= 2:
                c0, c_prev = float(before["close"].iloc[-1]), float(before["close"].iloc[0])
                sign = 1 if policy.side == "long" else -1
                move = sign * (c_prev - c0) / c0
                distance = abs(c0 - float(policy.liquidation_price)) / c0
        except BTIError:
            pass
        ev = claim.evidence
        cf = ClaimFacts(
            source=claim.source,
            trigger_at=claim.trigger_at,
            bars=list(ev.get("bars", [])),
            record=ev.get("record"),
            pre_purchase_move=move,
            distance_at_purchase=distance,
        )
        month_ago = self.clock() - timedelta(days=30)
        others = s.exec(
            select(Claim).where(Claim.user_id == claim.user_id, Claim.id != claim.id)
        ).all()
        earlier = s.exec(
            select(Policy).where(
                Policy.user_id == policy.user_id,
                Policy.id != policy.id,
                Policy.start_at < policy.start_at,
                Policy.status != "declined",
            )
        ).all()
        tf = TraderFacts(
            claims_last_30d=sum(c.opened_at >= month_ago for c in others),
            earlier_claims=len(others),
            earlier_leverages=tuple(float(p.leverage) for p in earlier),
            shared_owner_with=self._shared_owners(s, claim, policy),
        )
        return pf, cf, tf

    def _shared_owners(self, s: Session, claim: Claim, policy: Policy) -> tuple[str, ...]:
        """Other traders who paid from this policy's wallet, or whose filed records name the
        same exchange account as this claim's record (one owner, many accounts)."""
        users: set[str] = set()
        if policy.wallet:
            same_wallet = s.exec(
                select(Policy.user_id).where(
                    Policy.wallet == policy.wallet, Policy.user_id != policy.user_id
                )
            ).all()
            users.update(same_wallet)
        account = (claim.evidence.get("record") or {}).get("account")
        if account:
            filed = s.exec(
                select(Claim).where(Claim.source == "trader", Claim.user_id != claim.user_id)
            ).all()
            users.update(
                c.user_id
                for c in filed
                if (c.evidence.get("record") or {}).get("account") == account
            )
        return tuple(sorted(users))

    def _probability_before_trigger(self, claim: Claim, policy: Policy) -> float | None:
        """The engine's P(reaching LP in the window's remaining time) from the mark close of
        the bar before the trigger (the engine's current paths; evidence for the reviewer)."""
        if self.risk is None:
            return None
        bars = [b for b in claim.evidence.get("bars", []) if b.get("close") is not None]
        before = [b for b in bars if pd.Timestamp(b["ts"]) < pd.Timestamp(claim.trigger_at)]
        if not before:
            return None
        spot = float(before[-1]["close"])
        hours = (policy.end_at - claim.trigger_at).total_seconds() / 3600
        try:
            sr = self.risk.symbol_risk(policy.symbol)
            hours = min(max(hours, 1.0), float(sr.table.horizons[-1]))
            lp = float(policy.liquidation_price)
            side = 1 if policy.side == "long" else -1
            p, _ = sr.table.probability(np.log(lp / spot), hours, side)
        except (BTIError, ValueError):
            return None
        return float(p)

    def audit_and_decide(self, claim_id: int) -> Claim:
        """Run the automatic audit of an opened claim and decide it: approve when every check
        passes and the amount is within the automatic limit; deny on a hard failure; refer the
        rest to an underwriter, due in ``review_hours``."""
        with session_scope(self.db) as s:
            claim = self._get(s, claim_id)
            if claim.state != State.OPENED.value:
                return claim
            policy = s.get(Policy, claim.policy_id)
            assert policy is not None
            checks = audit(
                *self._facts(s, claim, policy), self._probability_before_trigger(claim, policy)
            )
            claim.checks = [c.to_dict() for c in checks]
            self._move(s, claim, Event.AUDIT, SYSTEM, {"checks": claim.checks})
            hard = [c for c in checks if c.name in HARD and c.outcome is Outcome.FAIL]
            soft = [c for c in checks if c.outcome is not Outcome.PASS and c not in hard]
            if hard:
                claim.decision_reason = "; ".join(c.reason for c in hard)
                claim.decided_by = SYSTEM
                self._move(s, claim, Event.AUTO_DENY, SYSTEM, {"reasons": _reasons(hard)})
            elif not soft and claim.amount_claimed <= self.auto_limit:
                claim.amount_approved = claim.amount_claimed
                claim.decided_by = SYSTEM
                claim.decision_reason = "every check passed"
                self._move(s, claim, Event.AUTO_APPROVE, SYSTEM, {"amount": claim.amount_approved})
            else:
                why = _reasons(soft) or [
                    f"amount {claim.amount_claimed:,.2f} BTI is above the automatic limit "
                    f"{self.auto_limit:,.2f} BTI"
                ]
                claim.due_at = self.clock() + timedelta(hours=self.review_hours)
                self._move(s, claim, Event.REFER, SYSTEM, {"reasons": why, "due": claim.due_at})
            return claim

    def decide(
        self,
        claim_id: int,
        user: User | None,
        decision: str,
        reason: str,
        amount: Decimal | None = None,
    ) -> Claim:
        """An underwriter approves, denies or adjusts (a partial amount) a referred or appealed
        claim, with a written reason; approved amounts are paid at once."""
        require_underwriter(user, "decide claims")
        assert user is not None
        events = {
            "approve": Event.UNDERWRITER_APPROVE,
            "deny": Event.UNDERWRITER_DENY,
            "adjust": Event.UNDERWRITER_ADJUST,
        }
        if decision not in events:
            raise ClaimError(f"decision must be approve, deny or adjust; got {decision!r}")
        reason = reason.strip()
        if len(reason) < 5:
            raise ClaimError("write the reason for the decision (at least 5 characters)")
        with session_scope(self.db) as s:
            claim = self._get(s, claim_id)
            if State(claim.state) not in OPEN_FOR_UNDERWRITER:
                raise ClaimError(
                    f"claim #{claim_id} is {claim.state}: only referred or appealed claims "
                    "await an underwriter"
                )
            if decision == "adjust":
                if amount is None or not (Decimal(0) < amount < claim.amount_claimed):
                    raise ClaimError(
                        f"an adjusted amount must be above 0 and below the claimed "
                        f"{claim.amount_claimed:,.2f} BTI; got {amount}"
                    )
                claim.amount_approved = amount.quantize(Decimal("0.01"))
            elif decision == "approve":
                claim.amount_approved = claim.amount_claimed
            claim.decided_by, claim.decision_reason = user.username, reason
            self._move(
                s,
                claim,
                events[decision],
                user.username,
                {"reason": reason, "amount": claim.amount_approved},
            )
            state, final_denial = claim.state, claim.state == State.DENIED.value and claim.appealed
        if state in (State.APPROVED.value, State.ADJUSTED.value):
            return self.pay(claim_id)
        if final_denial:
            self._release_after_final_denial(claim_id)
        return self.get(claim_id)

    def _release_after_final_denial(self, claim_id: int) -> None:
        """A denial upheld on appeal is final: the policy's cover no longer backs anything, so
        its capital is released on-chain (retried by anyone after expiry + grace if this
        fails)."""
        claim = self.get(claim_id)
        policy = self.policy_of(claim)
        if policy.chain_policy_id is None:
            return
        try:
            tx = self.chain.release_cover(policy.chain_policy_id)
        except ChainError:
            return
        with session_scope(self.db) as s:
            p = s.get(Policy, policy.id)
            assert p is not None
            add_policy_event(
                s, policy=p, event="cover_released", detail={"tx": tx, "claim_id": claim_id}
            )

    def appeal(self, claim_id: int, user: User, reason: str) -> Claim:
        """The claim's trader appeals a denial, once, with a reason; an underwriter reviews it."""
        reason = reason.strip()
        if len(reason) < 5:
            raise ClaimError("say why you appeal (at least 5 characters)")
        with session_scope(self.db) as s:
            claim = self._get(s, claim_id)
            if claim.user_id != user.username:
                raise AuthError(f"claim #{claim_id} is not {user.username}'s")
            claim.due_at = self.clock() + timedelta(hours=self.review_hours)
            self._move(s, claim, Event.APPEAL, user.username, {"reason": reason})
            return claim

    # ------------------------------------------------------------------ payment

    def pay(self, claim_id: int) -> Claim:
        """Pay an approved (or adjusted) claim through the pool, exactly once."""
        with session_scope(self.db) as s:
            claim = self._get(s, claim_id)
            if claim.state in (State.APPROVED.value, State.ADJUSTED.value):
                self._move(
                    s,
                    claim,
                    Event.PAY,
                    SYSTEM,
                    {"amount": claim.amount_approved, "ref": claim.claim_ref},
                )
            elif claim.state == State.FAILED.value:
                self._move(s, claim, Event.RETRY, SYSTEM)
            elif claim.state != State.PAYING.value:
                return claim
            policy = s.get(Policy, claim.policy_id)
            assert policy is not None
            assert claim.amount_approved is not None
            chain_id, amount, ref = policy.chain_policy_id, claim.amount_approved, claim.claim_ref
        # committed as `paying` before anything is sent
        if chain_id is None:
            return self._fail(claim_id, "the policy has no on-chain record to pay from")
        try:
            tx = self.chain.pay_claim(chain_id, amount, bytes(HexBytes(ref)))
        except ChainError as exc:
            if exc.reason == "PolicyNotActive":
                found = self.chain.claim_payment(chain_id)
                if found is not None:  # paid before a crash: record it, never pay again
                    return self._confirm(claim_id, found[0])
            if exc.reason is not None:  # the pool refused: the claim fails, with the reason
                return self._fail(claim_id, str(exc))
            raise  # node down: stays `paying`; reconcile settles it
        return self._confirm(claim_id, tx)

    def _confirm(self, claim_id: int, tx: str) -> Claim:
        with session_scope(self.db) as s:
            claim = self._get(s, claim_id)
            if claim.state == State.PAID.value:
                return claim
            claim.payout_tx, claim.paid_at = tx, self.clock()
            self._move(s, claim, Event.CONFIRM, SYSTEM, {"tx": tx})
            policy = s.get(Policy, claim.policy_id)
            assert policy is not None
            policy.status = "paid"
            s.add(policy)
            add_policy_event(
                s,
                policy=policy,
                event="paid",
                detail={"claim_id": claim_id, "amount": str(claim.amount_approved), "tx": tx},
            )
            return claim

    def _fail(self, claim_id: int, reason: str) -> Claim:
        with session_scope(self.db) as s:
            claim = self._get(s, claim_id)
            self._move(s, claim, Event.FAIL, SYSTEM, {"reason": reason})
            return claim

    # ------------------------------------------------------------------ pipeline

    def process(self, claim_id: int) -> Claim:
        claim = self.audit_and_decide(claim_id)
        if claim.state in (State.APPROVED.value, State.ADJUSTED.value):
            claim = self.pay(claim_id)
        return claim

    def run(self) -> RunReport:
        """Scan the market, then audit, decide and pay every claim that is waiting."""
        report = RunReport(opened=self.scan())
        with session_scope(self.db) as s:
            waiting = s.exec(select(Claim.id).where(Claim.state == State.OPENED.value)).all()
        for cid in waiting:
            c = self.process(cid or 0)
            {
                State.PAID.value: report.paid,
                State.DENIED.value: report.denied,
                State.REFERRED.value: report.referred,
            }.get(c.state, report.approved).append(cid or 0)
        return report

    def reconcile(self) -> RunReport:
        """Settle claims a crash left half-done: ``paying`` (sent or not), approved but not yet
        sent, failed payments, and opened claims not yet audited."""
        report = RunReport()
        with session_scope(self.db) as s:
            todo = s.exec(
                select(Claim.id, Claim.state).where(
                    col(Claim.state).in_(
                        [
                            State.OPENED.value,
                            State.APPROVED.value,
                            State.ADJUSTED.value,
                            State.PAYING.value,
                            State.FAILED.value,
                        ]
                    )
                )
            ).all()
        for cid, _state in todo:
            c = self.process(cid or 0) if _state == State.OPENED.value else self.pay(cid or 0)
            if c.state == State.PAID.value:
                report.paid.append(cid or 0)
        return report

    # ------------------------------------------------------------------ reading

    def _get(self, s: Session, claim_id: int) -> Claim:
        claim = s.get(Claim, claim_id)
        if claim is None:
            raise ClaimError(f"no claim #{claim_id}")
        return claim

    def get(self, claim_id: int) -> Claim:
        with session_scope(self.db) as s:
            return self._get(s, claim_id)

    def policy_of(self, claim: Claim) -> Policy:
        with session_scope(self.db) as s:
            p = s.get(Policy, claim.policy_id)
            assert p is not None
            return p

    def queue(self, states: list[str] | None = None, symbol: str | None = None) -> pd.DataFrame:
        """Claims for review, soonest due and largest first."""
        with session_scope(self.db) as s:
            stmt = select(Claim, Policy).where(Claim.policy_id == Policy.id)
            if states:
                stmt = stmt.where(col(Claim.state).in_(states))
            if symbol:
                stmt = stmt.where(Policy.symbol == symbol)
            rows = s.exec(stmt).all()
        far = pd.Timestamp.max.tz_localize("UTC")
        df = pd.DataFrame(
            [
                {
                    "claim": c.id,
                    "state": c.state,
                    "due": c.due_at,
                    "amount": float(c.amount_claimed),
                    "approved": None if c.amount_approved is None else float(c.amount_approved),
                    "symbol": p.symbol,
                    "side": p.side,
                    "leverage": float(p.leverage),
                    "trader": c.user_id,
                    "source": c.source,
                    "opened": c.opened_at,
                    "policy": p.id,
                }
                for c, p in rows
            ],
            columns=[
                "claim",
                "state",
                "due",
                "amount",
                "approved",
                "symbol",
                "side",
                "leverage",
                "trader",
                "source",
                "opened",
                "policy",
            ],
        )
        if df.empty:
            return df
        key = df["due"].map(lambda d: far if d is None or pd.isna(d) else pd.Timestamp(d))
        return (
            df.assign(_k=key)
            .sort_values(["_k", "amount"], ascending=[True, False])
            .drop(columns="_k")
        )

    def claims_of(self, user_id: str) -> list[Claim]:
        with session_scope(self.db) as s:
            stmt = select(Claim).where(Claim.user_id == user_id).order_by(col(Claim.id).desc())
            return list(s.exec(stmt).all())


def _reasons(checks: list[AuditCheck]) -> list[str]:
    return [f"{c.name}: {c.reason}" for c in checks]


REQUIRED = ("symbol", "side", "quantity", "price", "time")


def parse_record(content: bytes, filename: str) -> dict[str, Any]:
    """An exchange liquidation record from CSV (header row + one row) or JSON (an object)."""
    if len(content) > 100_000:
        raise ClaimError(
            f"{filename}: a liquidation record is a few lines; this is {len(content):,} bytes"
        )
    text = content.decode("utf-8-sig", errors="replace").strip()
    try:
        if filename.lower().endswith(".json"):
            data = json.loads(text)
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            if not isinstance(data, dict):
                raise ClaimError(f"{filename}: expected one JSON object with {', '.join(REQUIRED)}")
        elif filename.lower().endswith(".csv"):
            rows = list(csv.DictReader(io.StringIO(text)))
            if len(rows) != 1:
                raise ClaimError(
                    f"{filename}: expected a header row and one record; got {len(rows)} records"
                )
            data = rows[0]
        else:
            raise ClaimError(f"{filename}: upload a .csv or .json liquidation record")
    except json.JSONDecodeError as exc:
        raise ClaimError(f"{filename}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    data = {str(k).strip().lower(): v for k, v in data.items()}
    missing = [k for k in REQUIRED if k not in data or str(data[k]).strip() == ""]
    if missing:
        raise ClaimError(
            f"{filename}: missing {', '.join(missing)}; a record needs {', '.join(REQUIRED)}"
        )
    try:
        qty, price = Decimal(str(data["quantity"])), Decimal(str(data["price"]))
    except InvalidOperation as exc:
        raise ClaimError(f"{filename}: quantity and price must be numbers") from exc
    if not (qty.is_finite() and price.is_finite()) or qty <= 0 or price <= 0:
        raise ClaimError(f"{filename}: quantity and price must be positive numbers")
    side = str(data["side"]).strip().lower()
    side = {"buy": "long", "sell": "short"}.get(side, side)
    if side not in ("long", "short"):
        raise ClaimError(
            f"{filename}: side must be long or short (or buy/sell); got {data['side']!r}"
        )
    try:
        t = pd.Timestamp(data["time"])
    except (ValueError, TypeError) as exc:
        raise ClaimError(
            f"{filename}: time {data['time']!r} is not a date-time (ISO 8601)"
        ) from exc
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    record: dict[str, Any] = {
        "symbol": str(data["symbol"]).strip().upper(),
        "side": side,
        "quantity": qty,
        "price": price,
        "time": t,
    }
    if str(data.get("account", "")).strip():  # the exchange account id, when the export has it
        record["account"] = str(data["account"]).strip()
    return record
