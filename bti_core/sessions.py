"""Dashboard sessions that outlive a page: a reload, a new tab or a typed URL stays signed in
until the user signs out or the session expires.

Signing in makes a random 256-bit token (`secrets.token_urlsafe`); the browser keeps it in a
cookie, the database keeps ``sha256(token)``, the user and the expiry. Each new page session
(a reload or a tab) reads the cookie from its request and `resume`s it; signing out revokes the
row, so a copied cookie is worth nothing afterwards. Expiry is ``BTI_SESSION_HOURS`` after
sign-in (default 24 h).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from bti_core.auth import User, get_user
from bti_core.db.engine import session_scope
from bti_core.db.models import WebSession
from bti_core.db.types import utcnow

COOKIE = "bti_session"
MAX_TOKEN_LENGTH = 100  # a cookie longer than any token we make is not one of ours


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(db: Engine, username: str, hours: float, now: datetime | None = None) -> str:
    """A new session for ``username`` valid for ``hours``; returns the token for the cookie."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    with session_scope(db) as s:
        s.add(
            WebSession(
                token_hash=_hash(token),
                username=username,
                created_at=now,
                expires_at=now + timedelta(hours=hours),
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
    with session_scope(db) as s:
        row = s.get(WebSession, _hash(token))
        if row is not None and row.revoked_at is None:
            row.revoked_at = now or utcnow()
            s.add(row)
