"""The embedded streaming engine (the default: no servers, run in-process).

A source gives ticks from an offset (Kafka: from per-partition offsets kept in the
checkpoint); each micro-batch is scored per symbol by `bti_core.stream.scoring`, then:

1. every liquidation opens its claim through the claims service at the crossing tick, which
   audits, decides and — when approved automatically — pays it, in batches when a crash
   liquidates many at once (a policy has one claim, so a batch processed again opens nothing
   new);
2. an optional sink (`bti_core.stream.kafka.KafkaSink`) publishes the batch's alerts and claims;
3. the batch's alerts and the checkpoint (each symbol's state and the new offset) are written
   in one transaction (`bti_core.stream.store`).

Killed before step 3, a restart processes the batch again from the last checkpoint: its claims
exist, its alerts are written once. Killed after it, the restart goes on from the new offset.

`stream.sources.ReplaySource` turns the warehouse's stored mark-price bars into ticks — each
bar its open, then its extremes in the order that reaches the close (low first on an up bar),
then its close, at a quarter of the bar apart — merged over the symbols in time order, so an
offset names the same tick on every run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bti_core.claims.hits import TickHit
from bti_core.db.models import Claim, Policy, PolicyEvent
from bti_core.db.statuses import Peril, PolicyStatus
from bti_core.errors import BTIError
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind, timeframe_delta
from bti_core.stream.ports import BarFeed, BatchReport, CursorSource, FollowedSource, StreamDeps
from bti_core.stream.scoring import score
from bti_core.stream.sources import ArraySource, epoch_ms
from bti_core.stream.store import load_checkpoint, write_batch
from bti_core.stream.types import (
    DEFAULT_RULES,
    HOUR_MS,
    NO_CONTEXT,
    Admission,
    Book,
    Context,
    Event,
    Rules,
    SymbolState,
)

CONTEXT_TTL = 60.0  # seconds a symbol's funding and forecast band are kept
PENDING_MS = 24 * HOUR_MS  # how far back a run beyond a level is followed
CURSOR = "__cursor__"  # the checkpoint's entry for a source's own position (Kafka offsets)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def fresh_state(deps: StreamDeps, symbol: str) -> SymbolState:
    """A symbol's first state, from the risk engine's fit (a symbol with too little history
    for a fit starts from a plain GARCH at 1 % an hour, rather than stopping the stream)."""
    try:
        sr = deps.risk.symbol_risk(symbol)
    except BTIError:
        return SymbolState(symbol, 1e-6, 0.05, 0.05, 0.9, 1e-4)
    p, fit = sr.fit.params, sr.fit
    return SymbolState(symbol, p.omega, p.alpha, p.gamma, p.beta, float(fit.sigma2_next))


def stored_mark_before(deps: StreamDeps, symbol: str, at_ms: int) -> tuple[int, float] | None:
    """The stored mark close of the bar that closed last at or before ``at_ms`` (within a
    day), as (its close in ms, price): a fresh stream's first trusted price, so a forged first
    tick is held as an outlier too."""
    wh = deps.warehouse
    at = pd.Timestamp(at_ms, unit="ms", tz="UTC")
    best: tuple[int, float] | None = None
    for tf in wh.timeframes(symbol, Kind.MARK):
        step = timeframe_delta(tf)
        try:
            bars = wh.query(Kind.MARK, symbol, tf, at - pd.Timedelta(days=1), at - step)
        except BTIError:
            continue
        if len(bars):
            close_ms = int((pd.Timestamp(bars["ts"].iloc[-1]) + step).timestamp() * 1000)
            if close_ms <= at_ms and (best is None or close_ms > best[0]):
                best = (close_ms, float(bars["close"].iloc[-1]))
    return best


def market_context(deps: StreamDeps, symbol: str) -> Context:
    """``symbol``'s funding settlements from the warehouse and the 95 % band of its cached
    price forecast (the worker fits one an hour), hour by hour: between the forecast's
    horizons (1 h … 7 days) each bound is interpolated linearly in log price over the horizon
    in hours. Empty parts where nothing is stored."""
    from bti_core.risk.forecast_store import cached

    wh = deps.warehouse
    f_ms, f_rate = np.empty(0, dtype=np.int64), np.empty(0)
    if wh.exists(Kind.FUNDING, symbol, FUNDING_TIMEFRAME):
        fr = wh.query(Kind.FUNDING, symbol, FUNDING_TIMEFRAME)
        f_ms = epoch_ms(fr["ts"])
        f_rate = fr["funding_rate"].to_numpy(dtype=np.float64)
        ok = np.isfinite(f_rate)
        f_ms, f_rate = f_ms[ok], f_rate[ok]
    b_ms, lo, hi = np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    fc = cached(deps.forecasts_dir, symbol, "price")
    if fc is not None:
        q = fc.quantiles([0.025, 0.975])  # (horizons, 2)
        hz = np.asarray(fc.horizons, dtype=float)
        hours = np.arange(1, int(hz.max()) + 1, dtype=float)
        lo = np.exp(np.interp(hours, hz, np.log(q[:, 0])))
        hi = np.exp(np.interp(hours, hz, np.log(q[:, 1])))
        origin = _ms(pd.Timestamp(fc.origin).to_pydatetime())
        b_ms = origin + hours.astype(np.int64) * HOUR_MS
    return Context(f_ms, f_rate, b_ms, lo, hi)


def read_book(db: Engine, symbol: str, first_ms: int) -> tuple[Book, dict[int, str]]:
    """Every sold policy on ``symbol`` whose window ends at or after ``first_ms`` — claimed,
    paid and expired ones too (a batch processed again must raise the same events; their
    claims and alerts exist, so nothing is added) — and each one's trader."""
    lo = datetime.fromtimestamp(first_ms / 1000, tz=UTC)
    t = Policy.__table__.c  # type: ignore[attr-defined]
    stmt = sa_select(
        t.id,
        t.side,
        t.liquidation_price,
        t.payout,
        t.start_at,
        t.end_at,
        t.probability,
        t.risk_index,
        t.user_id,
        t.claims_from,  # a continued cover's window starts after the part it paid
    ).where(
        t.symbol == symbol,
        t.peril == Peril.LIQUIDATION.value,  # ADL cover is claimed on the exchange's record
        t.status.in_(
            [
                s.value
                for s in (
                    PolicyStatus.ACTIVE,
                    PolicyStatus.CLAIMED,
                    PolicyStatus.PAID,
                    PolicyStatus.EXPIRED,
                )
            ]
        ),
        t.end_at >= lo,
    )
    with db.connect() as conn:
        rows = conn.execute(stmt).all()
    book = Book(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([1 if r[1] == "long" else -1 for r in rows], dtype=np.int64),
        np.array([float(r[2]) for r in rows], dtype=np.float64),
        np.array([float(r[3]) for r in rows], dtype=np.float64),
        np.array([_ms(r[9] or r[4]) for r in rows], dtype=np.int64),
        np.array([_ms(r[5]) for r in rows], dtype=np.int64),
        np.array([r[6] for r in rows], dtype=np.float64),
        np.array([r[7] for r in rows], dtype=np.float64),
    )
    return book, {int(r[0]): str(r[8]) for r in rows}


def hits_of(events: Sequence[Event], rules: Rules, feed: BarFeed | None = None) -> list[TickHit]:
    """The claims service's view of a batch's liquidations (runs the ticks confirmed by
    persistence) and crossings (runs nothing confirmed: proven by the stored bars, or held),
    each dated from its run's first tick. A live ``feed`` adds its own bars around each as
    context."""
    bars: dict[tuple[str, int], tuple[dict[str, Any], ...]] = {}  # per symbol and minute

    def feed_bars(symbol: str, at_ms: int) -> tuple[dict[str, Any], ...]:
        key = (symbol, at_ms // 60_000)
        if feed is not None and key not in bars:  # a crash liquidates thousands at one tick
            bars[key] = tuple(feed.feed_bars(symbol, at_ms))
        return bars.get(key, ())

    def when(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    out = []
    for e in events:
        if e.kind not in ("liquidation", "crossing") or e.policy is None:
            continue
        since = e.since_ms if e.since_ms >= 0 else e.at_ms
        first = e.detail[0] if e.detail else e.price
        confirmation = None
        if e.kind == "liquidation":
            confirmation = {
                "by": "persistence",
                "seconds": e.value,
                "required_seconds": rules.confirm_ms / 1000,
                "ticks": int(e.detail[2]) if len(e.detail) > 2 else 0,
                "first_price": first,
                "extreme": e.detail[1] if len(e.detail) > 1 else first,
                "last_price": e.price,
                "confirmed_at": when(e.at_ms).isoformat(),
            }
        out.append(
            TickHit(
                e.policy, e.symbol, when(since), first, feed_bars(e.symbol, since), confirmation
            )
        )
    return out


def open_claims(
    deps: StreamDeps,
    stream: str,
    events: Sequence[Event],
    feed: BarFeed | None = None,
    rules: Rules = DEFAULT_RULES,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Open the claim of every liquidation in ``events`` that evidence proves (`hits_of`,
    `ClaimsService.open_from_ticks`: held where nothing does yet), audit, decide and pay them
    (in batches: a crash liquidates thousands at one tick). A policy has one claim, so events
    processed again open nothing. Returns the claim ids and, for the sinks, each claim's
    policy, time and state after the decision."""
    hits = hits_of(events, rules, feed)
    if not hits:
        return [], []
    claims = deps.claims
    ids = claims.open_from_ticks(hits, stream)
    claims.process_many(ids)
    c = Claim.__table__.c  # type: ignore[attr-defined]
    with deps.db.connect() as conn:
        rows = [
            r
            for i in range(0, len(ids), 500)
            for r in conn.execute(
                sa_select(c.id, c.policy_id, c.state, c.trigger_at, c.trigger_price).where(
                    c.id.in_(ids[i : i + 500])
                )
            ).all()
        ]
    first = {h.policy_id: h for h in hits}
    opened = []
    for cid, pid, state, at, price in sorted(rows):
        h = first[int(pid)]
        opened.append(
            {
                "claim": int(cid),
                "policy": h.policy_id,
                "symbol": h.symbol,
                "at": int(pd.Timestamp(at).timestamp() * 1000),  # what proved it dates it
                "price": float(price),
                "state": str(state),
            }
        )
    return ids, opened


def proven_liquidations(events: Sequence[Event], opened: Sequence[dict[str, Any]]) -> list[Event]:
    """A ``liquidation`` event (its alert) for each claim opened on a proof other than the
    stream's own run of ticks (the bars'), dated by that proof."""
    have = {e.policy for e in events if e.kind == "liquidation"}
    return [
        Event("liquidation", o["symbol"], o["at"], o["price"], o["policy"], 0.0, o["at"])
        for o in opened
        if o["policy"] not in have
    ]


@dataclass(eq=False)
class EmbeddedEngine:
    """Score a source's ticks batch by batch into alerts and claims (module docstring)."""

    deps: StreamDeps
    source: ArraySource | FollowedSource | CursorSource
    _: KW_ONLY
    name: str = "replay"
    rules: Rules = DEFAULT_RULES
    batch: int = 10_000
    before_commit: Callable[[BatchReport], None] | None = None  # a hook for the kill tests
    sink: Callable[[str, BatchReport], None] | None = None  # e.g. `KafkaSink`, before commit
    from_bars: bool = field(init=False)  # the source replays stored bars (claim evidence)
    _books: dict[str, tuple[Any, int, Book, dict[int, str]]] = field(
        default_factory=dict, init=False, repr=False
    )
    _contexts: dict[str, tuple[float, Context]] = field(
        default_factory=dict, init=False, repr=False
    )
    _known: tuple[float, frozenset[str]] = field(
        default=(-math.inf, frozenset()), init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.from_bars = bool(getattr(self.source, "from_bars", False))

    def _fresh_state(self, symbol: str) -> SymbolState:
        return fresh_state(self.deps, symbol)

    def _context(self, symbol: str) -> Context:
        """`market_context`, read again once a minute (funding settles every 8 hours, the
        forecast is refitted every hour); none when it cannot be read (a stream never stops
        for want of context)."""
        hit = self._contexts.get(symbol)
        if hit is None or time.monotonic() - hit[0] > CONTEXT_TTL:
            try:
                ctx = market_context(self.deps, symbol)
            except BTIError:
                ctx = NO_CONTEXT
            hit = (time.monotonic(), ctx)
            self._contexts[symbol] = hit
        return hit[1]

    def known_symbols(self) -> frozenset[str]:
        """The markets this stream scores: those the warehouse holds mark prices of (a policy
        is sold only on them), read again once a minute. Ticks of any other symbol — made up,
        mistyped, forged — are dropped and keep no state."""
        at, known = self._known
        if time.monotonic() - at > CONTEXT_TTL:
            known = frozenset(self.deps.warehouse.symbols(Kind.MARK))
            self._known = (time.monotonic(), known)
        return known

    def _fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever a policy is added or changes status (each change is logged)."""
        with self.deps.db.connect() as conn:
            p = conn.execute(select(func.count(col(Policy.id)), func.max(Policy.id))).one()
            e = conn.execute(select(func.max(PolicyEvent.id))).one()
        return (*p, *e)

    def _book(
        self, symbol: str, first_ms: int, last_ms: int, pending: dict[str, Any] | None = None
    ) -> tuple[Book, dict[int, str]]:
        """Every sold policy on ``symbol`` whose window overlaps the batch — claimed and paid
        ones too: a batch processed again after a crash must raise the same events (their
        claims exist, so nothing is paid twice; their alerts exist, so nothing is added).

        The symbol's policies still open at the batch's start are read once and kept until a
        policy is added or changes status; each batch takes its overlapping rows from them
        (ticks only move forward, so a later batch needs a subset)."""
        fp = self._fingerprint()
        cached = self._books.get(symbol)
        # from a day back: a run beyond a level that began inside a window which has ended
        # since is still followed until it is confirmed or comes back
        lo = first_ms - PENDING_MS
        if cached is None or cached[0] != fp or lo < cached[1]:
            book, owners = read_book(self.deps.db, symbol, lo)
            cached = (fp, lo, book, owners)
            self._books[symbol] = cached
        _, _, book, owners = cached
        keep = (book.end_ms >= first_ms) & (book.start_ms <= last_ms)
        if pending:
            keep |= np.isin(book.policy, np.array([int(k) for k in pending], dtype=np.int64))
        mine = book.take(keep)
        return mine, {int(p): owners[int(p)] for p in mine.policy}

    def step(self) -> BatchReport | None:
        """One micro-batch from the checkpoint; None when the source has no more ticks."""
        offset, saved = load_checkpoint(self.deps.db, self.name)
        cursor = saved.pop(CURSOR, None)
        states = {k: SymbolState.from_json(v) for k, v in saved.items()}
        read = 0
        if isinstance(self.source, FollowedSource):
            syms, ts, px = self.source.read_after(
                {k: v.last_ms for k, v in states.items()}, self.batch
            )
        elif isinstance(self.source, CursorSource):
            admit = Admission(
                self.known_symbols(), int(self.deps.claims.clock().timestamp() * 1000)
            )
            syms, ts, px, cursor, read = self.source.read_from(
                cursor, self.batch, {k: v.last_ms for k, v in states.items()}, admit
            )
        else:
            syms, ts, px = self.source.read(offset, self.batch)
        read = read or len(ts)
        if read == 0:
            return None
        before = {k: v.last_ms for k, v in states.items()}
        report = BatchReport(offset, len(ts), read=read)
        owners = report.owners
        known = self.known_symbols()
        # the claims' clock is the one "now" (a tick later than it is from the future)
        now_ms = int(self.deps.claims.clock().timestamp() * 1000)
        for sym in dict.fromkeys(syms.tolist()):
            mine = syms == sym
            if sym not in known:
                report.unknown += int(mine.sum())
                continue
            state = states.get(sym)
            if state is None:
                state = self._fresh_state(sym)
                seed = stored_mark_before(self.deps, sym, int(ts[mine][0]))
                if seed is not None:
                    state.trusted_ms, state.trusted_price = seed
            book, who = self._book(sym, int(ts[mine][0]), int(ts[mine][-1]), state.pending)
            owners.update(who)
            ctx = self._context(sym)
            new, events, _ = score(
                state,
                book,
                ts[mine],
                px[mine],
                self.rules,
                ctx,
                now_ms=now_ms,
                from_bars=self.from_bars,
            )
            states[sym] = new
            report.events += events
        report.events.sort(key=lambda e: (e.at_ms, e.symbol, e.kind))
        if isinstance(self.source, FollowedSource) and all(
            before.get(k, -1) == v.last_ms for k, v in states.items()
        ):
            return None  # everything read was refused (from the future): nothing consumed
        feed = self.source if isinstance(self.source, BarFeed) else None
        report.claims, report.opened = open_claims(
            self.deps, self.name, report.events, feed, self.rules
        )
        report.events += proven_liquidations(report.events, report.opened)
        if self.sink is not None:
            self.sink(self.name, report)
        if self.before_commit is not None:
            self.before_commit(report)
        written = write_batch(
            self.deps.db,
            self.name,
            report.events,
            owners=owners,
            offset=offset + read,
            state={
                **{k: v.to_json() for k, v in states.items()},
                **({} if cursor is None else {CURSOR: cursor}),
            },
        )
        report.alerts = written.alerts
        return report

    def run(
        self,
        *,
        speed: float | None = None,
        progress: Callable[[int, int, BatchReport], None] | None = None,
        follow: Callable[[], bool] | None = None,
    ) -> list[BatchReport]:
        """Until the source is exhausted — or, with ``follow``, for as long as it returns true
        (a live source: an empty read waits a moment and reads again); ``speed`` (×1 …
        ×10,000) paces a replay so that market time passes that many times faster than the
        clock."""
        done: list[BatchReport] = []
        started = time.monotonic()
        t_first: int | None = None
        while True:
            r = self.step()
            if r is None:
                if follow is not None and follow():
                    time.sleep(0.02)
                    continue
                break
            if follow is None:  # a followed stream runs for days: report through progress
                done.append(r)
            if progress is not None:
                progress(r.offset + r.read, len(self.source), r)
            if speed and isinstance(self.source, ArraySource):
                _, ts, _ = self.source.read(r.offset + r.ticks - 1, 1)
                t_first = t_first if t_first is not None else int(self.source.ts[0])
                due = (int(ts[0]) - t_first) / 1000 / speed
                wait = due - (time.monotonic() - started)
                if wait > 0 and math.isfinite(wait):
                    time.sleep(min(wait, 5.0))
        return done
