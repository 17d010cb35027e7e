"""Dashboard sessions that outlive a page: a reload, a new tab or a typed URL stays signed in
until the user signs out or the session expires.

Signing in makes a random 256-bit token (`secrets.token_urlsafe`); the database keeps only
``sha256(token)``, the user and the expiry. The browser's copy is a cookie set by the server,
``HttpOnly`` (no page script can read it) and ``Secure`` over HTTPS: the sign-in form opens a
session for its own tab and a one-time ticket, good for a minute, that the page trades at
``/bti/session`` (`dashboard.server`) for the cookie's session — a new token, same expiry —
which replaces the tab's. Each rerun of a page checks its session again (`resume`), so a tab
left open is signed out as soon as its session is signed out elsewhere or expires; signing out
revokes the row, so a copied cookie is worth nothing afterwards. Expiry is
``BTI_SESSION_HOURS`` after sign-in (default 24 h). The worker purges expired and revoked
sessions and used or stale tickets (`purge`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col

from bti_core.auth import User, get_user
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import SessionTicket, WebSession
from bti_core.db.types import utcnow

COOKIE = "bti_session"
MAX_TOKEN_LENGTH = 100  # a cookie longer than any token we make is not one of ours
TICKET_TTL = timedelta(minutes=1)
REVOKED_KEPT = timedelta(days=1)  # a revoked session's row is purged a day later


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(
    db: Engine,
    username: str,
    hours: float,
    now: datetime | None = None,
    *,
    expires_at: datetime | None = None,
) -> str:
    """A new session for ``username`` valid for ``hours`` (or until ``expires_at``); returns
    the token."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    with session_scope(db) as s:
        s.add(
            WebSession(
                token_hash=_hash(token),
                username=username,
                created_at=now,
                expires_at=expires_at or now + timedelta(hours=hours),
            )
        )
    return token


def _ours(token: object) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH


def resume(db: Engine, token: object, now: datetime | None = None) -> User | None:
    """The user of a live session (not expired, not revoked, the account still there)."""
    if not isinstance(token, str) or not _ours(token):
        return None
    now = now or utcnow()
    with session_scope(db) as s:
        row = s.get(WebSession, _hash(token))
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        username = row.username
    return get_user(db, username)


def close_session(db: Engine, token: object, now: datetime | None = None) -> None:
    """Sign out: the session's token no longer signs anyone in."""
    if not isinstance(token, str) or not _ours(token):
        return
    # a write transaction from its start: a deferred one that read and then wrote failed at
    # once ("database is locked") when another process had written in between (SQLite WAL)
    with write_scope(db) as s:
        row = s.get(WebSession, _hash(token))
        if row is not None and row.revoked_at is None:
            row.revoked_at = now or utcnow()
            s.add(row)


def open_ticket(db: Engine, token: str, now: datetime | None = None) -> str:
    """A one-time ticket, good for `TICKET_TTL`, that trades the session of ``token`` for a
    cookie of its own (`redeem_ticket`)."""
    now = now or utcnow()
    ticket = secrets.token_urlsafe(32)
    with write_scope(db) as s:  # read, then written: one write transaction (`close_session`)
        row = s.get(WebSession, _hash(token))
        if row is None:
            raise ValueError("no such session")
        s.add(
            SessionTicket(
                ticket_hash=_hash(ticket),
                username=row.username,
                token_hash=row.token_hash,
                expires_at=now + TICKET_TTL,
            )
        )
    return ticket


@dataclass(frozen=True)
class Cookie:
    token: str
    expires_at: datetime

    def max_age(self, now: datetime | None = None) -> int:
        return max(0, int((self.expires_at - (now or utcnow())).total_seconds()))


def redeem_ticket(db: Engine, ticket: object, now: datetime | None = None) -> Cookie | None:
    """The cookie's session for a ticket: once, within its minute, while the session it was
    made for is live. That session is revoked (the tab that signed in reloads on the cookie's
    session). None for anything else — a used, stale, forged or overlong ticket."""
    if not _ours(ticket):
        return None
    assert isinstance(ticket, str)
    now = now or utcnow()
    with write_scope(db) as s:
        t = s.get(SessionTicket, _hash(ticket), with_for_update=True)
        if t is None or t.used_at is not None or t.expires_at <= now:
            return None
        t.used_at = now
        s.add(t)
        tab = s.get(WebSession, t.token_hash, with_for_update=True)
        if tab is None or tab.revoked_at is not None or tab.expires_at <= now:
            return None
        token = secrets.token_urlsafe(32)
        s.add(
            WebSession(
                token_hash=_hash(token),
                username=tab.username,
                created_at=now,
                expires_at=tab.expires_at,
            )
        )
        tab.revoked_at = now
        s.add(tab)
        return Cookie(token, tab.expires_at)


def purge(db: Engine, now: datetime | None = None) -> int:
    """Delete expired sessions, sessions revoked more than `REVOKED_KEPT` ago, and tickets
    used or past their minute. Returns the rows deleted."""
    now = now or utcnow()
    with write_scope(db) as s:
        a = s.exec(
            delete(WebSession).where(
                (col(WebSession.expires_at) <= now)
                | (col(WebSession.revoked_at) <= now - REVOKED_KEPT)
            )
        )
        b = s.exec(
            delete(SessionTicket).where(
                col(SessionTicket.used_at).is_not(None) | (col(SessionTicket.expires_at) <= now)
            )
        )
        return int(a.rowcount or 0) + int(b.rowcount or 0)
