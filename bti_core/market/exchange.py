"""Live download from an exchange through ccxt (``binanceusdm`` or any ccxt exchange).

Only the CLI's ``bti ingest --exchange`` reaches the network; the functions take a ccxt exchange
object so that tests hand them one whose HTTP layer replays recorded responses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from bti_core.errors import ExchangeError
from bti_core.market.schema import (
    BAR_COLUMNS,
    CONTEXT_KINDS,
    FUNDING_COLUMNS,
    Kind,
    ccxt_symbol,
    columns_for,
    timeframe_delta,
)
from bti_core.timeutil import to_utc

Progress = Callable[[int, int, str], None]


def make_exchange(exchange_id: str = "binanceusdm", **config: Any) -> Any:
    """A ccxt exchange by id, with rate limiting on."""
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise ExchangeError(
            f"unknown exchange {exchange_id!r}: ccxt knows e.g. binanceusdm, bybit, okx "
            f"({len(ccxt.exchanges)} in all)"
        )
    cls = getattr(ccxt, exchange_id)
    return cls({"enableRateLimit": True, **config})


def _ms(t: pd.Timestamp) -> int:
    return int(t.value // 1_000_000)


def _utc(t: pd.Timestamp | str) -> pd.Timestamp:
    return to_utc(t)


def download(
    exchange: Any,
    symbol: str,
    kind: Kind,
    *,
    timeframe: str = "1h",
    since: pd.Timestamp | str,
    until: pd.Timestamp | str | None = None,
    page_limit: int = 1000,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Page through an exchange's history from ``since`` to ``until`` (default: now).

    Bars still open at the time of the call are dropped: a bar is stored once it is final.
    Mark-price bars use ccxt's ``params={"price": "mark"}``; open interest and the long/short
    ratio are readings per ``timeframe`` (Binance: 5m … 1d, the last 30 days).
    """
    import ccxt

    start, end = _utc(since), _utc(until) if until is not None else pd.Timestamp.now("UTC")
    if start >= end:
        raise ValueError(f"since ({start}) must be before until ({end})")
    market = ccxt_symbol(symbol)
    span = _ms(end) - _ms(start)
    try:
        exchange.load_markets()
        if market not in exchange.markets:
            raise ExchangeError(f"{exchange.id} has no market {market}")
        if kind in CONTEXT_KINDS:
            frame = _context(exchange, market, kind, timeframe, start, end, span, progress)
        elif kind is Kind.FUNDING:
            rows = _page(
                lambda cur: exchange.fetch_funding_rate_history(
                    market, since=cur, limit=page_limit
                ),
                lambda r: int(r["timestamp"]),
                start,
                end,
                span,
                progress,
                step_ms=1,
            )
            frame = pd.DataFrame(
                {
                    "ts": pd.to_datetime([int(r["timestamp"]) for r in rows], unit="ms", utc=True),
                    "funding_rate": [float(r["fundingRate"]) for r in rows],
                },
                columns=list(FUNDING_COLUMNS),
            )
        else:
            params = {"price": "mark"} if kind is Kind.MARK else {}
            step_ms = int(timeframe_delta(timeframe).total_seconds() * 1000)
            rows = _page(
                lambda cur: exchange.fetch_ohlcv(
                    market, timeframe, since=cur, limit=page_limit, params=params
                ),
                lambda r: int(r[0]),
                start,
                end,
                span,
                progress,
                step_ms=step_ms,
            )
            now_ms = exchange.milliseconds()
            rows = [r for r in rows if int(r[0]) + step_ms <= now_ms]
            frame = pd.DataFrame([r[:6] for r in rows], columns=list(BAR_COLUMNS))
            frame["ts"] = pd.to_datetime(frame["ts"].astype("int64"), unit="ms", utc=True)
            if kind is Kind.MARK:
                frame["volume"] = 0.0
    except ccxt.BaseError as exc:
        raise ExchangeError(f"{exchange.id}: {type(exc).__name__}: {exc}") from exc
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    return frame.astype({c: "float64" for c in frame.columns if c != "ts"})


CONTEXT_PAGE = 500  # Binance's most per request for its futures data statistics


def _context(
    exchange: Any,
    market: str,
    kind: Kind,
    timeframe: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    span: int,
    progress: Progress | None,
) -> pd.DataFrame:
    """Open interest or the accounts' long/short ratio, one reading per period, through
    ccxt's ``fetch_open_interest_history`` / ``fetch_long_short_ratio_history`` (Binance keeps
    the last 30 days of these). Each page asks for ``[cursor, cursor + 500 periods]``."""
    step_ms = int(timeframe_delta(timeframe).total_seconds() * 1000)

    def fetch(cursor: int) -> list[Any]:
        until = {"until": cursor + step_ms * CONTEXT_PAGE}
        if kind is Kind.OPEN_INTEREST:
            return list(
                exchange.fetch_open_interest_history(
                    market, timeframe, since=cursor, limit=CONTEXT_PAGE, params=until
                )
            )
        return list(
            exchange.fetch_long_short_ratio_history(
                market, timeframe, since=cursor, limit=CONTEXT_PAGE, params=until
            )
        )

    rows = _page(fetch, lambda r: int(r["timestamp"]), start, end, span, progress, step_ms=step_ms)
    ts = pd.to_datetime([int(r["timestamp"]) for r in rows], unit="ms", utc=True)
    if kind is Kind.OPEN_INTEREST:
        data = {
            "open_interest": [r.get("openInterestAmount") for r in rows],
            "open_interest_value": [r.get("openInterestValue") for r in rows],
        }
    else:
        data = {
            "long_short_ratio": [r.get("longShortRatio") for r in rows],
            "long_account": [(r.get("info") or {}).get("longAccount") for r in rows],
        }
    frame = pd.DataFrame({"ts": ts, **data}, columns=list(columns_for(kind)))
    for c in frame.columns[1:]:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _page(
    fetch: Callable[[int], list[Any]],
    time_of: Callable[[Any], int],
    start: pd.Timestamp,
    end: pd.Timestamp,
    span: int,
    progress: Progress | None,
    *,
    step_ms: int,
) -> list[Any]:
    """Fetch pages from ``start`` until ``end``; the next page starts one step after the last
    row (one bar for klines, 1 ms for funding events)."""
    out: list[Any] = []
    cursor, end_ms = _ms(start), _ms(end)
    while cursor < end_ms:
        batch = [r for r in fetch(cursor) if time_of(r) >= cursor]
        if not batch:
            break
        out += [r for r in batch if time_of(r) < end_ms]
        cursor = time_of(batch[-1]) + step_ms
        if progress:
            progress(min(cursor - _ms(start), span), span, "downloading")
    return out
