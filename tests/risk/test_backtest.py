"""The walk-forward backtest: its pieces against hand computations, and a small run end to end
on demo markets written in the development data's format."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bti_core.cli import app
from bti_core.market.folders import load_folder
from bti_core.market.identify import identify
from bti_core.market.schema import Kind
from bti_core.market.sources import read_source, write_normalised_csv
from bti_core.market.synthetic import generate_demo_markets
from bti_core.risk.backtest import (
    BacktestConfig,
    _future_extremes,
    ratio_interval,
    run_backtest,
    summarise,
)
from bti_core.risk.backtest_chart import calibration_figure
from bti_core.risk.backtest_report import format_report


def test_future_extremes_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    low, high = rng.random(50), rng.random(50) + 1
    f_low, f_high = _future_extremes(low, high, 5)
    for t in range(50):
        if t + 5 < 50:
            assert f_low[t] == low[t + 1 : t + 6].min() and f_high[t] == high[t + 1 : t + 6].max()
        else:
            assert np.isnan(f_low[t])


def test_scores_calibration_and_book() -> None:
    ts = pd.date_range("2021-01-01", periods=400, freq="6h", tz="UTC")
    y = np.zeros(400, dtype=np.int8)
    y[::10] = 1  # realised 10 %
    pred = pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "ts": ts,
            "side": "long",
            "leverage": 10,
            "horizon": 24,
            "engine": 0.1,
            "baseline": 0.02,
            "liquidated": y,
            "n_paths": 10_000,
        }
    )
    rare = pred.assign(
        leverage=50, liquidated=np.int8(0), engine=0.001
    )  # realised 0 %: not counted
    res = summarise(pd.concat([pred, rare], ignore_index=True), BacktestConfig())
    cell = res.cells[res.cells["leverage"] == 10].iloc[0]
    assert cell["ratio"] == pytest.approx(1.0)
    assert cell["engine_brier"] == pytest.approx(0.1 * 0.81 + 0.9 * 0.01)
    assert cell["engine_logloss"] == pytest.approx(-(0.1 * np.log(0.1) + 0.9 * np.log(0.9)))
    assert (res.calibrated, len(res.counted)) == (1, 1)
    assert res.pooled["engine_brier"] < res.pooled["baseline_brier"]
    assert set(res.by_year["year"]) == {2021}
    assert res.worst_drawdown >= 0
    assert cell["engine_auc"] == 0.5  # one probability for every start: no ranking at all
    assert np.isnan(res.cells[res.cells["leverage"] == 50].iloc[0]["engine_auc"])  # no events
    line = res.summary_line()
    assert re.fullmatch(
        r"backtest: engine brier=[\d.]+ logloss=[\d.]+ \| baseline brier=[\d.]+ logloss=[\d.]+ "
        r"\| calibrated cells 1/1",
        line,
    )


def test_within_cell_auc_is_mann_whitney() -> None:
    from sklearn.metrics import roc_auc_score

    from bti_core.risk.backtest import _auc

    rng = np.random.default_rng(1)
    p = rng.uniform(size=500).round(2)  # ties count half
    y = (rng.uniform(size=500) < p).astype(float)
    assert _auc(p, y) == pytest.approx(roc_auc_score(y, p))
    assert _auc(y, y) == 1.0 and _auc(-y, y) == 0.0


def _cell(monthly_hits: list[int], per_month: int = 100, p: float = 0.02) -> pd.DataFrame:
    """A cell with ``per_month`` positions a month predicted at ``p``, of which the first
    ``monthly_hits[m]`` of month m were liquidated."""
    frames = []
    for m, hits in enumerate(monthly_hits):
        ts = pd.date_range(f"2021-{m + 1:02d}-01", periods=per_month, freq="6h", tz="UTC")
        y = np.zeros(per_month, dtype=np.int8)
        y[:hits] = 1
        frames.append(pd.DataFrame({"symbol": "BTCUSDT", "ts": ts, "liquidated": y, "engine": p}))
    return pd.concat(frames, ignore_index=True)


def test_ratio_interval_collapses_when_every_month_agrees() -> None:
    lo, hi = ratio_interval(_cell([3] * 12))  # 3 of 100 at 2 %: ratio 1.5 every month
    assert lo == pytest.approx(1.5) and hi == pytest.approx(1.5)


def test_ratio_interval_resamples_months_not_positions() -> None:
    # 24 liquidations in one month of twelve (one crash): the point ratio is 1.0, but a year
    # without that month is as likely as one with it twice, so the interval must span both
    clustered = _cell([24] + [0] * 11)
    lo, hi = ratio_interval(clustered)
    assert lo == 0.0 and hi >= 2.0
    # the same 24 spread two a month: the ratio is the same, the interval tight
    lo_s, hi_s = ratio_interval(_cell([2] * 12))
    assert lo_s == hi_s == pytest.approx(1.0)
    assert ratio_interval(clustered) == (lo, hi)  # seeded: the report does not flicker


def test_report_marks_each_cell() -> None:
    res = summarise(
        pd.concat(
            [
                _cell([2] * 12).assign(side="long", leverage=10, horizon=24),  # ratio 1.0
                _cell([5] * 12).assign(side="short", leverage=10, horizon=24),  # 2.5
                _cell([0] * 12, p=0.001).assign(side="long", leverage=50, horizon=24),  # rare
            ],
            ignore_index=True,
        ).assign(baseline=0.01, n_paths=10_000),
        BacktestConfig(),
    )
    rows = {ln.split()[0] + ln.split()[1]: ln for ln in format_report(res).splitlines()[1:4]}
    assert "1.00–1.00" in rows["long10"] and rows["long10"].split()[8] == "ok"
    assert rows["short10"].split()[8] == "MISS" and rows["long50"].split()[8] == "-"
    assert res.summary_line().endswith("calibrated cells 1/2")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bars")
    m = generate_demo_markets(start="2023-01-01", periods=24 * 200, seed=12)["BTCUSDT"]
    write_normalised_csv(m.ohlcv, d / "BTCUSDT_1h_ohlcv.csv.gz", Kind.OHLCV)
    write_normalised_csv(m.mark, d / "BTCUSDT_1h_mark.csv.gz", Kind.MARK)
    write_normalised_csv(m.funding, d / "BTCUSDT_1h_funding_rate.csv.gz", Kind.FUNDING)
    return d


def test_small_run_end_to_end(folder: Path) -> None:
    cfg = BacktestConfig(
        stride_hours=24, refit_days=60, min_history_days=60, n_paths=2_000, variance_levels=5
    )
    res = run_backtest(folder, cfg)
    assert len(res.cells) == 2 * 4 * 3
    p = res.predictions
    assert p["engine"].between(0, 1).all() and p["baseline"].between(0, 1).all()
    assert p["ts"].min() >= pd.Timestamp("2023-03-02", tz="UTC")  # only after min history
    # every prediction's window ends inside the data (outcomes are known)
    assert (p["ts"] + pd.to_timedelta(p["horizon"], unit="h")).max() <= pd.Timestamp(
        "2023-07-20", tz="UTC"
    )
    high = p[(p["leverage"] == 50) & (p["horizon"] == 168)]["engine"].mean()
    low = p[(p["leverage"] == 5) & (p["horizon"] == 24)]["engine"].mean()
    assert high > low


def test_reliability_diagram_draws_each_cell_where_it_stands() -> None:
    cells = summarise(
        pd.concat(
            [
                _cell([2] * 6 + [3] * 6).assign(side="long", leverage=10, horizon=24),
                _cell([5] * 12).assign(side="short", leverage=5, horizon=72),
                _cell([0] * 12, p=0.001).assign(side="short", leverage=50, horizon=24),
            ],
            ignore_index=True,
        ).assign(baseline=0.01, n_paths=10_000),
        BacktestConfig(),
    ).cells
    fig = calibration_figure(cells, title="engine | baseline | cells 1/2")
    assert fig.layout.title.text == "engine<br>baseline<br>cells 1/2"
    engine = {t.name: t for t in fig.data if t.name.endswith("engine")}
    long, short = engine["long: engine"], engine["short: engine"]
    c = cells.set_index("side")
    assert long.x[0] == pytest.approx(0.02) and long.y[0] == pytest.approx(c.at["long", "realised"])
    # the bar spans the ratio's interval, as realised rates at the engine's prediction
    top = long.y[0] + long.error_y.array[0]
    bottom = long.y[0] - long.error_y.arrayminus[0]
    assert (top, bottom) == pytest.approx(
        (0.02 * c.at["long", "ratio_hi"], 0.02 * c.at["long", "ratio_lo"])
    )
    assert top > bottom  # months disagree (2 and 3 hits): a real interval
    # the rare cell (no liquidations: not counted) is faint and sits on the axis floor
    rare = list(short.x).index(pytest.approx(0.001))
    assert short.marker.opacity[rare] < 1 and short.y[rare] == pytest.approx(1e-4)
    assert len([t for t in fig.data if t.name.endswith("baseline")]) == 2
    with pytest.raises(ValueError, match="no cells"):
        calibration_figure(cells.iloc[:0])


def test_cli_prints_the_verdict_and_writes_json(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt.json"
    res = CliRunner().invoke(
        app,
        [
            "backtest",
            "--data",
            str(folder),
            "--stride",
            "48",
            "--paths",
            "2000",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("backtest: engine brier=")
    payload = json.loads(
        out.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}")
    )
    assert len(payload["cells"]) == 24 and "pooled" in payload


def test_cli_writes_a_reliability_diagram_that_opens_offline(folder: Path, tmp_path: Path) -> None:
    args = ["backtest", "--data", str(folder), "--stride", "96", "--paths", "1000"]
    out = tmp_path / "cal.html"
    res = CliRunner().invoke(app, [*args, "--plot", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "realised liquidation rate" in html and "calibrated cells" in html
    # plotly.js is inlined (megabytes of it), not fetched: the file opens without a network
    assert "<script src=" not in html and len(html) > 1_000_000
    for bad, says in (
        (tmp_path / "cal.png", "givea file ending in.html"),
        (tmp_path / "nowhere" / "cal.html", "nofolder"),
    ):
        res = CliRunner().invoke(app, [*args, "--plot", str(bad)])
        assert res.exit_code == 2 and not bad.exists()
        assert "".join(says.split()) in _unboxed(res.output), res.output


def test_cli_refuses_an_empty_folder(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["backtest", "--data", str(tmp_path)])
    assert res.exit_code == 2
    assert "noSYMBOL_<timeframe>_ohlcvandSYMBOL_<timeframe>_markpairsfound" in "".join(
        res.output.split()
    )


@pytest.fixture(scope="module")
def quarter_hours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bars15m")
    m = generate_demo_markets(start="2023-01-01", periods=4 * 24 * 130, timeframe="15m", seed=4)
    write_normalised_csv(m["ETHUSDT"].ohlcv, d / "ETHUSDT_15m_ohlcv.csv.gz", Kind.OHLCV)
    write_normalised_csv(m["ETHUSDT"].mark, d / "ETHUSDT_15m_mark.csv.gz", Kind.MARK)
    return d


def test_sub_hourly_bars_are_aggregated_to_hours(quarter_hours: Path) -> None:
    """15-minute files (no hourly ones): each hour's high is the max of its four bars, its low
    the min, open the first, close the last; hours only."""
    raw = read_source(identify(quarter_hours / "ETHUSDT_15m_mark.csv.gz"))
    last, mark = load_folder(quarter_hours)["ETHUSDT"]
    assert (mark["ts"].diff().dropna() == pd.Timedelta(hours=1)).all()
    hour = raw.groupby(raw["ts"].dt.floor("1h"))
    np.testing.assert_allclose(mark["high"], hour["high"].max().to_numpy())
    np.testing.assert_allclose(mark["low"], hour["low"].min().to_numpy())
    np.testing.assert_allclose(mark["open"], hour["open"].first().to_numpy())
    np.testing.assert_allclose(mark["close"], hour["close"].last().to_numpy())
    assert len(last) == len(mark)


def test_sub_hourly_backtest_equals_the_hourly_one(quarter_hours: Path, tmp_path: Path) -> None:
    """The same market as 15-minute bars or as their hourly aggregate: the same predictions and
    outcomes (a liquidation inside an hour is seen either way)."""
    last, mark = load_folder(quarter_hours)["ETHUSDT"]
    write_normalised_csv(last, tmp_path / "ETHUSDT_1h_ohlcv.csv", Kind.OHLCV)
    write_normalised_csv(mark, tmp_path / "ETHUSDT_1h_mark.csv", Kind.MARK)
    cfg = BacktestConfig(
        stride_hours=24, refit_days=60, min_history_days=60, n_paths=1_000, variance_levels=3
    )
    fine = run_backtest(quarter_hours, cfg).predictions
    hourly = run_backtest(tmp_path, cfg).predictions
    assert len(fine) > 0 and fine["liquidated"].sum() > 0
    pd.testing.assert_frame_equal(fine, hourly)


@pytest.mark.slow
def test_cli_tries_engine_variants_and_refuses_unknown_ones(folder: Path) -> None:
    args = ["backtest", "--data", str(folder), "--stride", "96", "--paths", "1000"]
    variant = ["--model", "egarch", "--innovations", "fhs_state", "--window-days", "120"]
    res = CliRunner().invoke(app, [*args, *variant])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("backtest: engine brier=")
    bad = CliRunner().invoke(app, [*args, "--model", "heston"])
    assert bad.exit_code == 2
    assert "'heston'isnotoneof'gjr','egarch'" in _unboxed(bad.output)
    short = CliRunner().invoke(app, [*args, "--window-days", "7"])
    assert short.exit_code == 2 and "greaterthanorequalto30" in _unboxed(short.output)
    plain = ["--innovations", "fhs_block", "--mean", "zero"]
    seeded = [CliRunner().invoke(app, [*args, *plain, "--seed", str(s)]) for s in (1, 1, 2)]
    assert all(r.exit_code == 0 for r in seeded), seeded[0].output
    # the report, after the progress bar (whose time estimates differ from run to run)
    reports = [r.output[r.output.index("side ") :] for r in seeded]
    assert reports[0] == reports[1] != reports[2]
    bad_mean = CliRunner().invoke(app, [*args, "--mean", "median"])
    assert bad_mean.exit_code == 2
    assert "'median'isnotoneof'shrunk','zero','constant'" in _unboxed(bad_mean.output)


def _unboxed(text: str) -> str:
    """Rich's error panel without its border and line breaks."""
    return "".join(c for c in text if not c.isspace() and c != "│")


def _write_binance_months(bars: pd.DataFrame, folder: Path) -> None:
    """Bars as data.binance.vision lays them out: one zip per month, 12 columns, ms times."""
    folder.mkdir(parents=True, exist_ok=True)
    for month, g in bars.groupby(bars["ts"].dt.strftime("%Y-%m")):
        ms = g["ts"].astype("int64") // 1_000  # µs → ms
        rows = pd.DataFrame(
            {
                "open_time": ms,
                "open": g["open"],
                "high": g["high"],
                "low": g["low"],
                "close": g["close"],
                "volume": g["volume"],
                "close_time": ms + 3_599_999,
                "quote_volume": 0.0,
                "count": 0,
                "taker_buy_volume": 0.0,
                "taker_buy_quote_volume": 0.0,
                "ignore": 0,
            }
        )
        with zipfile.ZipFile(folder / f"BTCUSDT-1h-{month}.zip", "w") as z:
            z.writestr(f"BTCUSDT-1h-{month}.csv", rows.to_csv(index=False))


def test_binance_monthly_files_are_joined(folder: Path, tmp_path: Path) -> None:
    """The same market as one normalised file per kind or as Binance's monthly zips (klines and
    markPriceKlines folders): the same hourly bars."""
    one = load_folder(folder)["BTCUSDT"]
    raw = {
        kind: read_source(identify(folder / f"BTCUSDT_1h_{name}.csv.gz"))
        for kind, name in ((Kind.OHLCV, "ohlcv"), (Kind.MARK, "mark"))
    }
    monthly = tmp_path / "futures" / "um" / "monthly"
    _write_binance_months(raw[Kind.OHLCV], monthly / "klines" / "BTCUSDT" / "1h")
    _write_binance_months(raw[Kind.MARK], monthly / "markPriceKlines" / "BTCUSDT" / "1h")
    assert len(list(monthly.rglob("*.zip"))) >= 12
    joined = load_folder(tmp_path)["BTCUSDT"]
    for a, b in zip(one, joined, strict=True):
        pd.testing.assert_frame_equal(
            a[["ts", "open", "high", "low", "close"]], b[["ts", "open", "high", "low", "close"]]
        )
    # Binance's tree also holds index-price klines under the same names: they are left out
    # with a note, not read as trades
    index = raw[Kind.OHLCV].assign(close=raw[Kind.OHLCV]["close"] * 0.5)
    _write_binance_months(index, monthly / "indexPriceKlines" / "BTCUSDT" / "1h")
    notes: list[str] = []
    with_index = load_folder(tmp_path, notes)["BTCUSDT"]
    pd.testing.assert_frame_equal(with_index[0], joined[0])
    # one note for the lot, not one per monthly file
    assert len(notes) == 1 and "index-price klines" in notes[0], notes
    assert re.search(r"and \d+ more: not read", notes[0]), notes


def test_what_is_left_out_is_said(folder: Path, tmp_path: Path) -> None:
    """A downloaded folder holds more than bar pairs: files that are not bars, bars coarser
    than an hour, a symbol without mark prices, one with too little history. The run goes on
    with the rest and names each, in the report (before the verdict) and in the JSON."""
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "README.csv").write_text("this folder,holds bars\n1,2\n")
    m = generate_demo_markets(start="2023-01-01", periods=24 * 40, seed=3)["ETHUSDT"]
    write_normalised_csv(m.ohlcv, tmp_path / "ETHUSDT_1h_ohlcv.csv.gz", Kind.OHLCV)  # no mark
    write_normalised_csv(m.ohlcv, tmp_path / "SOLUSDT_1h_ohlcv.csv.gz", Kind.OHLCV)
    write_normalised_csv(m.mark, tmp_path / "SOLUSDT_1h_mark.csv.gz", Kind.MARK)  # 40 days
    four = (
        m.mark.set_index("ts")
        .resample("4h")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    )
    write_normalised_csv(four.reset_index(), tmp_path / "ADAUSDT_4h_mark.csv.gz", Kind.MARK)

    notes: list[str] = []
    assert set(load_folder(tmp_path, notes)) == {"BTCUSDT", "SOLUSDT"}
    assert any(n.startswith("README.csv: not read") for n in notes), notes
    assert any(n.startswith("ADAUSDT_4h_mark.csv.gz: not read (4h bars") for n in notes), notes
    assert any(n.startswith("ETHUSDT: left out, no mark-price bars") for n in notes), notes

    out = tmp_path / "bt.json"
    args = ["backtest", "--data", str(tmp_path), "--stride", "48", "--paths", "2000"]
    res = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("backtest: engine brier=")
    said = [ln for ln in lines if ln.startswith("skipped: ")]
    assert len(said) == 4, said
    assert any("SOLUSDT: left out, 40 days of bars; a start needs 90 days" in ln for ln in said)
    assert len(json.loads(out.read_text())["skipped"]) == 4


def test_a_folder_of_nothing_usable_says_what_it_saw(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    res = CliRunner().invoke(app, ["backtest", "--data", str(tmp_path)])
    assert res.exit_code == 2
    assert "notes.csv:notread" in "".join(res.output.split())


def test_backtest_at_a_refit_hour_is_the_live_engines_quote() -> None:
    """The backtest and the live engine build their paths by different code (a variance grid
    interpolated per start hour against one table from the last bar): at a refit hour both know
    the same bars, so every cell's probability must agree within the two Monte Carlo errors (and
    the one return by which their fit windows differ)."""
    from bti_core.risk.backtest import _symbol_predictions
    from bti_core.risk.engine import FIT_WINDOW, build_symbol_risk
    from bti_core.risk.liquidation import brackets_for, isolated_liquidation_price

    m = generate_demo_markets(start="2023-01-01", periods=24 * 230, seed=12)["BTCUSDT"]
    cfg = BacktestConfig(
        refit_days=400, min_history_days=200, n_paths=20_000, horizons=(24, 72, 168)
    )
    pred = _symbol_predictions("BTCUSDT", m.ohlcv, m.mark, cfg, None)
    t0 = pred["ts"].min()  # the refit hour: the first start
    assert t0 == pd.Timestamp("2023-07-20", tz="UTC")
    window = m.mark[(m.mark["ts"] <= t0) & (m.mark["ts"] > t0 - FIT_WINDOW)]
    live = build_symbol_risk("BTCUSDT", window.reset_index(drop=True), n_paths=20_000)
    entry = m.ohlcv.loc[m.ohlcv["ts"] == t0, "close"].to_numpy()
    rows = pred[pred["ts"] == t0]
    assert len(rows) == 24
    for row in rows.itertuples():
        side = 1 if row.side == "long" else -1
        lp = isolated_liquidation_price(entry, float(row.leverage), side, brackets_for("BTCUSDT"))
        p, se = live.probability(lp, row.horizon, side)
        se_both = np.hypot(se[0], np.sqrt(row.engine * (1 - row.engine) / cfg.n_paths))
        assert abs(row.engine - p[0]) <= 4 * se_both + 3e-3, row
