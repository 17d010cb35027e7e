"""The database engine: SQLite (WAL) by default, PostgreSQL by URL; schema by Alembic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from bti_core.config import get_settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # BTI emits BEGIN itself (`_sqlite_begin`): pysqlite's own deferred BEGIN would make every
    # transaction a reader that upgrades late, and two such writers fail or read stale rows.
    dbapi_connection.isolation_level = None
    # WAL: readers (the dashboard) never block the writer (ingest, claims); NORMAL sync is
    # durable in WAL mode except for the last commits on power loss, not on a process crash.
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


WRITE = "bti_write"  # execution option: this transaction writes money records


def _sqlite_begin(conn: Any) -> None:
    # a write transaction takes SQLite's write lock at BEGIN (waiting up to busy_timeout), so
    # what it reads is the latest committed state and no other writer interleaves; readers
    # stay deferred and never block (WAL)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def make_engine(url: str | None = None, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (default: settings' database URL)."""
    the_url = make_url(url or get_settings().resolved_database_url)
    if the_url.get_backend_name() == "sqlite":
        if the_url.database and the_url.database != ":memory:":
            Path(the_url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(the_url, echo=echo, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(the_url, echo=echo, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser escaping
    return cfg


# Alembic runs a migration through module-global state (`alembic.context`): two threads of one
# process migrating at once — even two different databases — corrupt each other's run
_MIGRATING = threading.Lock()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (idempotent; one at a time per process,
    other processes serialised by the database's own transaction)."""
    cfg = alembic_config(engine)
    with _MIGRATING, engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


@contextmanager
def write_scope(engine: Engine, *, lock: str | None = None) -> Iterator[Session]:
    """A write transaction that really serialises with every other writer, across processes:
    SQLite ``BEGIN IMMEDIATE`` (a ``SELECT … FOR UPDATE`` is a no-op there); on PostgreSQL the
    transaction-scoped advisory lock ``lock`` when given (for checks that read many rows, such
    as exposure limits), else the row locks its statements take (``FOR UPDATE``)."""
    with Session(engine.execution_options(**{WRITE: True}), expire_on_commit=False) as session:
        try:
            if lock is not None and engine.dialect.name == "postgresql":
                session.connection().exec_driver_sql(
                    "SELECT pg_advisory_xact_lock(%(k)s)", {"k": _lock_key(lock)}
                )
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _lock_key(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def for_update(engine: Engine, *, skip_locked: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``with_for_update`` for this database (SQLite has no row locks:
    its write transactions are already exclusive)."""
    if engine.dialect.name == "postgresql":
        return {"skip_locked": skip_locked}
    return {}


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
