"""A stream's sighting of a liquidation price, as the claims service receives it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TickHit:
    """A stream saw a policy's liquidation price reached: the run of ticks beyond it began at
    ``at`` with the mark at ``price``. ``confirmation`` says what confirmed it — the run stayed
    beyond for the confirmation window (``{"by": "persistence", "seconds", "required_seconds",
    "ticks", "first_price", "extreme", "last_price", "confirmed_at", "stream"}``) — or is
    None: a crossing nothing confirmed yet, which opens a claim only if the stored bars prove
    it (`ClaimsService.open_from_ticks`) and is held otherwise."""

    policy_id: int
    symbol: str
    at: datetime
    price: float
    # the feed's own bars around the tick (a live exchange feed: the minute it is in, which is
    # not stored yet), shown beside the stored ones as context — never as the proof
    feed_bars: tuple[dict[str, Any], ...] = ()
    confirmation: dict[str, Any] | None = None
