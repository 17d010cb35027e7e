"""The in-process sources of ticks: arrays (`ArraySource`), the stored mark bars of a range
replayed (`ReplaySource`) and the warehouse's newest bars followed (`TailSource`, the
worker's); a bar becomes four ticks (`bar_ticks`) and a finer stored bar wins over the coarser
one it falls in (`merged_ticks`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from bti_core.errors import BTIError
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.warehouse import Warehouse
from bti_core.stream.types import DEFAULT_RULES


def epoch_ms(ts: pd.Series) -> npt.NDArray[np.int64]:
    """Times as milliseconds since the epoch."""
    since_epoch = pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")
    return np.asarray(since_epoch // pd.Timedelta(milliseconds=1), dtype=np.int64)


def bar_ticks(bars: pd.DataFrame, step_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """A bar's four ticks: open, the extreme met first on the way to the close (the low on an
    up bar), the other extreme, and the close, a quarter of the bar apart."""
    if bars.empty:
        return np.empty(0, dtype=np.int64), np.empty(0)
    t0 = epoch_ms(bars["ts"])
    o, h, lo, c = (bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    up = c >= o
    ts = np.stack([t0, t0 + step_ms // 4, t0 + step_ms // 2, t0 + 3 * step_ms // 4], axis=1)
    px = np.stack([o, np.where(up, lo, h), np.where(up, h, lo), c], axis=1)
    return ts.ravel(), px.ravel()


class ArraySource:
    """Ticks held in arrays (symbol, time in ms, mark price), in the order they are consumed;
    an offset is a position in them. The base of the replay, and of a feed that grows (a
    subclass may append)."""

    from_bars = False  # ticks as they came (persistence confirms a liquidation)

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

    from_bars = True  # the bars themselves prove a liquidation, not their made-up ticks

    def __init__(
        self,
        warehouse: Warehouse,
        symbols: Sequence[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
        timeframe: str | None = None,
    ) -> None:
        parts = []
        for sym in symbols:
            if timeframe is None:  # every stored series, the finer winning (`merged_ticks`)
                after = int(pd.Timestamp(start).timestamp() * 1000) - 1
                ts, px = merged_ticks(warehouse, sym, after, pd.Timestamp(end))
            else:
                bars = warehouse.bars(sym, timeframe, start, end, kind=Kind.MARK)
                step = int(timeframe_delta(timeframe).total_seconds() * 1000)
                ts, px = bar_ticks(bars, step)
            if not len(ts):
                continue
            parts.append((np.full(ts.size, sym, dtype=object), ts, px))
        if not parts:
            raise BTIError(f"no mark-price bars of {', '.join(symbols)} to replay in that range")
        names = np.concatenate([p[0] for p in parts])
        times = np.concatenate([p[1] for p in parts])
        prices = np.concatenate([p[2] for p in parts])
        order = np.lexsort((np.arange(len(times)), times))  # time; ties keep the symbols' order
        super().__init__(names[order], times[order], prices[order])


def merged_ticks(
    warehouse: Warehouse, symbol: str, after_ms: int, end: pd.Timestamp | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``symbol``'s stored mark bars as ticks (`bar_ticks`) after ``after_ms`` up to ``end``,
    every stored timeframe read and a finer bar winning over the coarser one it falls in, so
    a replayed crash's minutes come through minute by minute and the hours around them by
    the hour; in time order."""
    tfs = sorted(warehouse.timeframes(symbol, Kind.MARK), key=timeframe_delta)
    kept_ts: list[np.ndarray] = []
    kept_px: list[np.ndarray] = []
    finer: list[np.ndarray] = []  # bar opens of the finer series read
    for tf in tfs:
        step = int(timeframe_delta(tf).total_seconds() * 1000)
        start = pd.Timestamp(after_ms - step, unit="ms", tz="UTC")
        bars = warehouse.query(Kind.MARK, symbol, tf, start, end)
        ts, px = bar_ticks(bars, step)
        opens = ts[::4] if len(ts) else np.empty(0, dtype=np.int64)
        keep = ts > after_ms
        for f_opens in finer:  # a coarser bar holding finer bars gives way
            if not len(f_opens):
                continue
            bar_open = np.repeat(opens, 4)
            j = np.searchsorted(f_opens, bar_open, side="left")
            inside = (j < len(f_opens)) & (
                f_opens[np.minimum(j, len(f_opens) - 1)] < bar_open + step
            )
            keep &= ~inside
        kept_ts.append(ts[keep])
        kept_px.append(px[keep])
        finer.append(opens)
    if not kept_ts:
        return np.empty(0, dtype=np.int64), np.empty(0)
    t, p = np.concatenate(kept_ts), np.concatenate(kept_px)
    o = np.argsort(t, kind="stable")
    return t[o], p[o]


class TailSource:
    """The warehouse's newest mark bars as ticks, for the worker: each symbol from just after
    the last tick its state consumed (a first start: the last ``lookback``). Every stored
    timeframe is read and a finer bar wins over the coarser one it falls in, so a replayed
    crash's minute bars come through minute by minute and the hours around them by the hour."""

    from_bars = True

    def __init__(
        self,
        warehouse: Warehouse,
        symbols: Sequence[str] | None = None,
        *,
        lookback: pd.Timedelta = pd.Timedelta(hours=2),  # noqa: B008 — immutable
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.symbols = list(symbols) if symbols is not None else None
        self.lookback = lookback
        self.clock = clock or (lambda: datetime.now(UTC))

    def read_after(
        self, last_ms: dict[str, int], limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``limit`` ticks after each symbol's ``last_ms``, none from beyond the clock's
        skew (bars stored ahead of the present are not ticks yet)."""
        now_ms = int(self.clock().timestamp() * 1000)
        first_ms = now_ms - int(self.lookback.total_seconds() * 1000)
        horizon = pd.Timestamp(now_ms + DEFAULT_RULES.max_ahead_ms, unit="ms", tz="UTC")
        names, times, prices = [], [], []
        for sym in self.symbols or self.warehouse.symbols(Kind.MARK):
            after = last_ms.get(sym, first_ms)
            t, p = merged_ticks(self.warehouse, sym, after, horizon)
            keep = t <= horizon.value // 1_000_000
            t, p = t[keep], p[keep]
            if len(t):
                names.append(np.full(len(t), sym, dtype=object))
                times.append(t)
                prices.append(p)
        if not times:
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0)
        n, t, p = np.concatenate(names), np.concatenate(times), np.concatenate(prices)
        order = np.lexsort((np.arange(len(t)), t))[:limit]
        return n[order], t[order].astype(np.int64), p[order]

    def __len__(self) -> int:
        return 0  # unbounded
