"""The probability surface read from one SymbolRisk, and the stored backtests' reliability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bti_core.analytics.surface import (
    SHIPPED,
    probability_surface,
    reliability,
    store_backtest,
    stored_backtests,
)
from bti_core.market.ingest import Ingestor
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine


@pytest.fixture(scope="module")
def risk(tmp_path_factory: pytest.TempPathFactory, demo: dict) -> RiskEngine:
    wh = Warehouse(tmp_path_factory.mktemp("wh"))
    ing = Ingestor(wh, None)
    m = demo["BTCUSDT"]
    m.ingest(ing, funding=False)
    return RiskEngine(wh, n_paths=4_000)


@pytest.mark.parametrize("side", [1, -1])
def test_the_surface_rises_with_leverage_and_horizon(risk: RiskEngine, side: int) -> None:
    sr = risk.symbol_risk("BTCUSDT")
    s = probability_surface(sr, side)
    eng = s.pivot(index="leverage", columns="horizon", values="engine").to_numpy()
    gbm = s.pivot(index="leverage", columns="horizon", values="gbm").to_numpy()
    for grid in (eng, gbm):
        assert (np.diff(grid, axis=0) >= -1e-12).all()  # more leverage, nearer liquidation
        assert (np.diff(grid, axis=1) >= -1e-12).all()  # longer cover
    assert s["ml"].isna().all()  # no learned model given
    assert (s["distance"] > 0).all()
    # each cell is the engine's own lookup for that liquidation price
    row = s.iloc[17]
    p, _ = sr.probability(row["liquidation_price"], row["horizon"], side)
    assert row["engine"] == pytest.approx(float(p))


def test_stored_backtests_newest_first_then_the_shipped_one(tmp_path: Path) -> None:
    shipped = json.loads(SHIPPED.read_text())
    folder = tmp_path / "backtests"
    first = store_backtest({**shipped, "prob": "engine"}, folder)
    second = store_backtest({**shipped, "prob": "ml", "model": "boosting+engine"}, folder)
    (folder / "backtest-zzz-broken.json").write_text("{not json")  # skipped, not fatal
    runs = stored_backtests(folder)
    assert [r.path for r in runs] == [second, first, SHIPPED]
    assert runs[0].prob == "ml" and "boosting+engine" in runs[0].label
    assert runs[-1].counted == 24 and "ADAUSDT" in runs[-1].symbols
    cells = reliability(runs[-1])
    assert len(cells) == 24 and cells["calibrated"].sum() == runs[-1].calibrated
    assert cells["ratio"].to_numpy() == pytest.approx(cells["realised"] / cells["predicted"])
    some = reliability(runs[-1], sides=("short",), horizons=(24,), leverages=(10.0, 20.0))
    assert len(some) == 2 and set(some["side"]) == {"short"}


def test_reliability_cells_in_number_order_whatever_the_file_holds(tmp_path: Path) -> None:
    """A backtest whose cells were written with leverages as text, in text order (10, 100,
    20, 5), is shown by leverage as a number, then horizon: the chart and table read 5×
    first."""
    shipped = json.loads(SHIPPED.read_text())
    cells = sorted(
        shipped["cells"], key=lambda c: (c["side"], str(c["leverage"]), str(c["horizon"]))
    )
    for c in cells:
        c["leverage"], c["horizon"] = f"{float(c['leverage']):g}", str(c["horizon"])
    path = store_backtest({**shipped, "cells": cells}, tmp_path / "backtests")
    (run,) = [r for r in stored_backtests(tmp_path / "backtests") if r.path == path]
    out = reliability(run)
    assert len(out) == len(cells)
    for _, side in out.groupby("side", sort=False):
        assert side["leverage"].is_monotonic_increasing, side["leverage"].tolist()
        for _, lev in side.groupby("leverage"):
            assert lev["horizon"].is_monotonic_increasing
    assert out["side"].tolist() == sorted(out["side"])
