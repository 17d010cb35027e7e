"""Learned models: purged walk-forward splits that cannot leak, calibration out of time, the
candidates fitted and scored end to end on a small demo folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bti_core.risk.features import ALL_COLUMNS
from bti_core.risk.models import Candidate, CellCalibrator, all_candidates, cell_of, fit_model
from bti_core.risk.predictor import RowPredictor
from bti_core.risk.walkforward import leave_one_out, purged_walk_forward


def _rows(hours: int, horizon: int = 24) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=hours, freq="1h", tz="UTC")
    return pd.DataFrame({"ts": ts, "horizon": horizon})


@pytest.mark.parametrize(("horizon", "embargo"), [(24, None), (72, None), (24, 100)])
def test_no_training_label_window_reaches_its_test_block(horizon: int, embargo: int | None) -> None:
    rows = _rows(24 * 60, horizon)
    folds = purged_walk_forward(rows["ts"], rows["horizon"], n_folds=4, embargo_hours=embargo)
    assert len(folds) == 4
    gap = pd.Timedelta(hours=embargo or horizon)
    for f in folds:
        train_end = rows["ts"].iloc[f.train] + pd.to_timedelta(horizon, unit="h")
        test_start = rows["ts"].iloc[f.test].min()
        assert (train_end + gap <= test_start).all()  # purged and embargoed
        assert rows["ts"].iloc[f.train].max() < test_start  # walk-forward: the past only
        # and it is not emptier than it must be: the last training row is right at the edge
        assert train_end.max() + gap > test_start - pd.Timedelta(hours=1)
    tests = np.concatenate([f.test for f in folds])
    assert len(np.unique(tests)) == len(tests)  # each row tested once


def test_a_split_that_leaked_would_be_caught() -> None:
    """The check above on a split made the naive way (train on everything before the test
    block): the last day's labels overlap the test block and the check fails."""
    rows = _rows(24 * 60)
    start = rows["ts"].iloc[24 * 30]
    naive_train = rows["ts"][rows["ts"] < start]
    assert not (naive_train + pd.Timedelta(hours=24) <= start).all()


def test_the_embargo_is_at_least_the_horizon() -> None:
    rows = _rows(24 * 30, 72)
    with pytest.raises(ValueError, match="at least the longest label horizon"):
        purged_walk_forward(rows["ts"], rows["horizon"], embargo_hours=24)
    with pytest.raises(ValueError, match="too little history"):
        purged_walk_forward(rows["ts"].iloc[:50], rows["horizon"].iloc[:50], n_folds=4)


def test_a_year_left_out_is_purged_on_both_sides() -> None:
    ts = pd.date_range("2020-06-01", "2022-06-01", freq="6h", tz="UTC")
    frame = pd.DataFrame({"ts": ts, "horizon": 72, "symbol": "BTCUSDT"})
    folds = {f.name: f for f in leave_one_out(frame, "year")}
    assert sorted(folds) == ["2020", "2021", "2022"]
    f = folds["2021"]
    test_t = frame["ts"].iloc[f.test]
    train_t = frame["ts"].iloc[f.train]
    assert test_t.dt.year.eq(2021).all()
    before = train_t[train_t < test_t.min()]
    after = train_t[train_t > test_t.max()]
    assert (before + pd.Timedelta(hours=72 + 72) <= test_t.min()).all()
    assert (after > test_t.max() + pd.Timedelta(hours=72)).all()
    assert len(before) and len(after)


def test_cells_cover_any_order() -> None:
    cells = cell_of(["long", "short", "long"], [7, 10, 125], [36, 24, 720])
    assert cells.tolist() == [100, 10, 132]
    assert cell_of(np.array([1.0, -1.0]), [5, 50], [24, 168]).tolist() == [100, 32]


def test_calibration_is_isotonic_where_a_cell_has_many_events_and_platt_where_few() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    score = rng.uniform(0.01, 0.6, n)
    cells = np.where(np.arange(n) < n - 400, 100, 110)  # a large cell and a small one
    y = (rng.uniform(size=n) < score**2).astype(int)  # the score is too high: needs a map
    cal = CellCalibrator().fit(score, y, cells)
    assert cal.methods() == {100: "isotonic", 110: "platt"}
    p = cal.predict(score, cells)
    big = cells == 100
    assert p[big].mean() == pytest.approx(y[big].mean(), rel=0.05)
    assert p[~big].mean() == pytest.approx(y[~big].mean(), rel=0.3)
    # an order in a cell it never saw gets its side's pooled map, not the raw score
    unseen = cal.predict(np.array([0.5]), np.array([132]))
    assert unseen[0] == pytest.approx(0.25, abs=0.08)


def test_unknown_candidates_are_refused_with_the_list() -> None:
    assert Candidate.parse("forest+engine") == Candidate("forest", True)
    with pytest.raises(ValueError, match=r"unknown model 'xgboost'.*logistic, logistic\+engine"):
        Candidate.parse("xgboost")
    assert len(all_candidates()) == 10


def test_training_set_rows_and_labels(training: pd.DataFrame) -> None:
    assert set(ALL_COLUMNS) <= set(training.columns)
    assert set(training["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    assert training["ts"].is_monotonic_increasing
    assert 0.02 < training["liquidated"].mean() < 0.8
    assert training[list(ALL_COLUMNS)].notna().mean().min() > 0.95


@pytest.mark.parametrize("kind", ["logistic", "forest", "svm", "boosting", "mlp"])
def test_each_candidate_fits_and_predicts_probabilities(training: pd.DataFrame, kind: str) -> None:
    # every other row is enough to learn from and halves the fit (the registry's tests fit
    # on all of it)
    model = fit_model(training.iloc[::2], Candidate(kind, stacked=kind in ("logistic", "boosting")))  # type: ignore[arg-type]
    p = model.predict(training)
    assert np.isfinite(p).all() and (p > 0).all() and (p < 1).all()
    # it learned something: 50× positions are liquidated far more often than 10× ones
    assert p[training["leverage"] == 50].mean() > 2 * p[training["leverage"] == 10].mean()
    # the quote's one-order path (plain numpy, no pipeline) gives the same probabilities
    row = RowPredictor(model)
    some = training.sample(300, random_state=1)
    some.loc[some.index[:20], "rsi_side"] = np.nan  # imputed the same way too
    expected = model.predict(some)
    got = [
        row(
            x,
            side=1 if s == "long" else -1,
            leverage=lev,
            horizon=h,
        )
        for x, s, lev, h in zip(
            some[list(ALL_COLUMNS)].to_numpy(dtype=float),
            some["side"],
            some["leverage"],
            some["horizon"],
            strict=True,
        )
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="lack the model's features: distance_garch"):
        model.predict(training.drop(columns=["distance_garch"]))


def test_crossfit_calibration_scores_each_block_with_a_model_of_the_past(training) -> None:
    cand = Candidate("logistic", True)
    recent = fit_model(training, cand, calibration="recent")
    cross = fit_model(training, cand, calibration="crossfit")
    p_recent, p_cross = recent.predict(training), cross.predict(training)
    assert np.isfinite(p_cross).all() and not np.allclose(p_recent, p_cross)
    # the calibrator saw two thirds of the time instead of a fifth: more cells have a map
    assert len(cross.calibrator.maps) >= len(recent.calibrator.maps)
    with pytest.raises(ValueError, match="calibration must be recent or crossfit"):
        fit_model(training, cand, calibration="isotonic")  # type: ignore[arg-type]
