"""Trigger scan: the first mark bar in the window that reaches the liquidation price."""

from __future__ import annotations

import pandas as pd

from bti_core.claims.triggers import Insured, find_triggers
from bti_core.market.synthetic import replay_crash


def test_first_liquidating_bar_in_the_window_is_found() -> None:
    last, mark = replay_crash(100.0, start="2026-03-01 00:00", hours=6, drop=0.3)
    t0 = pd.Timestamp("2026-03-01 00:00", tz="UTC")
    long_ = Insured(
        1, "long", 85.0, t0.to_pydatetime(), (t0 + pd.Timedelta(hours=12)).to_pydatetime()
    )
    far = Insured(
        2, "long", 50.0, t0.to_pydatetime(), (t0 + pd.Timedelta(hours=12)).to_pydatetime()
    )
    short = Insured(
        3, "short", 110.0, t0.to_pydatetime(), (t0 + pd.Timedelta(hours=12)).to_pydatetime()
    )
    # bought after the crash's deepest bar: that bar opened before the cover existed
    late = Insured(
        4,
        "long",
        85.0,
        (t0 + pd.Timedelta(minutes=30)).to_pydatetime(),
        (t0 + pd.Timedelta(hours=3)).to_pydatetime(),
    )
    trig = {t.policy_id: t for t in find_triggers([long_, far, short, late], mark, last)}
    assert set(trig) == {1, 4}
    lows = mark.set_index("ts")["low"]
    first = lows[lows <= 85.0].index[0]
    assert trig[1].at == first.to_pydatetime()
    assert float(trig[1].mark_price) <= 85.0
    assert trig[4].at > trig[1].at or trig[4].at == first.to_pydatetime()
    assert trig[4].at >= pd.Timestamp(late.start)
    ev = trig[1].evidence
    assert ev["kind"] == "mark_reached_liquidation_price" and len(ev["bars"]) >= 7
    assert "last_low" in ev["bars"][0]


def test_a_window_that_ended_before_the_move_has_no_trigger() -> None:
    last, mark = replay_crash(100.0, start="2026-03-01 06:00", hours=6, drop=0.3)
    t0 = pd.Timestamp("2026-03-01 00:00", tz="UTC")
    p = Insured(1, "long", 85.0, t0.to_pydatetime(), (t0 + pd.Timedelta(hours=6)).to_pydatetime())
    assert find_triggers([p], mark, last) == []
