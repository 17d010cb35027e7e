"""What the stream's scoring works on (`bti_core.stream.scoring`): its rules, the book of open
policies and the market context of a symbol as arrays, the state a symbol keeps between
batches (JSON in a checkpoint), and the events and scores it gives."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

HOUR_MS = 3_600_000
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Cursor = dict[str, int]  # a consumer's next offset per partition


@dataclass(frozen=True)
class Admission:
    """What a source of outside messages lets through: ticks of the ``known`` markets only
    (None: any) and none stamped past ``now_ms`` and the allowed lead (None: no clock)."""

    known: frozenset[str] | None = None
    now_ms: int | None = None


ADMIT_ANY = Admission()
# a read from a cursor: symbols, times (ms) and marks; the cursor after them; messages read
CursorRead = tuple[np.ndarray, np.ndarray, np.ndarray, Cursor, int]


@dataclass(frozen=True)
class Rules:
    """The stream's alert and trust thresholds (`bti_core.stream.scoring`'s docstring)."""

    distance_levels: tuple[float, ...] = (0.05, 0.02)  # alert under 5 %, then under 2 %
    risk_index_level: float = 70.0
    spike_sigmas: float = 4.0
    funding_level: float = 0.001  # |funding rate| per settlement
    pool_level: float = 0.75  # locked cover / pool capacity (`bti_core.stream.pool`)
    # persistence: the mark beyond the level this long confirms a liquidation. Binance pushes a
    # mark price a second; 30 s is thirty readings, and a liquidation engine that acted on the
    # first is seen again in every one of them
    confirm_ms: int = 30_000
    max_ahead_ms: int = 60_000  # clock skew allowed to a tick's time
    # outliers: a jump beyond 5 % and 8 σ·√Δt of the last trusted price. BTC's mark moves
    # about 0.01 % a second at 75 % a year, a crash's fastest minutes a few percent; the prints
    # to hold were tens of percent from every other source (Mango 2022: the oracle pumped
    # 2–3×; 10 Oct 2025 on Binance alone: wBETH −88 %, USDe −35 %)
    jump_floor: float = 0.05
    jump_sigmas: float = 8.0
    accept_ms: int = 30_000  # a new level trusted after it holds this long (three ticks)


DEFAULT_RULES = Rules()


@dataclass(frozen=True)
class Book:
    """The open policies on one symbol, as arrays (one row a policy)."""

    policy: IntArray
    side: IntArray  # +1 long, −1 short
    liquidation: FloatArray
    payout: FloatArray
    start_ms: IntArray
    end_ms: IntArray
    probability0: FloatArray  # at purchase
    risk_index0: FloatArray  # at purchase

    @classmethod
    def of(cls, rows: list[dict[str, Any]]) -> Book:
        def col(name: str, dtype: Any) -> Any:
            return np.array([r[name] for r in rows], dtype=dtype)

        return cls(
            col("policy", np.int64),
            col("side", np.int64),
            col("liquidation", np.float64),
            col("payout", np.float64),
            col("start_ms", np.int64),
            col("end_ms", np.int64),
            col("probability0", np.float64),
            col("risk_index0", np.float64),
        )

    @classmethod
    def empty(cls) -> Book:
        return cls.of([])

    def take(self, rows: npt.NDArray[np.bool_] | IntArray) -> Book:
        """The policies at ``rows`` (a mask or indices)."""
        return Book(*(getattr(self, f.name)[rows] for f in fields(self)))

    def __len__(self) -> int:
        return len(self.policy)


@dataclass(frozen=True)
class Context:
    """What a symbol's market says beside its mark prices, for the funding and forecast rules:
    funding settlements (time in ms, rate per settlement) and a forecast's 95 % price band per
    hour (``band_ms`` the hour's open, as bars are labelled; its close is judged). Sorted by
    time; either may be empty."""

    funding_ms: IntArray
    funding_rate: FloatArray
    band_ms: IntArray
    band_lo: FloatArray
    band_hi: FloatArray

    @classmethod
    def empty(cls) -> Context:
        i, f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return cls(i, f, i, f, f)

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name).tolist() for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> Context:
        d = json.loads(text)
        return cls(
            np.asarray(d["funding_ms"], dtype=np.int64),
            np.asarray(d["funding_rate"], dtype=np.float64),
            np.asarray(d["band_ms"], dtype=np.int64),
            np.asarray(d["band_lo"], dtype=np.float64),
            np.asarray(d["band_hi"], dtype=np.float64),
        )


NO_CONTEXT = Context.empty()


@dataclass
class SymbolState:
    """What a symbol's scoring remembers between batches (a checkpoint holds it as JSON)."""

    symbol: str
    omega: float
    alpha: float
    gamma: float
    beta: float
    sigma2: float  # variance of the hour being formed (hourly log-return units)
    hour_ms: int = -1  # open time of the hour being formed; −1 before the first tick
    hour_last: float = math.nan  # the last price seen in that hour (its close so far)
    prev_close: float = math.nan  # the previous hour's close
    last_ms: int = -1
    last_price: float = math.nan
    offset: int = 0  # ticks consumed: the source offset checkpointed with this state
    liquidated: dict[str, int] = field(default_factory=dict)  # policy id → the run's start
    near: dict[str, int] = field(default_factory=dict)  # policy id → levels already raised
    risky: list[int] = field(default_factory=list)  # risk-index alert raised
    outside_band: bool = False  # the last judged close was outside its forecast band
    # policy id → the run beyond its level not yet confirmed: [first ms, first price, extreme,
    # ticks, last ms, last price]
    pending: dict[str, list[float]] = field(default_factory=dict)
    trusted_ms: int = -1  # the last trusted tick (the outlier band is measured from it)
    trusted_price: float = math.nan
    # ticks away from the trusted price, each near the one before: [first ms, the last one's
    # price, ticks, the last one's ms]
    suspect: list[float] = field(default_factory=list)
    refused_future: int = 0  # ticks stamped beyond the clock
    held_outliers: int = 0  # ticks held as outliers and never trusted

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=True, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SymbolState:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Event:
    """An alert or a liquidation, at the tick (or hour close) that raised it."""

    kind: str  # liquidation | near_liquidation | risk_index | volatility_spike | …
    symbol: str
    at_ms: int
    price: float
    policy: int | None = None
    # the level crossed, the index, the return in σ, the funding rate or the bound breached;
    # for a liquidation or a crossing, the seconds the run stayed beyond (−1: ticks of bars)
    value: float = 0.0
    since_ms: int = -1  # a liquidation's or a crossing's first tick beyond the level
    # a liquidation's or a crossing's run: (first price, the extreme, ticks beyond)
    detail: tuple[float, ...] = ()


@dataclass(frozen=True)
class Scores:
    """Every open policy re-scored at the batch's last tick (aligned with the `Book`)."""

    at_ms: int
    price: float
    distance: FloatArray
    probability: FloatArray
    risk_index: FloatArray
