"""Where the real-time pipeline writes: alerts and checkpoints, in one transaction.

A batch's alerts and the checkpoint after it (every symbol's `SymbolState` and the source
offset) are written together, so a process killed at any point either wrote both or neither;
each alert also carries a key (a hash of what raised it) that the table holds unique, so a
batch processed again after a restart — from an older checkpoint, by another process — adds
nothing. Claims need no such key: a policy has at most one claim (a unique column).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from bti_core.auth import User
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Alert, AlertSeen, StreamCheckpoint
from bti_core.db.types import utcnow
from bti_core.display import price_text
from bti_core.errors import BTIError
from bti_core.stream.types import Event

MESSAGES: dict[str, Callable[[Event], str]] = {
    "liquidation": lambda e: (
        f"{e.symbol} policy #{e.policy}: the mark price reached its liquidation price at "
        f"{price_text(e.detail[0] if e.detail else e.price)}"
        + (f" and stayed there {e.value:,.0f} s" if e.value > 0 else "")
        + "; its claim opens now"
    ),
    "near_liquidation": lambda e: (
        f"{e.symbol} policy #{e.policy}: the mark price {price_text(e.price)} is within "
        f"{e.value:.0%} of its liquidation price"
    ),
    "risk_index": lambda e: f"{e.symbol} policy #{e.policy}: risk index {e.value:.0f} of 100",
    "volatility_spike": lambda e: (
        f"{e.symbol}: an hourly move of {e.value:+.1f} σ".replace("-", "−")
        + f" (close {price_text(e.price)})"
    ),
    "funding_extreme": lambda e: (
        f"{e.symbol}: funding settled at {e.value:+.3%} ("
        + ("longs pay shorts" if e.value > 0 else "shorts pay longs")
        + f"), mark price {price_text(e.price)}"
    ).replace("-", "−"),
    "forecast_breach": lambda e: (
        f"{e.symbol}: the hourly close {price_text(e.price)} is "
        + ("below" if e.price < e.value else "above")
        + f" the forecast's 95 % band (bound {price_text(e.value)})"
    ),
    "pool_utilisation": lambda e: (
        f"the pool's locked cover is {e.value:.0%} of its capacity "
        f"({e.price:,.0f} USDT locked); sales stop at the utilisation limit"
    ),
}
# what the pages call each kind (the order they are listed in)
LABELS: dict[str, str] = {
    "liquidation": "Liquidation",
    "near_liquidation": "Near liquidation",
    "risk_index": "Risk index",
    "volatility_spike": "Volatility spike",
    "funding_extreme": "Funding extreme",
    "forecast_breach": "Forecast band",
    "pool_utilisation": "Pool utilisation",
}
# kinds whose value tells two events at one tick apart (the 5 % and the 2 % levels); other
# values are readings (an index, σ, a bound) that a refitted model may shift a little
_VALUE_IN_KEY = frozenset({"near_liquidation"})


class AlertError(BTIError, ValueError):
    """An alert that cannot be acknowledged by who asks (unknown, someone else's)."""


def alert_key(e: Event) -> str:
    """What raised the alert, hashed: symbol, kind, policy and time (and the level, for the
    near-liquidation levels). Not the stream: the same ticks raise the same events in every
    engine (the worker's, a replay, Kafka, Spark), so an event two of them see is stored once;
    nor a reading such as the risk index, which a batch processed again under a refitted model
    may put a little differently."""
    value = f"{e.value:.12g}" if e.kind in _VALUE_IN_KEY else ""
    # a policy is liquidated once: the streams that confirm it at different ticks (a bar's,
    # a run of ticks') raise one alert
    at = "" if e.kind == "liquidation" else e.at_ms
    raw = f"{e.symbol}|{e.kind}|{e.policy}|{at}|{value}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _insert(db: Engine, table: Any) -> Any:
    return (postgresql if db.dialect.name == "postgresql" else sqlite).insert(table)


@dataclass(frozen=True)
class Written:
    alerts: int  # new rows (events seen before are not counted)
    offset: int


def write_batch(
    db: Engine,
    stream: str,
    events: Sequence[Event],
    *,
    owners: dict[int, str],
    offset: int,
    state: dict[str, Any],
) -> Written:
    """Store ``events`` as alerts (``owners``: policy id → trader) and the checkpoint, in one
    transaction; an alert already stored is skipped, a checkpoint never moves back."""
    now = utcnow()
    events = [e for e in events if e.kind in MESSAGES]  # crossings are held, not alerts
    rows = [
        {
            "key": alert_key(e),
            "symbol": e.symbol,
            "kind": e.kind,
            "policy_id": e.policy,
            "user_id": None if e.policy is None else owners.get(e.policy),
            "at": datetime.fromtimestamp(
                (e.since_ms if e.since_ms >= 0 else e.at_ms) / 1000, tz=UTC
            ),
            "price": float(e.price),
            "value": float(e.value),
            "message": MESSAGES[e.kind](e)[:500],
            "created_at": now,
        }
        for e in events
    ]
    with write_scope(db, lock=f"stream:{stream}") as s:
        added = 0
        if rows:
            # the stream's writes are serialised (the lock above; SQLite's writes all are), so
            # the keys seen here are exact; the unique key stays the guarantee
            keys = [r["key"] for r in rows]
            seen = set(s.exec(select(Alert.key).where(col(Alert.key).in_(keys))).all())
            fresh = [r for r in rows if r["key"] not in seen]
            if fresh:
                stmt = _insert(db, Alert.__table__).on_conflict_do_nothing(  # type: ignore[attr-defined]
                    index_elements=["key"]
                )
                s.connection().execute(stmt, fresh)
            added = len(fresh)
        cp = s.get(StreamCheckpoint, stream, with_for_update=True)
        if cp is None:
            s.add(StreamCheckpoint(name=stream, offset=offset, state=state, updated_at=now))
        elif offset >= cp.offset:
            cp.offset, cp.state, cp.updated_at = offset, state, now
            s.add(cp)
    return Written(added, offset)


def load_checkpoint(db: Engine, stream: str) -> tuple[int, dict[str, Any]]:
    """(offset, state) of ``stream``: (0, {}) before its first batch."""
    with session_scope(db) as s:
        cp = s.get(StreamCheckpoint, stream)
        return (0, {}) if cp is None else (int(cp.offset), dict(cp.state))


@dataclass(frozen=True)
class SeenAlert:
    """An alert as one reader sees it: ``seen_at`` is when *they* marked it seen (None: not)."""

    alert: Alert
    seen_at: datetime | None

    @property
    def seen(self) -> bool:
        return self.seen_at is not None


def alerts_for(
    db: Engine, user: User, *, unacknowledged: bool = False, limit: int = 200
) -> list[SeenAlert]:
    """A trader's alerts on their policies; an underwriter's: every alert. Newest first, each
    with whether this user has marked it seen (another reader's mark does not count)."""
    with session_scope(db) as s:
        seen = (
            select(AlertSeen.alert_id, AlertSeen.at)
            .where(AlertSeen.user_id == user.username)
            .subquery()
        )
        stmt = select(Alert, seen.c.at).outerjoin(seen, seen.c.alert_id == Alert.id)
        if not user.is_underwriter:
            stmt = stmt.where(Alert.user_id == user.username)
        if unacknowledged:
            stmt = stmt.where(seen.c.at.is_(None))
        stmt = stmt.order_by(col(Alert.at).desc(), col(Alert.id).desc()).limit(limit)
        return [SeenAlert(a, at) for a, at in s.exec(stmt).all()]


def acknowledge(db: Engine, alert_id: int, user: User) -> datetime:
    """Mark an alert seen for ``user`` alone (a trader their own alerts, an underwriter any);
    returns when they first did. Twice, or from two processes at once, keeps the first time."""
    with write_scope(db) as s:
        a = s.get(Alert, alert_id)
        if a is None or (not user.is_underwriter and a.user_id != user.username):
            raise AlertError(f"no alert #{alert_id} of yours to acknowledge")
        s.exec(
            _insert(db, AlertSeen.__table__)  # type: ignore[attr-defined]
            .values(alert_id=alert_id, user_id=user.username, at=utcnow())
            .on_conflict_do_nothing(index_elements=["alert_id", "user_id"])
        )
        at = s.exec(
            select(AlertSeen.at).where(
                AlertSeen.alert_id == alert_id, AlertSeen.user_id == user.username
            )
        ).one()
        return at
