"""`bti backtest --prob ml|blend`: a learned model retrained on the past only at each refit,
judged by the backtest's own table, verdict and reliability diagram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bti_core.cli import app
from bti_core.risk.backtest import summarise
from bti_core.risk.backtest_report import format_report
from bti_core.risk.learned_backtest import blend, retrained_probabilities
from bti_core.risk.models import Candidate
from tests.risk.conftest import SMALL

LOGISTIC = Candidate("logistic", True)


def _first_window(frame: pd.DataFrame, min_train_days: int, refit_days: int) -> np.ndarray:
    t = pd.DatetimeIndex(frame["ts"])
    start = t.min() + pd.Timedelta(days=min_train_days)
    return np.asarray((t >= start) & (t < start + pd.Timedelta(days=refit_days)))


def test_a_refit_learns_only_outcomes_known_at_its_time(training: pd.DataFrame) -> None:
    kw = {"refit_days": 30, "min_train_days": 90, "max_rows": 20_000}
    t = pd.DatetimeIndex(training["ts"])
    # up to the end of the first refit's month: one refit to check (the later ones alike)
    training = training[t < t.min() + pd.Timedelta(days=120)].reset_index(drop=True)
    p = retrained_probabilities(training, LOGISTIC, **kw)
    t = pd.DatetimeIndex(training["ts"])
    first = t.min() + pd.Timedelta(days=90)
    assert np.isnan(p[np.asarray(t < first)]).all()  # nothing before the first fit
    window = _first_window(training, 90, 30)
    assert np.isfinite(p[window]).all() and ((p[window] > 0) & (p[window] < 1)).all()
    label_end = t + pd.to_timedelta(training["horizon"], unit="h")
    # every outcome not yet known at the first refit, inverted: its predictions stay the same
    future = training.copy()
    unknown = np.asarray(label_end > first)
    future.loc[unknown, "liquidated"] = 1 - future.loc[unknown, "liquidated"]
    q = retrained_probabilities(future, LOGISTIC, **kw)
    np.testing.assert_allclose(q[window], p[window])
    # the same inversion of outcomes that were known changes them: the check can fail
    past = training.copy()
    known = ~unknown
    past.loc[known, "liquidated"] = 1 - past.loc[known, "liquidated"]
    r = retrained_probabilities(past, LOGISTIC, **kw)
    assert np.abs(r[window] - p[window]).max() > 0.01


def test_the_blend_lies_between_its_two_probabilities() -> None:
    e = np.array([0.01, 0.2, 0.5, 0.9])
    m = np.array([0.04, 0.05, 0.5, 0.6])
    b = blend(e, m)
    assert (b >= np.minimum(e, m) - 1e-12).all() and (b <= np.maximum(e, m) + 1e-12).all()
    assert b[0] == pytest.approx(1 / (1 + np.sqrt((0.99 / 0.01) * (0.96 / 0.04))))


def test_a_blend_is_judged_by_the_same_table(training: pd.DataFrame) -> None:
    pred = training.assign(
        n_paths=2_000, blend=blend(training["engine"].to_numpy(), training["baseline"].to_numpy())
    )
    res = summarise(pred, SMALL, prob="blend")
    assert res.summary_line().startswith("backtest: blend brier=")
    cell = res.cells.iloc[0]
    assert cell["ratio"] == pytest.approx(cell["realised"] / cell["blend_mean"])
    assert {"engine_auc", "baseline_auc", "blend_auc"} <= set(res.cells.columns)
    text = format_report(res)
    pooled = next(line for line in text.splitlines() if line.startswith("pooled:"))
    assert " real/blend " in text and "blend=" in pooled and "engine=" in pooled


@pytest.mark.slow
def test_cli_judges_a_learned_model_like_the_engine(model_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["backtest", "--data", str(model_folder), "--stride", "24", "--paths", "1000"]
    out = runner.invoke(
        app,
        [
            *args,
            "--prob",
            "ml",
            "--candidate",
            "logistic+engine",
            "--train-days",
            "60",
            "--json",
            str(tmp_path / "ml.json"),
            "--plot",
            str(tmp_path / "ml.html"),
        ],
    )
    assert out.exit_code == 0, out.output
    verdict = out.output.strip().splitlines()[-1]
    assert verdict.startswith("backtest: ml brier=") and "| engine brier=" in verdict
    assert "logistic+engine, retrained every 30 days" in out.output
    res = json.loads((tmp_path / "ml.json").read_text())
    assert res["prob"] == "ml"
    cell = res["cells"][0]
    for name in ("ml", "engine", "baseline"):
        assert 0 <= cell[f"{name}_mean"] <= 1 and f"{name}_auc" in cell
    assert cell["ratio"] == pytest.approx(cell["realised"] / cell["ml_mean"])
    assert "realised liquidation rate" in (tmp_path / "ml.html").read_text()
    out = runner.invoke(app, [*args, "--prob", "ml", "--candidate", "gbm"])
    assert out.exit_code == 2 and "unknown model 'gbm'" in out.output
    out = runner.invoke(app, [*args, "--prob", "ml", "--train-days", "400"])
    assert out.exit_code == 2 and "too little history to judge a learned model" in out.output
