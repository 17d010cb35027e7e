"""Cleaning: each rule on a hand-made frame, and the report that says what was done."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bti_core.market.cleaning import CleaningReport, clean_bars, clean_funding
from bti_core.market.schema import BarFlag, Kind
from tests.conftest import hourly


def test_clean_frame_passes_untouched() -> None:
    bars = hourly(48)
    out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h")
    assert rep.changed == {} and rep.gaps == []
    pd.testing.assert_frame_equal(out.drop(columns="flags"), bars)
    assert (out["flags"] == 0).all()


def test_listing_placeholders_removed_like_binance_btcusdt_2019() -> None:
    bars = hourly(30, start="2019-09-08 17:00", price=10_344.0)
    bars.loc[:1, ["open", "high", "low", "close"]] = 10_000.0
    bars.loc[:1, "volume"] = [0.002, 0.0]
    out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h")
    assert rep.counts["listing_placeholders"] == 2
    assert out["ts"].iloc[0] == pd.Timestamp("2019-09-08 19:00", tz="UTC")


def test_placeholders_only_at_listing() -> None:
    bars = hourly(30)
    bars.loc[:1, ["open", "high", "low", "close"]] = 100.0
    bars.loc[:1, "volume"] = 0.0
    _out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h", at_listing=False)
    assert rep.counts["listing_placeholders"] == 0
    assert rep.counts["flat_zero_volume"] == 2


def test_flat_zero_volume_flagged_not_removed() -> None:
    bars = hourly(20)
    bars.loc[10, ["open", "high", "low", "close"]] = bars.loc[9, "close"]
    bars.loc[10, "volume"] = 0.0
    out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h")
    assert len(out) == 20 and rep.counts["flat_zero_volume"] == 1
    assert out.loc[10, "flags"] == BarFlag.FLAT_ZERO_VOLUME


def test_wick_unconfirmed_by_mark_price_is_flagged() -> None:
    # ETHUSDT 2021-05-19 13:00: the last price printed 1,400.73, the mark price never went there.
    last = hourly(10, price=2500.0)
    mark = last.copy()
    mark["volume"] = 0.0
    last.loc[5, "low"] = mark.loc[5, "low"] * 0.80
    last.loc[7, "high"] = mark.loc[7, "high"] * 1.05
    last.loc[3, "low"] = mark.loc[3, "low"] * 0.995  # ordinary basis, not a wick
    out, rep = clean_bars(last, symbol="ETHUSDT", timeframe="1h", mark=mark)
    assert rep.counts["unconfirmed_wicks"] == 2
    assert out.loc[5, "flags"] == BarFlag.WICK_LOW_UNCONFIRMED
    assert out.loc[7, "flags"] == BarFlag.WICK_HIGH_UNCONFIRMED
    assert out.loc[3, "flags"] == 0


def test_gaps_reported_never_filled() -> None:
    bars = hourly(24).drop(index=[5, 10, 11, 12]).reset_index(drop=True)
    out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h")
    assert len(out) == 20
    assert [(g.start.hour, g.end.hour, g.missing) for g in rep.gaps] == [(5, 5, 1), (10, 12, 3)]
    assert rep.counts["gaps"] == 2 and rep.counts["missing_bars"] == 4
    assert out["flags"].to_numpy().nonzero()[0].tolist() == [5, 9]
    assert all(out.loc[[5, 9], "flags"] == BarFlag.AFTER_GAP)


def test_unsorted_duplicates_naive_times_and_bad_rows() -> None:
    bars = hourly(10)
    dup = bars.iloc[[3]].assign(close=lambda d: d["close"] * 1.0001)
    bad = bars.iloc[[4]].copy()
    messy = pd.concat([bars.iloc[::-1], dup], ignore_index=True)
    messy.loc[messy["ts"] == bad["ts"].iloc[0], "high"] = 1.0  # high below low
    messy.loc[0, "open"] = np.nan
    messy["ts"] = messy["ts"].dt.tz_localize(None)
    out, rep = clean_bars(messy, symbol="BTCUSDT", timeframe="1h")
    assert rep.counts["naive_times_as_utc"] == 11
    assert rep.counts["missing_values"] == 1
    assert rep.counts["invalid_bars"] == 1
    assert rep.counts["out_of_order"] > 0
    assert rep.counts["duplicates"] == 1
    assert out["ts"].is_monotonic_increasing and out["ts"].is_unique
    assert str(out["ts"].dtype) == "datetime64[us, UTC]"
    assert (
        out.loc[out["ts"] == bars["ts"].iloc[3], "close"].iloc[0] == dup["close"].iloc[0]
    )  # later row wins


def test_misaligned_bars_dropped() -> None:
    bars = hourly(5)
    bars.loc[2, "ts"] = bars.loc[2, "ts"] + pd.Timedelta(minutes=7)
    out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h")
    assert rep.counts["misaligned"] == 1 and len(out) == 4


def test_mark_bars_skip_volume_rules() -> None:
    mark = hourly(10).assign(volume=0.0)
    mark.loc[:1, ["open", "high", "low", "close"]] = 100.0
    _out, rep = clean_bars(mark, symbol="BTCUSDT", timeframe="1h", kind=Kind.MARK)
    assert rep.changed == {}


def test_funding_rounding_range_and_gaps() -> None:
    ts = pd.to_datetime(
        ["2024-01-01 00:00:00.005", "2024-01-01 08:00", "2024-01-02 00:00", "2024-01-02 08:00"],
        utc=True,
        format="ISO8601",
    )
    f = pd.DataFrame({"ts": ts, "funding_rate": [0.0001, 0.0001, 0.9, -0.003]})
    out, rep = clean_funding(f, symbol="BTCUSDT")
    assert rep.counts["funding_times_rounded"] == 1
    assert rep.counts["invalid_rates"] == 1
    # Jan 1 16:00 was never there and Jan 2 00:00 was dropped: one gap of two funding times
    assert [(g.start, g.missing) for g in rep.gaps] == [
        (pd.Timestamp("2024-01-01 16:00", tz="UTC"), 2)
    ]
    assert out["ts"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_report_round_trips_through_json() -> None:
    bars = hourly(24).drop(index=[5]).reset_index(drop=True)
    _out, rep = clean_bars(bars, symbol="BTCUSDT", timeframe="1h")
    back = CleaningReport.from_dict(rep.to_dict())
    assert back == rep
    assert any("gap" in line and "not filled" in line for line in back.lines())


def test_bad_tolerance_refused() -> None:
    with pytest.raises(ValueError, match="wick_tolerance"):
        clean_bars(hourly(3), symbol="BTCUSDT", timeframe="1h", wick_tolerance=0)


# --- properties ---------------------------------------------------------------------------------

_row = st.tuples(
    st.integers(0, 60),  # hour offset (duplicates and gaps come from collisions and holes)
    st.floats(1, 1e5),
    st.floats(0, 0.05),
    st.floats(0, 0.05),
    st.floats(-0.03, 0.03),
    st.one_of(st.just(0.0), st.floats(0, 1e6)),
)


def _frame(rows: list[tuple[int, float, float, float, float, float]]) -> pd.DataFrame:
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    recs = []
    for h, o, up, down, move, vol in rows:
        c = o * (1 + move)
        recs.append(
            (t0 + pd.Timedelta(hours=h), o, max(o, c) * (1 + up), min(o, c) * (1 - down), c, vol)
        )
    return pd.DataFrame(recs, columns=["ts", "open", "high", "low", "close", "volume"]).astype(
        {"ts": "datetime64[us, UTC]"}
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_row, min_size=1, max_size=40))
def test_cleaned_bars_are_sorted_unique_aligned_and_idempotent(rows: list) -> None:
    out, rep = clean_bars(_frame(rows), symbol="BTCUSDT", timeframe="1h")
    ts = out["ts"]
    assert ts.is_monotonic_increasing and ts.is_unique
    assert (ts.dt.minute == 0).all()
    assert len(out) <= len(rows) == rep.rows_in
    assert rep.rows_out == len(out)
    assert rep.counts["missing_bars"] == sum(g.missing for g in rep.gaps)
    if len(out) > 1:
        span = int((ts.iloc[-1] - ts.iloc[0]) / pd.Timedelta(hours=1)) + 1
        assert span == len(out) + rep.counts["missing_bars"]
    again, rep2 = clean_bars(
        out.drop(columns="flags"), symbol="BTCUSDT", timeframe="1h", at_listing=False
    )
    pd.testing.assert_frame_equal(again.drop(columns="flags"), out.drop(columns="flags"))
    assert rep2.counts["duplicates"] == rep2.counts["invalid_bars"] == 0
