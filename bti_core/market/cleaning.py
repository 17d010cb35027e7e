"""Cleaning and normalisation of market data, with a report of everything it did.

What a cleaning run does, in order (each counted in the report under the name in quotes):

1. times to UTC; naive times are taken as UTC ("naive_times_as_utc");
2. drops rows with a missing value ("missing_values") and impossible bars: a price that is not
   positive and finite, ``high < max(open, close, low)``, ``low > min(open, close)``, negative
   volume ("invalid_bars"); funding rates beyond ±5 % per interval ("invalid_rates");
3. sorts ("out_of_order": rows that were not in time order) and removes duplicate times, the
   later row winning ("duplicates");
4. drops bars whose open time is not on the timeframe's grid ("misaligned");
5. removes the exchange's listing placeholders ("listing_placeholders"): the leading run of flat
   bars (open = high = low = close) with next to no volume that an exchange prints before trading
   opens (Binance BTCUSDT, 2019-09-08 17:00 and 18:00 at 10,000);
6. flags, without removing, flat bars with zero volume ("flat_zero_volume", maintenance) and
   last-price wicks that the mark price of the same bar does not confirm ("unconfirmed_wicks":
   a low below ``mark_low·(1 − tol)`` or a high above ``mark_high·(1 + tol)``; liquidations
   trigger on the mark price, so such a wick liquidates no one);
7. finds gaps (missing bars) and reports each; a gap is never filled, and the bar after it is
   flagged ``AFTER_GAP``.

The default wick tolerance (2 %) sits above the 99.9th percentile of the distance between the
last-price and mark-price lows on Binance's 2019–2021 hourly BTCUSDT and ETHUSDT bars (1.7 % and
1.4 %), so it catches events like ETHUSDT 2021-05-19 13:00 (last low 20.6 % under the mark low)
and leaves ordinary basis alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bti_core.market.schema import (
    BAR_COLUMNS,
    FUNDING_COLUMNS,
    PRICE_COLUMNS,
    BarFlag,
    Kind,
    columns_for,
    timeframe_delta,
)

DEFAULT_WICK_TOLERANCE = 0.02
# Leading flat bars trading less than this share of the median bar volume are placeholders.
PLACEHOLDER_VOLUME_SHARE = 1e-3
MAX_ABS_FUNDING_RATE = 0.05
# Rounding in a data vendor's arithmetic can put a close a hair above the high; not a bad bar.
OHLC_RELATIVE_SLACK = 1e-9

REPORT_KINDS: dict[str, str] = {
    "naive_times_as_utc": "times without a zone, taken as UTC",
    "missing_values": "rows with a missing value, dropped",
    "invalid_bars": "impossible bars (price ≤ 0, high < low, …), dropped",
    "invalid_rates": "funding rates beyond ±5 %, dropped",
    "invalid_values": "readings not positive (or a long share not below 1), dropped",
    "out_of_order": "rows out of time order, sorted",
    "duplicates": "duplicate times, later row kept",
    "misaligned": "open times off the timeframe grid, dropped",
    "funding_times_rounded": "funding times rounded to the minute",
    "listing_placeholders": "exchange listing placeholders, removed",
    "flat_zero_volume": "flat bars with zero volume, flagged",
    "unconfirmed_wicks": "last-price wicks the mark price does not confirm, flagged",
    "gaps": "gaps (runs of missing bars), reported, not filled",
    "missing_bars": "bars missing inside those gaps",
}


@dataclass(frozen=True)
class Gap:
    """A run of missing bars: ``start`` and ``end`` are the first and last missing open times."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "missing": self.missing,
        }


@dataclass
class CleaningReport:
    """What one cleaning run did, by kind and count."""

    symbol: str
    kind: str
    timeframe: str
    rows_in: int = 0
    rows_out: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORT_KINDS, 0))
    gaps: list[Gap] = field(default_factory=list)
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None

    def add(self, what: str, n: int) -> None:
        if what not in REPORT_KINDS:
            raise KeyError(f"unknown report kind {what!r}")
        self.counts[what] = self.counts.get(what, 0) + int(n)

    @property
    def changed(self) -> dict[str, int]:
        """Only the kinds that happened."""
        return {k: v for k, v in self.counts.items() if v}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gaps"] = [g.to_dict() for g in self.gaps]
        d["first"] = self.first.isoformat() if self.first is not None else None
        d["last"] = self.last.isoformat() if self.last is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CleaningReport:
        def ts(v: str | None) -> pd.Timestamp | None:
            return pd.Timestamp(v) if v else None

        return cls(
            symbol=d["symbol"],
            kind=d["kind"],
            timeframe=d["timeframe"],
            rows_in=d["rows_in"],
            rows_out=d["rows_out"],
            counts={**dict.fromkeys(REPORT_KINDS, 0), **d["counts"]},
            gaps=[
                Gap(pd.Timestamp(g["start"]), pd.Timestamp(g["end"]), g["missing"])
                for g in d["gaps"]
            ],
            first=ts(d.get("first")),
            last=ts(d.get("last")),
        )

    def lines(self) -> list[str]:
        """A short human summary, one line per thing that happened."""
        head = (
            f"{self.symbol} {self.kind} {self.timeframe}: {self.rows_in:,} rows in, "
            f"{self.rows_out:,} kept"
        )
        out = [head]
        out += [f"  {n:,} {REPORT_KINDS[k]}" for k, n in self.changed.items()]
        if not self.gaps and self.rows_out > 1:
            out.append("  no gaps")
        for g in self.gaps[:5]:
            out.append(
                f"  gap {g.start:%Y-%m-%d %H:%M} → {g.end:%Y-%m-%d %H:%M} UTC "
                f"({g.missing} bars missing, not filled)"
            )
        if len(self.gaps) > 5:
            out.append(f"  … and {len(self.gaps) - 5} more gaps")
        return out


def _normalise_times(frame: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    ts = frame["ts"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts, utc=True)
    elif ts.dt.tz is None:
        report.add("naive_times_as_utc", len(ts))
        ts = ts.dt.tz_localize("UTC")
    frame["ts"] = ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return frame


def _drop(
    frame: pd.DataFrame, mask: np.ndarray | pd.Series, what: str, report: CleaningReport
) -> pd.DataFrame:
    n = int(np.count_nonzero(mask))
    if n:
        report.add(what, n)
        frame = frame.loc[~np.asarray(mask)]
    return frame


def _order_and_dedupe(frame: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    ts = _epoch_us(frame["ts"])  # int64: tz-aware .to_numpy() would build Timestamp objects
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
        report.add("out_of_order", int(np.count_nonzero(ts[1:] < ts[:-1])))
        frame = frame.sort_values("ts", kind="stable")
    dup = frame["ts"].duplicated(keep="last").to_numpy()
    return _drop(frame, dup, "duplicates", report)


def _epoch_us(ts: pd.Series) -> np.ndarray:
    """Microseconds since the epoch of a ``datetime64[us, UTC]`` column."""
    return ts.astype("int64").to_numpy()


def _gaps(ts: pd.Series, step: pd.Timedelta, report: CleaningReport) -> np.ndarray:
    """Report runs of missing bars; returns the positions of the bars right after a gap."""
    if len(ts) < 2:
        return np.empty(0, dtype=np.int64)
    t = _epoch_us(ts)
    step_us = int(step / pd.Timedelta(microseconds=1))
    diff = np.diff(t)
    after = np.flatnonzero(diff > step_us) + 1
    for i in after:
        missing = int(diff[i - 1] // step_us) - 1
        if missing <= 0:  # off-grid spacing shorter than two bars; not a missing bar
            continue
        start = pd.Timestamp(t[i - 1] + step_us, unit="us", tz="UTC")
        end = pd.Timestamp(t[i] - step_us, unit="us", tz="UTC")
        report.gaps.append(Gap(start, end, missing))
        report.add("missing_bars", missing)
    report.add("gaps", len(report.gaps))
    return after


def clean_bars(
    frame: pd.DataFrame,
    *,
    symbol: str,
    timeframe: str,
    kind: Kind = Kind.OHLCV,
    mark: pd.DataFrame | None = None,
    wick_tolerance: float = DEFAULT_WICK_TOLERANCE,
    at_listing: bool = True,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean last-price (``kind=OHLCV``) or mark-price (``kind=MARK``) bars.

    ``mark``: mark-price bars of the same symbol and timeframe, used to flag last-price wicks it
    does not confirm. ``at_listing``: the frame may start at the contract's listing (set False
    when earlier bars are already stored, so that a maintenance bar at the start of a monthly
    file is not mistaken for a listing placeholder). Returns the cleaned frame (``ts``, OHLCV,
    ``flags``) and the report.
    """
    if not 0 < wick_tolerance < 1:
        raise ValueError(f"wick_tolerance must be in (0, 1), got {wick_tolerance}")
    step = timeframe_delta(timeframe)
    report = CleaningReport(symbol=symbol, kind=str(kind), timeframe=timeframe, rows_in=len(frame))
    df = _normalise_times(frame.loc[:, list(BAR_COLUMNS)].copy(), report)

    values = df[list(BAR_COLUMNS[1:])].to_numpy(dtype=np.float64)
    df = _drop(
        df, np.isnan(values).any(axis=1) | df["ts"].isna().to_numpy(), "missing_values", report
    )

    o, h, lo, c, v = (df[col].to_numpy() for col in BAR_COLUMNS[1:])
    slack = 1 + OHLC_RELATIVE_SLACK
    bad = (
        ~np.isfinite(df[list(PRICE_COLUMNS)].to_numpy()).all(axis=1)
        | (np.minimum.reduce([o, h, lo, c]) <= 0)
        | (h * slack < np.maximum.reduce([o, c, lo]))
        | (lo > np.minimum(o, c) * slack)
        | ~np.isfinite(v)
        | (v < 0)
    )
    df = _drop(df, bad, "invalid_bars", report)
    df = _order_and_dedupe(df, report)

    step_us = int(step / pd.Timedelta(microseconds=1))
    df = _drop(df, _epoch_us(df["ts"]) % step_us != 0, "misaligned", report)

    o, h, lo, c, v = (df[col].to_numpy() for col in BAR_COLUMNS[1:])
    flat = (o == h) & (h == lo) & (lo == c)
    if kind is Kind.OHLCV and len(df) and at_listing:
        median_volume = float(np.median(v))
        tiny = v <= PLACEHOLDER_VOLUME_SHARE * median_volume
        lead = flat & tiny
        n_lead = len(lead) if lead.all() else int(np.argmin(lead))
        if 0 < n_lead < len(df):  # an all-placeholder frame is left for a human to look at
            mask = np.zeros(len(df), dtype=bool)
            mask[:n_lead] = True
            df = _drop(df, mask, "listing_placeholders", report)
            o, h, lo, c, v = (df[col].to_numpy() for col in BAR_COLUMNS[1:])
            flat = flat[n_lead:]

    flags = np.zeros(len(df), dtype=np.uint8)
    if kind is Kind.OHLCV:
        fzv = flat & (v == 0)
        flags[fzv] |= np.uint8(BarFlag.FLAT_ZERO_VOLUME)
        report.add("flat_zero_volume", int(fzv.sum()))
        if mark is not None and len(mark) and len(df):
            m = mark.set_index("ts")[["low", "high"]].reindex(df["ts"])
            m_low, m_high = m["low"].to_numpy(), m["high"].to_numpy()
            with np.errstate(invalid="ignore"):
                wick_low = lo < m_low * (1 - wick_tolerance)
                wick_high = h > m_high * (1 + wick_tolerance)
            flags[wick_low] |= np.uint8(BarFlag.WICK_LOW_UNCONFIRMED)
            flags[wick_high] |= np.uint8(BarFlag.WICK_HIGH_UNCONFIRMED)
            report.add("unconfirmed_wicks", int((wick_low | wick_high).sum()))

    after = _gaps(df["ts"], step, report)
    flags[after] |= np.uint8(BarFlag.AFTER_GAP)
    df = df.reset_index(drop=True)
    df["flags"] = flags
    return _finish(df, report)


def clean_funding(
    frame: pd.DataFrame, *, symbol: str, interval: str = "8h"
) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean realised funding rates (one row per funding time).

    Exchange funding times carry a few milliseconds of settlement delay; they are rounded to the
    minute. Gaps are reported against ``interval`` (8 h on Binance until a symbol moves to 4 h;
    a change of interval inside a file shows as no gap, since shorter spacing is never one).
    """
    report = CleaningReport(
        symbol=symbol, kind=str(Kind.FUNDING), timeframe=interval, rows_in=len(frame)
    )
    df = _normalise_times(frame.loc[:, list(FUNDING_COLUMNS)].copy(), report)
    df = _drop(
        df,
        df["funding_rate"].isna().to_numpy() | df["ts"].isna().to_numpy(),
        "missing_values",
        report,
    )
    rate = df["funding_rate"].to_numpy()
    df = _drop(
        df, ~np.isfinite(rate) | (np.abs(rate) > MAX_ABS_FUNDING_RATE), "invalid_rates", report
    )
    rounded = df["ts"].dt.round("1min")
    report.add("funding_times_rounded", int((rounded != df["ts"]).sum()))
    df["ts"] = rounded
    df = _order_and_dedupe(df, report)
    _gaps(df["ts"], timeframe_delta(interval), report)
    return _finish(df.reset_index(drop=True), report)


def clean_context(
    frame: pd.DataFrame, *, symbol: str, kind: Kind, timeframe: str
) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean market-context readings (open interest, long/short ratio): one row per period,
    on the timeframe's grid; values must be finite and positive, and the share of accounts
    long within 0–1. Gaps are reported."""
    cols = list(columns_for(kind))
    report = CleaningReport(symbol=symbol, kind=str(kind), timeframe=timeframe, rows_in=len(frame))
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{kind} readings need the columns {', '.join(cols)}; missing {missing}")
    df = _normalise_times(frame.loc[:, cols].copy(), report)
    values = df[cols[1:]].apply(pd.to_numeric, errors="coerce")
    df[cols[1:]] = values
    df = _drop(
        df,
        values.isna().any(axis=1).to_numpy() | df["ts"].isna().to_numpy(),
        "missing_values",
        report,
    )
    v = df[cols[1:]].to_numpy(dtype=float)
    bad = ~np.isfinite(v).all(axis=1) | (v <= 0).any(axis=1)
    if kind is Kind.LONG_SHORT:
        bad |= df["long_account"].to_numpy(dtype=float) >= 1
    df = _drop(df, bad, "invalid_values", report)
    step = timeframe_delta(timeframe)
    off = (df["ts"] - df["ts"].dt.floor(step)) != pd.Timedelta(0)
    df = _drop(df, off.to_numpy(), "misaligned", report)
    df = _order_and_dedupe(df, report)
    _gaps(df["ts"], step, report)
    return _finish(df.reset_index(drop=True), report)


def _finish(df: pd.DataFrame, report: CleaningReport) -> tuple[pd.DataFrame, CleaningReport]:
    report.rows_out = len(df)
    if len(df):
        report.first, report.last = df["ts"].iloc[0], df["ts"].iloc[-1]
    return df, report
