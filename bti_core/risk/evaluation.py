"""How a learned candidate is judged: out-of-sample scores per fold and per cell, beside the engine
and the baseline, and the selection among candidates (the rules are in the docstring of
`bti_core.risk.models`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bti_core.risk.backtest import CALIBRATED, MIN_COUNTED_RATE
from bti_core.risk.metrics import brier, log_loss
from bti_core.risk.models import MAX_TRAIN_ROWS, Calibration, Candidate, Progress, fit_model
from bti_core.risk.walkforward import Fold, leave_one_out, purged_walk_forward


def cell_table(rows: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    """Per side × leverage × horizon: rows, realised and predicted rates, their ratio, whether
    the cell is counted and calibrated, and the AUC within the cell."""
    d = rows[["side", "leverage", "horizon", "liquidated"]].assign(p=p)
    out = []
    for (side, lev, h), g in d.groupby(["side", "leverage", "horizon"], sort=True):
        y = g["liquidated"].to_numpy()
        realised, predicted = float(y.mean()), float(g["p"].mean())
        auc = float(roc_auc_score(y, g["p"])) if 0 < y.sum() < len(y) else float("nan")
        counted = realised >= MIN_COUNTED_RATE
        ratio = realised / predicted if predicted > 0 else float("inf")
        out.append(
            {
                "side": side,
                "leverage": int(str(lev)),
                "horizon": int(str(h)),
                "n": len(g),
                "realised": realised,
                "predicted": predicted,
                "ratio": ratio,
                "counted": counted,
                "calibrated": bool(counted and CALIBRATED[0] <= ratio <= CALIBRATED[1]),
                "auc": auc,
            }
        )
    return pd.DataFrame(out)


def scores(rows: pd.DataFrame, p: np.ndarray) -> dict[str, float]:
    y = rows["liquidated"].to_numpy(dtype=float)
    cells = cell_table(rows, p)
    counted = cells[cells["counted"]]
    return {
        "n": float(len(rows)),
        "brier": brier(p, y),
        "logloss": log_loss(p, y),
        "auc_within_cell": float(cells["auc"].mean()),
        "calibrated_cells": float(counted["calibrated"].sum()),
        "counted_cells": float(len(counted)),
    }


@dataclass
class Report:
    """A candidate's (or the engine's, or the baseline's) out-of-sample scores."""

    name: str
    folds: list[dict[str, Any]] = field(default_factory=list)  # per walk-forward fold
    later: dict[str, float] = field(default_factory=dict)  # pooled over the later folds
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)  # the later folds' cells
    by_symbol: dict[str, dict[str, float]] = field(default_factory=dict)  # left out
    by_year: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0  # mean over the walk-forward folds
    notes: list[str] = field(default_factory=list)  # left-out folds too small to fit

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "notes": self.notes,
            "folds": self.folds,
            "later": self.later,
            "cells": self.cells.to_dict(orient="records"),
            "leave_one_symbol_out": self.by_symbol,
            "leave_one_year_out": self.by_year,
            "train_seconds": self.train_seconds,
        }


REFERENCES = ("engine", "baseline")  # columns of the training set judged beside the models


def _later(folds: Sequence[Fold]) -> list[Fold]:
    return list(folds[len(folds) // 2 :])


def evaluate(
    frame: pd.DataFrame,
    candidates: Iterable[Candidate],
    *,
    n_folds: int = 4,
    leave_out: bool = True,
    seed: int = 0,
    max_rows: int = MAX_TRAIN_ROWS,
    calibration: Calibration = "crossfit",
    progress: Progress | None = None,
) -> dict[str, Report]:
    """Every candidate and the two references on the same purged walk-forward folds (and,
    with ``leave_out``, leave-one-symbol-out and leave-one-year-out)."""
    cands = list(candidates)
    wf = purged_walk_forward(frame["ts"], frame["horizon"], n_folds=n_folds)
    groups: dict[str, list[Fold]] = {"walk": wf}
    if leave_out:
        if frame["symbol"].nunique() > 1:
            groups["symbol"] = leave_one_out(frame, "symbol")
        if pd.DatetimeIndex(frame["ts"]).year.nunique() > 1:
            groups["year"] = leave_one_out(frame, "year")
    later_idx = np.concatenate([f.test for f in _later(wf)])
    later_rows = frame.iloc[later_idx]
    reports: dict[str, Report] = {}
    for ref in REFERENCES:
        rep = Report(ref)
        for f in wf:
            rows = frame.iloc[f.test]
            rep.folds.append({"fold": f.name, **scores(rows, rows[ref].to_numpy())})
        rep.later = scores(later_rows, later_rows[ref].to_numpy())
        rep.cells = cell_table(later_rows, later_rows[ref].to_numpy())
        for key, target in (("symbol", rep.by_symbol), ("year", rep.by_year)):
            for f in groups.get(key, []):
                rows = frame.iloc[f.test]
                target[f.name] = scores(rows, rows[ref].to_numpy())
        reports[ref] = rep
    total = len(cands) * sum(len(v) for v in groups.values())
    done = 0
    for cand in cands:
        rep = Report(cand.name)
        later_p = np.empty(len(frame))
        seconds = []
        for key, folds in groups.items():
            for f in folds:
                if progress:
                    progress(done, total, f"{cand.name}: {key} {f.name}")
                done += 1
                t0 = time.perf_counter()
                try:
                    model = fit_model(
                        frame.iloc[f.train],
                        cand,
                        seed=seed,
                        max_rows=max_rows,
                        calibration=calibration,
                    )
                except ValueError as exc:
                    if key == "walk":
                        raise
                    # a symbol or a year left out can leave too little to train on (a short
                    # folder): that fold is not scored, and the card says so
                    rep.notes.append(f"{key} {f.name} left out: {exc}")
                    continue
                if key == "walk":
                    seconds.append(time.perf_counter() - t0)
                rows = frame.iloc[f.test]
                p = model.predict(rows)
                s = scores(rows, p)
                if key == "walk":
                    rep.folds.append({"fold": f.name, **s})
                    later_p[f.test] = p
                elif key == "symbol":
                    rep.by_symbol[f.name] = s
                else:
                    rep.by_year[f.name] = s
        rep.later = scores(later_rows, later_p[later_idx])
        rep.cells = cell_table(later_rows, later_p[later_idx])
        rep.train_seconds = float(np.mean(seconds))
        reports[cand.name] = rep
    if progress:
        progress(total, total, "done")
    return reports


@dataclass(frozen=True)
class Selection:
    best: str
    uses_model: bool  # whether the premium may use it
    reason: str


def select(reports: dict[str, Report]) -> Selection:
    """The candidate with the lowest log loss on the later folds; it prices cover only if it
    beat the engine's log loss and Brier score there."""
    models = {k: r for k, r in reports.items() if k not in REFERENCES}
    if not models:
        raise ValueError("no candidate was evaluated")
    best = min(models, key=lambda k: models[k].later["logloss"])
    b, e = models[best].later, reports["engine"].later
    ll = 1 - b["logloss"] / e["logloss"]
    br = 1 - b["brier"] / e["brier"]
    uses = ll > 0 and br > 0
    reason = (
        f"{best} has the lowest log loss on the later folds ({b['logloss']:.5f}); against the "
        f"Monte Carlo engine's {e['logloss']:.5f} / brier {e['brier']:.5f} it is "
        f"{ll:+.1%} in log loss and {br:+.1%} in Brier score: "
        + (
            "the premium uses it"
            if uses
            else "the premium stays on the engine (the model did not beat it on both)"
        )
    )
    return Selection(best, uses, reason)


def format_reports(reports: dict[str, Report]) -> str:
    """The comparison table: later folds pooled, then left-out symbol and year means."""
    lines = [
        f"{'candidate':<17} {'brier':>8} {'logloss':>8} {'AUC/cell':>8} {'cells':>6} "
        f"{'LOSO ll':>8} {'LOYO ll':>8} {'fit s':>6}"
    ]
    for name, r in reports.items():
        loso = np.mean([s["logloss"] for s in r.by_symbol.values()]) if r.by_symbol else np.nan
        loyo = np.mean([s["logloss"] for s in r.by_year.values()]) if r.by_year else np.nan
        later = r.later
        lines.append(
            f"{name:<17} {later['brier']:>8.5f} {later['logloss']:>8.5f} "
            f"{later['auc_within_cell']:>8.3f} "
            f"{int(later['calibrated_cells']):>3}/{int(later['counted_cells']):<2} "
            f"{loso:>8.5f} {loyo:>8.5f} {r.train_seconds:>6.1f}"
        )
    return "\n".join(lines)
