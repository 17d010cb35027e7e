"""Live mark prices from an exchange through ccxt, as a source of the embedded engine
(`bti stream live`).

The exchange's websocket is watched where ccxt offers it (``watch_mark_prices``, or
``watch_mark_price`` per symbol; Binance USDT-M pushes a mark price a second), else its REST
API is polled (``fetch_mark_prices``, ``fetch_mark_price``, or the ``markPrice`` of
``fetch_ticker``) every ``poll`` seconds. In ``auto`` mode a websocket that fails
``WS_FAILURES`` times in a row gives way to polling for the rest of the run. ccxt runs in a
thread of its own with its own event loop; its ticks wait in a queue that the engine drains
(`read_after`), so a slow batch never blocks the socket.

A tick is a unified ticker's ``timestamp`` (ms) and ``markPrice``; one without either, or
stamped more than a minute past the clock, is counted and skipped, never guessed (the last
price is not the mark price an exchange liquidates on). ccxt keeps only a symbol's newest
ticker, so a mark price that arrives while the thread is busy is superseded by the next one; a
symbol's ticks are kept in time order and a repeat (polling returns the same reading until the
exchange updates it) is dropped.

The engine resumes from each symbol's last tick in its checkpoint: ticks at or before it are
dropped, so a restart raises nothing twice; a live feed cannot be read back, so what the
exchange sent while no process listened is not seen here (the worker's stream over stored bars
still covers those minutes once they are imported). Completed one-minute mark bars built from
the ticks (`take_bars`; not the minute the feed began in) are what `bti stream live` stores,
so a claim opened from a live tick has its bars as evidence and the pages chart the minutes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from bti_core.errors import BTIError, ExchangeError
from bti_core.market.schema import FEED_SOURCE_PREFIX, Kind, canonical_symbol, ccxt_symbol

if TYPE_CHECKING:
    from bti_core.market.ingest import Ingestor

log = logging.getLogger("bti.stream.live")

Mode = Literal["auto", "ws", "poll"]
MODES: tuple[str, ...] = ("auto", "ws", "poll")

WS_FAILURES = 3
MINUTE_MS = 60_000
MAX_QUEUE = 1_000_000  # ticks waiting for the engine; the oldest go first beyond it
RECENT_BARS = 5
MAX_AHEAD_MS = 60_000  # how far past the clock a tick's time may be


def make_pro_exchange(exchange_id: str = "binanceusdm", **config: Any) -> Any:
    """ccxt's async (websocket-capable) client of ``exchange_id``; an exchange ccxt.pro does
    not cover gets its plain async REST client (polled)."""
    import ccxt
    import ccxt.async_support
    import ccxt.pro

    if exchange_id not in ccxt.exchanges:
        raise ExchangeError(
            f"unknown exchange {exchange_id!r}: ccxt knows e.g. binanceusdm, bybit, okx "
            f"({len(ccxt.exchanges)} in all)"
        )
    module = ccxt.pro if exchange_id in ccxt.pro.exchanges else ccxt.async_support
    return getattr(module, exchange_id)({"enableRateLimit": True, **config})


@dataclass
class LiveStats:
    mode: str = "starting"  # ws | poll, once running
    received: int = 0  # tickers ccxt returned
    skipped: int = 0  # without a time or a mark price
    repeated: int = 0  # at or before the symbol's previous tick
    errors: int = 0
    last_error: str = ""
    per_symbol: dict[str, int] = field(default_factory=dict)  # ticks queued
    newest: dict[str, int] = field(default_factory=dict)  # each symbol's newest tick (ms)


class LiveSource:
    """Ticks of ``symbols`` from ``exchange`` (a ccxt async client: `make_pro_exchange`), as
    the embedded engine reads a followed source: `read_after` (module docstring)."""

    def __init__(
        self,
        exchange: Any,
        symbols: Sequence[str],
        *,
        mode: Mode = "auto",
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if not 0.05 <= poll <= 3600:
            raise ValueError(f"poll must be between 0.05 and 3600 seconds; got {poll}")
        if not symbols:
            raise ValueError("name at least one symbol to follow")
        self.exchange = exchange
        self.symbols = [canonical_symbol(s) for s in symbols]
        self._unified = {ccxt_symbol(s): s for s in self.symbols}
        self.mode = mode
        self.poll = poll
        self.clock = clock  # seconds since the epoch: a tick from beyond it is refused
        self.stats = LiveStats()
        self._queue: deque[tuple[str, int, float]] = deque(maxlen=MAX_QUEUE)
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}  # per symbol, the newest tick queued
        self._bar: dict[str, list[float]] = {}  # per symbol: [minute ms, o, h, l, c]
        self._done_bars: dict[str, list[list[float]]] = {}
        self._whole: set[str] = set()  # symbols whose bar being built began at its minute
        self._recent: dict[str, deque[list[float]]] = {}  # the last completed bars, evidence
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the engine's side ---------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LiveSource:
        """Load the exchange's markets and begin receiving; raises what stopped it (a symbol
        the exchange does not list, the network) if that happens before ``timeout``."""
        self._thread = threading.Thread(target=self._run, name="bti-live", daemon=True)
        self._thread.start()
        self._started.wait(timeout)
        if self._failure is not None:
            raise self._failure
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop receiving (the pending watch or poll is cancelled) and close the client."""
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LiveSource:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def read_after(
        self, last_ms: dict[str, int], limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``limit`` queued ticks, oldest first, without those at or before a symbol's
        ``last_ms`` (already consumed by the checkpointed state)."""
        if self._failure is not None and not self.alive:
            raise self._failure
        out: list[tuple[str, int, float]] = []
        with self._lock:
            while self._queue and len(out) < limit:
                sym, ts, px = self._queue.popleft()
                if ts > last_ms.get(sym, -1):
                    out.append((sym, ts, px))
        if not out:
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0)
        names = np.array([o[0] for o in out], dtype=object)
        times = np.array([o[1] for o in out], dtype=np.int64)
        prices = np.array([o[2] for o in out], dtype=np.float64)
        return names, times, prices

    def __len__(self) -> int:
        return 0  # unbounded

    def take_bars(self) -> dict[str, pd.DataFrame]:
        """The one-minute mark bars completed since the last call, per symbol (the minute a
        tick of a later minute closed), in the warehouse's bar columns. The minute the feed
        began in is left out: its first seconds were not heard."""
        with self._lock:
            done, self._done_bars = self._done_bars, {}
        return {
            sym: pd.DataFrame(
                {
                    "ts": pd.to_datetime([int(b[0]) for b in rows], unit="ms", utc=True),
                    "open": [b[1] for b in rows],
                    "high": [b[2] for b in rows],
                    "low": [b[3] for b in rows],
                    "close": [b[4] for b in rows],
                    "volume": 0.0,
                }
            )
            for sym, rows in done.items()
            if rows
        }

    def feed_bars(self, symbol: str, at_ms: int) -> list[dict[str, Any]]:
        """The feed's minute bars from two minutes before ``at_ms`` to its minute (the one
        being built included), as claim evidence: a live tick's minute is not stored yet when
        its claim is audited."""
        lo = (at_ms // MINUTE_MS - 2) * MINUTE_MS
        hi = at_ms // MINUTE_MS * MINUTE_MS
        with self._lock:
            bars = [*self._recent.get(symbol, ()), *filter(None, [self._bar.get(symbol)])]
            rows = [list(b) for b in bars if lo <= b[0] <= hi]
        return [
            {
                "ts": pd.Timestamp(int(b[0]), unit="ms", tz="UTC").isoformat(),
                "open": b[1],
                "high": b[2],
                "low": b[3],
                "close": b[4],
                "feed": f"live {getattr(self.exchange, 'id', 'exchange')}",
            }
            for b in rows
        ]

    # --- the receiving thread ------------------------------------------------------------

    def add(self, ticker: dict[str, Any]) -> bool:
        """Queue one unified ticker; False when it is skipped (module docstring)."""
        self.stats.received += 1
        sym = self._unified.get(str(ticker.get("symbol")))
        ts, mark = ticker.get("timestamp"), ticker.get("markPrice")
        try:
            t, p = int(ts), float(mark)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.stats.skipped += 1
            return False
        if sym is None or not (p > 0 and np.isfinite(p)) or t <= 0 or t > self._horizon():
            self.stats.skipped += 1
            return False
        with self._lock:
            if t <= self._last.get(sym, -1):
                self.stats.repeated += 1
                return False
            self._last[sym] = t
            self._queue.append((sym, t, p))
            self.stats.per_symbol[sym] = self.stats.per_symbol.get(sym, 0) + 1
            self.stats.newest[sym] = t
            minute = float(t // MINUTE_MS * MINUTE_MS)
            bar = self._bar.get(sym)
            if bar is not None and bar[0] != minute:
                if sym in self._whole:  # the minute the feed began in lacks its start
                    self._done_bars.setdefault(sym, []).append(bar)
                self._whole.add(sym)
                self._recent.setdefault(sym, deque(maxlen=RECENT_BARS)).append(bar)
                bar = None
            if bar is None:
                self._bar[sym] = [minute, p, p, p, p]
            else:
                bar[2], bar[3], bar[4] = max(bar[2], p), min(bar[3], p), p
        return True

    def _horizon(self) -> int:
        # a tick stamped beyond the clock (an exchange's clock gone wrong) would move the
        # checkpoint ahead and make every true tick until then look old
        return int(self.clock() * 1000) + MAX_AHEAD_MS

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass  # closed
        except Exception as exc:  # handed to the engine's thread by `read_after`
            self._failure = exc
            log.warning("live feed stopped: %s", exc)
        finally:
            self._started.set()

    async def _main(self) -> None:
        ex = self.exchange
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        if self._stop.is_set():
            return
        try:
            try:
                await ex.load_markets()
            except Exception as exc:
                raise ExchangeError(f"{ex.id}: cannot load its markets ({exc})") from exc
            missing = [s for s in self._unified if s not in ex.markets]
            if missing:
                raise ExchangeError(f"{ex.id} lists no market {', '.join(sorted(missing))}")
            has = ex.has or {}
            ws = self.mode != "poll" and bool(
                has.get("watchMarkPrices") or has.get("watchMarkPrice")
            )
            if self.mode == "ws" and not ws:
                raise ExchangeError(f"{ex.id} offers no websocket mark price through ccxt")
            self.stats.mode = "ws" if ws else "poll"
            self._started.set()
            if ws:
                await self._watch()
            if not self._stop.is_set():
                await self._poll()
        finally:
            await ex.close()

    def _fail(self, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("live feed: %s", self.stats.last_error)

    async def _watch(self) -> None:
        """Websocket updates until stopped; in auto mode, give way to polling after
        `WS_FAILURES` failures in a row."""
        ex, names = self.exchange, list(self._unified)
        self.stats.mode = "ws"
        failures = 0
        while not self._stop.is_set():
            try:
                if ex.has.get("watchMarkPrices"):
                    tickers = list((await ex.watch_mark_prices(names)).values())
                else:  # one stream per symbol: the round ends when each has updated
                    tickers = list(await asyncio.gather(*map(ex.watch_mark_price, names)))
                failures = 0
            except Exception as exc:
                self._fail(exc)
                failures += 1
                if self.mode == "auto" and failures >= WS_FAILURES:
                    log.warning("live feed: the websocket failed %d times; polling", failures)
                    return
                await asyncio.sleep(min(2.0**failures / 4, 5.0))
                continue
            for t in tickers:
                self.add(t)

    async def _poll(self) -> None:
        ex, names = self.exchange, list(self._unified)
        self.stats.mode = "poll"
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if ex.has.get("fetchMarkPrices"):
                    tickers = list((await ex.fetch_mark_prices(names)).values())
                elif ex.has.get("fetchMarkPrice"):
                    tickers = [await ex.fetch_mark_price(n) for n in names]
                else:
                    tickers = [await ex.fetch_ticker(n) for n in names]
            except Exception as exc:
                self._fail(exc)
                tickers = []
            for t in tickers:
                if t.get("symbol") in self._unified:
                    self.add(t)
            await asyncio.sleep(max(0.0, self.poll - (time.monotonic() - t0)))


BAR_FLUSH_SECONDS = 300.0


class MinuteBarStore:
    """Stores a live feed's completed one-minute mark bars in the warehouse: gathered on every
    `keep`, written every `flush_seconds` (one import run, cleaned and reported like any other,
    each few minutes rather than one a minute) and on `keep(now=True)` at the end. Bars the
    cleaning refuses are reported to ``on_error`` and do not stop the feed."""

    def __init__(
        self,
        source: LiveSource,
        ingestor: Ingestor,
        exchange: str,
        *,
        flush_seconds: float = BAR_FLUSH_SECONDS,
        on_error: Callable[[str, BTIError], None] = lambda _s, _e: None,
    ) -> None:
        self.source, self.ingestor, self.exchange = source, ingestor, exchange
        self.flush_seconds, self.on_error = flush_seconds, on_error
        self.stored = 0  # bars added or updated
        self._pending: dict[str, list[pd.DataFrame]] = {}
        self._flushed = time.monotonic()

    def keep(self, now: bool = False) -> None:
        for sym, frame in self.source.take_bars().items():
            self._pending.setdefault(sym, []).append(frame)
        if not now and time.monotonic() - self._flushed < self.flush_seconds:
            return
        self._flushed = time.monotonic()
        for sym, frames in list(self._pending.items()):
            del self._pending[sym]
            try:
                r = self.ingestor.ingest_frame(
                    pd.concat(frames, ignore_index=True),
                    symbol=sym,
                    kind=Kind.MARK,
                    timeframe="1m",
                    source=f"{FEED_SOURCE_PREFIX}{self.exchange}",
                )
                self.stored += r.write.rows_added + r.write.rows_updated
            except BTIError as exc:
                self.on_error(sym, exc)
