"""Features for the learned models: every one reads bars up to its start hour only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bti_core.market.synthetic import generate_demo_markets
from bti_core.risk.features import ALL_COLUMNS, MARKET_COLUMNS, market_frame, order_features


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    m = generate_demo_markets(start="2023-01-01", periods=24 * 75, seed=4)["ETHUSDT"]
    macro = pd.Series(
        np.linspace(-1, 1, 75), index=pd.date_range("2023-01-01", periods=75, freq="D", tz="UTC")
    )
    return {"last": m.ohlcv, "mark": m.mark, "funding": m.funding, "macro": macro}


def _frame(d: dict[str, pd.DataFrame], end: pd.Timestamp | None = None) -> pd.DataFrame:
    def cut(df: pd.DataFrame) -> pd.DataFrame:
        return df if end is None else df[df["ts"] <= end].reset_index(drop=True)

    macro = d["macro"] if end is None else d["macro"][d["macro"].index <= end]
    return market_frame(cut(d["last"]), cut(d["mark"]), cut(d["funding"]), macro)


def test_every_market_feature_at_t_is_what_the_bars_up_to_t_give(market) -> None:
    full = _frame(market)
    assert list(full.columns) == list(MARKET_COLUMNS)
    both = set(market["last"]["ts"]) & set(market["mark"]["ts"])  # a gap hour is no start
    late = full.iloc[24 * 35 :]
    late = late[late.index.isin(both)]
    assert len(late) > 24 * 35
    assert late.notna().all().all(), late.columns[late.isna().any()].tolist()
    for t in pd.to_datetime(["2023-02-10 07:00", "2023-02-28 00:00", "2023-03-15 16:00"], utc=True):
        upto = _frame(market, t)
        pd.testing.assert_series_equal(upto.loc[t], full.loc[t], rtol=1e-9)


def test_a_feature_that_read_a_later_bar_would_change_when_the_future_does(market) -> None:
    """Rewrite everything after t (prices halved, volumes tripled, funding flipped, the macro
    signal reversed): no feature at t or before moves, and the features after it do."""
    t = pd.Timestamp("2023-03-01 12:00", tz="UTC")
    changed = {k: v.copy() for k, v in market.items()}
    for k in ("last", "mark"):
        later = changed[k]["ts"] > t
        changed[k].loc[later, ["open", "high", "low", "close"]] *= 0.5
        changed[k].loc[later, "volume"] *= 3
    changed["funding"].loc[changed["funding"]["ts"] > t, "funding_rate"] *= -1
    changed["macro"][changed["macro"].index > t.normalize() - pd.Timedelta(days=1)] *= -1
    a, b = _frame(market), _frame(changed)
    pd.testing.assert_frame_equal(a.loc[:t], b.loc[:t])
    moved = (a.loc[t + pd.Timedelta(hours=1) :] - b.loc[t + pd.Timedelta(hours=1) :]).abs()
    for col in ("rv_24h", "trend_24h", "drawdown_30d", "funding_rate", "volume_shock", "macro"):
        assert moved[col].max() > 0, col


def test_order_features_turn_the_market_to_the_side(market) -> None:
    mk = _frame(market)
    t = pd.Timestamp("2023-03-01 12:00", tz="UTC")
    rows = pd.DataFrame(
        {
            "ts": [t, t, t],
            "side": ["long", "short", "long"],
            "leverage": [10, 10, 20],
            "horizon": [24, 24, 72],
            "engine": [0.1, 0.2, 0.0],
            "baseline": [0.05, 0.3, 1.0],
            "sigma2": [1e-4, 1e-4, 4e-4],
            "log_barrier": [-0.09, 0.09, -0.045],
        }
    )
    f = order_features(rows, mk)
    assert list(f.columns) == list(ALL_COLUMNS)
    assert f["distance_garch"].tolist() == pytest.approx(
        [0.09 / (0.01 * np.sqrt(24)), 0.09 / (0.01 * np.sqrt(24)), 0.045 / (0.02 * np.sqrt(72))]
    )
    assert (
        f.loc[0, "momentum_24h_side"] == -f.loc[1, "momentum_24h_side"] == mk.loc[t, "momentum_24h"]
    )
    assert f.loc[0, "adverse_30d"] == mk.loc[t, "drawdown_30d"] <= 0
    assert f.loc[1, "adverse_30d"] == -mk.loc[t, "runup_30d"] <= 0
    assert np.isfinite(f["logit_engine"]).all() and np.isfinite(f["logit_baseline"]).all()


def test_one_order_vector_is_the_frame_row(market) -> None:
    from bti_core.risk.features import order_vector

    mk = _frame(market)
    rng = np.random.default_rng(5)
    n = 200
    ts = mk.index[rng.integers(0, len(mk), n)]
    rows = pd.DataFrame(
        {
            "ts": ts,
            "side": rng.choice(["long", "short"], n),
            "leverage": rng.choice([3.0, 10.0, 25.0, 50.0], n),
            "horizon": rng.choice([6.0, 24.0, 168.0], n),
            "engine": rng.uniform(0, 1, n),
            "baseline": np.r_[0.0, rng.uniform(0, 1, n - 1)],  # 0 clipped like the frame's
            "sigma2": np.r_[0.0, rng.uniform(1e-6, 1e-4, n - 1)],  # 0: no distance, NaN
            "log_barrier": rng.uniform(-0.3, 0.3, n),
        }
    )
    frame = order_features(rows, mk).to_numpy(dtype=float)
    numbers = rows.drop(columns=["ts", "side"]).to_dict("records")
    for i, (r, kw) in enumerate(zip(rows.itertuples(), numbers, strict=True)):
        x = order_vector(mk.loc[r.ts].to_dict(), side=1 if r.side == "long" else -1, **kw)
        np.testing.assert_allclose(x, frame[i], rtol=1e-12, equal_nan=True, err_msg=f"row {i}")
    assert np.isnan(frame[0]).any()  # the rows with early (unwarmed) hours and σ² = 0 do hold NaN
