"""Sessions: a token resumes its user until it expires or is revoked; only its hash is kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
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


@pytest.mark.both_databases
def test_a_ticket_trades_for_the_cookies_session_once_within_its_minute(engine: Engine) -> None:
    add_user(engine, username="ada", name="Ada", role="trader", password="long-enough")
    t0 = utcnow()
    tab = sessions.open_session(engine, "ada", hours=2, now=t0)
    ticket = sessions.open_ticket(engine, tab, now=t0)
    cookie = sessions.redeem_ticket(engine, ticket, now=t0 + timedelta(seconds=5))
    assert cookie is not None and cookie.token != tab
    assert cookie.max_age(t0) == 7200  # the sign-in's expiry, not a new one
    assert sessions.resume(engine, cookie.token, now=t0) is not None
    assert sessions.resume(engine, tab, now=t0) is None  # the cookie's session replaced it
    assert sessions.redeem_ticket(engine, ticket, now=t0) is None  # once
    late = sessions.open_ticket(engine, sessions.open_session(engine, "ada", 2, now=t0), now=t0)
    assert sessions.redeem_ticket(engine, late, now=t0 + timedelta(minutes=2)) is None
    signed_out = sessions.open_session(engine, "ada", 2, now=t0)
    orphan = sessions.open_ticket(engine, signed_out, now=t0)
    sessions.close_session(engine, signed_out, now=t0)
    assert sessions.redeem_ticket(engine, orphan, now=t0) is None  # its session is gone
    for junk in (None, "", "x" * 5000, "forged-ticket", 7):
        assert sessions.redeem_ticket(engine, junk, now=t0) is None


def test_the_worker_purges_sessions_that_ended_and_used_tickets(engine: Engine) -> None:
    add_user(engine, username="ada", name="Ada", role="trader", password="long-enough")
    t0 = utcnow()
    live = sessions.open_session(engine, "ada", hours=5, now=t0)
    sessions.open_session(engine, "ada", hours=1, now=t0)  # expires
    gone = sessions.open_session(engine, "ada", hours=5, now=t0)
    sessions.close_session(engine, gone, now=t0)
    sessions.redeem_ticket(engine, sessions.open_ticket(engine, live, now=t0), now=t0)
    assert sessions.purge(engine, now=t0 + timedelta(hours=2)) == 2  # expired + the ticket
    assert sessions.purge(engine, now=t0 + timedelta(hours=2)) == 0
    assert sessions.purge(engine, now=t0 + timedelta(hours=30)) == 3  # the rest ended
    with Session(engine) as s:
        assert s.exec(select(WebSession)).all() == []


@pytest.mark.both_databases
def test_thirty_wrong_passwords_then_the_right_one_is_refused(engine: Engine) -> None:
    """It used to sign in: guessing was unlimited."""
    from bti_core.auth import (
        ATTEMPT_WINDOW,
        MAX_ACCOUNT_FAILURES,
        AuthError,
        TooManyAttemptsError,
        authenticate,
    )

    add_user(engine, username="ada", name="Ada", role="underwriter", password="right-one")
    t0 = utcnow()
    said: list[str] = []
    for i in range(30):
        try:
            authenticate(engine, "ada", f"guess-{i}", client="10.0.0.1", now=t0)
        except AuthError as exc:
            said.append(str(exc))
    refused = said.count(
        "too many wrong passwords: sign-in is paused for 15 minutes; try again then"
    )
    assert said[:MAX_ACCOUNT_FAILURES] == ["unknown user or wrong password"] * MAX_ACCOUNT_FAILURES
    assert refused == 30 - MAX_ACCOUNT_FAILURES
    for client in ("10.0.0.1", "192.0.2.7"):  # from anywhere: the account is paused
        with pytest.raises(TooManyAttemptsError) as paused:
            authenticate(engine, "ada", "right-one", client=client, now=t0)
        assert paused.value.retry_after <= ATTEMPT_WINDOW
    later = t0 + ATTEMPT_WINDOW + timedelta(seconds=1)
    assert authenticate(engine, "ada", "right-one", client="10.0.0.1", now=later).username == "ada"
    # a success starts the account's count again; a typo after it does not lock the account
    with pytest.raises(AuthError, match="wrong password"):
        authenticate(engine, "ada", "typo", client="10.0.0.1", now=later)
    assert authenticate(engine, "ada", "right-one", client="10.0.0.1", now=later).username == "ada"


@pytest.mark.both_databases
def test_one_client_guessing_many_accounts_is_paused(engine: Engine) -> None:
    from bti_core.auth import MAX_CLIENT_FAILURES, AuthError, TooManyAttemptsError, authenticate

    add_user(engine, username="bea", name="Bea", role="trader", password="bea-secret")
    t0 = utcnow()
    for i in range(MAX_CLIENT_FAILURES):
        with pytest.raises(AuthError):
            authenticate(engine, f"name{i}", "guess", client="203.0.113.9", now=t0)
    with pytest.raises(TooManyAttemptsError):  # this client, even for a real account
        authenticate(engine, "bea", "bea-secret", client="203.0.113.9", now=t0)
    assert authenticate(engine, "bea", "bea-secret", client="198.51.100.1", now=t0)


def test_an_unknown_name_costs_the_same_bcrypt_check(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usernames were told apart by the response time (291 ms against 16 ms): an unknown one
    skipped bcrypt. Now each attempt runs exactly one check of a cost-12 hash."""
    import bcrypt

    from bti_core import auth

    add_user(engine, username="cy", name="Cy", role="trader", password="cy-secret")
    auth._decoy_hash()  # made once per process, before any attempt is timed
    checked: list[int] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(
        bcrypt, "checkpw", lambda p, h: checked.append(int(h.split(b"$")[2])) or real(p, h)
    )
    for name in ("cy", "nobody-by-this-name"):
        with pytest.raises(auth.AuthError, match="unknown user or wrong password"):
            auth.authenticate(engine, name, "wrong", client="x")
    assert checked == [auth.BCRYPT_ROUNDS, auth.BCRYPT_ROUNDS]


def test_a_demo_account_signs_in_only_where_demos_are_allowed(engine: Engine) -> None:
    from bti_core.auth import AuthError, authenticate, ensure_demo_users

    ensure_demo_users(engine)
    u = authenticate(engine, "underwriter", "underwriter-demo", demo_allowed=True)
    assert u.demo and u.is_underwriter
    with pytest.raises(AuthError, match="demo accounts sign in only on the local development"):
        authenticate(engine, "underwriter", "underwriter-demo", demo_allowed=False)


def test_a_ticket_opens_while_another_process_writes_between_its_read_and_its_write(
    engine: Engine,
) -> None:
    """A sign-in failed with "database is locked" in a full run: opening a ticket read the session and
    then wrote the ticket in a deferred transaction, which SQLite (WAL) refuses at once when
    another process has written in between. Here another connection writes right after that
    read; the ticket is opened all the same (its transaction takes the write lock first)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's deferred transactions")
    add_user(engine, username="ada", name="Ada", role="trader", password="long-enough")
    token = sessions.open_session(engine, "ada", hours=2)
    other = create_engine(engine.url)
    interleaved: list[str] = []

    def write_elsewhere(conn, cursor, statement, *_: object) -> None:  # type: ignore[no-untyped-def]
        if interleaved or "FROM web_session" not in statement:
            return
        with other.connect() as c:
            c.exec_driver_sql("PRAGMA busy_timeout=200")
            try:
                c.exec_driver_sql("UPDATE web_session SET username = username")
                c.commit()
                interleaved.append("written")
            except OperationalError:
                interleaved.append("waited for the ticket's transaction")

    event.listen(engine, "after_cursor_execute", write_elsewhere)
    try:
        ticket = sessions.open_ticket(engine, token)
    finally:
        event.remove(engine, "after_cursor_execute", write_elsewhere)
        other.dispose()
    assert interleaved == ["waited for the ticket's transaction"]
    assert sessions.redeem_ticket(engine, ticket) is not None
