"""UTC, once: BTI stores and compares every time in UTC, and reads a naive time as UTC (the
exchanges' convention: Binance's klines and bulk files are UTC epoch times)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd


def to_utc(t: pd.Timestamp | datetime | str) -> pd.Timestamp:
    """``t`` as a UTC `pd.Timestamp`: naive is taken as UTC, aware is converted."""
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_utc_index(idx: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """A `pd.DatetimeIndex` in UTC, by the rule of `to_utc`."""
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def aware(t: datetime) -> datetime:
    """A `datetime` in UTC, by the rule of `to_utc` (SQLite hands datetimes back naive)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
