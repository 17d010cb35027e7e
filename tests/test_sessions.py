"""Sessions: a token resumes its user until it expires or is revoked; only its hash is kept."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core import sessions
from bti_core.auth import add_user
from bti_core.db.models import WebSession
from bti_core.db.types import utcnow


def test_a_session_resumes_until_it_expires_or_is_revoked(engine: Engine) -> None:
    add_user(engine, username="ada", name="Ada", role="trader", password="long-enough")
    t0 = utcnow()
    token = sessions.open_session(engine, "ada", hours=2, now=t0)
    user = sessions.resume(engine, token, now=t0 + timedelta(hours=1))
    assert user is not None and user.username == "ada"
    assert sessions.resume(engine, token, now=t0 + timedelta(hours=2)) is None  # expired
    other = sessions.open_session(engine, "ada", hours=2, now=t0)
    sessions.close_session(engine, other)
    assert sessions.resume(engine, other, now=t0) is None  # signed out
    assert sessions.resume(engine, token, now=t0) is not None  # one sign-out ends one session
    for junk in (None, "", "x" * 5000, token[:-1], "' OR 1=1 --", b"bytes", 7):
        assert sessions.resume(engine, junk, now=t0) is None
        sessions.close_session(engine, junk)  # nothing to revoke: no error
    with Session(engine) as s:
        rows = s.exec(select(WebSession)).all()
    assert len(rows) == 2 and all(token not in r.token_hash for r in rows)
    assert len({r.token_hash for r in rows}) == 2 and len(token) >= 43  # 256 random bits
