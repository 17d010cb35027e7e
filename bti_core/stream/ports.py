"""The stream engine's ports: what it uses of the application (`StreamDeps`), what it asks of a
source of ticks, and the report of a batch.
The engine reads any source through these; Kafka (`stream.kafka`), the live exchange feed
(`stream.live`) and the warehouse's tail (`stream.engine.TailSource`) are adapters, and the
engine imports none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from bti_core.stream.types import ADMIT_ANY, Admission, Cursor, CursorRead, Event

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from bti_core.claims.service import ClaimsService
    from bti_core.market.warehouse import Warehouse
    from bti_core.risk.engine import RiskEngine
    from bti_core.services import Services


@dataclass(frozen=True)
class StreamDeps:
    """What the streaming engines (embedded and Spark) use of the application: the database
    (policies, checkpoints, alerts), the warehouse (stored marks, funding), the risk engine
    (each symbol's GARCH state), the claims service (its clock; claims opened at the tick)
    and the folder of cached forecasts (the forecast band)."""

    db: Engine
    warehouse: Warehouse
    risk: RiskEngine
    claims: ClaimsService
    forecasts_dir: Path

    @classmethod
    def of(cls, services: Services) -> StreamDeps:
        return cls(
            services.db,
            services.warehouse,
            services.risk,
            services.claims,
            services.settings.forecasts_dir,
        )


@runtime_checkable
class FollowedSource(Protocol):
    """A source read by each symbol's last consumed tick rather than by an offset: the
    warehouse's newest bars (`TailSource`), a live exchange feed
    (`bti_core.stream.live.LiveSource`)."""

    def read_after(
        self, last_ms: dict[str, int], limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class CursorSource(Protocol):
    """A source read from a cursor of its own (a Kafka consumer's offsets per partition),
    which the engine keeps in the stream's checkpoint beside the scoring state; it also
    refuses what the `Admission` does not let through (unknown symbols, times from the future)."""

    def read_from(
        self, cursor: Cursor | None, limit: int, last_ms: Cursor, admit: Admission = ADMIT_ANY
    ) -> CursorRead: ...

    def __len__(self) -> int: ...


@runtime_checkable
class BarFeed(Protocol):
    """A source that builds bars of its own from what it receives (a live exchange feed):
    they are claim evidence for a tick whose bar is not stored yet."""

    def feed_bars(self, symbol: str, at_ms: int) -> list[dict[str, Any]]: ...


@dataclass
class BatchReport:
    offset: int
    ticks: int
    events: list[Event] = field(default_factory=list)
    claims: list[int] = field(default_factory=list)  # opened by this batch
    alerts: int = 0  # new alert rows
    owners: dict[int, str] = field(default_factory=dict)  # policy → trader, of the events
    opened: list[dict[str, Any]] = field(default_factory=list)  # the claims, for the sinks
    read: int = 0  # messages consumed (a Kafka batch may hold invalid or late ones)
    unknown: int = 0  # ticks of symbols that are no market here: dropped, no state kept
