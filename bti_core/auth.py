"""Who may do what: users with bcrypt-hashed passwords and a role (trader or underwriter).

The dashboard signs people in against these records (`authenticate`, then a session in
`bti_core.sessions`); the services check the role again, so a trader can neither open the claim
review nor call its actions. The contract's claims role is held by the service's key, never by
a user. Demo accounts (written in the README) are created by `ensure_demo_users`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import bcrypt
from sqlalchemy.engine import Engine
from sqlmodel import select

from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import AppUser
from bti_core.errors import BTIError

Role = Literal["trader", "underwriter"]
ROLES: tuple[Role, ...] = ("trader", "underwriter")
DEMO_USERS: tuple[tuple[str, str, Role, str], ...] = (
    ("trader", "Demo Trader", "trader", "trader-demo"),
    ("underwriter", "Demo Underwriter", "underwriter", "underwriter-demo"),
)
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,39}$")


class UserError(BTIError, ValueError):
    """A user cannot be created as asked (bad name, unknown role, weak password, taken)."""


class AuthError(BTIError, PermissionError):
    """Not signed in, or signed in without the role an action needs."""


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: Role

    @property
    def is_underwriter(self) -> bool:
        return self.role == "underwriter"


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()


def check_password(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


def add_user(
    db: Engine, *, username: str, name: str, role: str, password: str, email: str = ""
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
            )
        )
    return User(username, name or username, role)


def ensure_demo_users(db: Engine) -> None:
    """The demo trader and underwriter, if they are missing."""
    with session_scope(db) as s:
        have = set(s.exec(select(AppUser.username)).all())
    for username, name, role, password in DEMO_USERS:
        if username not in have:
            try:
                add_user(db, username=username, name=name, role=role, password=password)
            except UserError:
                if get_user(db, username) is None:  # not another process's creation
                    raise


def get_user(db: Engine, username: str) -> User | None:
    with session_scope(db) as s:
        u = s.get(AppUser, username)
        return None if u is None else User(u.username, u.name, u.role)  # type: ignore[arg-type]


def authenticate(db: Engine, username: str, password: str) -> User:
    with session_scope(db) as s:
        u = s.get(AppUser, username)
        if u is None or not check_password(password, u.password_hash):
            raise AuthError("unknown user or wrong password")
        return User(u.username, u.name, u.role)  # type: ignore[arg-type]


def require_underwriter(user: User | None, action: str) -> User:
    if user is None:
        raise AuthError(f"sign in to {action}")
    if not user.is_underwriter:
        raise AuthError(f"only underwriters may {action}; {user.username} is a {user.role}")
    return user
