"""The current market's probability surface and the stored backtests' reliability.

- **Surface**: P(liquidation) by leverage × horizon for an isolated position opened at the
  current mark price — from the Monte Carlo engine's path table, the GBM closed form and, when
  a model is registered, the learned model — all read from one `SymbolRisk` (lookups, no fit).
- **Backtests**: every `bti backtest` writes its JSON under ``<data>/backtests/`` as well as
  where ``--json`` says; `stored_backtests` lists them newest first and `reliability` gives the
  realised against predicted rate per side × leverage × horizon cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bti_core import files
from bti_core.risk.liquidation import brackets_for, isolated_liquidation_price

if TYPE_CHECKING:
    from bti_core.risk.engine import SymbolRisk
    from bti_core.risk.protocols import RowModel

SURFACE_LEVERAGES: tuple[float, ...] = (2, 3, 5, 10, 20, 25, 50, 75, 100)
SURFACE_HORIZONS: tuple[int, ...] = (1, 4, 12, 24, 72, 168, 336, 720)
BACKTESTS = "backtests"


def probability_surface(
    sr: SymbolRisk,
    side: int,
    *,
    model: RowModel | None = None,
    leverages: tuple[float, ...] = SURFACE_LEVERAGES,
    horizons: tuple[int, ...] = SURFACE_HORIZONS,
) -> pd.DataFrame:
    """Long-form surface: leverage, horizon, liquidation_price, distance, engine, gbm, ml."""
    br = brackets_for(sr.symbol)
    hmax = int(sr.table.horizons[-1])
    hs = np.array([h for h in horizons if h <= hmax], dtype=float)
    lev = np.asarray(leverages, dtype=float)
    lp = isolated_liquidation_price(np.full(len(lev), sr.spot), lev, side, br)
    lev_g, hor_g = (g.ravel() for g in np.meshgrid(lev, hs, indexing="ij"))
    lp_g = np.repeat(lp, len(hs))
    engine, _ = sr.probability(lp_g, hor_g, side)
    gbm = sr.baseline(lp_g, hor_g, side)
    ml: list[float | None] = [None] * len(lev_g)
    if model is not None:
        ml = [
            sr.learned_probability(model, float(p), float(h), side, float(lv))
            for p, h, lv in zip(lp_g, hor_g, lev_g, strict=True)
        ]
    return pd.DataFrame(
        {
            "leverage": lev_g,
            "horizon": hor_g.astype(int),
            "liquidation_price": lp_g,
            "distance": side * (sr.spot - lp_g) / sr.spot,
            "engine": np.asarray(engine, dtype=float),
            "gbm": np.asarray(gbm, dtype=float),
            "ml": pd.array(ml, dtype="Float64"),
        }
    )


# ------------------------------------------------------------------ stored backtests


@dataclass(frozen=True)
class StoredBacktest:
    path: Path
    written: pd.Timestamp
    prob: str
    model: str
    symbols: str
    calibrated: int
    counted: int
    payload: dict[str, Any]

    @property
    def label(self) -> str:
        what = self.prob if not self.model else f"{self.prob} ({self.model})"
        return (
            f"{self.written:%Y-%m-%d %H:%M} · {what} · {self.symbols} · "
            f"{self.calibrated}/{self.counted} cells calibrated"
        )


def store_backtest(payload: dict[str, Any], folder: Path) -> Path:
    """Write one backtest's JSON into ``folder`` atomically (a reader never sees half)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = pd.Timestamp.now("UTC").strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"backtest-{stamp}-{payload.get('prob', 'engine')}.json"
    body = {**payload, "written": pd.Timestamp.now("UTC").isoformat()}
    return files.write_text(path, json.dumps(body), prefix=".backtest-")


# `bti backtest` on ../shared/data/binance-perp-dev (five symbols, 2019–2021), shipped
SHIPPED = Path(__file__).resolve().parent.parent / "risk" / "backtest_dev.json"


def stored_backtests(folder: Path, *, shipped: Path | None = SHIPPED) -> list[StoredBacktest]:
    """The backtests in ``folder``, newest first, then the one shipped with BTI (run on the
    development data) so a fresh install has a reliability view. Unreadable files are
    skipped."""
    paths = sorted(folder.glob("backtest-*.json"), reverse=True) if folder.is_dir() else []
    if shipped is not None and shipped.exists():
        paths.append(shipped)
    out = []
    for p in paths:
        try:
            d = json.loads(p.read_text())
            cells = d["cells"]
            syms = d.get("symbols") or sorted({c.get("symbol", "") for c in cells} - {""})
            out.append(
                StoredBacktest(
                    path=p,
                    written=(
                        pd.Timestamp(d["written"])
                        if d.get("written")
                        else pd.Timestamp(p.stat().st_mtime, unit="s", tz="UTC")
                    ),
                    prob=str(d.get("prob", "engine")),
                    model=str(d.get("model", "")),
                    symbols=", ".join(syms) if isinstance(syms, list) else str(syms),
                    calibrated=int(d.get("calibrated_cells", 0)),
                    counted=int(d.get("counted_cells", 0)),
                    payload=d,
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def reliability(
    run: StoredBacktest,
    *,
    sides: tuple[str, ...] = (),
    leverages: tuple[float, ...] = (),
    horizons: tuple[int, ...] = (),
) -> pd.DataFrame:
    """Per cell of ``run``, by side, leverage and horizon: side, leverage, horizon, n,
    realised, predicted (the judged probability's mean), gbm, ratio (realised ÷ predicted)
    and whether it is calibrated."""
    cells = pd.DataFrame(run.payload["cells"])
    if cells.empty:
        return cells
    prob = run.prob
    pred_col = f"{prob}_mean" if f"{prob}_mean" in cells else "engine_mean"
    out = pd.DataFrame(
        {
            "side": cells["side"],
            "leverage": cells["leverage"].astype(float),
            "horizon": cells["horizon"].astype(int),
            "n": cells["n"].astype(int),
            "realised": cells["realised"].astype(float),
            "predicted": cells[pred_col].astype(float),
            "gbm": cells["baseline_mean"].astype(float) if "baseline_mean" in cells else np.nan,
            "counted": cells.get("counted", pd.Series(True, index=cells.index)).astype(bool),
            "calibrated": cells.get("calibrated", pd.Series(False, index=cells.index)).astype(bool),
        }
    )
    out["ratio"] = out["realised"] / out["predicted"].where(out["predicted"] > 0)
    keep = np.ones(len(out), dtype=bool)
    if sides:
        keep &= out["side"].isin(sides).to_numpy()
    if leverages:
        keep &= out["leverage"].isin(leverages).to_numpy()
    if horizons:
        keep &= out["horizon"].isin(horizons).to_numpy()
    # by number, whatever order the file holds (a payload written with text keys came in
    # text order, 10, 100, 20, 5, and the chart drew it so)
    return (
        out[keep].sort_values(["side", "leverage", "horizon"], kind="stable").reset_index(drop=True)
    )
