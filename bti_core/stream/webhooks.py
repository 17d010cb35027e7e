"""Alert subscriptions and their webhook delivery.

A subscription names what a user wants pushed (scope, kinds, symbols) and where (an http(s)
URL). Each round the worker delivers every alert raised since a subscription was made that it
matches: the alert is POSTed as JSON (``key``, ``alert``, ``subscription``, ``kind``,
``symbol``, ``policy``, ``user``, ``at`` (ISO 8601, UTC), ``price``, ``value``, ``message``)
with the headers ``X-BTI-Alert-Key`` (the alert's key: the receiver dedupes on it)
and ``X-BTI-Delivery`` (this delivery's id).

Delivery is at least once and, between BTI's own workers, sent by one: a delivery row
(unique per alert and subscription) is leased in a write transaction before the request and
marked sent after it, so a second worker skips it while the lease runs; a worker killed
between the request and the mark sends it again when the lease ends (hence the key). A refused
or failed request is retried after 30 s, 2 min, 8 min …, and given up after `MAX_ATTEMPTS`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bti_core.auth import User
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Alert, AlertDelivery, AlertSubscription, AppUser
from bti_core.db.types import utcnow
from bti_core.errors import BTIError
from bti_core.outbound import DestinationError, Network, destination, post_json
from bti_core.stream.store import MESSAGES

KINDS = tuple(MESSAGES)
MAX_SUBSCRIPTIONS = 20  # per user
MAX_ATTEMPTS = 6
LEASE = timedelta(seconds=60)
_SYMBOL = re.compile(r"^[A-Z0-9]{2,40}$")

Post = Callable[[str, dict[str, Any], dict[str, str]], int]  # url, body, headers → status


class SubscriptionError(BTIError, ValueError):
    """A subscription that cannot be made or changed as asked."""


def _check_url(url: str, allowed: tuple[Network, ...] = ()) -> str:
    url = url.strip()
    if len(url) > 500:
        raise SubscriptionError(f"the webhook URL has {len(url)} characters; at most 500")
    try:
        destination(url, allowed)  # resolved now; again at every delivery
    except DestinationError as exc:
        raise SubscriptionError(str(exc)) from exc
    return url


def subscribe(
    db: Engine,
    user: User,
    *,
    webhook_url: str,
    kinds: Sequence[str] = (),
    symbols: Sequence[str] = (),
    scope: str = "mine",
    allowed: tuple[Network, ...] = (),
) -> AlertSubscription:
    """A new subscription of ``user``; refuses an unknown kind, a bad symbol or URL, the
    scope "all" for a trader, and more than `MAX_SUBSCRIPTIONS`."""
    if scope not in ("mine", "all"):
        raise SubscriptionError(f"scope must be 'mine' or 'all'; got {scope!r}")
    if scope == "all" and not user.is_underwriter:
        raise SubscriptionError("only underwriters may subscribe to every alert")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SubscriptionError(f"unknown alert kind {bad[0]!r}; one of {', '.join(KINDS)}")
    syms = [s.strip().upper() for s in symbols if s.strip()]
    wrong = [s for s in syms if not _SYMBOL.match(s)]
    if wrong:
        raise SubscriptionError(f"symbol {wrong[0]!r} must be 2–40 letters and digits")
    url = _check_url(webhook_url, allowed)
    with write_scope(db, lock=f"subscriptions:{user.username}") as s:
        have = s.exec(
            select(AlertSubscription).where(
                AlertSubscription.user_id == user.username,
                col(AlertSubscription.active).is_(True),
            )
        ).all()
        if len(have) >= MAX_SUBSCRIPTIONS:
            raise SubscriptionError(
                f"you have {len(have)} subscriptions, the most allowed; remove one first"
            )
        sub = AlertSubscription(
            user_id=user.username,
            scope=scope,
            kinds=sorted(set(kinds)),
            symbols=sorted(set(syms)),
            webhook_url=url,
        )
        s.add(sub)
        s.flush()
        s.refresh(sub)
        return sub


def subscriptions_of(db: Engine, user: User) -> list[AlertSubscription]:
    with session_scope(db) as s:
        stmt = select(AlertSubscription).where(
            AlertSubscription.user_id == user.username,
            col(AlertSubscription.active).is_(True),
        )
        return list(s.exec(stmt.order_by(col(AlertSubscription.id))).all())


def unsubscribe(db: Engine, user: User, sub_id: int) -> None:
    """Stop a subscription of one's own (its deliveries made so far stay recorded)."""
    with write_scope(db) as s:
        sub = s.get(AlertSubscription, sub_id, with_for_update=True)
        if sub is None or sub.user_id != user.username or not sub.active:
            raise SubscriptionError(f"no subscription #{sub_id} of yours")
        sub.active = False
        s.add(sub)


def body(alert: Alert, sub: AlertSubscription) -> dict[str, Any]:
    return {
        "key": alert.key,
        "alert": alert.id,
        "subscription": sub.id,
        "kind": alert.kind,
        "symbol": alert.symbol,
        "policy": alert.policy_id,
        "user": alert.user_id,
        "at": alert.at.isoformat(),
        "price": alert.price,
        "value": alert.value,
        "message": alert.message,
    }


@dataclass(frozen=True)
class Delivered:
    sent: int = 0
    retried: int = 0  # failed this time; tried again later
    failed: int = 0  # given up

    def __bool__(self) -> bool:
        return bool(self.sent or self.retried or self.failed)


def _due(db: Engine, now: datetime, limit: int, per_sub: int) -> list[tuple[int, int]]:
    """(alert, subscription) pairs to send now, oldest first, at most ``per_sub`` a
    subscription (a slow receiver takes no more than its share of a round): alerts the
    subscription matches, raised after it was made, neither sent nor given up, and not leased
    or waiting for a retry whose time has not come. A subscription to every alert delivers only
    while its owner is an underwriter (the role is read now: a demoted one's stops), and one
    whose owner is gone delivers nothing."""
    out: list[tuple[int, int]] = []
    with session_scope(db) as s:
        subs = s.exec(
            select(AlertSubscription)
            .where(col(AlertSubscription.active).is_(True))
            .order_by(col(AlertSubscription.id))
        ).all()
        roles = dict(s.exec(select(AppUser.username, AppUser.role)).all())
        for sub in subs:
            role = roles.get(sub.user_id)
            if role is None or (sub.scope == "all" and role != "underwriter"):
                continue
            d = AlertDelivery
            busy = select(d.alert_id).where(
                d.subscription_id == sub.id,
                col(d.status).in_(["sent", "failed"]) | (col(d.lease_until) > now),
            )
            stmt = select(Alert.id).where(
                col(Alert.created_at) >= sub.created_at, col(Alert.id).not_in(busy)
            )
            if sub.scope == "mine":
                stmt = stmt.where(Alert.user_id == sub.user_id)
            if sub.kinds:
                stmt = stmt.where(col(Alert.kind).in_(sub.kinds))
            if sub.symbols:
                stmt = stmt.where(col(Alert.symbol).in_(sub.symbols))
            ids = s.exec(stmt.order_by(col(Alert.id)).limit(min(per_sub, limit - len(out)))).all()
            out += [(int(i), int(sub.id)) for i in ids if i is not None]  # type: ignore[arg-type]
            if len(out) >= limit:
                break
    return out


def _lease(db: Engine, alert_id: int, sub_id: int, now: datetime) -> int | None:
    """The delivery's id, leased to this worker; None when another holds it or it is done."""
    with write_scope(db, lock=f"delivery:{alert_id}:{sub_id}") as s:
        d = s.exec(
            select(AlertDelivery)
            .where(AlertDelivery.alert_id == alert_id, AlertDelivery.subscription_id == sub_id)
            .with_for_update()
        ).first()
        if d is None:
            d = AlertDelivery(alert_id=alert_id, subscription_id=sub_id, status="sending")
        elif d.status in ("sent", "failed") or (d.lease_until is not None and d.lease_until > now):
            return None
        d.status, d.lease_until = "sending", now + LEASE
        s.add(d)
        s.flush()
        return int(d.id)  # type: ignore[arg-type]


def _finish(db: Engine, delivery_id: int, error: str | None, now: datetime) -> str:
    with write_scope(db) as s:
        d = s.get(AlertDelivery, delivery_id, with_for_update=True)
        assert d is not None
        d.attempts += 1
        if error is None:
            d.status, d.sent_at, d.lease_until, d.last_error = "sent", now, None, None
        elif d.attempts >= MAX_ATTEMPTS:
            d.status, d.lease_until, d.last_error = "failed", None, error[:500]
        else:  # 30 s, 2 min, 8 min, …
            d.status, d.last_error = "retry", error[:500]
            d.lease_until = now + timedelta(seconds=30 * 4 ** (d.attempts - 1))
        s.add(d)
        return d.status


def deliver(
    db: Engine,
    *,
    post: Post | None = None,
    limit: int = 200,
    per_subscription: int = 20,
    clock: Callable[[], datetime] = utcnow,
    allowed: tuple[Network, ...] = (),
    deadline: float = 10.0,
    workers: int = 4,
    stop: threading.Event | None = None,
) -> Delivered:
    """Send what is due (module docstring) through ``workers`` requests at a time, each
    bounded by `bti_core.outbound` (``deadline`` seconds in all, the destination checked again,
    no redirect, the answer's size capped); counts of sent, to be retried and given up.
    ``stop``: no new request starts once it is set."""
    send = post or (
        lambda url, payload, headers: post_json(
            url, payload, headers, deadline=deadline, allowed=allowed
        )
    )
    counts = {"sent": 0, "retry": 0, "failed": 0}
    lock = threading.Lock()

    def one(alert_id: int, sub_id: int) -> None:
        if stop is not None and stop.is_set():
            return
        did = _lease(db, alert_id, sub_id, clock())
        if did is None:
            return
        with session_scope(db) as s:
            a, sub = s.get(Alert, alert_id), s.get(AlertSubscription, sub_id)
            assert a is not None
            assert sub is not None
            payload, url = body(a, sub), sub.webhook_url
            key = a.key
        error: str | None = None
        try:
            status = send(url, payload, {"X-BTI-Alert-Key": key, "X-BTI-Delivery": str(did)})
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (
                    " (redirects are not followed)" if 300 <= status < 400 else ""
                )
        except Exception as exc:  # a webhook is someone else's server: any failure is theirs
            error = f"{exc.__class__.__name__}: {exc}"
        outcome = _finish(db, did, error, clock())
        with lock:
            counts[outcome] += 1

    due = _due(db, clock(), limit, per_subscription)
    if workers <= 1:
        for alert_id, sub_id in due:
            one(alert_id, sub_id)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bti-webhook") as pool:
            for f in [pool.submit(one, a, sub) for a, sub in due]:
                f.result()
    return Delivered(counts["sent"], counts["retry"], counts["failed"])


def deliveries_of(db: Engine, sub_id: int, limit: int = 50) -> list[AlertDelivery]:
    with session_scope(db) as s:
        stmt = (
            select(AlertDelivery)
            .where(AlertDelivery.subscription_id == sub_id)
            .order_by(col(AlertDelivery.id).desc())
            .limit(limit)
        )
        return list(s.exec(stmt).all())
