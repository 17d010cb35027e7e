"""Crash replays end at the present: no bar after now, no gap before the crash, the minutes
stored beside the hourly series and their hours aggregated, the replayed stretch on record."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from bti_core.market.ingest import Ingestor
from bti_core.market.replay import ReplayError, crash_now, replayed_spans, written_by_replays
from bti_core.market.schema import Kind
from bti_core.market.triggers import Insured, Series, find_triggers
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine


@pytest.fixture
def market(tmp_path: Path, demo: dict, engine: Engine) -> tuple[Warehouse, Ingestor]:
    wh = Warehouse(tmp_path / "warehouse")
    ing = Ingestor(wh, engine)
    m = demo["BTCUSDT"]
    m.ingest(ing, funding=False)
    return wh, ing


def test_a_replay_ends_now_after_calm_bars_that_fill_the_gap(
    market: tuple[Warehouse, Ingestor], engine: Engine
) -> None:
    wh, ing = market
    last = pd.Timestamp(wh.latest(Kind.MARK, "BTCUSDT", "1h")["ts"])
    now = last + pd.Timedelta(hours=5, minutes=17, seconds=40)
    r = crash_now(wh, ing, "BTCUSDT", drop=0.3, minutes=30, now=now)
    assert r.last_bar == now.floor("1min") and r.minutes == 30
    assert r.move == pytest.approx(-0.3)
    for kind in (Kind.MARK, Kind.OHLCV):
        minutes = wh.query(kind, "BTCUSDT", "1m")
        hours = wh.query(kind, "BTCUSDT", "1h")
        assert minutes["ts"].max() == now.floor("1min")  # the present, never later
        assert hours["ts"].max() == now.floor("1h")  # the hour in progress
        assert r.fall_start == now.floor("1min") - pd.Timedelta("29min")
        assert (hours["ts"].diff().dropna() == pd.Timedelta("1h")).all()  # no gap
        assert (minutes["ts"].diff().dropna() == pd.Timedelta("1min")).all()
        # the minutes start with their hour, and their hour is their aggregate
        assert minutes["ts"].min() == r.fall_start.floor("1h")
        for hour, group in minutes.groupby(minutes["ts"].dt.floor("1h")):
            agg = hours[hours["ts"] == hour].iloc[0]
            assert agg["low"] == pytest.approx(group["low"].min())
            assert agg["close"] == pytest.approx(group["close"].iloc[-1])
    mark = wh.query(Kind.MARK, "BTCUSDT", "1m")
    falling = mark[mark["ts"] >= r.fall_start]
    assert len(falling) == 30 and falling["close"].is_monotonic_decreasing
    assert mark["close"].iloc[-1] == pytest.approx(r.close_before * 0.7)
    # the calm hours are a walk at the recent volatility, not a flat line
    first_hour = r.fall_start.floor("1h")
    calm = wh.query(Kind.MARK, "BTCUSDT", "1h", last + pd.Timedelta("1h"), first_hour)
    assert len(calm) == 3 == r.calm_bars - int((r.fall_start - first_hour) / pd.Timedelta("1min"))
    assert calm["close"].nunique() == 3
    assert replayed_spans(engine, "BTCUSDT") == [(first_hour, now.floor("1min"))]


def _after_last_bar(wh: Warehouse, later: str) -> tuple[pd.Timestamp, float]:
    """``later`` after the last stored hour opened, and that hour's close."""
    last = wh.latest(Kind.MARK, "BTCUSDT", "1h")
    return pd.Timestamp(last["ts"]) + pd.Timedelta(later), float(last["close"])


def test_a_policy_bought_minutes_ago_is_liquidated_by_the_minute_bars(
    market: tuple[Warehouse, Ingestor],
) -> None:
    wh, ing = market
    now, spot = _after_last_bar(wh, "90min")
    bought = now - pd.Timedelta(minutes=8)
    crash_now(wh, ing, "BTCUSDT", drop=0.3, minutes=30, now=now)
    p = Insured(1, "long", spot * 0.9, bought.to_pydatetime(), (now + pd.Timedelta("3D")))
    hourly = find_triggers([p], Series("1h", wh.query(Kind.MARK, "BTCUSDT", "1h")))
    assert hourly == []  # the hour in progress opened before the purchase: it cannot count
    (trig,) = find_triggers([p], Series("1m", wh.query(Kind.MARK, "BTCUSDT", "1m")))
    assert bought <= pd.Timestamp(trig.at) <= now


def test_a_replay_does_not_rewrite_the_market_a_trader_was_quoted_on(
    market: tuple[Warehouse, Ingestor],
) -> None:
    wh, ing = market
    now, spot = _after_last_bar(wh, "95min")
    bought = now - pd.Timedelta(minutes=4, seconds=30)
    r = crash_now(wh, ing, "BTCUSDT", drop=0.3, minutes=30, now=now, not_before=bought)
    assert r.fall_start == bought.ceil("1min") and r.minutes == 5  # 00:31 … 00:35
    mark = wh.query(Kind.MARK, "BTCUSDT", "1m")
    before = mark[mark["ts"] < r.fall_start]
    assert (before["close"] == spot).all()  # what the trader was quoted on, until they bought
    assert mark["close"].iloc[-1] == pytest.approx(spot * 0.7)


@pytest.mark.both_databases
def test_replays_never_overwrite_and_refuse_stale_data(
    market: tuple[Warehouse, Ingestor],
) -> None:
    wh, ing = market
    last = pd.Timestamp(wh.latest(Kind.MARK, "BTCUSDT", "1h")["ts"])
    now = last + pd.Timedelta(hours=2, minutes=10)
    crash_now(wh, ing, "BTCUSDT", drop=0.2, minutes=20, now=now)
    with pytest.raises(ReplayError, match="wait for the next minute"):
        crash_now(wh, ing, "BTCUSDT", drop=0.2, now=now)
    before = wh.query(Kind.MARK, "BTCUSDT", "1m")
    # ten minutes later: a second fall over the ten minutes since, the first one kept
    r = crash_now(wh, ing, "BTCUSDT", drop=0.2, minutes=30, now=now + pd.Timedelta("10min"))
    assert r.minutes == 10
    after = wh.query(Kind.MARK, "BTCUSDT", "1m")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    with pytest.raises(ReplayError, match="more than 31 days ago"):
        crash_now(wh, ing, "BTCUSDT", now=now + pd.Timedelta(days=40))
    with pytest.raises(ReplayError, match="drop must be between"):
        crash_now(wh, ing, "BTCUSDT", drop=1.5, now=now + pd.Timedelta("1h"))
    with pytest.raises(ReplayError, match="no mark prices"):
        crash_now(wh, ing, "ETHUSDT", now=now)


def test_a_replayed_crash_is_priced_on_the_markets_own_volatility(
    market: tuple[Warehouse, Ingestor], engine: Engine
) -> None:
    """A replay demonstrates claims, not pricing: after it, quotes are priced from the replayed
    mark but on the volatility of the market's own bars (it used to read "volatility now 1022 %
    a year" and refuse cover)."""
    wh, ing = market
    plain = RiskEngine(wh, n_paths=2_000)
    aware = RiskEngine(wh, n_paths=2_000, replays=partial(written_by_replays, engine))
    before = aware.symbol_risk("BTCUSDT")
    now = pd.Timestamp(wh.latest(Kind.MARK, "BTCUSDT", "1h")["ts"]) + pd.Timedelta("3h")
    r = crash_now(wh, ing, "BTCUSDT", drop=0.5, minutes=30, now=now)
    after, naive = aware.symbol_risk("BTCUSDT"), plain.symbol_risk("BTCUSDT")
    assert after.spot == pytest.approx(r.close_before * 0.5) == naive.spot  # the mark now
    assert after.as_of == naive.as_of == now.floor("1h")
    assert after.baseline_sigma == pytest.approx(before.baseline_sigma)  # the market's own
    assert naive.baseline_sigma > 2 * before.baseline_sigma  # what the replay did to it
    # the same cover (a long 10 % below the mark for a day) costs what it did before the crash
    p_before = float(before.probability(before.spot * 0.9, 24.0, 1)[0])
    p_after = float(after.probability(after.spot * 0.9, 24.0, 1)[0])
    p_naive = float(naive.probability(naive.spot * 0.9, 24.0, 1)[0])
    assert p_after == pytest.approx(p_before, abs=1e-9) and p_naive > p_before + 0.1
