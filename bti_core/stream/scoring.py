"""The one scoring module every streaming engine runs (embedded, Kafka, Spark): per-symbol
incremental state updated from a micro-batch of mark-price ticks, the re-scoring of every open
policy on that symbol, and its alert and liquidation events. Pure (arrays in, state and events
out) and serialisable (`SymbolState.to_json`), so a checkpoint is a JSON document.

Feeding the same ticks in one batch or in many gives the same events and the same state: every
event is defined on the tick sequence, never on where a batch ends.

- **Admission**: a tick stamped more than ``Rules.max_ahead_ms`` past the clock is refused and
  counted (it would make every true tick after it look late); a tick that jumps further from
  the last trusted price than ``max(jump_floor, jump_sigmas·σ_h·√Δt_h)`` (``σ_h`` the hourly
  GJR-GARCH volatility, ``Δt_h`` the hours since that price) is held, not trusted: it moves
  nothing and raises nothing. Should the ticks after it stay at the new level for
  ``Rules.accept_ms`` (three at least: an exchange that reopens after a halt at another price),
  the level is trusted from the tick that completes it. Ticks made from stored bars (a replay,
  the worker's tail of the warehouse) were cleaned on import: only the clock applies to them.
- **Liquidation**: a run of trusted ticks beyond a policy's liquidation price (long:
  ``p ≤ LP``; short: ``p ≥ LP``) that begins inside its window (``start < t ≤ end``) and stays
  beyond for ``Rules.confirm_ms`` — persistence, so one forged or glitched tick confirms
  nothing — raises the ``liquidation`` event at the tick that completes it, dated from the
  run's first tick (``since_ms``: the claim's time); once per policy. A run that comes back
  before it raises ``crossing`` at the tick that ends it: the engine holds it as a trigger to
  be proven by the stored bars of its minute (`bti_core.market.triggers`), and a later run can
  still confirm. For ticks made from stored bars there is no persistence to measure (their
  times are a quarter of a bar apart by construction): every run raises ``crossing`` at its
  first tick, and the bars themselves prove or refute it.
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

import math

import numpy as np
import numpy.typing as npt

from bti_core.risk.index import WEIGHTS
from bti_core.risk.probability import HOURS_PER_YEAR, first_passage_gbm
from bti_core.stream.types import (
    DEFAULT_RULES,
    HOUR_MS,
    NO_CONTEXT,
    Book,
    Context,
    Event,
    FloatArray,
    IntArray,
    Rules,
    Scores,
    SymbolState,
)

PROB_WEIGHT = WEIGHTS["liquidation_probability"]


def prob_points(p: FloatArray | float) -> FloatArray:
    """The risk index's probability factor, ``30·(1 − e^(−p/0.1))`` points."""
    return np.asarray(PROB_WEIGHT * (1.0 - np.exp(-np.asarray(p, dtype=float) / 0.1)))


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


def _unconditional_sigma2(state: SymbolState) -> float:
    """The GJR-GARCH's long-run hourly variance ``ω / (1 − α − γ/2 − β)`` (symmetric
    innovations), the outlier band's yardstick: a constant of the symbol, so which ticks are
    trusted never depends on where a batch ends; the current variance where the fit is not
    stationary."""
    persistence = state.alpha + state.gamma / 2 + state.beta
    if persistence < 1 and state.omega > 0:
        return state.omega / (1 - persistence)
    return max(state.sigma2, 1e-8)


def _band(rules: Rules, sigma2: float, dt_ms: FloatArray | float) -> FloatArray:
    hours = np.maximum(np.asarray(dt_ms, dtype=float), 0.0) / HOUR_MS
    return np.maximum(rules.jump_floor, rules.jump_sigmas * math.sqrt(sigma2) * np.sqrt(hours))


def admit(
    new: SymbolState,
    ts: IntArray,
    price: FloatArray,
    rules: Rules,
    now_ms: int | None = None,
    from_bars: bool = False,
) -> npt.NDArray[np.bool_]:
    """Which ticks are trusted (module docstring, "Admission"); updates ``new``'s trusted
    price, suspect run and counters in place."""
    keep = np.ones(len(ts), dtype=bool)
    if now_ms is not None:
        ahead = ts > now_ms + rules.max_ahead_ms
        if ahead.any():
            new.refused_future += int(ahead.sum())
            keep &= ~ahead
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return keep
    t, p = ts[idx], price[idx]
    if from_bars:
        new.trusted_ms, new.trusted_price = int(t[-1]), float(p[-1])
        return keep
    s2 = _unconditional_sigma2(new)
    if t[0] < new.trusted_ms:  # a reference from after these ticks (a replay of history)
        new.trusted_ms, new.trusted_price = -1, math.nan
    known = math.isfinite(new.trusted_price)
    prev_t = np.r_[new.trusted_ms if known else t[0], t[:-1]]
    prev_p = np.r_[new.trusted_price if known else p[0], p[:-1]]
    ok = np.abs(np.log(p / prev_p)) <= _band(rules, s2, t - prev_t)
    if ok.all() and not new.suspect:  # the usual batch: every tick near the one before
        new.trusted_ms, new.trusted_price = int(t[-1]), float(p[-1])
        return keep
    first_bad = int(np.argmin(ok)) if not ok.all() else 0
    if first_bad:  # the ticks before it are trusted as they stand
        new.trusted_ms, new.trusted_price = int(t[first_bad - 1]), float(p[first_bad - 1])
    suspect = list(new.suspect)
    for j in range(first_bad, len(t)):
        tj, pj = int(t[j]), float(p[j])
        if not math.isfinite(new.trusted_price) or abs(math.log(pj / new.trusted_price)) <= float(
            _band(rules, s2, tj - new.trusted_ms)
        ):
            new.trusted_ms, new.trusted_price = tj, pj
            if suspect:  # the run at another level was a glitch after all
                new.held_outliers += int(suspect[2])
                suspect = []
            continue
        keep[idx[j]] = False
        near_run = suspect and abs(math.log(pj / suspect[1])) <= float(
            _band(rules, s2, tj - suspect[3])
        )
        if near_run:  # one more tick near the last of the run (a market that moved on, or not)
            suspect[1] = pj
            suspect[2] += 1
            suspect[3] = tj
            if tj - suspect[0] >= rules.accept_ms and suspect[2] >= 3:
                keep[idx[j]] = True  # the new level held: trusted from this tick
                new.trusted_ms, new.trusted_price = tj, pj
                suspect = []
            continue
        if suspect:
            new.held_outliers += int(suspect[2])
        suspect = [float(tj), pj, 1.0, float(tj)]
    new.suspect = suspect
    return keep


def _beyond(prices: FloatArray, side: int, level: float) -> npt.NDArray[np.bool_]:
    return prices <= level if side > 0 else prices >= level


def _liquidations(
    new: SymbolState,
    book: Book,
    ts: IntArray,
    price: FloatArray,
    rules: Rules,
    from_bars: bool,
) -> list[Event]:
    """Runs of ticks beyond each policy's liquidation price: confirmed (``liquidation``),
    ended unconfirmed or — for ticks of bars — begun (``crossing``), or still pending in
    ``new`` (module docstring)."""
    events: list[Event] = []
    n = len(ts)
    if n == 0 or len(book) == 0:
        return events
    row = {int(pid): i for i, pid in enumerate(book.policy)}
    lo_all = np.searchsorted(ts, book.start_ms, side="right")  # first tick after the start
    hi_all = np.searchsorted(ts, book.end_ms, side="right")  # ticks up to and at the end
    resume: dict[int, int] = {}  # policy → where to look for its next run

    def run_from(i: int, k: int, first_ms: int, first_px: float, ticks0: int) -> int | None:
        """Follow the run of policy row ``i`` that is beyond at tick ``k`` (begun at
        ``first_ms``); returns the tick after it ended, or None when it was confirmed or
        goes on past the batch."""
        pid, side, lp = int(book.policy[i]), int(book.side[i]), float(book.liquidation[i])
        out = ~_beyond(price[k:], side, lp)
        r = k + int(np.argmax(out)) if out.any() else n  # first tick back inside
        seg = price[k:r]
        extreme = float(seg.min() if side > 0 else seg.max()) if len(seg) else first_px
        if not from_bars:
            c = int(np.searchsorted(ts, first_ms + rules.confirm_ms, side="left"))
            if c < r:  # beyond from its first tick until the confirmation window passed
                prev = new.pending.get(str(pid))
                part = price[k : c + 1]
                ext = float(part.min() if side > 0 else part.max())
                if prev is not None:
                    ext = min(ext, prev[2]) if side > 0 else max(ext, prev[2])
                events.append(
                    Event(
                        "liquidation",
                        new.symbol,
                        int(ts[c]),
                        float(price[c]),
                        pid,
                        (int(ts[c]) - first_ms) / 1000,
                        first_ms,
                        (first_px, ext, float(ticks0 + c - k + 1)),
                    )
                )
                new.liquidated[str(pid)] = first_ms
                new.pending.pop(str(pid), None)
                return None
        if r < n:  # back inside before it was confirmed
            prev = new.pending.get(str(pid))
            last_beyond = int(ts[r - 1]) if r > k else int(prev[4]) if prev else first_ms
            held = (last_beyond - first_ms) / 1000
            if not from_bars:
                ext = extreme if prev is None else (min if side > 0 else max)(prev[2], extreme)
                events.append(
                    Event(
                        "crossing",
                        new.symbol,
                        int(ts[r]),
                        first_px,
                        pid,
                        held,
                        first_ms,
                        (first_px, ext, float(ticks0 + r - k)),
                    )
                )
            new.pending.pop(str(pid), None)
            return r
        prev = new.pending.get(str(pid))
        ext = extreme if prev is None else (min if side > 0 else max)(prev[2], extreme)
        new.pending[str(pid)] = [
            float(first_ms),
            first_px,
            ext,
            float(ticks0 + r - k),
            float(ts[-1]),
            float(price[-1]),
        ]
        return None

    for key, run in list(new.pending.items()):  # runs begun in an earlier batch
        i = row.get(int(key))
        if i is None:
            continue
        ended = run_from(i, 0, int(run[0]), float(run[1]), int(run[3]))
        if ended is not None:
            resume[int(key)] = ended

    first = _first_crossing(ts, price, book, book.liquidation)
    for row_i in np.flatnonzero(first < n):
        i = int(row_i)
        pid = int(book.policy[i])
        if str(pid) in new.liquidated or str(pid) in new.pending:
            continue
        k = max(int(first[i]), resume.get(pid, 0))
        lo, hi = int(lo_all[i]), int(hi_all[i])
        side, lp = int(book.side[i]), float(book.liquidation[i])
        while True:
            if k < lo:
                k = lo
            if k >= hi:
                break
            hit = _beyond(price[k:hi], side, lp)
            if not hit.any():
                break
            k += int(np.argmax(hit))
            if from_bars:
                px_k = float(price[k])
                events.append(
                    Event("crossing", new.symbol, int(ts[k]), px_k, pid, -1.0, int(ts[k]), (px_k,))
                )
            after = run_from(i, k, int(ts[k]), float(price[k]), 0)
            if after is None:
                break
            k = after
    return events


def score(
    state: SymbolState,
    book: Book,
    ts: IntArray,
    price: FloatArray,
    rules: Rules = DEFAULT_RULES,
    context: Context = NO_CONTEXT,
    *,
    now_ms: int | None = None,
    from_bars: bool = False,
) -> tuple[SymbolState, list[Event], Scores | None]:
    """Consume one micro-batch of ``state.symbol``'s mark-price ticks (times in ms, not
    decreasing, and not before the last tick consumed). ``now_ms``: the clock, for refusing
    ticks from the future; ``from_bars``: the ticks were made from stored bars. Returns the
    new state (``state`` is not modified), the events in tick order, and the re-scored book at
    the batch's last trusted tick (None when no tick was trusted)."""
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
    keep = admit(new, ts, price, rules, now_ms, from_bars)
    consumed = ts[ts <= now_ms + rules.max_ahead_ms] if now_ms is not None else ts
    if len(consumed):
        new.last_ms = int(consumed[-1])  # a tick from the future never moves the checkpoint
    new.offset += len(ts)
    ts, price = ts[keep], price[keep]
    if len(ts) == 0:
        return new, [], None
    reached_before = set(new.liquidated) | set(new.pending)  # the level, in an earlier batch
    events: list[Event] = _liquidations(new, book, ts, price, rules, from_bars)
    # a near-liquidation alert is a warning: only before the mark reaches the level itself
    reached = _first_crossing(ts, price, book, book.liquidation)
    for level_no, d in enumerate(rules.distance_levels):
        barrier = np.where(book.side > 0, book.liquidation / (1 - d), book.liquidation / (1 + d))
        near = _first_crossing(ts, price, book, barrier)
        for i in np.flatnonzero(near < len(ts)):
            key = str(int(book.policy[i]))
            if new.near.get(key, 0) > level_no:
                continue
            if key in reached_before or near[i] >= reached[i]:
                new.near[key] = len(rules.distance_levels)  # no warning after the fact
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
    new.last_price = float(price[-1])
    events.sort(key=lambda e: (e.at_ms, e.kind, -1 if e.policy is None else e.policy))
    at = int(ts[-1])
    dist, p, idx = _probability(book, new.last_price, new.sigma2, at)
    return new, events, Scores(at, new.last_price, dist, p, idx)
