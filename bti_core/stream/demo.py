"""A crash replayed through the streaming engine for demos ("replay a crash at ×1,000"): the
fall is written as one-minute mark bars ending now (`bti_core.market.replay.crash_now`, as
`bti crash` does), then those minutes are replayed tick by tick at ``speed`` times the market's
pace through the embedded engine, which raises the alerts and opens, audits, decides and pays
the claims at the ticks that cross. The worker's own stream sees the same bars later: the
same events have the same alert keys and a policy has one claim, so nothing is doubled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from bti_core.errors import BTIError
from bti_core.market.replay import crash_now
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.ports import BatchReport, StreamDeps
from bti_core.stream.sources import ReplaySource

if TYPE_CHECKING:
    from bti_core.services import Services

SPEEDS = (1, 10, 100, 1_000, 10_000)


@dataclass(frozen=True)
class DemoReplay:
    symbol: str
    move: float  # the fall, as a fraction (−0.3 = −30 %)
    start: pd.Timestamp
    end: pd.Timestamp
    ticks: int
    alerts: int
    claims: list[int]


def replay_crash(
    services: Services,
    symbol: str,
    *,
    drop: float = 0.3,
    minutes: int = 30,
    speed: int = 1_000,
    progress: Callable[[int, int, BatchReport], None] | None = None,
) -> DemoReplay:
    """Write a crash ending now and replay it at ``speed`` (one of `SPEEDS`)."""
    if speed not in SPEEDS:
        raise BTIError(f"speed must be one of {', '.join(f'×{s:,}' for s in SPEEDS)}; got {speed}")
    services.require_demo("a crash replay")
    rep = crash_now(
        services.warehouse,
        services.ingestor,
        symbol,
        drop=drop,
        minutes=minutes,
        not_before=services.insurance.newest_start(symbol),
    )
    start = pd.Timestamp(rep.fall_start).floor("1min")
    end = pd.Timestamp(rep.last_bar)  # the last minute's open: the source reads up to its close
    src = ReplaySource(
        services.warehouse, [rep.symbol], start, end + pd.Timedelta(minutes=1), timeframe="1m"
    )
    name = f"demo-{rep.symbol}-{start:%Y%m%d%H%M}"
    # two minute bars a batch: the replay's alerts and claims show as the crash unfolds
    eng = EmbeddedEngine(StreamDeps.of(services), src, name=name, batch=8)
    reports = eng.run(speed=speed, progress=progress)
    return DemoReplay(
        rep.symbol,
        rep.move,
        start,
        end,
        sum(r.ticks for r in reports),
        sum(r.alerts for r in reports),
        [c for r in reports for c in r.claims],
    )
