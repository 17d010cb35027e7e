"""Forecasts: Prophet fitted and sampled with a fixed seed, the naive forecasters on series
whose answer is known, the scores, the disk cache, and `bti forecast`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

from bti_core.cli import app
from bti_core.risk import forecast as fc
from bti_core.risk import forecast_evaluation as fe
from bti_core.risk import forecast_store as fs


def _series(log_p: np.ndarray, start: str = "2023-01-01") -> pd.Series:
    idx = pd.date_range(start, periods=len(log_p), freq="h", tz="UTC")
    return pd.Series(np.exp(log_p), index=idx)


def _gbm(hours: int, sigma: float, seed: int) -> pd.Series:
    r = np.random.default_rng(seed).normal(0, sigma, hours)
    return _series(np.log(100.0) + np.cumsum(r))


def test_crps_of_samples_is_the_normal_closed_form() -> None:
    x = np.random.default_rng(1).standard_normal(200_000)
    for y in (0.0, 0.7, -2.0):
        exact = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / np.sqrt(np.pi)
        assert fe.crps(x, y) == pytest.approx(exact, abs=3e-3)
    assert fe.crps(np.full(10, 3.0), 1.0) == pytest.approx(2.0)  # a point forecast: |x − y|


def test_prophet_learns_a_trend_and_a_daily_cycle_with_a_fixed_seed() -> None:
    hours = 24 * 60
    t = np.arange(hours + 168)
    rng = np.random.default_rng(7)
    log_p = (
        np.log(100.0)
        + 0.0004 * t  # about +1 % a day
        + 0.01 * np.sin(2 * np.pi * t / 24)
        + rng.normal(0, 0.002, len(t))
    )
    past = _series(log_p[:hours])
    a = fc.forecast(past, "price", "prophet", horizons=(6, 24, 168), window_days=60, seed=5)
    b = fc.forecast(past, "price", "prophet", horizons=(6, 24, 168), window_days=60, seed=5)
    np.testing.assert_array_equal(a.samples, b.samples)  # the same seed, the same forecast
    c = fc.forecast(past, "price", "prophet", horizons=(6, 24, 168), window_days=60, seed=6)
    assert not np.array_equal(a.samples, c.samples)
    truth = np.exp(log_p[hours - 1 + np.array([6, 24, 168])])
    med = a.frame()["median"].to_numpy()
    np.testing.assert_allclose(med, truth, rtol=0.01)  # trend and cycle carried forward
    rw = fc.forecast(past, "price", "random_walk", horizons=(6, 24, 168), window_days=60)
    for j in range(3):  # where the future has a shape, Prophet beats the random walk
        y = np.log(truth[j])
        assert fe.crps(np.log(a.samples[j]), y) < fe.crps(np.log(rw.samples[j]), y)
    f = a.frame()
    assert (f["lo95"] < f["lo80"]).all() and (f["lo80"] < f["median"]).all()
    assert (f["median"] < f["hi80"]).all() and (f["hi80"] < f["hi95"]).all()


def test_prophet_volatility_follows_an_intraday_cycle() -> None:
    hours = 24 * 60
    t = np.arange(hours)
    sigma = 0.004 * np.exp(0.6 * np.sin(2 * np.pi * t / 24))  # vol peaks at 06:00 each day
    r = np.random.default_rng(3).standard_normal(hours) * sigma
    past = _series(np.log(100.0) + np.cumsum(r))  # origin 23:00
    f = fc.forecast(past, "vol", "prophet", horizons=(1, 7, 13, 19), window_days=60, seed=1)
    # the expected variance over the next h hours, from the true σ: the forecast follows its
    # shape and level (the median of one hour's χ²₁ would sit at 0.67 σ, so compare the mean)
    true_sigma = 0.004 * np.exp(0.6 * np.sin(2 * np.pi * (hours + np.arange(19)) / 24))
    truth = [np.sqrt(8760 * np.mean(true_sigma[:h] ** 2)) for h in (1, 7, 13, 19)]
    rms = np.sqrt((f.samples**2).mean(axis=1))
    np.testing.assert_allclose(rms, truth, rtol=0.2)
    ewma = fc.forecast(past, "vol", "ewma", horizons=(1, 7, 13, 19), window_days=60)
    assert np.ptp(np.sqrt((ewma.samples**2).mean(axis=1))) < 0.2 * np.ptp(rms)  # flat


@pytest.mark.parametrize("name", ["ewma", "garch", "har"])
def test_naive_volatility_forecasts_find_a_constant_volatility(name: str) -> None:
    s = _gbm(24 * 90, 0.005, seed=11)
    f = fc.forecast(s, "vol", name, horizons=(24, 168), window_days=90)
    true = 0.005 * np.sqrt(8760)
    np.testing.assert_allclose(f.frame()["median"].to_numpy(), true, rtol=0.15)


def test_evaluation_on_a_random_walk_covers_its_intervals() -> None:
    closes = {"AAAUSDT": _gbm(24 * 200, 0.004, seed=2), "BBBUSDT": _gbm(24 * 200, 0.008, seed=3)}
    rep = fe.evaluate(
        closes,
        forecasters={"price": ["random_walk"], "vol": ["ewma", "har"]},
        horizons=(1, 24),
        window_days=60,
        step_days=2,
    )
    s = rep.scores.set_index(["target", "forecaster", "horizon"])
    for h in (1, 24):
        row = s.loc[("price", "random_walk", h)]
        assert row["n"] > 80
        assert 0.7 <= row["cover80"] <= 0.9 and 0.88 <= row["cover95"] <= 1.0
        assert 0.7 <= row["mase"] <= 1.3  # as good as doing nothing, by construction
        assert row["crps_ratio"] == pytest.approx(1.0)
    assert rep.best["price"] == "random_walk" and rep.best["vol"] in ("ewma", "har")
    assert rep.verdicts == []  # no Prophet in this run, nothing to say about it
    text = fe.format_report(rep)
    assert "best: price → random_walk" in text


def test_bad_inputs_say_what_is_allowed() -> None:
    s = _gbm(24 * 40, 0.004, seed=1)
    with pytest.raises(ValueError, match="choose one of random_walk, prophet"):
        fc.forecast(s, "price", "garch")
    with pytest.raises(ValueError, match="the targets are price and vol"):
        fc.forecast(s, "volume", "ewma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs at least 720"):
        fc.forecast(s.iloc[:500], "vol", "ewma")
    with pytest.raises(ValueError, match="too little history to evaluate"):
        fe.evaluate({"AAAUSDT": s}, window_days=90)


def test_forecasts_are_cached_and_pages_read_the_best_forecaster(tmp_path: Path) -> None:
    s = _gbm(24 * 100, 0.004, seed=4)
    assert fs.cached(tmp_path, "AAAUSDT", "price") is None
    a = fs.refresh(tmp_path, "AAAUSDT", s, "price")
    assert a.forecaster == "random_walk"  # no evaluation here: the development data's winner
    assert fs.best_forecaster(tmp_path, "vol") == "har"
    files = list(tmp_path.glob("AAAUSDT_price_random_walk_*.json"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    b = fs.refresh(tmp_path, "AAAUSDT", s, "price")
    assert files[0].stat().st_mtime_ns == stamp  # read, not refitted
    np.testing.assert_allclose(a.samples, b.samples)
    c = fs.cached(tmp_path, "AAAUSDT", "price")
    assert c is not None and c.origin == a.origin
    files[0].write_text("{ torn")  # a damaged file is refitted, not served
    d = fs.refresh(tmp_path, "AAAUSDT", s, "price")
    np.testing.assert_allclose(d.samples, a.samples)
    fs.refresh(tmp_path, "AAAUSDT", s.iloc[:-1], "price")  # an hour earlier: another file…
    fs.refresh(tmp_path, "AAAUSDT", s, "price")  # …swept when the next is written
    assert len(list(tmp_path.glob("AAAUSDT_price_random_walk_*.json"))) == 1
    (tmp_path / "skill.json").write_text(json.dumps({"best": {"vol": "har", "price": "bogus"}}))
    assert fs.best_forecaster(tmp_path, "vol") == "har"
    assert fs.best_forecaster(tmp_path, "price") == "random_walk"  # not a forecaster: ignored


@pytest.mark.slow
def test_cli_evaluates_then_forecasts_with_the_best(
    model_folder: Path, tmp_path: Path, data_dir: Path
) -> None:
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "forecast",
            "--evaluate",
            "--data",
            str(model_folder),
            "--target",
            "vol",
            "--step-days",
            "20",
            "--window-days",
            "60",
            "--json",
            str(tmp_path / "eval.json"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "Prophet" in out.output and "MASE" in out.output
    res = json.loads((tmp_path / "eval.json").read_text())
    best = res["best"]["vol"]
    assert best in fc.FORECASTERS["vol"]
    assert {r["forecaster"] for r in res["scores"]} == set(fc.FORECASTERS["vol"])
    assert (data_dir / "forecasts" / "skill.json").is_file()
    note = fs.skill_note(data_dir / "forecasts", "vol", best)
    assert note.startswith("In the last evaluation (") and "BTCUSDT, ETHUSDT" in note
    assert "the best of the others" in note and "at 24 h its CRPS was" in note
    assert runner.invoke(app, ["ingest", str(model_folder)]).exit_code == 0
    out = runner.invoke(app, ["forecast", "BTCUSDT", "--target", "vol"])
    assert out.exit_code == 0, out.output
    assert f"by {best}" in out.output and "168" in out.output
    out = runner.invoke(app, ["forecast", "BTCUSDT", "--forecaster", "garch"])  # vol's only
    assert out.exit_code == 0 and "by garch" in out.output and "mark price" not in out.output
    assert list((data_dir / "forecasts").glob(f"BTCUSDT_vol_{best}_*.json"))
    for args, message in (
        (["forecast", "BTCUSDT", "--forecaster", "arima"], "for vol: ewma, garch, har"),
        (["forecast", "BTCUSDT", "--target", "price", "--forecaster", "har"], "choose one of"),
        (["forecast", "--evaluate"], "--evaluate needs --data"),
        (["forecast", "DOGEUSDT"], "DOGEUSDT: no bars stored"),
        (["forecast", "--evaluate", "--data", str(model_folder), "XRPUSDT"], "no mark bars"),
        (["forecast", "not a symbol!"], "unknown symbol"),
    ):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and message in out.output, (args, out.output)
