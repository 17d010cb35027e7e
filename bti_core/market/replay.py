"""Crash replays for demos: a fall that ends at the present, written as market data.

A replay never writes bars after the present: it fills the mark and last-price series from the
last stored bar up to now with calm bars at the last close, then the fall over the last
``minutes`` one-minute bars, ending with the bar of the current minute. One-minute bars are
needed because a claim counts only bars that open at or after the purchase: a policy bought a
few minutes ago can only be liquidated by a bar that opened since. The hours the minute bars
touch are also stored as their hourly aggregate (so hourly readers, the Market page and the
risk engine, see the crash), from the first minute of each such hour.

Every replayed bar is imported with source `REPLAY_SOURCE`; `replayed_spans` reads them back so
the pages can say which stretch of a market is a replay and not market data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bti_core.db.engine import session_scope
from bti_core.db.models import IngestRun
from bti_core.errors import BTIError
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import BAR_COLUMNS, Kind, canonical_symbol, timeframe_delta
from bti_core.market.warehouse import Warehouse

REPLAY_SOURCE = "replay"
MINUTE = pd.Timedelta(minutes=1)
MAX_FILL = pd.Timedelta(days=31)  # the longest stretch a replay fills before its crash


class ReplayError(BTIError, ValueError):
    """A replay that cannot be written (no market to replay on, bad parameters)."""


@dataclass(frozen=True)
class Replay:
    symbol: str
    fall_start: pd.Timestamp  # open of the first falling minute bar
    last_bar: pd.Timestamp  # open of the last bar written (the current minute)
    minutes: int  # minutes the fall took (fewer than asked when the data ended later)
    close_before: float
    close_after: float
    calm_bars: int  # bars written to fill the time since the last stored bar

    @property
    def move(self) -> float:
        return self.close_after / self.close_before - 1


def _bars(ts: pd.DatetimeIndex, path: np.ndarray, open0: float) -> pd.DataFrame:
    opens = np.concatenate([[open0], path[:-1]])
    return pd.DataFrame(
        {
            "ts": ts,
            "open": opens,
            "high": np.maximum(opens, path) * 1.0005,
            "low": np.minimum(opens, path) * 0.9995,
            "close": path,
            "volume": 0.0,
        }
    )[list(BAR_COLUMNS)]


def crash_now(
    warehouse: Warehouse,
    ingestor: Ingestor,
    symbol: str,
    *,
    drop: float = 0.3,
    minutes: int = 30,
    now: pd.Timestamp | None = None,
    not_before: pd.Timestamp | datetime | None = None,
) -> Replay:
    """Replay a fall of ``drop`` (0.3 = −30 %, < 0 a squeeze up) over the last ``minutes``
    minutes, ending at the current minute; the price path is log-linear,
    ``c₀·(1 − drop)^(k/minutes)`` for minute k. Bars already stored are kept. The fall starts
    no earlier than ``not_before`` (the newest purchase: a replay must not rewrite the market
    a trader was quoted on into one already falling); the minutes before it stay at c₀."""
    if not -5 < drop < 1:
        raise ReplayError(f"drop must be between −5 and 1 (0.3 = −30 %); got {drop}")
    if not 1 <= minutes <= 600:
        raise ReplayError(f"minutes must be from 1 to 600; got {minutes}")
    symbol = canonical_symbol(symbol)
    tfs = warehouse.timeframes(symbol, Kind.MARK)
    if not tfs:
        raise ReplayError(f"{symbol} has no mark prices to replay a crash on; import or demo first")
    # the series the market is stored in, continued to the present (1m bars beside it are
    # earlier replays)
    coarse = next((tf for tf in tfs if tf != "1m"), tfs[0])
    step = timeframe_delta(coarse)
    if step < MINUTE:
        raise ReplayError(f"{symbol}'s finest bars are {coarse}: replays need 1m or coarser")
    now = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC")
    current = now.floor(MINUTE)
    # where the stored data end: the newest bar's close, where a replay's minutes (whose hour is
    # also stored, as an aggregate that has not closed yet) take precedence over their hour
    last_tf = coarse
    last_ts = pd.Timestamp(warehouse.latest(Kind.MARK, symbol, coarse)["ts"])
    if "1m" in tfs and coarse != "1m":
        last_minute = pd.Timestamp(warehouse.latest(Kind.MARK, symbol, "1m")["ts"])
        if last_minute >= last_ts:
            last_tf, last_ts = "1m", last_minute
    last_end = last_ts + timeframe_delta(last_tf)
    close0 = float(warehouse.latest(Kind.MARK, symbol, last_tf)["close"])
    if last_end > current:
        raise ReplayError(
            f"{symbol} already has bars up to {last_end:%Y-%m-%d %H:%M} UTC: a replay ends "
            "at the present and never overwrites; wait for the next minute"
        )
    # the fall takes the last ``minutes`` minutes, or the time since the data end if shorter
    fall_start = max(current - MINUTE * (minutes - 1), last_end)
    if not_before is not None:
        fall_start = max(fall_start, min(pd.Timestamp(not_before).ceil(MINUTE), current))
    minutes = int((current - fall_start) / MINUTE) + 1
    first_minute = max(fall_start.floor(step), last_end)
    frames: dict[str, list[pd.DataFrame]] = {"1m": []}
    calm = 0
    if step > MINUTE:  # calm coarse bars from the last stored one up to the minutes' first hour
        gap = pd.date_range(last_end, first_minute.floor(step) - step, freq=step)
        if len(gap) and gap[-1] - last_end > MAX_FILL:
            raise ReplayError(
                f"{symbol}'s last bar is from {last_ts:%Y-%m-%d}, more than {MAX_FILL.days} days "
                "ago: a replay happens now, on data that reach the present; import recent data "
                "(or make a fresh demo with `bti demo`) first"
            )
        if len(gap):
            # a random walk at the recent volatility, not a flat line (a volatility model fitted
            # on flat bars would price nothing); seeded by the gap, so a rerun writes the same
            recent = warehouse.query(Kind.MARK, symbol, coarse, last_end - step * 720, None)
            r = np.diff(np.log(recent["close"].to_numpy(float)))
            sigma = float(np.std(r)) if len(r) > 10 else 0.005
            rng = np.random.default_rng(int(last_end.timestamp()) % 2**32)
            walk = close0 * np.exp(np.cumsum(rng.normal(0.0, sigma, len(gap))))
            frames[coarse] = [_bars(pd.DatetimeIndex(gap), walk, close0)]
            close0 = float(walk[-1])
            calm = len(gap)
    ts = pd.date_range(first_minute, current, freq=MINUTE)
    k = np.clip((ts - fall_start) / MINUTE + 1, 0, minutes)
    path = close0 * np.exp(np.log(1 - drop) * k / minutes)
    minute_bars = _bars(pd.DatetimeIndex(ts), path, close0)
    frames["1m"].append(minute_bars)
    calm += int((k == 0).sum())
    for kind in (Kind.MARK, Kind.OHLCV):
        for tf, parts in frames.items():
            frame = pd.concat(parts, ignore_index=True)
            if kind is Kind.OHLCV:
                frame = frame.assign(volume=1_000.0)
            ingestor.ingest_frame(
                frame, symbol=symbol, kind=kind, timeframe=tf, source=REPLAY_SOURCE
            )
        if step > MINUTE:  # the touched hours, aggregated from their minutes
            hours = warehouse.resample(
                symbol, "1m", coarse, first_minute.floor(step), current + MINUTE, kind=kind
            )
            hours = hours[hours["ts"] >= first_minute.floor(step)]
            ingestor.ingest_frame(
                hours[list(BAR_COLUMNS)],
                symbol=symbol,
                kind=kind,
                timeframe=coarse,
                source=REPLAY_SOURCE,
            )
    return Replay(symbol, fall_start, current, minutes, close0, float(path[-1]), calm)


def replayed_spans(db: Engine, symbol: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The stretches of ``symbol``'s data written by replays (first and last bar of each
    replay's minute bars), oldest first."""
    with session_scope(db) as s:
        runs = s.exec(
            select(IngestRun)
            .where(IngestRun.symbol == canonical_symbol(symbol))
            .where(IngestRun.source == REPLAY_SOURCE)
            .where(IngestRun.timeframe == "1m")
            .where(IngestRun.kind == str(Kind.MARK))
            .order_by(col(IngestRun.created_at))
        ).all()
        return [
            (pd.Timestamp(r.first_ts), pd.Timestamp(r.last_ts))
            for r in runs
            if r.first_ts is not None and r.last_ts is not None
        ]


def written_by_replays(db: Engine, symbol: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Every stretch of ``symbol``'s bars a replay wrote, its calm lead-in hours included (the
    first and last bar open of each replay import, any kind and timeframe). The risk model
    leaves them out of its fit: a replay demonstrates claims, not the market's volatility."""
    with session_scope(db) as s:
        runs = s.exec(
            select(IngestRun.first_ts, IngestRun.last_ts)
            .where(IngestRun.symbol == canonical_symbol(symbol))
            .where(IngestRun.source == REPLAY_SOURCE)
        ).all()
        return [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in runs if a is not None and b]
