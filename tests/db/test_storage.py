"""Storage on SQLite and on a real PostgreSQL server: migrations, repository, UTC round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bti_core.db.engine import migrate, session_scope
from bti_core.db.models import IngestRun
from bti_core.db.repository import add_ingest_run, latest_ingest_runs


def _run(symbol: str, when: datetime, **kw: object) -> IngestRun:
    base = dict(
        source="test.csv",
        symbol=symbol,
        kind="ohlcv",
        timeframe="1h",
        rows_in=10,
        rows_stored=9,
        rows_added=9,
        rows_updated=0,
        rows_total=9,
        created_at=when,
        report={"counts": {"duplicates": 1}, "gaps": []},
    )
    base.update(kw)
    return IngestRun(**base)  # type: ignore[arg-type]


@pytest.mark.both_databases
def test_migration_creates_the_models_schema(engine: Engine) -> None:
    migrate(engine)  # a second time: idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"


@pytest.mark.both_databases
def test_repository_round_trip_keeps_utc(engine: Engine) -> None:
    t0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
    with session_scope(engine) as s:
        add_ingest_run(
            s,
            run=_run(
                "BTCUSDT", t0, first_ts=datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=8)))
            ),
        )
        add_ingest_run(s, run=_run("ETHUSDT", t0 + timedelta(hours=1)))
        add_ingest_run(s, run=_run("BTCUSDT", t0 + timedelta(hours=2), rows_added=0))
    with session_scope(engine) as s:
        runs = latest_ingest_runs(s, symbol="BTCUSDT")
        assert [r.rows_added for r in runs] == [0, 9]  # newest first
        assert runs[1].first_ts == datetime(2024, 1, 1, 1, tzinfo=UTC)
        assert runs[1].created_at.tzinfo is not None
        assert runs[1].report["counts"] == {"duplicates": 1}
        assert len(latest_ingest_runs(s)) == 3


@pytest.mark.both_databases
def test_failed_transaction_writes_nothing(engine: Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"), session_scope(engine) as s:
        add_ingest_run(s, run=_run("BTCUSDT", datetime(2024, 1, 1, tzinfo=UTC)))
        add_ingest_run(s, run=_run("ETHUSDT", datetime(2024, 1, 1)))  # naive: refused
    with session_scope(engine) as s:
        assert latest_ingest_runs(s) == []
