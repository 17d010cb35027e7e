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

from bti_core.errors import UnknownSymbolError


class Kind(StrEnum):
    OHLCV = "ohlcv"
    MARK = "mark"
    FUNDING = "funding"


BAR_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
FUNDING_COLUMNS: tuple[str, ...] = ("ts", "funding_rate")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")


def columns_for(kind: Kind) -> tuple[str, ...]:
    return FUNDING_COLUMNS if kind is Kind.FUNDING else BAR_COLUMNS


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


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        allowed = ", ".join(TIMEFRAMES)
        raise ValueError(f"unknown timeframe {timeframe!r}; allowed: {allowed}") from None


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
