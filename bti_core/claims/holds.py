"""Held triggers: liquidations a stream saw that no evidence has confirmed yet.

A crossing of a liquidation price that did not persist for the confirmation window (one tick,
forged or glitched, or a true touch too brief to tell), and that the stored bars around it do
not prove yet, is held here instead of opening a claim: it uses up nothing. The worker
re-checks every held row each round (`ClaimsService.recheck_held`) until the bars settle it —
``confirmed`` (its claim opens), ``refuted`` (the bar of its time closed without reaching the
level) — or it ``lapses`` (its policy's claim opened another way, or a day passed after the
window with nothing stored to settle it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import HeldTrigger
from bti_core.db.repository import held_triggers
from bti_core.db.statuses import HoldState
from bti_core.db.types import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bti_core.claims.hits import TickHit

HOLD_AFTER_WINDOW = timedelta(days=1)  # as long as an ended policy waits for market data
MAX_HELD_PER_POLICY = 20  # a flapping feed holds no more than this per policy and stream


@dataclass
class Recheck:
    confirmed: int = 0
    refuted: int = 0
    lapsed: int = 0
    opened: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.confirmed or self.refuted or self.lapsed)

    def __str__(self) -> str:
        return f"confirmed {self.confirmed}, refuted {self.refuted}, lapsed {self.lapsed}"


def hold(
    db: Engine, hits: Sequence[TickHit], stream: str, reason: str, *, now: datetime | None = None
) -> int:
    """Hold each hit (policy, stream, time: once); returns how many rows were added."""
    if not hits:
        return 0
    now = now or utcnow()
    added = 0
    with write_scope(db, lock=f"holds:{stream}") as s:
        pids = list({h.policy_id for h in hits})
        have: dict[int, set[datetime]] = {}
        for i in range(0, len(pids), 500):
            for pid, at in s.exec(
                select(HeldTrigger.policy_id, HeldTrigger.at).where(
                    col(HeldTrigger.policy_id).in_(pids[i : i + 500]),
                    HeldTrigger.stream == stream,
                )
            ).all():
                have.setdefault(pid, set()).add(at)
        for h in hits:
            seen = have.setdefault(h.policy_id, set())
            if h.at in seen or len(seen) >= MAX_HELD_PER_POLICY:
                continue
            seen.add(h.at)
            s.add(
                HeldTrigger(
                    policy_id=h.policy_id,
                    symbol=h.symbol,
                    stream=stream,
                    at=h.at,
                    price=Decimal(repr(float(h.price))),
                    reason=reason[:300],
                    state=HoldState.HELD.value,
                    created_at=now,
                )
            )
            added += 1
        try:
            s.flush()
        except IntegrityError:  # another process held the same crossing meanwhile
            s.rollback()
            return 0
    return added


def held(db: Engine, limit: int = 5_000) -> list[HeldTrigger]:
    with session_scope(db) as s:
        return list(
            s.exec(
                select(HeldTrigger)
                .where(HeldTrigger.state == HoldState.HELD.value)
                .order_by(col(HeldTrigger.id))
                .limit(limit)
            ).all()
        )


def of_policy(db: Engine, policy_id: int) -> list[HeldTrigger]:
    with session_scope(db) as s:
        return held_triggers(s, policy_id)


def settle(
    db: Engine,
    hold_id: int,
    state: str,
    *,
    now: datetime | None = None,
    claim_id: int | None = None,
    reason: str | None = None,
) -> None:
    with write_scope(db) as s:
        h = s.get(HeldTrigger, hold_id, with_for_update=True)
        if h is None or h.state != HoldState.HELD:
            return
        h.state, h.checked_at, h.claim_id = state, now or utcnow(), claim_id
        if reason:
            h.reason = reason[:300]
        s.add(h)


def touch(db: Engine, hold_id: int, *, now: datetime | None = None) -> None:
    with write_scope(db) as s:
        h = s.get(HeldTrigger, hold_id, with_for_update=True)
        if h is not None and h.state == HoldState.HELD:
            h.checked_at = now or utcnow()
            s.add(h)


def confirm(
    db: Engine, confirmed: Iterable[tuple[int, str]], *, now: datetime | None = None
) -> None:
    """A stream's held rows of policies now proven (by the run's persistence or the bars):
    confirmed."""
    pairs = set(confirmed)
    if not pairs:
        return
    now = now or utcnow()
    pids = sorted({p for p, _ in pairs})
    with write_scope(db) as s:
        for i in range(0, len(pids), 500):
            for h in s.exec(
                select(HeldTrigger).where(
                    col(HeldTrigger.policy_id).in_(pids[i : i + 500]),
                    HeldTrigger.state == HoldState.HELD.value,
                )
            ).all():
                if (h.policy_id, h.stream) in pairs:
                    h.state, h.checked_at = "confirmed", now
                    s.add(h)


def counts(db: Engine) -> dict[str, int]:
    """Held triggers by state (for reports and benchmarks)."""
    from sqlalchemy import func

    with session_scope(db) as s:
        return {
            str(st): int(n)
            for st, n in s.exec(
                select(HeldTrigger.state, func.count()).group_by(HeldTrigger.state)
            ).all()
        }
