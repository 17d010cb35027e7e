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

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bti_core.auth import AuthError, User, require_underwriter
from bti_core.chain.client import ChainClient
from bti_core.claims import audit_log, holds, queries
from bti_core.claims.adjudication import Decision, adjudicate
from bti_core.claims.audit_log import AuditLogError, move
from bti_core.claims.checks import (
    AuditCheck,
    ClaimFacts,
    Outcome,
    audit,
    hard_checks,
    title,
)
from bti_core.claims.facts import Evidence, policy_facts
from bti_core.claims.hits import TickHit
from bti_core.claims.ledger import Verdict
from bti_core.claims.payments import SYSTEM, Payments, load_policies, locked_claim, locked_claims
from bti_core.claims.records import ClaimError, parse_record
from bti_core.claims.state import OPEN_FOR_UNDERWRITER, Event, State
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Claim, ClaimAudit, Policy
from bti_core.db.repository import add_policy_event
from bti_core.db.statuses import CLAIMABLE_STATUSES, PolicyStatus
from bti_core.db.types import utcnow
from bti_core.errors import BTIError
from bti_core.market.triggers import (
    EVIDENCE_BARS,
    Insured,
    Series,
    Trigger,
    evidence_window,
    find_triggers,
    refutes,
)
from bti_core.market.warehouse import Warehouse
from bti_core.policies.lifecycle import LifecycleEvent, move_policy
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
    ) -> None:
        self.db = db
        self.warehouse = warehouse
        self.chain = chain
        self.clock = clock
        self.auto_limit = auto_limit  # larger payouts always go to an underwriter
        self.review_hours = review_hours
        self.evidence = Evidence(warehouse, risk, lambda: self.clock(), db)
        self.payments = Payments(db, chain, clock=lambda: self.clock())

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
        """Open a claim for every active policy whose stored mark bars prove its liquidation
        price reached inside its window (`market.triggers`: the bar that settles it earliest).
        Returns the new claims' ids."""
        with session_scope(self.db) as s:
            active = list(
                s.exec(select(Policy).where(Policy.status == PolicyStatus.ACTIVE.value)).all()
            )
        opened: list[int] = []
        for symbol in sorted({p.symbol for p in active}):
            mine = [p for p in active if p.symbol == symbol]
            # a day before the first purchase: the evidence shows the market it was bought in
            start = min(p.start_at for p in mine) - timedelta(days=1)
            end = max(p.end_at for p in mine) + timedelta(hours=1)
            insured = [_insured(p) for p in mine]
            series = self.evidence.series(symbol, start, end)
            triggers = find_triggers(insured, series)
            opened += self._open_many(triggers, source="market_scan", actor=SYSTEM)
        return opened

    def _open(
        self, trig: Trigger, *, source: str, actor: str, allowed: tuple[str, ...]
    ) -> int | None:
        """Write the claim and its first audit entry; None when the policy has a claim or is
        no longer in an ``allowed`` status (another process got there first)."""
        opened = self._open_many([trig], source=source, actor=actor, allowed=allowed)
        return opened[0] if opened else None

    def _open_many(
        self,
        triggers: Sequence[Trigger],
        *,
        source: str,
        actor: str,
        allowed: tuple[str, ...] = (PolicyStatus.ACTIVE.value,),
    ) -> list[int]:
        """`_open` for many triggers in one write transaction (each policy once: its row is
        locked and must still be ``allowed``), the claims inserted in one statement. Should the
        unique claim of a policy race another process's anyway, the triggers are opened one by
        one."""
        now = self.clock()
        if not triggers:
            return []
        try:
            with write_scope(self.db) as s:
                policies = load_policies(s, (t.policy_id for t in triggers), lock=True)
                made: list[tuple[Trigger, Policy, Claim]] = []
                for trig in triggers:
                    policy = policies.pop(trig.policy_id, None)  # popped: a policy once
                    if policy is None or policy.status not in allowed:
                        continue
                    if refused(policy, trig, source):  # unproven: it uses up nothing
                        continue
                    made.append((trig, policy, self._new_claim(trig, policy, source, now)))
                s.add_all([c for _, _, c in made])
                s.flush()  # their ids, for the audit entries
                for trig, policy, claim in made:
                    audit_log.append(
                        s,
                        claim,
                        at=now,
                        actor=actor,
                        event="open",
                        from_state=None,
                        detail={"source": source, "trigger_at": trig.at, "price": trig.mark_price},
                    )
                    move_policy(
                        s,
                        policy=policy,
                        event=LifecycleEvent.CLAIM,
                        detail={"claim_id": claim.id, "source": source},
                    )
                return [c.id or 0 for _, _, c in made]
        except IntegrityError:
            if len(triggers) == 1:
                return []  # the same policy's claim exists: an event never opens two claims
            return [
                cid
                for trig in triggers
                for cid in self._open_many([trig], source=source, actor=actor, allowed=allowed)
            ]

    @staticmethod
    def _new_claim(trig: Trigger, policy: Policy, source: str, now: datetime) -> Claim:
        return Claim(
            policy_id=trig.policy_id,
            user_id=policy.user_id,
            source=source,
            state=State.OPENED.value,
            opened_at=now,
            trigger_at=trig.at,
            trigger_price=trig.mark_price,
            liquidation_price=policy.liquidation_price,
            evidence=json.loads(
                json.dumps(
                    {**trig.evidence, **({"until": trig.until} if trig.until else {})},
                    default=str,
                )
            ),
            amount_claimed=policy.payout,
            claim_ref="",
            updated_at=now,
        )

    def open_from_ticks(
        self, hits: Sequence[TickHit], stream: str, *, chunk: int = 500
    ) -> list[int]:
        """The claims of a stream's liquidations (`bti_core.stream`), each only on evidence
        that proves it: a run of ticks that stayed beyond the level for the confirmation
        window (`TickHit.confirmation`), or else the stored bars around its time
        (`market.triggers`, the scan's proof). A crossing neither proves is held
        (`claims.holds`) and re-checked each round (`recheck_held`): it uses up nothing, and a
        true liquidation later still opens the claim. A policy that already has its claim or is
        no longer open gets none. A crash liquidates thousands at one tick: the bars around the
        ticks are read once per symbol and minute, and ``chunk`` claims go in a write
        transaction. The new claims' ids, in hit order."""
        windows: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
        for h in hits:
            key = (h.symbol, h.at.replace(second=0, microsecond=0))
            if key not in windows:
                stored = self._tick_bars(h.symbol, h.at)
                have = {b["ts"] for b in stored}
                extra = [b for b in h.feed_bars if b["ts"] not in have]
                windows[key] = sorted(stored + extra, key=lambda b: pd.Timestamp(b["ts"]))
        with session_scope(self.db) as s:
            policies = {
                p.id or 0: p
                for i in range(0, len(hits), 500)
                for p in s.exec(
                    select(Policy).where(
                        col(Policy.id).in_(list({h.policy_id for h in hits})[i : i + 500])
                    )
                ).all()
            }
        triggers: list[Trigger] = []
        unconfirmed: list[TickHit] = []
        for h in hits:
            p = policies.get(h.policy_id)
            if p is None or p.status not in CLAIMABLE_STATUSES:
                continue  # claimed already (a second stream, the scan), or no longer open
            if h.confirmation is None:
                unconfirmed.append(h)
                continue
            triggers.append(
                Trigger(
                    h.policy_id,
                    h.at,
                    Decimal(repr(float(h.price))),
                    {
                        "kind": "mark_ticks_beyond_liquidation_price",
                        "stream": stream,
                        "tick": {"at": h.at.isoformat(), "mark": float(h.price)},
                        "confirmation": {**h.confirmation, "stream": stream},
                        "mark_extreme": h.confirmation.get("extreme"),
                        "liquidation_price": float(policies[h.policy_id].liquidation_price),
                        "bars": windows[(h.symbol, h.at.replace(second=0, microsecond=0))],
                    },
                )
            )
        triggers += self._prove_by_bars(unconfirmed, policies, stream)
        opened: list[int] = []
        for i in range(0, len(triggers), chunk):
            opened += self._open_many(triggers[i : i + chunk], source="stream", actor=SYSTEM)
        proven = {t.policy_id for t in triggers}
        holds.hold(
            self.db,
            [h for h in unconfirmed if h.policy_id not in proven],
            stream,
            "a crossing no evidence confirmed yet: waiting for the stored bars of its minute",
            now=self.clock(),
        )
        holds.confirm(self.db, [(t.policy_id, stream) for t in triggers], now=self.clock())
        return opened

    def _prove_by_bars(
        self, hits: Sequence[TickHit], policies: dict[int, Policy], stream: str
    ) -> list[Trigger]:
        """The crossings among ``hits`` that the stored bars around their times prove (one
        read of the bars per symbol)."""
        out: list[Trigger] = []
        by_symbol: dict[str, list[TickHit]] = {}
        for h in hits:
            by_symbol.setdefault(h.symbol, []).append(h)
        for symbol, mine in by_symbol.items():
            lo = min(h.at for h in mine) - timedelta(hours=2)
            hi = max(h.at for h in mine) + timedelta(hours=2)
            series = self.evidence.series(symbol, lo, hi)
            if not series:
                continue
            seen: set[int] = set()
            for h in mine:
                if h.policy_id in seen:
                    continue
                found = find_triggers(
                    [_insured(policies[h.policy_id])], series, near=h.at
                ) or find_triggers([_insured(policies[h.policy_id])], series)
                if found:
                    seen.add(h.policy_id)
                    t = found[0]
                    ev = {
                        **t.evidence,
                        "stream": stream,
                        "tick": {"at": h.at.isoformat(), "mark": h.price},
                    }
                    out.append(Trigger(t.policy_id, t.at, t.mark_price, ev, t.until))
        return out

    def _tick_bars(self, symbol: str, at: datetime) -> list[dict[str, Any]]:
        """The stored bars around the bar a tick falls in (none stored: no bars)."""
        try:
            mark, last = self.evidence.bars(
                symbol, at - timedelta(hours=EVIDENCE_BARS), at + timedelta(hours=EVIDENCE_BARS)
            )
        except BTIError:
            return []
        if not len(mark):
            return []
        i = int((pd.to_datetime(mark["ts"], utc=True) <= pd.Timestamp(at)).sum()) - 1
        return evidence_window(mark, last, max(i, 0))

    def recheck_held(self) -> holds.Recheck:
        """Each held crossing against the stored bars now (the worker, every round): proven,
        its claim opens (``confirmed``); the bar holding its time closed and never reached
        the level (``refuted``: a forged or glitched tick); its policy's claim opened another
        way, or a day past its window with nothing settled (``lapsed``)."""
        now = self.clock()
        report = holds.Recheck()
        waiting = holds.held(self.db)
        if not waiting:
            return report
        with session_scope(self.db) as s:
            policies = {
                p.id or 0: p
                for p in s.exec(
                    select(Policy).where(col(Policy.id).in_(list({h.policy_id for h in waiting})))
                ).all()
            }
        for h in waiting:
            p = policies.get(h.policy_id)
            if p is None or p.status not in CLAIMABLE_STATUSES:
                holds.settle(
                    self.db,
                    h.id or 0,
                    "lapsed",
                    now=now,
                    reason=f"policy {p.status if p else 'gone'}",
                )
                report.lapsed += 1
                continue
            at = h.at
            series = self.evidence.series(
                h.symbol, at - timedelta(hours=2), at + timedelta(hours=2)
            )
            insured = _insured(p)
            found = find_triggers([insured], series, near=at)
            if found:
                t = found[0]
                ev = {
                    **t.evidence,
                    "stream": h.stream,
                    "tick": {"at": at.isoformat(), "mark": float(h.price)},
                }
                ids = self._open_many(
                    [Trigger(t.policy_id, t.at, t.mark_price, ev, t.until)],
                    source="stream",
                    actor=SYSTEM,
                    allowed=CLAIMABLE_STATUSES,
                )
                holds.settle(
                    self.db, h.id or 0, "confirmed", now=now, claim_id=ids[0] if ids else None
                )
                report.confirmed += 1
                report.opened += ids
            elif refutes(insured, series, at, now):
                holds.settle(
                    self.db,
                    h.id or 0,
                    "refuted",
                    now=now,
                    reason="the stored bar of its time never reached the level",
                )
                report.refuted += 1
            elif now > p.end_at + holds.HOLD_AFTER_WINDOW:
                holds.settle(
                    self.db,
                    h.id or 0,
                    "lapsed",
                    now=now,
                    reason="no bars settled it within a day of the window",
                )
                report.lapsed += 1
            else:
                holds.touch(self.db, h.id or 0, now=now)
        return report

    def file_claim(self, user: User, policy_id: int, content: bytes, filename: str) -> int:
        """A trader files a claim with their exchange's liquidation record (CSV with a header
        row, or a JSON object) with ``symbol, side, quantity, price, time``. The record opens
        a claim only when it proves the liquidation: it matches the insured order, its time
        lies inside the window, and the stored mark bars holding that time reached the
        liquidation price inside the window. Anything else is refused with the reason and
        uses up nothing: the policy can still be claimed."""
        record = parse_record(content, filename, now=self.clock())
        with session_scope(self.db) as s:
            policy = s.get(Policy, policy_id)
            if policy is None or policy.user_id != user.username:
                raise ClaimError(f"no policy #{policy_id} of {user.username}")
            if policy.status not in CLAIMABLE_STATUSES:
                existing = s.exec(select(Claim).where(Claim.policy_id == policy_id)).first()
                if existing is not None:
                    raise ClaimError(f"policy #{policy_id} already has claim #{existing.id}")
                raise ClaimError(f"policy #{policy_id} is {policy.status}: nothing to claim")
        at = pd.Timestamp(record["time"]).to_pydatetime()
        series = self.evidence.series(
            policy.symbol, at - timedelta(hours=12), at + timedelta(hours=12)
        )
        found = find_triggers([_insured(policy)], series, near=at)
        proof = found[0] if found else None
        holding = _holding(series, at)
        ev: dict[str, Any] = {
            "kind": "trader_record",
            "record": {k: str(v) for k, v in record.items()},
            "liquidation_price": float(policy.liquidation_price),
            "side": policy.side,
        }
        if proof is not None:
            ev |= {k: proof.evidence[k] for k in ("bar", "timeframe", "mark_extreme", "bars")}
            ev["mark_at_trigger"] = proof.evidence["mark_extreme"]
            ev["until"] = proof.evidence["until"]
        elif holding is not None:  # what the mark did at that time, for the reason given
            ev |= holding
        trig = Trigger(
            policy_id, at, Decimal(str(record["price"])), ev, proof.until if proof else None
        )
        failed = _hard_failures(policy, trig, "trader")
        if failed or proof is None:
            why = [f"{title(c.name)}: {c.reason}" for c in failed] or [
                "the stored mark bars cannot prove a liquidation at that time inside the cover "
                "window (no bar holding it lies wholly inside the window yet)"
            ]
            with write_scope(self.db) as s:  # in the lifecycle, and the trader's history
                row = s.get(Policy, policy_id)
                if row is not None:
                    add_policy_event(
                        s,
                        policy=row,
                        event="claim_refused",
                        detail={"record": ev["record"], "reasons": why},
                    )
            raise ClaimError(
                f"record refused, and policy #{policy_id} can still be claimed: " + "; ".join(why)
            )
        cid = self._open(trig, source="trader", actor=user.username, allowed=CLAIMABLE_STATUSES)
        if cid is None:
            raise ClaimError(f"policy #{policy_id} already has a claim")
        return cid

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
            decisions = []
            engines: dict[str, Any] = {}  # each symbol's risk engine, read once
            for claim, f in zip(claims, facts, strict=True):
                p_before = self.evidence.probability_before_trigger(
                    claim, policies[claim.policy_id], engines
                )
                checks = audit(*f, p_before)
                decisions.append(
                    (
                        claim.id or 0,
                        checks,
                        adjudicate(checks, claim.amount_claimed, self.auto_limit),
                    )
                )
        now = self.clock()
        out: list[Claim] = []
        with write_scope(self.db) as s:
            locked = locked_claims(s, [d[0] for d in decisions])
            for cid, checks, decision in decisions:
                claim = locked[cid]
                if claim.state != State.OPENED.value:  # another process decided it meanwhile
                    continue
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
        opened = self.scan()
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


def _insured(p: Policy) -> Insured:
    return Insured(p.id or 0, p.side, float(p.liquidation_price), p.start_at, p.end_at)


def _hard_failures(policy: Policy, trig: Trigger, source: str) -> list[AuditCheck]:
    """The hard checks a trigger fails before its claim is opened (`checks.hard_checks`)."""
    ev = {**trig.evidence, **({"until": trig.until} if trig.until else {})}
    facts = ClaimFacts.of(source, trig.at, json.loads(json.dumps(ev, default=str)))
    return [c for c in hard_checks(policy_facts(policy), facts) if c.outcome is Outcome.FAIL]


def refused(policy: Policy, trig: Trigger, source: str) -> bool:
    """Whether a trigger fails a hard check: then no claim is opened on it at all."""
    return bool(_hard_failures(policy, trig, source))


def _holding(series: Sequence[Series], at: datetime) -> dict[str, Any] | None:
    """The evidence of the finest stored bar holding ``at`` (for a refusal's reason)."""
    t = pd.Timestamp(at)
    for s in sorted(series, key=lambda x: x.step):
        opens = pd.DatetimeIndex(pd.to_datetime(s.mark["ts"], utc=True))
        i = int(opens.searchsorted(t, side="right")) - 1
        if i >= 0 and t < opens[i] + s.step:
            return {
                "bar": opens[i].isoformat(),
                "timeframe": s.timeframe,
                "until": (opens[i] + s.step).isoformat(),
                "bars": evidence_window(s.mark, s.last, i),
            }
    return None
