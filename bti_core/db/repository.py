"""Repository functions: every query of the business records goes through here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Float, Integer, bindparam, case, cast, func, or_, true
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from bti_core.db.models import Claim, HeldTrigger, IngestRun, Policy, PolicyEvent, QuoteRecord
from bti_core.db.statuses import OPEN_STATUSES, Peril, PolicyStatus


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


def add_quote(session: Session, *, quote: QuoteRecord) -> QuoteRecord:
    session.add(quote)
    session.flush()
    return quote


def get_quote(session: Session, *, quote_id: str) -> QuoteRecord | None:
    return session.get(QuoteRecord, quote_id)


def policy_for_quote(session: Session, *, quote_id: str) -> Policy | None:
    return session.exec(select(Policy).where(Policy.quote_id == quote_id)).first()


def add_policy_event(
    session: Session, *, policy: Policy, event: str, detail: dict[str, Any] | None = None
) -> PolicyEvent:
    assert policy.id is not None, "flush the policy before logging its events"
    ev = PolicyEvent(policy_id=policy.id, event=event, detail=detail or {})
    session.add(ev)  # written with the transaction (a crash's thousands at once)
    return ev


def policies_of(session: Session, *, user_id: str) -> Sequence[Policy]:
    stmt = select(Policy).where(Policy.user_id == user_id).order_by(col(Policy.id).desc())
    return session.exec(stmt).all()


def active_policies(session: Session, *, user_id: str | None = None) -> Sequence[Policy]:
    stmt = select(Policy).where(Policy.status == PolicyStatus.ACTIVE.value)
    if user_id is not None:
        stmt = stmt.where(Policy.user_id == user_id)
    return session.exec(stmt).all()


def policy_events(session: Session, *, policy_id: int) -> Sequence[PolicyEvent]:
    stmt = (
        select(PolicyEvent).where(PolicyEvent.policy_id == policy_id).order_by(col(PolicyEvent.id))
    )
    return session.exec(stmt).all()


def get_policy(session: Session, *, policy_id: int) -> Policy | None:
    return session.get(Policy, policy_id)


def policies_with_status(session: Session, *, statuses: Sequence[str]) -> Sequence[Policy]:
    stmt = select(Policy).where(col(Policy.status).in_(list(statuses))).order_by(col(Policy.id))
    return session.exec(stmt).all()


def open_cover(session: Session, *, user_id: str) -> tuple[Decimal, Decimal]:
    """(``user_id``'s open cover, the pool's open cover): active and pending policies,
    summed exactly by the database (`_exact_sum`): two reads however large the book."""
    is_open = col(Policy.status).in_(OPEN_STATUSES)
    return open_cover_of(session, user_id=user_id), _exact_sum(
        session, col(Policy.coverage), is_open
    )


def open_cover_of(session: Session, *, user_id: str) -> Decimal:
    """``user_id``'s open (active or pending) cover, summed exactly by the database."""
    is_open = col(Policy.status).in_(OPEN_STATUSES)
    return _exact_sum(session, col(Policy.coverage), is_open, col(Policy.user_id) == user_id)


MONEY_UNITS = 10**8  # `Money`'s scale: NUMERIC(28, 8)


def _exact_sum(session: Session, column: Any, *where: Any) -> Decimal:
    """The SUM of a `Money` column, exact on every database. PostgreSQL sums NUMERIC exactly;
    SQLite keeps the decimal's text and its SUM would add floats, so each value is summed as
    an integer count of 10⁻⁸ (a float holds any amount below 90 million to that unit)."""
    if session.get_bind().dialect.name == "sqlite":
        units = cast(func.round(cast(column, Float) * MONEY_UNITS), Integer)
        total = session.execute(sa_select(func.coalesce(func.sum(units), 0)).where(*where))
        return Decimal(int(total.scalar_one())).scaleb(-8)
    total = session.execute(sa_select(func.sum(column)).where(*where)).scalar_one()
    return Decimal(0) if total is None else Decimal(total)


def open_cover_summary(
    session: Session,
    bands: Sequence[tuple[str, float, float]],
    falls_to: Mapping[str, float],
    rises_to: Mapping[str, float],
) -> Sequence[tuple[str, str, str, Decimal, Decimal]]:
    """``(symbol, side, leverage band, open cover, of it claimed by a move)`` over the open
    (active or pending) policies, summed by the database in one read: a few rows however
    large the book. ``bands`` are ``(label, low, high]`` (`underwriting.LEVERAGE_BUCKETS`);
    a long is claimed when its symbol falling to ``falls_to[symbol]`` reaches its
    liquidation price, a short when it rising to ``rises_to[symbol]`` does; a symbol with no
    price is counted whole (the cautious reading). The open cover is summed exactly (as
    `_exact_sum` does: the pool's total is the rows' sum, so a quote needs no read of its
    own for it); the claimed part goes through floats on SQLite: it is held against a cap (a
    share of a capacity), not paid."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    stmt = _summary_statement(
        tuple(bands), tuple(sorted(falls_to)), tuple(sorted(rises_to)), sqlite
    )
    params = {f"down_{i}": v for i, (_, v) in enumerate(sorted(falls_to.items()))}
    params |= {f"up_{i}": v for i, (_, v) in enumerate(sorted(rises_to.items()))}
    return [
        (
            sym,
            side,
            label,
            Decimal(int(total)).scaleb(-8) if sqlite else Decimal(total),
            _dec(claimed),
        )
        # on the session's connection: a Core read needs none of the ORM's work (0.5 ms)
        for sym, side, label, total, claimed in session.connection().execute(stmt, params).all()
    ]


@lru_cache(maxsize=32)
def _summary_statement(
    bands: tuple[tuple[str, float, float], ...],
    falling: tuple[str, ...],
    rising: tuple[str, ...],
    sqlite: bool,
) -> Any:
    """`open_cover_summary`'s statement for these bands and symbols, built once: the prices
    are bound parameters (building the statement took half of the read's time)."""
    lev = cast(col(Policy.leverage), Float)
    band = case(*((lev <= hi, label) for label, _, hi in bands[:-1]), else_=bands[-1][0])
    lp = cast(col(Policy.liquidation_price), Float)
    coverage = cast(col(Policy.coverage), Float)

    def price(symbols: tuple[str, ...], name: str) -> Any:
        if not symbols:
            return None
        prices = {sym: bindparam(f"{name}_{i}", type_=Float) for i, sym in enumerate(symbols)}
        return case(prices, value=col(Policy.symbol), else_=None)

    # SQLite keeps the decimal's text: summed as integer 10⁻⁸ units, exactly (`_exact_sum`)
    exact = (
        func.sum(cast(func.round(coverage * MONEY_UNITS), Integer))
        if sqlite
        else func.sum(col(Policy.coverage))
    )
    down, up = price(falling, "down"), price(rising, "up")
    long_hit = or_(down.is_(None), lp >= down) if down is not None else true()
    short_hit = or_(up.is_(None), lp <= up) if up is not None else true()
    hit = case(
        (col(Policy.side) == "long", case((long_hit, coverage), else_=0.0)),
        else_=case((short_hit, coverage), else_=0.0),
    )
    return (
        sa_select(col(Policy.symbol), col(Policy.side), band, exact, func.sum(hit))
        .where(col(Policy.status).in_(OPEN_STATUSES))
        .group_by(col(Policy.symbol), col(Policy.side), band)
    )


def _dec(x: float | None) -> Decimal:
    return Decimal(str(round(float(x or 0.0), 8)))


def open_positions(
    session: Session, *, user_id: str, symbol: str, side: str
) -> Sequence[tuple[Decimal, Decimal, Decimal]]:
    """``(quantity, entry, coverage)`` of ``user_id``'s open (active or pending) policies on
    ``symbol`` and ``side`` against liquidation: the positions a new cover may already
    insure (ADL cover is capped on its own, `policies.positions.adl_cap`)."""
    stmt = select(col(Policy.quantity), col(Policy.entry_price), col(Policy.coverage)).where(
        Policy.user_id == user_id,
        Policy.symbol == symbol,
        Policy.side == side,
        col(Policy.status).in_(OPEN_STATUSES),
        Policy.peril == Peril.LIQUIDATION.value,
    )
    return session.exec(stmt).all()


def user_policy_rows(
    session: Session, *, user_id: str
) -> Sequence[tuple[str, Decimal, str, Decimal]]:
    """``(user_id, coverage, status, leverage)`` of every policy of ``user_id``: their
    record, for a quote's risk index."""
    stmt = select(
        col(Policy.user_id), col(Policy.coverage), col(Policy.status), col(Policy.leverage)
    ).where(Policy.user_id == user_id)
    return session.exec(stmt).all()


def refused_filings(session: Session, *, user_id: str) -> int:
    """How many liquidation records ``user_id`` filed that were refused (each is a
    ``claim_refused`` event in the lifecycle of one of their policies)."""
    stmt = (
        select(func.count())
        .select_from(PolicyEvent)
        .join(Policy, col(Policy.id) == col(PolicyEvent.policy_id))
        .where(Policy.user_id == user_id, PolicyEvent.event == "claim_refused")
    )
    return int(session.exec(stmt).one())


def claim_outcomes(session: Session, *, user_id: str) -> Sequence[tuple[str, str]]:
    """``(source, state)`` of every claim of ``user_id``."""
    stmt = select(col(Claim.source), col(Claim.state)).where(Claim.user_id == user_id)
    return session.exec(stmt).all()


def stream_marks(session: Session, *, symbol: str) -> list[tuple[int, float]]:
    """``(ms, price)``: each stream's last trusted mark price of ``symbol`` (from the scoring
    state its checkpoint holds), for a purchase to check the freshest price BTI has seen."""
    from bti_core.db.models import StreamCheckpoint

    out = []
    for state in session.exec(select(StreamCheckpoint.state)).all():
        raw = (state or {}).get(symbol)
        if not isinstance(raw, str):
            continue
        try:
            d = json.loads(raw)
            ms, price = int(d.get("trusted_ms", -1)), float(d.get("trusted_price", "nan"))
        except (ValueError, TypeError, AttributeError):
            continue
        if ms > 0 and price > 0:
            out.append((ms, price))
    return out


def held_triggers(session: Session, policy_id: int) -> list[HeldTrigger]:
    """The stream crossings of ``policy_id`` held for confirmation (`claims.holds`), oldest
    first, whatever their state."""
    return list(
        session.exec(
            select(HeldTrigger)
            .where(HeldTrigger.policy_id == policy_id)
            .order_by(col(HeldTrigger.at))
        ).all()
    )
