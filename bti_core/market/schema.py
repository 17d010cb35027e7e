"""Canonical market-data frames, data kinds, timeframes and symbol names.

Every frame in the engine has a ``ts`` column (bar open time, ``datetime64[us, UTC]``):

- ``ohlcv`` (last-traded price) and ``mark`` (mark price) bars:
  ``ts, open, high, low, close, volume`` (+ ``flags`` once cleaned; volume in base asset);
- ``funding``: ``ts, funding_rate`` (a fraction per funding interval, at the funding time).
"""

from __future__ import annotations

import re
from enum import IntFlag, StrEnum

import pandas as pd

from bti_core.errors import UnknownSymbolError, UnknownTimeframeError
from bti_core.timeutil import to_utc


class Kind(StrEnum):
    OHLCV = "ohlcv"
    MARK = "mark"
    FUNDING = "funding"
    # market context (Binance's futures data statistics, through ccxt): readings, not bars
    OPEN_INTEREST = "open_interest"
    LONG_SHORT = "long_short"


BAR_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
# the import source of bars a live feed built from its own ticks (`bti stream live`): charts
# and context, never the proof of a liquidation (that would be the feed vouching for itself)
FEED_SOURCE_PREFIX = "live:"
FUNDING_COLUMNS: tuple[str, ...] = ("ts", "funding_rate")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
# open interest in contracts (base units) and in USDT, at the end of each period
OPEN_INTEREST_COLUMNS: tuple[str, ...] = ("ts", "open_interest", "open_interest_value")
# accounts long ÷ accounts short, and the share of accounts long (0–1)
LONG_SHORT_COLUMNS: tuple[str, ...] = ("ts", "long_short_ratio", "long_account")
CONTEXT_KINDS: tuple[Kind, ...] = (Kind.OPEN_INTEREST, Kind.LONG_SHORT)


def columns_for(kind: Kind) -> tuple[str, ...]:
    return {
        Kind.FUNDING: FUNDING_COLUMNS,
        Kind.OPEN_INTEREST: OPEN_INTEREST_COLUMNS,
        Kind.LONG_SHORT: LONG_SHORT_COLUMNS,
    }.get(kind, BAR_COLUMNS)


class BarFlag(IntFlag):
    """Bit flags stored with every cleaned bar (column ``flags``)."""

    NONE = 0
    FLAT_ZERO_VOLUME = 1  # open = high = low = close and no volume: exchange maintenance
    WICK_LOW_UNCONFIRMED = 2  # last-price low far below the mark price's low
    WICK_HIGH_UNCONFIRMED = 4  # last-price high far above the mark price's high
    AFTER_GAP = 8  # first bar after missing bars


# Binance/ccxt timeframe names -> length.
TIMEFRAMES: dict[str, pd.Timedelta] = {
    name: pd.Timedelta(spec)
    for name, spec in {
        "1m": "1min",
        "3m": "3min",
        "5m": "5min",
        "15m": "15min",
        "30m": "30min",
        "1h": "1h",
        "2h": "2h",
        "4h": "4h",
        "6h": "6h",
        "8h": "8h",
        "12h": "12h",
        "1d": "1D",
    }.items()
}
FUNDING_TIMEFRAME = "8h"

# No crypto price is older than Bitcoin's genesis block; an earlier time is a unit mistake
# (seconds read as milliseconds land in January 1970).
EARLIEST_TIME = pd.Timestamp("2009-01-03", tz="UTC")
# A bar may open up to this far after our clock (exchange and host clocks differ a little);
# anything later has not happened yet and would pay claims on prices nobody has seen.
CLOCK_SKEW = pd.Timedelta(minutes=5)


def allowed_times(now: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The first and last open time a stored bar or funding time may have, as of ``now``."""
    now = pd.Timestamp.now("UTC") if now is None else to_utc(now)
    return EARLIEST_TIME, now + CLOCK_SKEW


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        allowed = ", ".join(TIMEFRAMES)
        raise UnknownTimeframeError(
            f"unknown timeframe {timeframe!r}; allowed: {allowed}"
        ) from None


QUOTES: tuple[str, ...] = ("USDT", "USDC", "BUSD", "USD")
_CANONICAL = re.compile(r"^([A-Z0-9]{1,20}?)(USDT|USDC|BUSD|USD)$")
_UNIFIED = re.compile(r"^([A-Z0-9]{1,20})[/_-](USDT|USDC|BUSD|USD)(?::([A-Z0-9]+))?$")


def canonical_symbol(name: str) -> str:
    """One name per contract: ``BTCUSDT``. Accepts ``btcusdt``, ``BTC/USDT:USDT`` (ccxt),
    ``BTC/USDT``, ``BTC-USDT`` and ``BTC_USDT``."""
    s = name.strip().upper()
    if m := _UNIFIED.match(s):
        return m.group(1) + m.group(2)
    if _CANONICAL.match(s):
        return s
    raise UnknownSymbolError(
        f"unknown symbol {name!r}: expected a perpetual such as BTCUSDT or BTC/USDT:USDT "
        f"(quote currency one of {', '.join(QUOTES)})"
    )


def ccxt_symbol(name: str) -> str:
    """ccxt's unified name of a linear perpetual: ``BTCUSDT`` -> ``BTC/USDT:USDT``."""
    s = canonical_symbol(name)
    m = _CANONICAL.match(s)
    assert m is not None  # canonical_symbol guarantees the shape
    base, quote = m.group(1), m.group(2)
    return f"{base}/{quote}:{quote}"
