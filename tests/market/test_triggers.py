"""Trigger proofs: the bar that proves a policy's liquidation inside its window, dated by the
finest bars covering it; a coarse bar proves only "somewhere in its span"."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bti_core.market.synthetic import replay_crash
from bti_core.market.triggers import Insured, Series, find_triggers, refutes

H = pd.Timedelta(hours=1)


def policy(pid: int, lp: float, start: str, end: str, side: str = "long") -> Insured:
    return Insured(
        pid, side, lp, pd.Timestamp(start, tz="UTC").to_pydatetime(),
        pd.Timestamp(end, tz="UTC").to_pydatetime(),
    )  # fmt: skip


def minute_crash(at: str, low: float, start: str = "2026-03-01 09:00", n: int = 180) -> Series:
    """Flat minute bars at 100 from ``start``, one of them (``at``) dipping to ``low``."""
    ts = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    bars = pd.DataFrame({"ts": ts, "open": 100.0, "high": 100.2, "low": 99.8, "close": 100.0})
    bars.loc[bars["ts"] == pd.Timestamp(at, tz="UTC"), "low"] = low
    return Series("1m", bars)


def hourly_of(minutes: Series) -> Series:
    m = minutes.mark.set_index("ts")
    h = m.resample("1h").agg({"open": "first", "high": "max", "low": "min", "close": "last"})
    return Series("1h", h.reset_index())


def test_first_liquidating_bar_in_the_window_is_found() -> None:
    last, mark = replay_crash(100.0, start="2026-03-01 00:00", hours=6, drop=0.3)
    hourly = Series("1h", mark, last)
    long_ = policy(1, 85.0, "2026-03-01 00:00", "2026-03-01 12:00")
    far = policy(2, 50.0, "2026-03-01 00:00", "2026-03-01 12:00")
    short = policy(3, 110.0, "2026-03-01 00:00", "2026-03-01 12:00", "short")
    # bought at 00:30: the first hour's bar opened before the cover existed and cannot count
    late = policy(4, 85.0, "2026-03-01 00:30", "2026-03-01 05:00")
    trig = {t.policy_id: t for t in find_triggers([long_, far, short, late], hourly)}
    assert set(trig) == {1, 4}
    lows = mark.set_index("ts")["low"]
    first = lows[lows <= 85.0].index[0]
    assert trig[1].at == first.to_pydatetime() and trig[1].until == (first + H).to_pydatetime()
    assert float(trig[1].mark_price) <= 85.0
    assert pd.Timestamp(trig[4].at) >= pd.Timestamp(late.start)
    ev = trig[1].evidence
    assert ev["kind"] == "mark_reached_liquidation_price" and len(ev["bars"]) >= 7
    assert ev["timeframe"] == "1h" and "last_low" in ev["bars"][0]


def test_a_window_that_ended_before_the_move_has_no_trigger() -> None:
    last, mark = replay_crash(100.0, start="2026-03-01 06:00", hours=6, drop=0.3)
    p = policy(1, 85.0, "2026-03-01 00:00", "2026-03-01 06:00")
    assert find_triggers([p], Series("1h", mark, last)) == []


def test_a_crash_inside_an_hour_is_dated_by_its_minute_not_the_hours_open() -> None:
    """The scan dated an hourly bar at its open and preferred it: every trigger inside an hour
    came up to 59 minutes early."""
    minutes = minute_crash("2026-03-01 10:42", 90.0)
    p = policy(1, 95.0, "2026-03-01 09:05", "2026-03-02 09:05")
    (t,) = find_triggers([p], [hourly_of(minutes), minutes])
    assert t.at == pd.Timestamp("2026-03-01 10:42", tz="UTC").to_pydatetime()
    assert t.until == pd.Timestamp("2026-03-01 10:43", tz="UTC").to_pydatetime()
    assert t.evidence["timeframe"] == "1m"


def test_a_crash_two_minutes_after_the_window_proves_nothing() -> None:
    """It was paid: the hourly bar holding it opened inside the window."""
    minutes = minute_crash("2026-03-01 10:32", 90.0)
    p = policy(1, 95.0, "2026-03-01 09:05", "2026-03-01 10:30")
    assert find_triggers([p], [hourly_of(minutes), minutes]) == []
    # with the hourly bars alone the hour spans the window's end: it proves no time inside it
    assert find_triggers([p], [hourly_of(minutes)]) == []
    # a window that holds the whole hour is proven by it, dated from the hour
    wide = policy(2, 95.0, "2026-03-01 09:05", "2026-03-01 11:00")
    (t,) = find_triggers([wide], [hourly_of(minutes)])
    assert pd.Timestamp(t.at) == pd.Timestamp("2026-03-01 10:00", tz="UTC")


def test_a_coarse_bar_gives_way_to_finer_bars_that_cover_it() -> None:
    minutes = minute_crash("2026-03-01 10:42", 99.5)  # the minutes never reach 95
    hours = hourly_of(minutes).mark.copy()
    hours.loc[1, "low"] = 90.0  # a coarse bar from another source says they did
    p = policy(1, 95.0, "2026-03-01 09:05", "2026-03-02 09:05")
    assert find_triggers([p], [Series("1h", hours), minutes]) == []
    assert len(find_triggers([p], [Series("1h", hours)])) == 1


def test_a_records_time_needs_a_bar_that_holds_it() -> None:
    minutes = minute_crash("2026-03-01 10:42", 90.0)
    p = policy(1, 95.0, "2026-03-01 09:05", "2026-03-02 09:05")
    at = pd.Timestamp("2026-03-01 10:42:31", tz="UTC").to_pydatetime()
    assert len(find_triggers([p], minutes, near=at)) == 1
    far = pd.Timestamp("2026-03-01 11:30", tz="UTC").to_pydatetime()
    assert find_triggers([p], minutes, near=far) == []


def test_the_bars_refute_a_tick_the_mark_never_made() -> None:
    minutes = minute_crash("2026-03-01 10:42", 90.0)
    p = policy(1, 95.0, "2026-03-01 09:05", "2026-03-02 09:05")
    now = pd.Timestamp("2026-03-01 12:00", tz="UTC").to_pydatetime()
    forged = pd.Timestamp("2026-03-01 10:15:07", tz="UTC").to_pydatetime()
    assert refutes(p, [minutes], forged, now)
    assert not refutes(p, [minutes], pd.Timestamp("2026-03-01 10:42:10", tz="UTC"), now)
    # the bar of the tick's minute not closed yet: nothing refuted yet
    assert not refutes(p, [minutes], forged, pd.Timestamp("2026-03-01 10:15:30", tz="UTC"))
    assert not refutes(p, [minutes], pd.Timestamp("2026-03-02 00:00", tz="UTC"), now)


def test_the_vectorised_proof_matches_a_plain_loop() -> None:
    """Against a scalar reference over random windows, levels and two series."""
    rng = np.random.default_rng(5)
    n = 600
    ts = pd.date_range("2026-03-01", periods=n, freq="1min", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    minutes = Series(
        "1m", pd.DataFrame({"ts": ts, "open": close, "high": close * 1.001,
                            "low": close * 0.999, "close": close}),
    )  # fmt: skip
    hourly = hourly_of(minutes)
    for pid in range(60):
        a = int(rng.integers(0, n - 30))
        b = int(rng.integers(a + 1, n))
        lp = float(close[a] * rng.uniform(0.97, 1.0))
        start = ts[a] + pd.Timedelta(seconds=int(rng.integers(0, 60)))
        p = Insured(pid, "long", lp, start.to_pydatetime(), ts[b].to_pydatetime())
        got = find_triggers([p], [hourly, minutes])
        want = None
        for i in range(n):  # the minutes cover every hour: they alone decide
            o = ts[i]
            if o >= start and o + pd.Timedelta(minutes=1) <= ts[b] and close[i] * 0.999 <= lp:
                want = o
                break
        assert (got[0].at if got else None) == (want.to_pydatetime() if want else None)
