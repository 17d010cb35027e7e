"""The streaming scoring module: events on a hand-made path, windows, the GJR update, bad
ticks, a restart from the JSON state, and the same events and state whether the ticks come in
one batch or in many."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bti_core.stream.scoring import prob_points, score
from bti_core.stream.types import HOUR_MS, Book, Context, Rules, SymbolState

T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS  # on the hour


def state(**kw: float) -> SymbolState:
    base = {"omega": 1e-6, "alpha": 0.05, "gamma": 0.04, "beta": 0.9, "sigma2": 1e-4}
    return SymbolState("BTCUSDT", **{**base, **kw})


def book(*rows: tuple[int, int, float, int, int]) -> Book:
    """(policy, side, liquidation price, start, end) — times in minutes after T0."""
    return Book.of(
        [
            {
                "policy": pid,
                "side": side,
                "liquidation": lp,
                "payout": 100.0,
                "start_ms": T0 + a * 60_000,
                "end_ms": T0 + b * 60_000,
                "probability0": 0.05,
                "risk_index0": 40.0,
            }
            for pid, side, lp, a, b in rows
        ]
    )


def ticks(
    prices: list[float], every_s: int = 60, start_min: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    ts = T0 + start_min * 60_000 + np.arange(len(prices), dtype=np.int64) * every_s * 1000
    return ts, np.asarray(prices, dtype=float)


NO_OUTLIERS = Rules(jump_floor=1.0)  # hand-made paths move by whole percents a minute


def test_a_long_and_a_short_on_a_hand_made_path() -> None:
    b = book((1, +1, 90.0, -10, 600), (2, -1, 110.0, -10, 600))
    ts, px = ticks([100, 95, 93, 89, 91, 105, 108.5, 111, 100])
    _, events, scores = score(state(), b, ts, px, NO_OUTLIERS)
    got = [(e.kind, e.policy, e.price, e.value, (e.since_ms - T0) // 60_000) for e in events]
    # long: 5 % barrier 90/0.95 = 94.74 (first at 93), 2 % 90/0.98 = 91.84 (at 89), LP at 89:
    # the 2 % warning would come with the liquidation itself, so it is not raised.
    # short: 5 % barrier 110/1.05 = 104.76 (at 105), 2 % 110/1.02 = 107.84 (at 108.5), LP at
    # 111. Each level is reached by one tick and left by the next, a minute later: nothing
    # confirms the mark stayed there, so each is a crossing (held for the bars), not a claim
    assert got == [
        ("near_liquidation", 1, 93.0, 0.05, -T0 // 60_000 - 1),
        ("crossing", 1, 89.0, 0.0, 4),
        ("near_liquidation", 2, 105.0, 0.05, -T0 // 60_000 - 1),
        ("near_liquidation", 2, 108.5, 0.02, -T0 // 60_000 - 1),
        ("crossing", 2, 111.0, 0.0, 8),
    ]
    assert scores is not None and scores.price == 100.0
    assert scores.distance.tolist() == pytest.approx([0.10, 0.10])


def test_a_run_beyond_the_level_for_the_confirmation_window_is_a_liquidation() -> None:
    b = book((1, +1, 90.0, -10, 600))
    # a second apart: 90.6 … 90.15, then 40 ticks at or below 90 (the crash), from minute 1
    path = [90.6, 90.45, 90.3, 90.15, *np.linspace(89.9, 88.0, 40).tolist()]
    ts, px = ticks(path, every_s=1)
    new, events, _ = score(state(), b, ts, px)
    (liq,) = [e for e in events if e.kind == "liquidation"]
    first = T0 + 60_000 + 4_000
    assert liq.since_ms == first and liq.at_ms == first + 30_000  # dated from the first tick
    assert liq.value == 30.0 and liq.detail[0] == pytest.approx(89.9)
    assert liq.detail[1] == pytest.approx(float(px[4 + 30].min())) and liq.detail[2] == 31
    assert new.liquidated == {"1": first} and new.pending == {}
    # confirmed once: the rest of the run raises nothing more
    _, again, _ = score(new, b, *ticks([87.0] * 5, every_s=1, start_min=3))
    assert [e for e in again if e.kind in ("liquidation", "crossing")] == []


def test_one_glitched_tick_confirms_nothing_and_a_true_crash_later_still_does() -> None:
    b = book((1, +1, 90.0, -10, 600))
    path = [91.0, 91.2, 89.5, 91.1, 91.0] + [91.0 - 0.1 * i for i in range(60)]
    ts, px = ticks(path, every_s=1)
    new, events, _ = score(state(), b, ts, px)
    kinds = [(e.kind, e.since_ms - T0 - 60_000) for e in events if e.policy == 1]
    assert ("crossing", 2_000) in kinds  # the glitch: held for the bars of its minute
    liq = [e for e in events if e.kind == "liquidation"]
    assert len(liq) == 1 and liq[0].since_ms > T0 + 60_000 + 5_000  # the true fall, later
    assert new.pending == {}


def test_a_far_forged_tick_is_held_as_an_outlier_and_moves_nothing() -> None:
    b = book((1, +1, 90.0, -10, 600))
    path = [100.0, 100.1, 50.0, 100.2, 100.0, 30.0, 100.1]  # two forged prints
    ts, px = ticks(path, every_s=1)
    new, events, _ = score(state(), b, ts, px)
    assert [e for e in events if e.policy == 1] == []  # not even a near-liquidation alert
    assert new.held_outliers == 2 and new.trusted_price == 100.1
    assert new.last_ms == int(ts[-1])


def test_a_tick_from_the_future_is_refused_and_never_moves_the_checkpoint() -> None:
    b = book((1, +1, 90.0, -10, 10_000))
    now = T0 + 10 * 60_000
    year_2100 = 4_102_444_800_000
    new, _, _ = score(
        state(), b, np.array([T0 + 60_000, year_2100]), np.array([90.6, 50.0]), now_ms=now
    )
    assert new.refused_future == 1 and new.last_ms == T0 + 60_000
    # every true tick afterwards is scored (it used to be dropped as late)
    path = [90.5 - 0.05 * i for i in range(60)]
    new, events, _ = score(new, b, *ticks(path, every_s=1, start_min=2), now_ms=now)
    assert [e.kind for e in events].count("liquidation") == 1


def test_a_new_level_that_holds_is_trusted_a_glitch_that_returns_is_not() -> None:
    """An exchange that reopens 8 % lower after a halt: its ticks agree with each other for
    the acceptance window, so the level is trusted from the tick that completes it."""
    b = book((1, +1, 95.0, -10, 600))
    path = [100.0] * 3 + [92.0 - 0.01 * i for i in range(80)]
    ts, px = ticks(path, every_s=1)
    new, events, _ = score(state(), b, ts, px)
    assert new.held_outliers == 0 and new.trusted_price == pytest.approx(px[-1])
    liq = [e for e in events if e.kind == "liquidation"]
    assert len(liq) == 1 and liq[0].since_ms == T0 + 60_000 + 33_000  # trusted at 30 s
    glitch = [100.0] * 3 + [92.0] * 5 + [100.0] * 3
    new, events, _ = score(state(), b, *ticks(glitch, every_s=1))
    assert new.held_outliers == 5
    assert [e for e in events if e.kind in ("liquidation", "crossing")] == []


def test_ticks_made_of_bars_raise_a_crossing_at_each_run_for_the_bars_to_prove() -> None:
    b = book((1, +1, 90.0, -10, 600))
    ts, px = ticks([100, 89, 88, 95, 89.5, 96], every_s=15)
    new, events, _ = score(state(), b, ts, px, NO_OUTLIERS, from_bars=True)
    runs = [(e.kind, e.since_ms - T0 - 60_000) for e in events if e.kind != "near_liquidation"]
    assert runs == [("crossing", 15_000), ("crossing", 60_000)]
    assert new.liquidated == {}  # the bars decide, not the ticks made of them


def test_a_tick_outside_the_window_liquidates_nothing() -> None:
    # policy 1 starts after the first dip; policy 2 has ended before the second
    b = book((1, +1, 90.0, 5, 600), (2, +1, 90.0, -60, 2))
    path = [100, 100, 100, 89, 95, 95] + [88.0] * 40  # dips at minute 4 and from minute 7
    ts, px = ticks([float(x) for x in path], every_s=60)
    _, events, _ = score(state(), b, ts, px, NO_OUTLIERS)
    liq = [(e.policy, e.since_ms) for e in events if e.kind == "liquidation"]
    assert liq == [(1, T0 + 7 * 60_000)]  # policy 1 only, from its first dip after its start
    assert not [
        e for e in events if e.policy == 2 and e.kind == "crossing" and e.since_ms > T0 + 2 * 60_000
    ]


def test_each_hour_close_updates_the_gjr_variance_and_raises_a_spike() -> None:
    st0 = state(sigma2=1e-4)
    # closes: hour 0 at 100, hour 1 at 90 (a −10.5 % hour: > 4σ at σ = 1 %), hour 2 at 91
    ts = np.array([T0 + 30 * 60_000, T0 + HOUR_MS + 30 * 60_000, T0 + 2 * HOUR_MS + 60_000])
    new, events, _ = score(st0, book(), ts, np.array([100.0, 90.0, 91.0]), NO_OUTLIERS)
    r = math.log(90 / 100)
    want = st0.omega + (st0.alpha + st0.gamma) * r * r + st0.beta * st0.sigma2
    assert new.sigma2 == pytest.approx(want)  # hour 1 closed when hour 2's tick came
    spike = [e for e in events if e.kind == "volatility_spike"]
    assert len(spike) == 1 and spike[0].at_ms == T0 + 2 * HOUR_MS
    assert spike[0].value == pytest.approx(r / 0.01)


def test_the_risk_index_re_scores_the_probability_factor() -> None:
    b = book((1, +1, 99.0, -10, 6000))
    st0 = state(sigma2=(0.02) ** 2)
    ts = np.array([T0 + 60_000, T0 + HOUR_MS + 60_000])
    _, events, scores = score(st0, b, ts, np.array([100.0, 99.5]), Rules(risk_index_level=50))
    assert scores is not None
    p = float(scores.probability[0])
    assert scores.risk_index[0] == pytest.approx(
        40 - float(prob_points(0.05)) + float(prob_points(p))
    )
    assert [e.kind for e in events].count("risk_index") == 1


@pytest.mark.parametrize(
    ("ts", "px", "message"),
    [
        ([T0 + 2, T0 + 1], [100.0, 100.0], "time order"),
        ([T0 + 1], [-5.0], "positive"),
        ([T0 + 1], [float("nan")], "positive"),
        ([T0 + 1, T0 + 2], [100.0], "2 tick times but 1 prices"),
    ],
)
def test_bad_ticks_are_refused(ts: list[int], px: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score(state(), book(), np.array(ts), np.array(px))


def context(
    funding: list[tuple[int, float]] = (), bands: list[tuple[int, float, float]] = ()
) -> Context:
    """Funding (minutes after T0, rate) and bands (hour number, low, high)."""
    f_ms = np.array([T0 + m * 60_000 for m, _ in funding], dtype=np.int64)
    b_ms = np.array([T0 + h * HOUR_MS for h, _, _ in bands], dtype=np.int64)
    return Context(
        f_ms,
        np.array([r for _, r in funding], dtype=float),
        b_ms,
        np.array([lo for _, lo, _ in bands], dtype=float),
        np.array([hi for _, _, hi in bands], dtype=float),
    )


def test_a_funding_settlement_at_an_extreme_is_an_alert_once_priced_at_its_tick() -> None:
    ctx = context([(3, 0.0001), (5, -0.002), (9, 0.0015), (30, 0.004)])
    ts, px = ticks([100, 101, 102, 103, 104, 105, 106, 107, 108, 109])  # minutes 1 … 10
    # two batches cut between minutes 6 and 7; minute 30 is beyond the ticks
    s, first, _ = score(state(), book(), ts[:6], px[:6], context=ctx)
    s, second, _ = score(s, book(), ts[6:], px[6:], context=ctx)
    got = [(e.kind, e.at_ms, e.price, e.value) for e in first + second]
    assert got == [
        ("funding_extreme", T0 + 5 * 60_000, 104.0, -0.002),  # the tick at minute 5
        ("funding_extreme", T0 + 9 * 60_000, 108.0, 0.0015),
    ]  # 0.01 % is ordinary; minute 30 is raised by the batch that reaches it
    _, again, _ = score(s, book(), ts[-1:] + 0, px[-1:], context=ctx)
    assert again == []  # a settlement consumed is not raised again


def test_a_close_outside_the_forecast_band_alerts_once_until_back_inside() -> None:
    # hourly closes 100, 80, 79, 95, 70 (hours 0 … 4) judged against a 90–110 band
    ctx = context(bands=[(h, 90.0, 110.0) for h in range(6)])
    ts = T0 + np.arange(6, dtype=np.int64) * HOUR_MS + 30 * 60_000
    _, events, _ = score(
        state(), book(), ts, np.array([100.0, 80, 79, 95, 70, 71]), NO_OUTLIERS, context=ctx
    )
    breach = [(e.at_ms, e.price, e.value) for e in events if e.kind == "forecast_breach"]
    assert breach == [(T0 + 2 * HOUR_MS, 80.0, 90.0), (T0 + 5 * HOUR_MS, 70.0, 90.0)]
    _, events, _ = score(
        state(), book(), ts, np.array([100.0, 120, 100, 100, 100, 100]), NO_OUTLIERS, context=ctx
    )
    assert [(e.price, e.value) for e in events if e.kind == "forecast_breach"] == [(120.0, 110.0)]


def test_a_context_survives_its_json() -> None:
    ctx = context([(1, 0.003)], [(0, 1.0, 2.0)])
    back = Context.from_json(ctx.to_json())
    assert all(np.array_equal(getattr(back, k), getattr(ctx, k)) for k in ("funding_ms", "band_hi"))


def _random_case(seed: int, n: int) -> tuple[Book, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(1, 90_000, n)).astype(np.int64)  # ticks up to 90 s apart
    px = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    span = int(ts[-1] - T0) // 60_000
    rows = []
    for pid in range(40):
        side = int(rng.choice([1, -1]))
        lev = float(rng.choice([5, 10, 20, 50]))
        lp = 100 * (1 - side * 0.9 / lev)
        a = int(rng.integers(-60, span))
        rows.append((pid, side, lp, a, a + int(rng.integers(10, 3 * span))))
    return book(*rows), ts, px


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 1999), max_size=12))
def test_one_batch_or_many_give_the_same_events_and_state(seed: int, cuts: list[int]) -> None:
    b, ts, px = _random_case(seed, 2000)
    # (the first tick is trusted as it comes: the engine seeds the state with the stored mark)
    forged = 1 + np.random.default_rng(seed + 7).choice(1999, 15, replace=False)
    px = px.copy()
    px[forged] *= np.random.default_rng(seed).choice([0.5, 0.8, 1.3], 15)  # outliers held
    rules = Rules(risk_index_level=45, spike_sigmas=2.0)  # low enough that every kind fires
    rng = np.random.default_rng(seed + 1)
    hours = int(ts[-1] - T0) // HOUR_MS + 1
    # bands about each hour's close, shifted at random: some closes fall outside
    hour_of = (ts - T0) // HOUR_MS  # ticks ≤ 90 s apart: every hour has some
    closes = [float(px[hour_of == h][-1]) for h in range(hours)]
    mids = [c * float(rng.uniform(0.97, 1.03)) for c in closes]
    ctx = context(
        [(m, float(rng.choice([0.0001, 0.002, -0.003]))) for m in range(0, hours * 60, 120)],
        [(h, m * 0.98, m * 1.02) for h, m in enumerate(mids)],
    )
    whole, events, scores = score(state(), b, ts, px, rules, ctx)
    kinds = {e.kind for e in events}
    assert {"liquidation", "near_liquidation", "risk_index", "funding_extreme"} <= kinds
    assert whole.held_outliers + int(whole.suspect[2] if whole.suspect else 0) == 15
    assert "forecast_breach" in kinds
    bounds = [0, *sorted(set(cuts)), len(ts)]
    s, split_events, last = state(), [], None
    for lo, hi in itertools.pairwise(bounds):
        # each batch restarts from the JSON checkpoint, as a restarted process would
        s = SymbolState.from_json(s.to_json())
        s, ev, sc = score(s, b, ts[lo:hi], px[lo:hi], rules, ctx)
        split_events += ev
        last = sc if sc is not None else last
    assert split_events == events
    assert s.to_json() == whole.to_json()
    assert last is not None and scores is not None
    assert np.array_equal(last.risk_index, scores.risk_index)
    assert np.array_equal(last.probability, scores.probability)
    assert whole.offset == len(ts)


def test_no_near_liquidation_warning_at_or_after_the_liquidation_tick() -> None:
    """A jump straight through the level warns of nothing (the liquidation is the news), and
    a policy whose level was reached in an earlier batch gets no warning in a later one."""
    b = book((1, +1, 90.0, -10, 600))
    new, events, _ = score(state(), b, *ticks([100, 80, 80.5]), NO_OUTLIERS)
    assert [e.kind for e in events] == ["liquidation"]  # two ticks beyond it: confirmed
    _, later, _ = score(new, b, *ticks([92, 91, 93], start_min=4), NO_OUTLIERS)
    assert [e for e in later if e.kind == "near_liquidation"] == []
