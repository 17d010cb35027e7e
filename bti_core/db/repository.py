"""Repository functions: every query of the business records goes through here."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from bti_core.db.models import IngestRun


def add_ingest_run(session: Session, *, run: IngestRun) -> IngestRun:
    session.add(run)
    session.flush()
    return run


def latest_ingest_runs(
    session: Session, *, symbol: str | None = None, kind: str | None = None, limit: int = 20
) -> Sequence[IngestRun]:
    """The newest runs first, optionally for one symbol and kind."""
    stmt = select(IngestRun)
    if symbol is not None:
        stmt = stmt.where(IngestRun.symbol == symbol)
    if kind is not None:
        stmt = stmt.where(IngestRun.kind == kind)
    stmt = stmt.order_by(col(IngestRun.created_at).desc(), col(IngestRun.id).desc()).limit(limit)
    return session.exec(stmt).all()
