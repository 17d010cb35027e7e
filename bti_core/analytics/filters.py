"""The filters every Risk Queries view obeys (`BookFilter`): checked choices and dates, kept in the
page's URL so a link reproduces the view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import numpy as np
import pandas as pd

from bti_core.analytics.book import (
    DURATION_BUCKETS,
    LEVERAGE_BUCKETS,
    MARGIN_MODES,
    ORDER_TYPES,
    RANGES,
    SIDES,
    STATUSES,
    TRENDS,
    VOL_REGIMES,
)
from bti_core.errors import BTIError
from bti_core.timeutil import to_utc


class FilterError(BTIError, ValueError):
    """A filter value that is not allowed (the message lists what is)."""


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(dict.fromkeys(v.strip() for v in str(value).split(",") if v.strip()))


# the dates a filter may name: the page's date pickers offer the same span (a far date in a link
# used to crash the page's date input)
EARLIEST = pd.Timestamp("2010-01-01", tz="UTC")


LATEST = pd.Timestamp("2099-12-31", tz="UTC")


def _choose(name: str, value: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    chosen = _split(value)
    bad = [v for v in chosen if v not in allowed]
    if bad:
        raise FilterError(
            f"{name}: {', '.join(repr(b) for b in bad)} is not allowed; "
            f"choose from {', '.join(allowed)}"
        )
    return chosen


def _time(name: str, value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        t = None
    if t is None or pd.isna(t):
        raise FilterError(f"{name}: {value!r} is not a date; write it as 2024-06-30")
    t = to_utc(t)
    if not EARLIEST <= t <= LATEST:
        raise FilterError(
            f"{name}: {t:%Y-%m-%d} is outside the dates a book can hold "
            f"({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d})"
        )
    return t


# each choice of a filter: its field, the book's column it filters, and its name in words
CHOICES: dict[str, tuple[str, str]] = {
    "symbols": ("symbol", "symbol"),
    "sides": ("side", "side"),
    "order_types": ("order_type", "order type"),
    "margin_modes": ("margin_mode", "margin"),
    "leverage": ("leverage_bucket", "leverage"),
    "duration": ("duration_bucket", "duration"),
    "trends": ("trend", "trend at purchase"),
    "vol_regimes": ("vol_regime", "volatility at purchase"),
    "statuses": ("status", "status"),
    "traders": ("trader", "trader"),
}


@dataclass(frozen=True)
class BookFilter:
    """What a Risk Queries view shows; an empty choice means all. Kept in the page's URL
    (`to_params` / `from_params`), so a link reproduces the view."""

    range: str = "all"
    start: pd.Timestamp | None = None  # custom range, purchase time (UTC), inclusive
    end: pd.Timestamp | None = None  # custom range: up to the end of this day
    symbols: tuple[str, ...] = ()
    sides: tuple[str, ...] = ()
    order_types: tuple[str, ...] = ()
    margin_modes: tuple[str, ...] = ()
    leverage: tuple[str, ...] = ()
    duration: tuple[str, ...] = ()
    trends: tuple[str, ...] = ()
    vol_regimes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    traders: tuple[str, ...] = ()
    # URL key of each field
    PARAMS: ClassVar[dict[str, str]] = {
        "range": "range",
        "start": "from",
        "end": "to",
        "symbols": "symbol",
        "sides": "side",
        "order_types": "type",
        "margin_modes": "margin",
        "leverage": "lev",
        "duration": "dur",
        "trends": "trend",
        "vol_regimes": "vol",
        "statuses": "status",
        "traders": "trader",
    }

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> BookFilter:
        """Parse a URL's query parameters; any value that is not allowed raises `FilterError`
        naming the parameter and what it allows. Unknown parameters are ignored (other
        pages' keys share the URL)."""
        get = params.get
        rng = get("range") or "all"
        if rng not in RANGES:
            raise FilterError(f"range: {rng!r} is not allowed; choose from {', '.join(RANGES)}")
        start, end = _time("from", get("from")), _time("to", get("to"))
        if start is not None and end is not None and start > end:
            raise FilterError(f"from ({start:%Y-%m-%d}) is after to ({end:%Y-%m-%d})")
        symbols = tuple(s.upper() for s in _split(get("symbol")))
        for s in symbols:
            if not s.replace("-", "").replace("_", "").isalnum() or len(s) > 40:
                raise FilterError(f"symbol: {s!r} is not a symbol such as BTCUSDT")
        traders = _split(get("trader"))
        for t in traders:
            if len(t) > 80:
                raise FilterError(f"trader: a username has at most 80 characters; got {len(t)}")
        return cls(
            range=rng,
            start=start,
            end=end,
            symbols=symbols,
            sides=_choose("side", get("side"), SIDES),
            order_types=_choose("type", get("type"), ORDER_TYPES),
            margin_modes=_choose("margin", get("margin"), MARGIN_MODES),
            leverage=_choose("lev", get("lev"), tuple(b[0] for b in LEVERAGE_BUCKETS)),
            duration=_choose("dur", get("dur"), tuple(b[0] for b in DURATION_BUCKETS)),
            trends=_choose("trend", get("trend"), TRENDS),
            vol_regimes=_choose("vol", get("vol"), VOL_REGIMES),
            statuses=_choose("status", get("status"), STATUSES),
            traders=traders,
        )

    def to_params(self) -> dict[str, str]:
        """The URL's query parameters for this filter (defaults left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            key = self.PARAMS[f.name]
            if f.name == "range":
                if v != "all":
                    out[key] = v
            elif isinstance(v, tuple):
                if v:
                    out[key] = ",".join(v)
            elif v is not None:
                out[key] = f"{v:%Y-%m-%d}"
        return out

    def for_user(self, username: str, underwriter: bool) -> BookFilter:
        """An underwriter sees the whole book (or the traders they chose); a trader only their
        own, whatever the URL says."""
        return self if underwriter else replace(self, traders=(username,))

    def window(self, now: pd.Timestamp) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The purchase-time window ``[lo, hi)`` this filter's range stands for."""
        days = RANGES[self.range]
        if self.range == "custom":
            hi = None if self.end is None else self.end.normalize() + pd.Timedelta(days=1)
            return self.start, hi
        if days is None:
            return None, None
        return now - pd.Timedelta(days=days), None

    def apply(self, book: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
        """The rows of ``book`` this filter keeps."""
        if book.empty:
            return book
        keep = np.ones(len(book), dtype=bool)
        lo, hi = self.window(now)
        if lo is not None:
            keep &= (book["start"] >= lo).to_numpy()
        if hi is not None:
            keep &= (book["start"] < hi).to_numpy()
        for name, (column, _label) in CHOICES.items():
            chosen = getattr(self, name)
            if chosen:
                keep &= book[column].isin(chosen).to_numpy()
        return book[keep]

    def describe(self) -> str:
        """The filter in words, for the report's first line."""
        parts = []
        if self.range == "custom":
            a = "the start" if self.start is None else f"{self.start:%Y-%m-%d}"
            b = "now" if self.end is None else f"{self.end:%Y-%m-%d}"
            parts.append(f"bought from {a} to {b}")
        elif self.range != "all":
            parts.append(
                f"bought in the last {self.range.replace('d', ' days').replace('1y', 'year')}"
            )
        for name, (_column, label) in CHOICES.items():
            chosen = getattr(self, name)
            if chosen:
                parts.append(f"{label} {' or '.join(chosen)}")
        return "; ".join(parts) if parts else "the whole book"
