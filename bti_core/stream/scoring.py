"""The one scoring module every streaming engine runs (embedded, Kafka, Spark): per-symbol
incremental state updated from a micro-batch of mark-price ticks, the re-scoring of every open
policy on that symbol, and its alert and liquidation events. Pure (arrays in, state and events
out) and serialisable (`SymbolState.to_json`), so a checkpoint is a JSON document.

Feeding the same ticks in one batch or in many gives the same events and the same state: every
event is defined on the tick sequence, never on where a batch ends.

- **Liquidation**: the first tick inside a policy's window (``start < t ≤ end``) whose mark
  price reaches the liquidation price (long: ``p ≤ LP``; short: ``p ≥ LP``); once per policy.
- **Near liquidation**: the first tick whose distance ``side·(p − LP)/p`` falls under each
  level of ``Rules.distance_levels``; the level is a barrier, ``LP/(1 − d)`` for a long and
  ``LP/(1 + d)`` for a short, found as the liquidation is. Once per policy and level.
- **Volatility**: hourly returns ``r_h = ln(close_h / close_{h−1})`` (the last tick of each
  hour is its close; an hour without ticks is skipped) update the GJR-GARCH variance
  ``σ²_{h+1} = ω + (α + γ·1[r_h < 0])·r_h² + β·σ²_h`` (Glosten, Jagannathan & Runkle 1993)
  with the symbol's fitted parameters; ``|r_h| > k·σ_h`` raises a volatility spike.
- **Probability and risk index** at each hour's close and at the batch's last tick: the GBM
  first-passage probability over the policy's remaining window at the filtered volatility
  ``√(σ²·8760)`` (the same closed form as the quote's baseline); the risk index is the
  purchase's with its probability factor re-scored, ``index − 30·s(p₀) + 30·s(p)`` with
  ``s(p) = 1 − e^(−p/0.1)`` (`bti_core.risk.index`). An hour's close whose index crosses
  ``Rules.risk_index_level`` raises an alert, once per policy.
- **Funding at an extreme**: a funding settlement of the symbol (`Context`) inside the ticks
  consumed — after the last tick of the state, up to and at the batch's last — whose rate
  ``|f| ≥ Rules.funding_level`` (0.1 % a settlement, ten times Binance's base rate of 0.01 %:
  crowded leverage on one side) raises an alert at the settlement, priced at the last tick at
  or before it. Once per settlement.
- **Forecast band breached**: an hour's close outside the price forecast's 95 % interval for
  that hour (`Context` bands: the cached forecast's quantiles, `bti_core.risk.forecast`)
  raises an alert; the rule re-arms at the next close back inside, so a crash that stays
  outside for hours raises it once.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from bti_core.risk.index import WEIGHTS
from bti_core.risk.probability import HOURS_PER_YEAR, first_passage_gbm

HOUR_MS = 3_600_000
PROB_WEIGHT = WEIGHTS["liquidation_probability"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def prob_points(p: FloatArray | float) -> FloatArray:
    """The risk index's probability factor, ``30·(1 − e^(−p/0.1))`` points."""
    return np.asarray(PROB_WEIGHT * (1.0 - np.exp(-np.asarray(p, dtype=float) / 0.1)))


@dataclass(frozen=True)
class Rules:
    distance_levels: tuple[float, ...] = (0.05, 0.02)  # alert under 5 %, then under 2 %
    risk_index_level: float = 70.0
    spike_sigmas: float = 4.0
    funding_level: float = 0.001  # |funding rate| per settlement
    pool_level: float = 0.75  # locked cover / pool capacity (`bti_core.stream.pool`)


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
    liquidated: dict[str, int] = field(default_factory=dict)  # policy id → the tick's time
    near: dict[str, int] = field(default_factory=dict)  # policy id → levels already raised
    risky: list[int] = field(default_factory=list)  # risk-index alert raised
    outside_band: bool = False  # the last judged close was outside its forecast band

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
    # the level crossed, the index, the return in σ, the funding rate or the bound breached
    value: float = 0.0


@dataclass(frozen=True)
class Scores:
    """Every open policy re-scored at the batch's last tick (aligned with the `Book`)."""

    at_ms: int
    price: float
    distance: FloatArray
    probability: FloatArray
    risk_index: FloatArray


def _first_crossing(ts: IntArray, price: FloatArray, book: Book, barrier: FloatArray) -> IntArray:
    """Per policy, the index of the first tick inside its window at or beyond ``barrier`` (long:
    price ≤ barrier; short: price ≥ barrier); ``len(ts)`` where there is none. Policies whose
    window covers the whole batch — nearly all — are found at once on the running minimum
    (maximum); the few that open or end inside it on their own slice."""
    n = len(ts)
    out = np.full(len(book), n, dtype=np.int64)
    if n == 0 or len(book) == 0:
        return out
    lo = np.searchsorted(ts, book.start_ms, side="right")  # first tick after the start
    hi = np.searchsorted(ts, book.end_ms, side="right")  # ticks up to and at the end
    run_min = np.minimum.accumulate(price)
    run_max = np.maximum.accumulate(price)
    whole = (lo == 0) & (hi == n)
    longs, shorts = whole & (book.side > 0), whole & (book.side < 0)
    # non-increasing run_min: the first i with run_min[i] ≤ b is a search on −run_min
    out[longs] = np.searchsorted(-run_min, -barrier[longs], side="left")
    out[shorts] = np.searchsorted(run_max, barrier[shorts], side="left")
    for i in np.flatnonzero(~whole):
        a, b = int(lo[i]), int(hi[i])
        if a >= b:
            continue
        seg = price[a:b]
        hit = seg <= barrier[i] if book.side[i] > 0 else seg >= barrier[i]
        k = int(np.argmax(hit))
        if hit[k]:
            out[i] = a + k
    return out


def _probability(
    book: Book, price: float, sigma2: float, at_ms: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distance, probability and risk index of every policy at ``price`` and ``at_ms``."""
    dist = book.side * (price - book.liquidation) / price
    left = np.maximum(book.end_ms - at_ms, 0) / HOUR_MS / HOURS_PER_YEAR
    sigma = math.sqrt(max(sigma2, 0.0) * HOURS_PER_YEAR)
    p = first_passage_gbm(price, book.liquidation, sigma, left, book.side, mu=sigma**2 / 2)
    p = np.where(dist <= 0, 1.0, p)
    index = np.clip(book.risk_index0 - prob_points(book.probability0) + prob_points(p), 0, 100)
    return dist, p, index


def score(
    state: SymbolState,
    book: Book,
    ts: IntArray,
    price: FloatArray,
    rules: Rules = DEFAULT_RULES,
    context: Context = NO_CONTEXT,
) -> tuple[SymbolState, list[Event], Scores | None]:
    """Consume one micro-batch of ``state.symbol``'s mark-price ticks (times in ms, not
    decreasing, and not before the last tick consumed). Returns the new state (``state`` is
    not modified), the events in tick order, and the re-scored book at the batch's last tick
    (None for an empty batch)."""
    ts = np.asarray(ts, dtype=np.int64)
    price = np.asarray(price, dtype=np.float64)
    if len(ts) != len(price):
        raise ValueError(f"{len(ts)} tick times but {len(price)} prices")
    if len(ts) and (np.any(np.diff(ts) < 0) or ts[0] < state.last_ms):
        raise ValueError(f"{state.symbol}: ticks must arrive in time order")
    if len(ts) and not (np.isfinite(price).all() and (price > 0).all()):
        raise ValueError(f"{state.symbol}: mark prices must be positive numbers")
    new = SymbolState.from_json(state.to_json())
    if len(ts) == 0:
        return new, [], None
    events: list[Event] = []

    # liquidations and near-liquidation levels: first crossings on the tick sequence
    cross = _first_crossing(ts, price, book, book.liquidation)
    for i in np.flatnonzero(cross < len(ts)):
        pid = int(book.policy[i])
        if str(pid) not in new.liquidated:
            k = int(cross[i])
            events.append(Event("liquidation", new.symbol, int(ts[k]), float(price[k]), pid))
            new.liquidated[str(pid)] = int(ts[k])
    for level_no, d in enumerate(rules.distance_levels):
        barrier = np.where(book.side > 0, book.liquidation / (1 - d), book.liquidation / (1 + d))
        near = _first_crossing(ts, price, book, barrier)
        for i in np.flatnonzero(near < len(ts)):
            key = str(int(book.policy[i]))
            if new.near.get(key, 0) > level_no:
                continue
            k = int(near[i])
            events.append(
                Event("near_liquidation", new.symbol, int(ts[k]), float(price[k]), int(key), d)
            )
            new.near[key] = level_no + 1

    # funding settlements among the ticks consumed: (the state's last tick, the batch's last]
    after = state.last_ms if state.last_ms >= 0 else int(ts[0]) - 1
    f_ms, f_rate = context.funding_ms, context.funding_rate
    due = (f_ms > after) & (f_ms <= ts[-1]) & (np.abs(f_rate) >= rules.funding_level)
    for at, rate in zip(f_ms[due].tolist(), f_rate[due].tolist(), strict=True):
        k = int(np.searchsorted(ts, at, side="right")) - 1
        px = float(price[k]) if k >= 0 else state.last_price  # a settlement between batches
        events.append(Event("funding_extreme", new.symbol, at, px, None, rate))

    # hours: each close updates the variance, may raise a spike and the risk-index alerts
    hours = ts // HOUR_MS * HOUR_MS
    starts = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1]])
    risky = set(new.risky)
    for j, s in enumerate(starts):
        h = int(hours[s])
        if new.hour_ms >= 0 and h != new.hour_ms:  # the hour being formed has closed
            close_ms = new.hour_ms + HOUR_MS
            close = new.hour_last
            if math.isfinite(new.prev_close):
                r = math.log(close / new.prev_close)
                sd = math.sqrt(new.sigma2)
                if sd > 0 and abs(r) > rules.spike_sigmas * sd:
                    events.append(
                        Event("volatility_spike", new.symbol, close_ms, close, None, r / sd)
                    )
                new.sigma2 = float(
                    new.omega + (new.alpha + new.gamma * (r < 0)) * r * r + new.beta * new.sigma2
                )
            new.prev_close = close
            j_band = int(np.searchsorted(context.band_ms, new.hour_ms))
            if j_band < len(context.band_ms) and context.band_ms[j_band] == new.hour_ms:
                lo, hi = float(context.band_lo[j_band]), float(context.band_hi[j_band])
                outside = not lo <= close <= hi
                if outside and not new.outside_band:
                    bound = lo if close < lo else hi
                    events.append(
                        Event("forecast_breach", new.symbol, close_ms, close, None, bound)
                    )
                new.outside_band = outside
            if len(book):
                _, _, idx = _probability(book, close, new.sigma2, close_ms)
                live = (book.start_ms < close_ms) & (book.end_ms >= close_ms)
                for i in np.flatnonzero(live & (idx >= rules.risk_index_level)):
                    pid = int(book.policy[i])
                    gone = new.liquidated.get(str(pid), close_ms + 1) <= close_ms
                    if pid not in risky and not gone:
                        events.append(
                            Event("risk_index", new.symbol, close_ms, close, pid, float(idx[i]))
                        )
                        risky.add(pid)
                        new.risky.append(pid)
        end = int(starts[j + 1]) if j + 1 < len(starts) else len(ts)
        new.hour_ms, new.hour_last = h, float(price[end - 1])
    new.last_ms, new.last_price = int(ts[-1]), float(price[-1])
    new.offset += len(ts)
    events.sort(key=lambda e: (e.at_ms, e.kind, -1 if e.policy is None else e.policy))
    dist, p, idx = _probability(book, new.last_price, new.sigma2, new.last_ms)
    return new, events, Scores(new.last_ms, new.last_price, dist, p, idx)
