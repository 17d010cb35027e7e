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

`ReplaySource` turns the warehouse's stored mark-price bars into ticks — each bar its open,
then its extremes in the order that reaches the close (low first on an up bar), then its close,
at a quarter of the bar apart — merged over the symbols in time order, so an offset names the
same tick on every run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bti_core.claims.service import TickHit
from bti_core.db.models import Claim, Policy, PolicyEvent
from bti_core.errors import BTIError
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind, timeframe_delta
from bti_core.market.warehouse import Warehouse
from bti_core.stream.kafka import KafkaTickSource
from bti_core.stream.scoring import (
    DEFAULT_RULES,
    HOUR_MS,
    Book,
    Context,
    Event,
    Rules,
    SymbolState,
    score,
)
from bti_core.stream.store import load_checkpoint, write_batch

if TYPE_CHECKING:
    from bti_core.services import Services


def _epoch_ms(ts: pd.Series) -> npt.NDArray[np.int64]:
    """Times as milliseconds since the epoch."""
    since_epoch = pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")
    return np.asarray(since_epoch // pd.Timedelta(milliseconds=1), dtype=np.int64)


def bar_ticks(bars: pd.DataFrame, step_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """A bar's four ticks: open, the extreme met first on the way to the close (the low on an
    up bar), the other extreme, and the close, a quarter of the bar apart."""
    if bars.empty:
        return np.empty(0, dtype=np.int64), np.empty(0)
    t0 = _epoch_ms(bars["ts"])
    o, h, lo, c = (bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    up = c >= o
    ts = np.stack([t0, t0 + step_ms // 4, t0 + step_ms // 2, t0 + 3 * step_ms // 4], axis=1)
    px = np.stack([o, np.where(up, lo, h), np.where(up, h, lo), c], axis=1)
    return ts.ravel(), px.ravel()


CONTEXT_TTL = 60.0  # seconds a symbol's funding and forecast band are kept
CURSOR = "__cursor__"  # the checkpoint's entry for a source's own position (Kafka offsets)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def fresh_state(services: Services, symbol: str) -> SymbolState:
    """A symbol's first state, from the risk engine's fit (a symbol with too little history
    for a fit starts from a plain GARCH at 1 % an hour, rather than stopping the stream)."""
    try:
        fit = services.risk.symbol_risk(symbol).fit
    except BTIError:
        return SymbolState(symbol, 1e-6, 0.05, 0.05, 0.9, 1e-4)
    p = fit.params
    return SymbolState(symbol, p.omega, p.alpha, p.gamma, p.beta, float(fit.sigma2_next))


def market_context(services: Services, symbol: str) -> Context:
    """``symbol``'s funding settlements from the warehouse and the 95 % band of its cached
    price forecast (the worker fits one an hour), hour by hour: between the forecast's
    horizons (1 h … 7 days) each bound is interpolated linearly in log price over the horizon
    in hours. Empty parts where nothing is stored."""
    from bti_core.risk.forecast import cached

    wh = services.warehouse
    f_ms, f_rate = np.empty(0, dtype=np.int64), np.empty(0)
    if wh.exists(Kind.FUNDING, symbol, FUNDING_TIMEFRAME):
        fr = wh.query(Kind.FUNDING, symbol, FUNDING_TIMEFRAME)
        f_ms = _epoch_ms(fr["ts"])
        f_rate = fr["funding_rate"].to_numpy(dtype=np.float64)
        ok = np.isfinite(f_rate)
        f_ms, f_rate = f_ms[ok], f_rate[ok]
    b_ms, lo, hi = np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    fc = cached(services.settings.forecasts_dir, symbol, "price")
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
    ).where(
        t.symbol == symbol,
        t.status.in_(["active", "claimed", "paid", "expired"]),
        t.end_at >= lo,
    )
    with db.connect() as conn:
        rows = conn.execute(stmt).all()
    book = Book(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([1 if r[1] == "long" else -1 for r in rows], dtype=np.int64),
        np.array([float(r[2]) for r in rows], dtype=np.float64),
        np.array([float(r[3]) for r in rows], dtype=np.float64),
        np.array([_ms(r[4]) for r in rows], dtype=np.int64),
        np.array([_ms(r[5]) for r in rows], dtype=np.int64),
        np.array([r[6] for r in rows], dtype=np.float64),
        np.array([r[7] for r in rows], dtype=np.float64),
    )
    return book, {int(r[0]): str(r[8]) for r in rows}


def open_claims(
    services: Services,
    stream: str,
    events: Sequence[Event],
    feed: BarFeed | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Open the claim of every liquidation in ``events`` at its crossing tick, audit, decide
    and pay them (in batches: a crash liquidates thousands at one tick). A policy has one
    claim, so events processed again open nothing. A live ``feed`` adds its own bars around
    each tick to the evidence. Returns the claim ids and, for the sinks, each claim's policy,
    tick and state after the decision."""
    bars: dict[tuple[str, int], tuple[dict[str, Any], ...]] = {}  # per symbol and minute

    def feed_bars(symbol: str, at_ms: int) -> tuple[dict[str, Any], ...]:
        key = (symbol, at_ms // 60_000)
        if feed is not None and key not in bars:  # a crash liquidates thousands at one tick
            bars[key] = tuple(feed.feed_bars(symbol, at_ms))
        return bars.get(key, ())

    hits = [
        TickHit(
            e.policy,
            e.symbol,
            datetime.fromtimestamp(e.at_ms / 1000, tz=UTC),
            e.price,
            feed_bars(e.symbol, e.at_ms),
        )
        for e in events
        if e.kind == "liquidation" and e.policy is not None
    ]
    if not hits:
        return [], []
    claims = services.claims
    ids = claims.open_from_ticks(hits, stream)
    claims.process_many(ids)
    c = Claim.__table__.c  # type: ignore[attr-defined]
    with services.db.connect() as conn:
        rows = [
            r
            for i in range(0, len(ids), 500)
            for r in conn.execute(
                sa_select(c.id, c.policy_id, c.state).where(c.id.in_(ids[i : i + 500]))
            ).all()
        ]
    first = {h.policy_id: h for h in hits}
    opened = []
    for cid, pid, state in sorted(rows):
        h = first[int(pid)]
        opened.append(
            {
                "claim": int(cid),
                "policy": h.policy_id,
                "symbol": h.symbol,
                "at": int(h.at.timestamp() * 1000),
                "price": h.price,
                "state": str(state),
            }
        )
    return ids, opened


class ArraySource:
    """Ticks held in arrays (symbol, time in ms, mark price), in the order they are consumed;
    an offset is a position in them. The base of the replay, and of a feed that grows (a
    subclass may append)."""

    def __init__(self, symbols: np.ndarray, ts: np.ndarray, price: np.ndarray) -> None:
        if not (len(symbols) == len(ts) == len(price)):
            raise ValueError("symbols, times and prices must have the same length")
        self.symbols: np.ndarray = np.asarray(symbols, dtype=object)
        self.ts: np.ndarray = np.asarray(ts, dtype=np.int64)
        self.price: np.ndarray = np.asarray(price, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ts)

    def read(self, offset: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sl = slice(offset, min(offset + limit, len(self.ts)))
        return self.symbols[sl], self.ts[sl], self.price[sl]


class ReplaySource(ArraySource):
    """Ticks from stored mark bars of ``symbols`` between ``start`` and ``end`` (module
    docstring)."""

    def __init__(
        self,
        warehouse: Warehouse,
        symbols: Sequence[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
        timeframe: str = "1h",
    ) -> None:
        parts = []
        step = int(timeframe_delta(timeframe).total_seconds() * 1000)
        for sym in symbols:
            bars = warehouse.bars(sym, timeframe, start, end, kind=Kind.MARK)
            if bars.empty:
                continue
            ts, px = bar_ticks(bars, step)
            parts.append((np.full(ts.size, sym, dtype=object), ts, px))
        if not parts:
            raise BTIError(f"no mark-price bars of {', '.join(symbols)} to replay in that range")
        names = np.concatenate([p[0] for p in parts])
        times = np.concatenate([p[1] for p in parts])
        prices = np.concatenate([p[2] for p in parts])
        order = np.lexsort((np.arange(len(times)), times))  # time; ties keep the symbols' order
        super().__init__(names[order], times[order], prices[order])


@runtime_checkable
class FollowedSource(Protocol):
    """A source read by each symbol's last consumed tick rather than by an offset: the
    warehouse's newest bars (`TailSource`), a live exchange feed
    (`bti_core.stream.live.LiveSource`)."""

    def read_after(
        self, last_ms: dict[str, int], limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class BarFeed(Protocol):
    """A source that builds bars of its own from what it receives (a live exchange feed):
    they are claim evidence for a tick whose bar is not stored yet."""

    def feed_bars(self, symbol: str, at_ms: int) -> list[dict[str, Any]]: ...


class TailSource:
    """The warehouse's newest mark bars as ticks, for the worker: each symbol from just after
    the last tick its state consumed (a first start: the last ``lookback``). Every stored
    timeframe is read and a finer bar wins over the coarser one it falls in, so a replayed
    crash's minute bars come through minute by minute and the hours around them by the hour."""

    def __init__(
        self,
        warehouse: Warehouse,
        symbols: Sequence[str] | None = None,
        *,
        lookback: pd.Timedelta = pd.Timedelta(hours=2),  # noqa: B008 — immutable
    ) -> None:
        self.warehouse = warehouse
        self.symbols = list(symbols) if symbols is not None else None
        self.lookback = lookback

    def read_after(
        self, last_ms: dict[str, int], limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        now_ms = int(pd.Timestamp.now("UTC").timestamp() * 1000)
        first_ms = now_ms - int(self.lookback.total_seconds() * 1000)
        names, times, prices = [], [], []
        for sym in self.symbols or self.warehouse.symbols(Kind.MARK):
            after = last_ms.get(sym, first_ms)
            tfs = sorted(self.warehouse.timeframes(sym, Kind.MARK), key=timeframe_delta)
            kept_ts: list[np.ndarray] = []
            kept_px: list[np.ndarray] = []
            finer: list[tuple[np.ndarray, int]] = []  # bar opens of the finer series read
            for tf in tfs:
                step = int(timeframe_delta(tf).total_seconds() * 1000)
                start = pd.Timestamp(after - step, unit="ms", tz="UTC")
                bars = self.warehouse.query(Kind.MARK, sym, tf, start)
                ts, px = bar_ticks(bars, step)
                opens = ts[::4] if len(ts) else np.empty(0, dtype=np.int64)
                keep = ts > after
                for f_opens, _f_step in finer:  # a coarser bar holding finer bars gives way
                    bar_open = np.repeat(opens, 4)
                    j = np.searchsorted(f_opens, bar_open, side="left")
                    inside = (j < len(f_opens)) & (
                        f_opens[np.minimum(j, len(f_opens) - 1)] < bar_open + step
                    )
                    keep &= ~inside
                kept_ts.append(ts[keep])
                kept_px.append(px[keep])
                finer.append((opens, step))
            if kept_ts:
                t = np.concatenate(kept_ts)
                p = np.concatenate(kept_px)
                o = np.argsort(t, kind="stable")
                names.append(np.full(len(t), sym, dtype=object))
                times.append(t[o])
                prices.append(p[o])
        if not times:
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0)
        n, t, p = np.concatenate(names), np.concatenate(times), np.concatenate(prices)
        order = np.lexsort((np.arange(len(t)), t))[:limit]
        return n[order], t[order].astype(np.int64), p[order]

    def __len__(self) -> int:
        return 0  # unbounded


@dataclass
class BatchReport:
    offset: int
    ticks: int
    events: list[Event] = field(default_factory=list)
    claims: list[int] = field(default_factory=list)  # opened by this batch
    alerts: int = 0  # new alert rows
    owners: dict[int, str] = field(default_factory=dict)  # policy → trader, of the events
    opened: list[dict[str, Any]] = field(default_factory=list)  # the claims, for the sinks
    read: int = 0  # messages consumed (a Kafka batch may hold invalid or late ones)


class EmbeddedEngine:
    """Score a source's ticks batch by batch into alerts and claims (module docstring)."""

    def __init__(
        self,
        services: Services,
        source: ArraySource | FollowedSource | KafkaTickSource,
        *,
        name: str = "replay",
        rules: Rules = DEFAULT_RULES,
        batch: int = 10_000,
        before_commit: Callable[[BatchReport], None] | None = None,
        sink: Callable[[str, BatchReport], None] | None = None,
    ) -> None:
        self.services = services
        self.source = source
        self.name = name
        self.rules = rules
        self.batch = batch
        self.before_commit = before_commit  # a hook for the kill tests
        self.sink = sink  # e.g. `KafkaSink`: called with each batch before it commits
        self._books: dict[str, tuple[Any, int, Book, dict[int, str]]] = {}
        self._contexts: dict[str, tuple[float, Context]] = {}

    def _fresh_state(self, symbol: str) -> SymbolState:
        return fresh_state(self.services, symbol)

    def _context(self, symbol: str) -> Context:
        """`market_context`, read again once a minute (funding settles every 8 hours, the
        forecast is refitted every hour)."""
        hit = self._contexts.get(symbol)
        if hit is None or time.monotonic() - hit[0] > CONTEXT_TTL:
            hit = (time.monotonic(), market_context(self.services, symbol))
            self._contexts[symbol] = hit
        return hit[1]

    def _fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever a policy is added or changes status (each change is logged)."""
        with self.services.db.connect() as conn:
            p = conn.execute(select(func.count(col(Policy.id)), func.max(Policy.id))).one()
            e = conn.execute(select(func.max(PolicyEvent.id))).one()
        return (*p, *e)

    def _book(self, symbol: str, first_ms: int, last_ms: int) -> tuple[Book, dict[int, str]]:
        """Every sold policy on ``symbol`` whose window overlaps the batch — claimed and paid
        ones too: a batch processed again after a crash must raise the same events (their
        claims exist, so nothing is paid twice; their alerts exist, so nothing is added).

        The symbol's policies still open at the batch's start are read once and kept until a
        policy is added or changes status; each batch takes its overlapping rows from them
        (ticks only move forward, so a later batch needs a subset)."""
        fp = self._fingerprint()
        cached = self._books.get(symbol)
        if cached is None or cached[0] != fp or first_ms < cached[1]:
            book, owners = read_book(self.services.db, symbol, first_ms)
            cached = (fp, first_ms, book, owners)
            self._books[symbol] = cached
        _, _, book, owners = cached
        mine = book.take((book.end_ms >= first_ms) & (book.start_ms <= last_ms))
        return mine, {int(p): owners[int(p)] for p in mine.policy}

    def step(self) -> BatchReport | None:
        """One micro-batch from the checkpoint; None when the source has no more ticks."""
        offset, saved = load_checkpoint(self.services.db, self.name)
        cursor = saved.pop(CURSOR, None)
        states = {k: SymbolState.from_json(v) for k, v in saved.items()}
        read = 0
        if isinstance(self.source, FollowedSource):
            syms, ts, px = self.source.read_after(
                {k: v.last_ms for k, v in states.items()}, self.batch
            )
        elif isinstance(self.source, KafkaTickSource):
            syms, ts, px, cursor, read = self.source.read_from(
                cursor, self.batch, {k: v.last_ms for k, v in states.items()}
            )
        else:
            syms, ts, px = self.source.read(offset, self.batch)
        read = read or len(ts)
        if read == 0:
            return None
        report = BatchReport(offset, len(ts), read=read)
        owners = report.owners
        for sym in dict.fromkeys(syms.tolist()):
            mine = syms == sym
            state = states.get(sym) or self._fresh_state(sym)
            book, who = self._book(sym, int(ts[mine][0]), int(ts[mine][-1]))
            owners.update(who)
            ctx = self._context(sym)
            new, events, _ = score(state, book, ts[mine], px[mine], self.rules, ctx)
            states[sym] = new
            report.events += events
        report.events.sort(key=lambda e: (e.at_ms, e.symbol, e.kind))
        feed = self.source if isinstance(self.source, BarFeed) else None
        report.claims, report.opened = open_claims(self.services, self.name, report.events, feed)
        if self.sink is not None:
            self.sink(self.name, report)
        if self.before_commit is not None:
            self.before_commit(report)
        written = write_batch(
            self.services.db,
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
