"""Who may do what: users with bcrypt-hashed passwords and a role (trader or underwriter).

The dashboard signs people in against these records (`authenticate`, then a session in
`bti_core.sessions`); the services check the role again, so a trader can neither open the claim
review nor call its actions. The contract's claims role is held by the service's key, never by
a user. Demo accounts (written in the README) are created by `ensure_demo_users` and marked
``demo``: their passwords are published, so they sign in only on the local development chain.

Sign-in resists guessing (`authenticate`): failed attempts are recorded per account and per
client, in the database so every dashboard process counts them together; an account or a
client with too many recent failures is refused — the right password included — until the
window has passed. An unknown username costs the same bcrypt check as a known one, so the
response time tells no one which names exist.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Literal

import bcrypt
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import AppUser, SignInAttempt
from bti_core.db.types import utcnow
from bti_core.errors import BTIError

Role = Literal["trader", "underwriter"]
ROLES: tuple[Role, ...] = ("trader", "underwriter")
DEMO_USERS: tuple[tuple[str, str, Role, str], ...] = (
    ("trader", "Demo Trader", "trader", "trader-demo"),
    ("underwriter", "Demo Underwriter", "underwriter", "underwriter-demo"),
)
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,39}$")
BCRYPT_ROUNDS = 12

# Guessing: within `ATTEMPT_WINDOW`, an account takes `MAX_ACCOUNT_FAILURES` wrong passwords
# and a client (an address) `MAX_CLIENT_FAILURES` over any accounts; then it waits until the
# oldest of those failures leaves the window. Five guesses per quarter hour make a password
# of even 8 random lowercase letters take millions of years online (OWASP's authentication
# cheat sheet asks for exactly this: lock-out by account and throttling by client).
ATTEMPT_WINDOW = timedelta(minutes=15)
MAX_ACCOUNT_FAILURES = 5
MAX_CLIENT_FAILURES = 20
ATTEMPTS_KEPT = timedelta(days=1)  # the worker purges older attempts


class UserError(BTIError, ValueError):
    """A user cannot be created as asked (bad name, unknown role, weak password, taken)."""


class AuthError(BTIError, PermissionError):
    """Not signed in, or signed in without the role an action needs."""


class TooManyAttemptsError(AuthError):
    """Sign-in refused for a while after too many wrong passwords (for the account or from the
    client); ``retry_after`` says how long."""

    def __init__(self, message: str, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: Role
    demo: bool = False  # a demo account (its password is published): local dev chain only

    @property
    def is_underwriter(self) -> bool:
        return self.role == "underwriter"


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()


@cache
def _decoy_hash() -> str:
    """A hash no password matches, checked for unknown users so they cost the same time."""
    return hash_password("\x00decoy-" + hashlib.sha256(b"bti").hexdigest())


def check_password(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


def add_user(
    db: Engine,
    *,
    username: str,
    name: str,
    role: str,
    password: str,
    email: str = "",
    demo: bool = False,
) -> User:
    """Create a user; refuses a bad name, an unknown role, a short password or a taken name."""
    if not _USERNAME.match(username):
        raise UserError(
            f"username {username!r} must be 2–40 characters: lowercase letters, digits, . _ -"
        )
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if len(password) < 8:
        raise UserError("password must have at least 8 characters")
    hashed = hash_password(password)  # a quarter second: not inside the write lock
    # a write transaction from the start: a read that later writes would fail on SQLite as
    # soon as another process (the worker) has written meanwhile ("database is locked")
    with write_scope(db) as s:
        if s.get(AppUser, username) is not None:
            raise UserError(f"user {username!r} exists already")
        s.add(
            AppUser(
                username=username,
                name=name or username,
                email=email or f"{username}@bti.local",
                role=role,
                password_hash=hashed,
                demo=demo,
            )
        )
    return User(username, name or username, role, demo)


def ensure_demo_users(db: Engine) -> None:
    """The demo trader and underwriter, if they are missing (marked ``demo``). Call it only on
    the local development chain (`Services.require_demo`): their passwords are published."""
    with session_scope(db) as s:
        have = set(s.exec(select(AppUser.username)).all())
    for username, name, role, password in DEMO_USERS:
        if username not in have:
            try:
                add_user(db, username=username, name=name, role=role, password=password, demo=True)
            except UserError:
                if get_user(db, username) is None:  # not another process's creation
                    raise


def _user(u: AppUser) -> User:
    return User(u.username, u.name, u.role, bool(u.demo))  # type: ignore[arg-type]


def get_user(db: Engine, username: str) -> User | None:
    with session_scope(db) as s:
        u = s.get(AppUser, username)
        return None if u is None else _user(u)


def set_role(db: Engine, username: str, role: str) -> User:
    """Change a user's role (e.g. an underwriter who leaves the desk becomes a trader). Every
    check reads the role afresh, so it takes effect at once: the dashboard's next rerun, the
    next claim decision, the next webhook delivery."""
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    with write_scope(db) as s:
        u = s.get(AppUser, username)
        if u is None:
            raise UserError(f"no user {username!r}")
        u.role = role
        s.add(u)
        s.flush()
        return _user(u)


def client_key(address: str | None) -> str:
    """How a client is counted: its address, hashed (the attempts table holds no addresses)."""
    raw = (address if isinstance(address, str) and address else "unknown").strip().lower()[:100]
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _wait(failures: list[datetime], limit: int, now: datetime) -> timedelta | None:
    """How long until fewer than ``limit`` of ``failures`` (the window's, newest first) are
    left in the window; None when there are fewer already."""
    if len(failures) < limit:
        return None
    return max(failures[limit - 1] + ATTEMPT_WINDOW - now, timedelta(seconds=1))


def authenticate(
    db: Engine,
    username: str,
    password: str,
    *,
    client: str | None = None,
    demo_allowed: bool = True,
    now: datetime | None = None,
) -> User:
    """The user whose password this is. Refused: a wrong password or an unknown name (one
    message for both, at the same cost), an account or a ``client`` (its address) with too
    many recent failures (`TooManyAttemptsError`, even with the right password), and a demo
    account where demos are not allowed (``demo_allowed`` False: not the local dev chain)."""
    now = now or utcnow()
    name = username.strip().lower()[:80]
    who = client_key(client)
    since = now - ATTEMPT_WINDOW
    with session_scope(db) as s:
        a = SignInAttempt
        recent = s.exec(
            select(a.username, a.client, a.at, a.ok)
            .where(col(a.at) > since)
            .where((a.username == name) | (a.client == who))
            .order_by(col(a.at).desc())
        ).all()
        u = s.get(AppUser, name)
        found = None if u is None else (_user(u), u.password_hash)
    # an account's count starts again at its last successful sign-in (only someone who knows
    # the password gets one); a client's never does (one's own account must not reset it)
    last_ok = max((at for un, _, at, ok in recent if ok and un == name), default=since)
    by_account = [at for un, _, at, ok in recent if not ok and un == name and at > last_ok]
    by_client = [at for _, c, at, ok in recent if not ok and c == who]
    wait = _wait(by_account, MAX_ACCOUNT_FAILURES, now) or _wait(
        by_client, MAX_CLIENT_FAILURES, now
    )
    if wait is not None:
        minutes = max(1, round(wait.total_seconds() / 60))
        raise TooManyAttemptsError(
            f"too many wrong passwords: sign-in is paused for {minutes} minute"
            f"{'s' if minutes != 1 else ''}; try again then",
            wait,
        )
    # the same bcrypt check whether or not the name exists: the time tells nothing
    ok = check_password(password, found[1] if found is not None else _decoy_hash())
    ok = ok and found is not None
    with write_scope(db) as s:
        s.add(SignInAttempt(username=name, client=who, at=now, ok=ok))
    if not ok or found is None:
        raise AuthError("unknown user or wrong password")
    user = found[0]
    if user.demo and not demo_allowed:
        raise AuthError(
            f"{user.username} is a demo account (its password is published): demo accounts "
            "sign in only on the local development chain"
        )
    return user


def purge_attempts(db: Engine, now: datetime | None = None) -> int:
    """Forget sign-in attempts older than `ATTEMPTS_KEPT` (the worker does it each round)."""
    cutoff = (now or utcnow()) - ATTEMPTS_KEPT
    with write_scope(db) as s:
        r = s.exec(delete(SignInAttempt).where(col(SignInAttempt.at) < cutoff))
        return int(r.rowcount or 0)


def require_underwriter(user: User | None, action: str) -> User:
    if user is None:
        raise AuthError(f"sign in to {action}")
    if not user.is_underwriter:
        raise AuthError(f"only underwriters may {action}; {user.username} is a {user.role}")
    return user
