"""The claims service: open claims from the market or a trader's record, audit and decide them,
and hand approved ones to `Payments`, which pays each exactly once through the pool.

Concurrency: any number of workers, CLI runs and dashboards may run this at once. Every change
to a claim happens in a write transaction that first re-reads the claim under a lock
(`write_scope`: SQLite ``BEGIN IMMEDIATE``, PostgreSQL row locks) and does nothing when the
claim has moved on, so each step happens once. Slow reads (market bars, the risk engine) come
before that transaction, never inside it. Claims are never lost: each is committed with its
first audit entry before anything else happens to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bti_core.accounts.service import AccountsService
from bti_core.auth import AuthError, User, require_underwriter
from bti_core.chain.client import ChainClient
from bti_core.claims import audit_log, holds, queries
from bti_core.claims.adjudication import Decision, adjudicate
from bti_core.claims.audit_log import AuditLogError, move
from bti_core.claims.checks import AuditCheck, Outcome, adl_checks, audit, exchange_confirms
from bti_core.claims.exchange import (
    ADL_SOURCE,
    adl_amount,
    adl_trigger,
    linked_amount,
    read_records,
)
from bti_core.claims.facts import Evidence
from bti_core.claims.hits import TickHit
from bti_core.claims.ledger import Verdict
from bti_core.claims.opening import ClaimOpener
from bti_core.claims.parts import part_of, partly
from bti_core.claims.payments import SYSTEM, Payments, locked_claim, locked_claims
from bti_core.claims.records import ClaimError
from bti_core.claims.reserves import Reserves
from bti_core.claims.state import OPEN_FOR_UNDERWRITER, Event, State
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Claim, ClaimAudit, ExchangePosition, Policy, PositionChange
from bti_core.db.statuses import Peril, PolicyStatus
from bti_core.db.types import utcnow
from bti_core.errors import BTIError
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine

__all__ = [
    "SYSTEM",
    "AuditLogError",
    "ClaimError",
    "ClaimsService",
    "Decision",
    "RunReport",
    "TickHit",
]


@dataclass
class RunReport:
    """What one run did (claims another process handled at the same time are not counted)."""

    opened: list[int] = field(default_factory=list)
    approved: list[int] = field(default_factory=list)  # approved, payment not yet confirmed
    denied: list[int] = field(default_factory=list)
    referred: list[int] = field(default_factory=list)
    paid: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # approved, but the pool refused to pay

    def __str__(self) -> str:
        return (
            f"opened {len(self.opened)}, auto-approved {len(self.approved) + len(self.paid)}, "
            f"auto-denied {len(self.denied)}, referred {len(self.referred)}, paid "
            f"{len(self.paid)}, payment failed {len(self.failed)}"
        )

    def add(self, claim: Claim | None) -> None:
        if claim is None or claim.id is None:
            return
        bins = {
            State.PAID.value: self.paid,
            State.DENIED.value: self.denied,
            State.REFERRED.value: self.referred,
            State.FAILED.value: self.failed,
            State.APPROVED.value: self.approved,
            State.ADJUSTED.value: self.approved,
            State.PAYING.value: self.approved,
        }
        if claim.state in bins:
            bins[claim.state].append(claim.id)


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
        accounts: AccountsService | None = None,
        exchange_wait: timedelta = timedelta(minutes=30),
    ) -> None:
        self.db = db
        # linked policies' claims wait ``exchange_wait`` for the exchange's own record
        self.accounts = accounts
        self.exchange_wait = exchange_wait
        self.warehouse = warehouse
        self.chain = chain
        self.clock = clock
        self.auto_limit = auto_limit  # larger payouts always go to an underwriter
        self.review_hours = review_hours
        self.evidence = Evidence(warehouse, risk, lambda: self.clock(), db)
        self.opening = ClaimOpener(db, self.evidence, lambda: self.clock())
        self.payments = Payments(db, chain, clock=lambda: self.clock())
        self.reserves = Reserves(db, chain)

    @property
    def risk(self) -> RiskEngine | None:
        """The engine for the model's score just before the trigger (optional)."""
        return self.evidence.risk

    @risk.setter
    def risk(self, engine: RiskEngine | None) -> None:
        self.evidence.risk = engine

    # ------------------------------------------------------------------ audit log

    def verify_log(self) -> Verdict:
        """Every hash and link of the audit log, its head, every claim against its entries,
        and every payout on-chain against the head it anchored."""
        return audit_log.verify(self.db, self.chain)

    def why(self, claim_id: int) -> list[str]:
        """Why the claim waits for an underwriter, in the log's words: each reason of its
        referral, and the trader's appeal if there is one (empty for a claim never referred)."""
        reasons: list[str] = []
        for e in self.log_of(claim_id):
            if e.event == Event.REFER.value:
                reasons = [str(r) for r in (e.detail or {}).get("reasons", [])]
            elif e.event == Event.APPEAL.value:
                reasons.append(f"Appealed by {e.actor}: {(e.detail or {}).get('reason', '')}")
        return reasons

    def log_of(self, claim_id: int) -> list[ClaimAudit]:
        return audit_log.entries_of(self.db, claim_id)

    # ------------------------------------------------------------------ opening

    def scan(self) -> list[int]:
        """`ClaimOpener.scan`: claims for every active policy the stored bars prove."""
        return self.opening.scan()

    def scan_adl(self) -> list[int]:
        """Open a claim for every active ADL policy (`policies.positions`) whose position the
        exchange auto-deleveraged inside its window: its ADL forced orders, read (outside any
        lock, a few at once) for the positions that were reduced or closed since purchase. The
        new claims' ids; an exchange that cannot be read is asked again next round."""
        if self.accounts is None:
            return []
        # a position reduced or closed since the purchase (EXISTS: no DISTINCT over the
        # policy's JSON columns, which PostgreSQL cannot compare)
        changed = (
            select(PositionChange.id)
            .where(
                PositionChange.position_id == Policy.position_id,
                col(PositionChange.change).in_(["reduced", "closed"]),
                PositionChange.at >= Policy.start_at,
            )
            .exists()
        )
        with session_scope(self.db) as s:
            due = s.exec(
                select(Policy).where(
                    Policy.status == PolicyStatus.ACTIVE.value,
                    Policy.peril == Peril.ADL.value,
                    changed,
                )
            ).all()
        records = read_records(self.accounts, due, self.clock())
        triggers = [t for p in due if (t := adl_trigger(p, records[p.id or 0])) is not None]
        return self.opening._open_many(triggers, source=ADL_SOURCE, actor=SYSTEM)

    def open_from_ticks(
        self, hits: Sequence[TickHit], stream: str, *, chunk: int = 500
    ) -> list[int]:
        """`ClaimOpener.open_from_ticks`: the claims of a stream's proven liquidations."""
        return self.opening.open_from_ticks(hits, stream, chunk=chunk)

    def recheck_held(self) -> holds.Recheck:
        """`ClaimOpener.recheck_held`: each held crossing against the stored bars now."""
        return self.opening.recheck_held()

    def file_claim(self, user: User, policy_id: int, content: bytes, filename: str) -> int:
        """`ClaimOpener.file_claim`: a claim on a trader's exchange record that proves it."""
        return self.opening.file_claim(user, policy_id, content, filename)

    # ------------------------------------------------------------------ audit & decision

    def audit_and_decide(self, claim_id: int) -> Claim:
        """Run the automatic audit of an opened claim and decide it (`adjudicate`); a referred
        claim is due for an underwriter in ``review_hours``. A claim no longer ``opened`` is
        returned as it is."""
        return self._audit_and_decide(claim_id) or self.get(claim_id)

    def _audit_and_decide(self, claim_id: int) -> Claim | None:
        decided = self._audit_and_decide_many([claim_id])
        return decided[0] if decided else None

    def _audit_and_decide_many(self, claim_ids: Sequence[int]) -> list[Claim]:
        """Audit and decide the ``opened`` claims among ``claim_ids``: the facts read for all
        of them at once, outside the lock (`Evidence.facts_many`), then each decision
        written in one write transaction, after re-reading the claim under it (a claim
        another process decided meanwhile is left out)."""
        with session_scope(self.db) as s:  # facts first: reads, some slow, outside the lock
            claims = [
                c
                for c in s.exec(select(Claim).where(col(Claim.id).in_(list(claim_ids)))).all()
                if c.state == State.OPENED.value
            ]
            if not claims:
                return []
            pids = list({c.policy_id for c in claims})
            policies = {
                p.id or 0: p for p in s.exec(select(Policy).where(col(Policy.id).in_(pids))).all()
            }
            facts = self.evidence.facts_many(s, claims, policies)
        asked = self.clock()
        # the exchange's record of each linked liquidation claim, read a few at once
        linked = [
            policies[c.policy_id]
            for c in claims
            if policies[c.policy_id].position_id is not None
            and policies[c.policy_id].peril == Peril.LIQUIDATION.value
        ]
        records = read_records(self.accounts, linked, asked)
        decisions: list[tuple[int, list[AuditCheck], Decision, dict[str, str] | None]] = []
        engines: dict[str, Any] = {}  # each symbol's risk engine, read once
        for claim, f in zip(claims, facts, strict=True):
            policy = policies[claim.policy_id]
            if policy.peril == Peril.ADL.value:  # opened on the exchange's ADL record
                checks = adl_checks(*f)
                amount = adl_amount(policy, claim.evidence.get("exchange") or {})
                decisions.append(
                    (claim.id or 0, checks, adjudicate(checks, amount, self.auto_limit), None)
                )
                continue
            p_before = self.evidence.probability_before_trigger(claim, policy, engines)
            amount, exchange, part = claim.amount_claimed, None, None
            if policy.id in records:  # the exchange's own record decides it too
                record = records[policy.id]
                exchange = exchange_confirms(
                    f[0],
                    record,
                    waited=asked >= claim.trigger_at + self.exchange_wait,
                    wait_minutes=self.exchange_wait.total_seconds() / 60,
                )
                if exchange is None:
                    continue  # no record yet: the claim waits for it, undecided
                if exchange.outcome is Outcome.PASS:
                    amount = linked_amount(policy, record)
                    if partly(policy, record):  # read the account again only then
                        part = part_of(policy, record, self._position_now(policy), amount)
            confirmed = exchange is not None and exchange.outcome is Outcome.PASS
            checks = audit(*f, p_before, confirmed=confirmed)
            checks += [exchange] if exchange is not None else []
            decision = adjudicate(checks, amount, self.auto_limit)
            decisions.append((claim.id or 0, checks, decision, part))
        if not decisions:
            return []
        now = self.clock()
        out: list[Claim] = []
        with write_scope(self.db) as s:
            locked = locked_claims(s, [d[0] for d in decisions])
            for cid, checks, decision, part in decisions:
                claim = locked[cid]
                if claim.state != State.OPENED.value:  # another process decided it meanwhile
                    continue
                if part is not None:  # a partial liquidation: the rest stays covered
                    claim.evidence = {**claim.evidence, "part": part}
                claim.checks = [c.to_dict() for c in checks]
                move(s, claim, Event.AUDIT, actor=SYSTEM, at=now, detail={"checks": claim.checks})
                if decision.event is Event.REFER:
                    claim.due_at = now + timedelta(hours=self.review_hours)
                    detail: dict[str, object] = {"reasons": decision.reasons, "due": claim.due_at}
                else:
                    claim.decided_by = SYSTEM
                    claim.decision_reason = "; ".join(decision.reasons)
                    claim.amount_approved = decision.amount
                    detail = {"reasons": decision.reasons, "amount": decision.amount}
                move(s, claim, decision.event, actor=SYSTEM, at=now, detail=detail)
                out.append(claim)
        return out

    def _position_now(self, policy: Policy) -> ExchangePosition | None:
        """The insured position as the exchange has it now (its account read again: a partly
        liquidated position's rest and liquidation price), None if it cannot be read."""
        if self.accounts is None or policy.position_id is None:
            return None
        with session_scope(self.db) as s:
            pos = s.get(ExchangePosition, policy.position_id)
        if pos is None:
            return None
        try:
            self.accounts.sync(pos.account_id)
        except BTIError:
            return None
        with session_scope(self.db) as s:
            return s.get(ExchangePosition, policy.position_id)

    def process_many(self, claim_ids: Sequence[int], *, chunk: int = 500) -> RunReport:
        """Audit, decide and pay many opened claims (a crash at scale): ``chunk`` claims a
        decision transaction; then every approved one paid in batches (`Payments.pay_many`:
        one snapshot of a local node for all of them)."""
        report = RunReport()
        approved: list[int] = []
        for i in range(0, len(claim_ids), chunk):
            for c in self._audit_and_decide_many(claim_ids[i : i + chunk]):
                if c.state in (State.APPROVED.value, State.ADJUSTED.value):
                    approved.append(c.id or 0)
                else:
                    report.add(c)
        for c in self.payments.pay_many(approved) if approved else []:
            report.add(c)
        return report

    def decide(
        self,
        claim_id: int,
        user: User | None,
        decision: str,
        reason: str,
        amount: Decimal | None = None,
    ) -> Claim:
        """An underwriter approves, denies or adjusts (a partial amount) a referred or appealed
        claim, with a written reason; approved amounts are paid at once. Nobody decides a
        claim on their own policy."""
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
        with write_scope(self.db) as s:
            claim = locked_claim(s, claim_id)
            if claim.user_id == user.username:
                raise AuthError(
                    f"claim #{claim_id} is on {user.username}'s own policy: another underwriter "
                    "must decide it"
                )
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
            move(
                s,
                claim,
                events[decision],
                actor=user.username,
                at=self.clock(),
                detail={"reason": reason, "amount": claim.amount_approved},
            )
            state, final_denial = claim.state, claim.state == State.DENIED.value and claim.appealed
            policy_id = claim.policy_id
        if state in (State.APPROVED.value, State.ADJUSTED.value):
            return self.pay(claim_id)
        if final_denial:
            # a denial upheld on appeal is final: the cover no longer backs anything
            self.payments.release_cover(policy_id, claim_id)
        return self.get(claim_id)

    def appeal(self, claim_id: int, user: User, reason: str) -> Claim:
        """The claim's trader appeals a denial, once, with a reason; an underwriter reviews it."""
        reason = reason.strip()
        if len(reason) < 5:
            raise ClaimError("say why you appeal (at least 5 characters)")
        with write_scope(self.db) as s:
            claim = locked_claim(s, claim_id)
            if claim.user_id != user.username:
                raise AuthError(f"claim #{claim_id} is not {user.username}'s")
            now = self.clock()
            claim.due_at = now + timedelta(hours=self.review_hours)
            move(s, claim, Event.APPEAL, actor=user.username, at=now, detail={"reason": reason})
            return claim

    # ------------------------------------------------------------------ payment & pipeline

    def pay(self, claim_id: int) -> Claim:
        """Pay an approved (or adjusted) claim through the pool, exactly once."""
        return self.payments.pay(claim_id) or self.get(claim_id)

    def process(self, claim_id: int) -> Claim:
        claim = self.audit_and_decide(claim_id)
        if claim.state in (State.APPROVED.value, State.ADJUSTED.value):
            claim = self.pay(claim_id)
        return claim

    def _waiting(self, states: list[State]) -> list[int]:
        with session_scope(self.db) as s:
            stmt = select(Claim.id).where(col(Claim.state).in_([x.value for x in states]))
            return [i for i in s.exec(stmt.order_by(col(Claim.id))).all() if i is not None]

    def run(self) -> RunReport:
        """Scan the market, then audit, decide and pay every claim that is waiting (safe beside
        other runs: each claim is taken by one of them)."""
        opened = self.scan() + self.scan_adl()
        report = self.process_many(self._waiting([State.OPENED]))
        report.opened = opened
        return report

    def reconcile(self) -> RunReport:
        """Settle claims a crash left half-done: opened but not audited, approved but not yet
        sent, ``paying`` (sent or not) whose sender is gone, and failed payments."""
        report = self.process_many(self._waiting([State.OPENED]))
        waiting = self._waiting([State.APPROVED, State.ADJUSTED, State.PAYING, State.FAILED])
        for c in self.payments.pay_many(waiting) if waiting else []:
            report.add(c)
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
        """Claims for review, soonest due and largest first (`queries.review_queue`)."""
        return queries.review_queue(self.db, states=states, symbol=symbol)

    def claims_of(self, user_id: str) -> list[Claim]:
        return queries.claims_of(self.db, user_id=user_id)
