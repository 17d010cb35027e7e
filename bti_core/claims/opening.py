"""Opening claims: from the stored market (`scan`), from a stream's liquidations
(`open_from_ticks`, held while unproven and re-checked by `recheck_held`) and from a trader's
exchange record (`file_claim`). A claim opens only on evidence that proves the time and the
price; what is not proven uses up nothing. Each claim is written with its first audit entry
and its policy's lifecycle move in one write transaction that re-reads the policy under a
lock, so a policy gets one claim however many processes open at once."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bti_core.auth import User
from bti_core.claims import audit_log, holds
from bti_core.claims.checks import (
    AuditCheck,
    ClaimFacts,
    Outcome,
    TraderFacts,
    adl_checks,
    hard_checks,
    title,
)
from bti_core.claims.exchange import ADL_SOURCE
from bti_core.claims.facts import Evidence, policy_facts
from bti_core.claims.hits import TickHit
from bti_core.claims.payments import SYSTEM, load_policies
from bti_core.claims.records import ClaimError, parse_record
from bti_core.claims.state import State
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Claim, HeldTrigger, Policy
from bti_core.db.repository import add_policy_event
from bti_core.db.statuses import CLAIMABLE_STATUSES, Peril, PolicyStatus
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
from bti_core.policies.lifecycle import FILING_PERIOD, LifecycleEvent, move_policy


class ClaimOpener:
    """Opens claims on proven evidence (the module docstring); `ClaimsService` holds one."""

    def __init__(self, db: Engine, evidence: Evidence, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.evidence = evidence
        self.clock = clock

    def scan(self) -> list[int]:
        """Open a claim for every active policy whose stored mark bars prove its liquidation
        price reached inside its window (`market.triggers`: the bar that settles it earliest).
        Returns the new claims' ids."""
        with session_scope(self.db) as s:
            active = list(
                s.exec(
                    select(Policy).where(
                        Policy.status == PolicyStatus.ACTIVE.value,
                        Policy.peril == Peril.LIQUIDATION.value,  # ADL: `scan_adl`
                    )
                ).all()
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

        def settle(
            h: HeldTrigger, state: str, reason: str | None = None, claim: int | None = None
        ) -> None:
            """Settle the hold ``state`` (confirmed, refuted or lapsed) and count it."""
            holds.settle(self.db, h.id or 0, state, now=now, reason=reason, claim_id=claim)
            setattr(report, state, getattr(report, state) + 1)

        for h in waiting:
            p = policies.get(h.policy_id)
            if p is None or p.status not in CLAIMABLE_STATUSES:
                settle(h, "lapsed", f"policy {p.status if p else 'gone'}")
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
                settle(h, "confirmed", claim=ids[0] if ids else None)
                report.opened += ids
            elif refutes(insured, series, at, now):
                settle(h, "refuted", "the stored bar of its time never reached the level")
            elif now > p.end_at + holds.HOLD_AFTER_WINDOW:
                settle(h, "lapsed", "no bars settled it within a day of the window")
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
        with session_scope(self.db) as s:
            policy = s.get(Policy, policy_id)
            if policy is None or policy.user_id != user.username:
                raise ClaimError(f"no policy #{policy_id} of {user.username}")
            if policy.status not in CLAIMABLE_STATUSES:
                existing = s.exec(select(Claim).where(Claim.policy_id == policy_id)).first()
                if existing is not None:
                    raise ClaimError(f"policy #{policy_id} already has claim #{existing.id}")
                raise ClaimError(f"policy #{policy_id} is {policy.status}: nothing to claim")
            filing_ends = policy.end_at + FILING_PERIOD
            if policy.status == PolicyStatus.EXPIRED and self.clock() > filing_ends:
                raise ClaimError(
                    f"the filing period of policy #{policy_id} ended at "
                    f"{filing_ends:%Y-%m-%d %H:%M} UTC: a claim on an ended cover is filed "
                    f"within {FILING_PERIOD.total_seconds() / 3600:g} hours of its end"
                )
            if policy.peril == Peril.ADL.value:
                raise ClaimError(
                    f"policy #{policy_id} covers auto-deleveraging: its claim opens by itself on "
                    "the exchange's ADL record, which BTI reads with the linked account's key"
                )
        record = parse_record(content, filename, now=self.clock())
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


def _insured(p: Policy) -> Insured:
    return Insured(p.id or 0, p.side, float(p.liquidation_price), p.liquidations_from, p.end_at)


def _hard_failures(policy: Policy, trig: Trigger, source: str) -> list[AuditCheck]:
    """The hard checks a trigger fails before its claim is opened (`checks.hard_checks`)."""
    ev = {**trig.evidence, **({"until": trig.until} if trig.until else {})}
    facts = ClaimFacts.of(source, trig.at, json.loads(json.dumps(ev, default=str)))
    return [c for c in hard_checks(policy_facts(policy), facts) if c.outcome is Outcome.FAIL]


def refused(policy: Policy, trig: Trigger, source: str) -> bool:
    """Whether a trigger fails a hard check: then no claim is opened on it at all. A policy
    against ADL is claimed only on the exchange's ADL record (`checks.adl_checks`), and only
    such a policy on it."""
    if (policy.peril == Peril.ADL.value) != (source == ADL_SOURCE):
        return True
    if source == ADL_SOURCE:
        facts = ClaimFacts.of(source, trig.at, json.loads(json.dumps(trig.evidence, default=str)))
        checks = adl_checks(policy_facts(policy), facts, TraderFacts())
        return any(c.outcome is not Outcome.PASS for c in checks[:2])
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
