"""Learned liquidation probabilities: candidates, purged walk-forward validation, calibration
out of time, and the selection among them.

**Data.** `build_training_set` runs the backtest's walk-forward engine over a folder (every
probability and GARCH variance at a start hour from data up to it only) and joins each
(start hour, side, leverage, horizon) row with `features.order_features`; the label is whether
the mark price reached the liquidation price within the horizon.

**Validation** (López de Prado 2018, *Advances in Financial Machine Learning*, ch. 7): time is cut
into ``n_folds + 1`` equal blocks; fold k tests block k and trains on the blocks before it
(walk-forward, never a shuffled split), **purged** of every training row whose label window
``[t, t + h]`` reaches into the test block and **embargoed** a further ``embargo`` hours (at
least the longest horizon), since neighbouring hours' labels overlap. Leave-one-symbol-out and
leave-one-year-out scores say how a candidate holds on a market or a year it has not seen (the
year left out is purged on both sides).

**Candidates**: logistic regression, random forest, a support vector machine on a Nyström
approximation of the RBF kernel (Williams & Seeger 2001; linear in the rows), gradient-boosted
trees (scikit-learn's histogram GBM, after LightGBM) and a small neural network (MLP), each on
the order and market features alone and **stacked** on the Monte Carlo and GBM probabilities
(their logits as two more features). Feature selection (L1-penalised logistic regression,
`SelectFromModel`) is a step of each pipeline, so it sees only the training fold.

**Calibration out of time**: inside each training set, time is cut into `CROSSFIT_BLOCKS`
blocks and each block after the first is scored by a model fitted on the blocks before it
(purged like a test block); those out-of-time scores are mapped to probabilities per cell
(side × leverage bucket × horizon bucket) — isotonic regression where a cell has at least
`ISOTONIC_MIN_EVENTS` events and as many non-events, Platt scaling (a logistic regression on
the score's logit; Platt 1999) where it has fewer, the side's pooled Platt map where it has
almost none. The model that predicts is then fitted on every training row (as
``CalibratedClassifierCV(ensemble=False)`` does with its folds). Calibrating on the last fifth
of the training time alone (``calibration="recent"``) lost 3–6 % more log loss on every
candidate: one recent stretch is one regime.

**Scores** on each test block: Brier ``mean((p − y)²)``, log loss, AUC within each cell (pooled
AUC across leverage flatters every model: leverage alone ranks most of it), and calibrated cells
(realised/predicted in [0.8, 1.25], cells realised at least 0.3 % of the time). The selected
candidate has the lowest log loss over the later half of the folds; it prices cover only if it
beat the Monte Carlo engine's log loss and Brier score on those folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import SelectFromModel
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from bti_core.risk.backtest import (
    CALIBRATED,
    MIN_COUNTED_RATE,
    BacktestConfig,
    BacktestResult,
    _symbol_predictions,
    load_folder,
    load_funding,
    summarise,
)
from bti_core.risk.features import ALL_COLUMNS, ORDER_COLUMNS, market_frame, order_features
from bti_core.risk.metrics import brier, log_loss, logit
from bti_core.risk.walkforward import Fold, leave_one_out, purged_walk_forward

Progress = Callable[[int, int, str], None]
Kind = Literal["logistic", "forest", "svm", "boosting", "mlp"]
KINDS: tuple[Kind, ...] = ("logistic", "forest", "svm", "boosting", "mlp")

CALIBRATION_FRACTION = 0.2
CROSSFIT_BLOCKS = 3
ISOTONIC_MIN_EVENTS = 200
PLATT_MIN_EVENTS = 5
MAX_TRAIN_ROWS = 200_000  # rows a fit samples from its training set (the rest are neighbours)
LEVERAGE_EDGES = (7.5, 15.0, 35.0)  # cells: ≤ 7.5× (5×), ≤ 15× (10×), ≤ 35× (20×), above (50×)
HORIZON_EDGES = (48.0, 120.0)  # ≤ 2 days (24 h), ≤ 5 days (72 h), above (168 h)
META_COLUMNS = ("symbol", "ts", "side", "leverage", "horizon", "engine", "baseline", "liquidated")


# ---------------------------------------------------------------------------------------------
# data


def build_training_set(
    folder: str | Path,
    cfg: BacktestConfig | None = None,
    *,
    progress: Progress | None = None,
    skipped: list[str] | None = None,
) -> pd.DataFrame:
    """One row per (symbol, start hour, side, leverage, horizon): `META_COLUMNS` and the
    features `ALL_COLUMNS`, from the backtest's walk-forward engine over ``folder``."""
    cfg = cfg or BacktestConfig(stride_hours=2)
    data = load_folder(folder, skipped)
    funding = load_funding(folder)
    frames = []
    for sym, (last, mark) in data.items():
        pred = _symbol_predictions(sym, last, mark, cfg, progress)
        if pred.empty:
            if skipped is not None:
                skipped.append(f"{sym}: left out, too little history for a start")
            continue
        market = market_frame(last, mark, funding.get(sym))
        feats = order_features(pred, market)
        frames.append(pd.concat([pred[list(META_COLUMNS)], feats], axis=1))
    if not frames:
        raise ValueError(
            f"{folder}: not enough history to train on (a start needs {cfg.min_history_days} "
            f"days of bars before it and {max(cfg.horizons)} hours after it)"
        )
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def cell_of(side: Any, leverage: Any, horizon: Any) -> np.ndarray:
    """Cell codes (side × leverage bucket × horizon bucket) for any order, so a quote at 7× or
    36 hours finds the calibration map of its nearest trained cell."""
    s = (
        (np.asarray(side) == "long").astype(int)
        if np.asarray(side).dtype.kind in "OUS"
        else (np.asarray(side, dtype=float) > 0).astype(int)
    )
    lb = np.searchsorted(LEVERAGE_EDGES, np.asarray(leverage, dtype=float))
    hb = np.searchsorted(HORIZON_EDGES, np.asarray(horizon, dtype=float))
    return s * 100 + lb * 10 + hb


# ---------------------------------------------------------------------------------------------
# splits


# ---------------------------------------------------------------------------------------------
# candidates


@dataclass(frozen=True)
class Candidate:
    kind: Kind
    stacked: bool  # with the Monte Carlo and GBM probabilities as features

    @property
    def name(self) -> str:
        return f"{self.kind}+engine" if self.stacked else self.kind

    @property
    def features(self) -> tuple[str, ...]:
        return ALL_COLUMNS if self.stacked else ORDER_COLUMNS

    @classmethod
    def parse(cls, name: str) -> Candidate:
        kind, _, rest = name.partition("+")
        if kind not in KINDS or rest not in ("", "engine"):
            allowed = ", ".join(f"{k}, {k}+engine" for k in KINDS)
            raise ValueError(f"unknown model {name!r}; the candidates are {allowed}")
        return cls(kind, bool(rest))


def all_candidates() -> list[Candidate]:
    return [Candidate(k, s) for k in KINDS for s in (False, True)]


def make_pipeline(kind: Kind, seed: int = 0) -> Pipeline:
    """Impute (training medians), standardise, select features (L1 logistic), classify."""
    model: Any
    if kind == "logistic":
        model = LogisticRegression(C=1.0, max_iter=1000)
    elif kind == "forest":
        model = RandomForestClassifier(
            n_estimators=80,
            min_samples_leaf=200,
            max_features=0.4,
            max_samples=0.5,
            n_jobs=-1,
            random_state=seed,
        )
    elif kind == "svm":
        # a linear SVM (hinge loss) on 300 Nyström features: the RBF kernel approximated;
        # its margin becomes a probability in the calibration step (Platt's own use)
        model = Pipeline(
            [
                ("kernel", Nystroem(n_components=300, gamma=0.05, random_state=seed)),
                ("linear", LinearSVC(C=0.1, max_iter=5000)),
            ]
        )
    elif kind == "boosting":
        model = HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=300,
            max_leaf_nodes=31,
            min_samples_leaf=200,
            l2_regularization=1.0,
            early_stopping=True,
            validation_fraction=0.1,
            random_state=seed,
        )
    elif kind == "mlp":
        model = MLPClassifier(
            hidden_layer_sizes=(32, 16),
            alpha=1e-3,
            batch_size=512,
            learning_rate_init=1e-3,
            max_iter=60,
            early_stopping=True,
            n_iter_no_change=5,
            random_state=seed,
        )
    else:
        raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            (
                "select",
                SelectFromModel(
                    LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.02),
                    threshold=1e-6,
                ),
            ),
            ("model", model),
        ]
    )


def _score(pipe: Pipeline, x: pd.DataFrame) -> np.ndarray:
    """The classifier's P(y = 1) before calibration; for the SVM, the logistic of its margin
    (a monotone score the calibration maps to a probability)."""
    if hasattr(pipe, "predict_proba"):
        return np.asarray(pipe.predict_proba(x)[:, 1], dtype=float)
    margin = np.asarray(pipe.decision_function(x), dtype=float)
    return np.asarray(1 / (1 + np.exp(-np.clip(margin, -30, 30))), dtype=float)


@dataclass
class CellCalibrator:
    """Per-cell maps from a model's score to a probability, fitted out of time."""

    maps: dict[int, tuple[str, Any]] = field(default_factory=dict)  # cell → (method, fitted)
    pooled: dict[int, Any] = field(default_factory=dict)  # side → Platt map

    def fit(self, score: np.ndarray, y: np.ndarray, cells: np.ndarray) -> CellCalibrator:
        z = logit(score)[:, None]
        for side in (0, 1):
            sel = cells // 100 == side
            if y[sel].sum() >= 1 and (1 - y[sel]).sum() >= 1:
                self.pooled[side] = LogisticRegression(C=100.0).fit(z[sel], y[sel])
        for c in np.unique(cells):
            sel = cells == c
            events, quiet = int(y[sel].sum()), int((1 - y[sel]).sum())
            if min(events, quiet) >= ISOTONIC_MIN_EVENTS:
                iso = IsotonicRegression(y_min=1e-5, y_max=1 - 1e-5, out_of_bounds="clip")
                self.maps[int(c)] = ("isotonic", iso.fit(score[sel], y[sel]))
            elif min(events, quiet) >= PLATT_MIN_EVENTS:
                self.maps[int(c)] = ("platt", LogisticRegression(C=100.0).fit(z[sel], y[sel]))
        return self

    def predict(self, score: np.ndarray, cells: np.ndarray) -> np.ndarray:
        out = np.clip(score.astype(float), 1e-6, 1 - 1e-6)
        z = logit(score)[:, None]
        for c in np.unique(cells):
            sel = cells == c
            method, m = self.maps.get(int(c), ("pooled", self.pooled.get(int(c) // 100)))
            if m is None:
                continue
            if method == "isotonic":
                out[sel] = m.predict(score[sel])
            else:
                out[sel] = m.predict_proba(z[sel])[:, 1]
        return np.clip(out, 1e-6, 1 - 1e-6)

    def methods(self) -> dict[int, str]:
        return {c: m for c, (m, _) in sorted(self.maps.items())}


@dataclass
class RiskModel:
    """A fitted candidate: its pipeline and its out-of-time calibration."""

    candidate: Candidate
    pipeline: Pipeline
    calibrator: CellCalibrator
    seed: int = 0

    @property
    def features(self) -> tuple[str, ...]:
        return self.candidate.features

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(liquidation) for rows carrying ``side, leverage, horizon`` and the features."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"rows lack the model's features: {', '.join(missing)}")
        score = _score(self.pipeline, frame[list(self.features)])
        return self.calibrator.predict(
            score, cell_of(frame["side"], frame["leverage"], frame["horizon"])
        )


Calibration = Literal["recent", "crossfit"]


def fit_model(
    frame: pd.DataFrame,
    candidate: Candidate,
    *,
    seed: int = 0,
    max_rows: int = MAX_TRAIN_ROWS,
    embargo_hours: float | None = None,
    calibration: Calibration = "crossfit",
) -> RiskModel:
    """Fit a candidate and calibrate it out of time.

    ``"recent"``: fit on the earlier (1 − `CALIBRATION_FRACTION`) of the rows' time, calibrate
    on the rest, purged between the two like a test block. ``"crossfit"``: cut the rows' time
    into `CROSSFIT_BLOCKS` blocks, score each block after the first with a model fitted on the
    blocks before it (purged), calibrate on all those scores (more regimes than the last
    fifth), then fit the model on every row — the walk-forward analogue of scikit-learn's
    ``CalibratedClassifierCV(ensemble=False)``."""
    if calibration not in ("recent", "crossfit"):
        raise ValueError(f"calibration must be recent or crossfit, got {calibration!r}")
    t = pd.DatetimeIndex(frame["ts"])
    h = frame["horizon"].to_numpy(dtype=float)
    embargo = pd.Timedelta(hours=float(h.max() if embargo_hours is None else embargo_hours))
    label_end = t + pd.to_timedelta(h, unit="h")
    rng = np.random.default_rng(seed)
    features = list(candidate.features)

    def fit(mask: np.ndarray) -> Pipeline:
        rows = np.flatnonzero(mask)
        if len(rows) > max_rows:
            rows = np.sort(rng.choice(rows, max_rows, replace=False))
        part = frame.iloc[rows]
        y = part["liquidated"].to_numpy(dtype=int)
        if y.min() == y.max():
            raise ValueError(
                "the training rows hold no liquidation (or nothing else): nothing to learn"
            )
        return make_pipeline(candidate.kind, seed).fit(part[features], y)

    if calibration == "recent":
        cut = t.min() + (t.max() - t.min()) * (1 - CALIBRATION_FRACTION)
        blocks = [(np.asarray(label_end + embargo <= cut), np.asarray(t >= cut))]
    else:
        edges = [t.min() + (t.max() - t.min()) * f for f in np.linspace(0, 1, CROSSFIT_BLOCKS + 1)]
        blocks = [
            (
                np.asarray(label_end + embargo <= edges[k]),
                np.asarray((t >= edges[k]) & ((t < edges[k + 1]) | (k + 1 == CROSSFIT_BLOCKS))),
            )
            for k in range(1, CROSSFIT_BLOCKS)
        ]
    for fit_mask, cal_mask in blocks:
        if fit_mask.sum() < 100 or cal_mask.sum() < 100:
            raise ValueError(
                f"too few rows to fit and calibrate out of time ({int(fit_mask.sum())} and "
                f"{int(cal_mask.sum())}; at least 100 each)"
            )
    scores, ys, cells = [], [], []
    pipe = None
    for fit_mask, cal_mask in blocks:
        pipe = fit(fit_mask)
        part = frame[cal_mask]
        scores.append(_score(pipe, part[features]))
        ys.append(part["liquidated"].to_numpy(dtype=int))
        cells.append(cell_of(part["side"], part["leverage"], part["horizon"]))
    cal = CellCalibrator().fit(np.concatenate(scores), np.concatenate(ys), np.concatenate(cells))
    if calibration == "crossfit":
        pipe = fit(np.ones(len(frame), dtype=bool))
    assert pipe is not None
    return RiskModel(candidate, pipe, cal, seed)


# ---------------------------------------------------------------------------------------------
# scores


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


# ---------------------------------------------------------------------------------------------
# the backtest, judging a learned probability


DEFAULT_CANDIDATE = "boosting+engine"
MIN_TRAIN_DAYS = 180


def retrained_probabilities(
    frame: pd.DataFrame,
    candidate: Candidate,
    *,
    refit_days: int = 30,
    min_train_days: int = MIN_TRAIN_DAYS,
    seed: int = 0,
    max_rows: int = MAX_TRAIN_ROWS,
    progress: Progress | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """The candidate's probability for every row as a live retraining would have given it:
    at each refit time T (every ``refit_days`` from ``min_train_days`` after the first start)
    it is fitted on the rows whose label window had closed by T — outcomes known at T, the past
    only — and predicts the rows starting in [T, T + refit_days). NaN before the first refit,
    and over a refit that had too little to learn from (said in ``notes``)."""
    t = pd.DatetimeIndex(frame["ts"])
    label_end = t + pd.to_timedelta(frame["horizon"].to_numpy(dtype=float), unit="h")
    out = np.full(len(frame), np.nan)
    first = t.min() + pd.Timedelta(days=min_train_days)
    refits = list(pd.date_range(first, t.max(), freq=f"{refit_days}D")) if first <= t.max() else []
    for k, start in enumerate(refits):
        if progress:
            progress(k, len(refits), f"{candidate.name} refit {start:%Y-%m-%d}")
        end = start + pd.Timedelta(days=refit_days)
        test = np.flatnonzero((t >= start) & (t < end))
        train = np.asarray(label_end <= start)
        if len(test) == 0:
            continue
        try:
            model = fit_model(frame[train], candidate, seed=seed, max_rows=max_rows)
        except ValueError as exc:
            if notes is not None:
                notes.append(f"refit {start:%Y-%m-%d} skipped: {exc}")
            continue
        out[test] = model.predict(frame.iloc[test])
    if progress:
        progress(len(refits), len(refits), "done")
    return out


def blend(engine: np.ndarray, learned: np.ndarray) -> np.ndarray:
    """The two probabilities' geometric mean in odds: ``σ((logit p_engine + logit p_ml) / 2)``
    — a logarithmic opinion pool (Genest & Zidek 1986) with equal weights."""
    return np.asarray(1 / (1 + np.exp(-(logit(engine) + logit(learned)) / 2)), dtype=float)


def learned_backtest(
    folder: str | Path,
    cfg: BacktestConfig | None = None,
    *,
    prob: Literal["ml", "blend"] = "ml",
    candidate: Candidate | None = None,
    min_train_days: int = MIN_TRAIN_DAYS,
    seed: int = 0,
    max_rows: int = MAX_TRAIN_ROWS,
    progress: Progress | None = None,
) -> BacktestResult:
    """`bti backtest --prob ml|blend`: the engine's walk-forward predictions, a candidate
    retrained on the past at each of the engine's refits (`retrained_probabilities`), and the
    backtest's table, verdict and reliability judging the learned (or blended) probability —
    beside the engine's and the GBM baseline's on the same rows."""
    if prob not in ("ml", "blend"):
        raise ValueError(f"--prob must be engine, ml or blend, got {prob!r}")
    cfg = cfg or BacktestConfig()
    cand = candidate or Candidate.parse(DEFAULT_CANDIDATE)
    need = pd.Timedelta(days=cfg.min_history_days + min_train_days, hours=max(cfg.horizons))
    spans = {s: m["ts"].iloc[-1] - m["ts"].iloc[0] for s, (_, m) in load_folder(folder).items()}
    if spans and max(spans.values()) <= need:  # said now, not after the engine's run
        raise ValueError(
            f"{folder}: too little history to judge a learned model: its first fit needs "
            f"{cfg.min_history_days} days of bars before the first start, then {min_train_days} "
            f"days of known outcomes, then {max(cfg.horizons)} hours to judge; the longest "
            f"symbol has {max(spans.values()) / pd.Timedelta(days=1):.0f} days"
        )
    skipped: list[str] = []
    frame = build_training_set(folder, cfg, progress=progress, skipped=skipped)
    p = retrained_probabilities(
        frame,
        cand,
        refit_days=cfg.refit_days,
        min_train_days=min_train_days,
        seed=seed,
        max_rows=max_rows,
        progress=progress,
        notes=skipped,
    )
    keep = np.isfinite(p)
    if not keep.any():
        raise ValueError(
            f"{folder}: too little history to judge a learned model: its first fit needs "
            f"{min_train_days} days of known outcomes after the first start"
        )
    pred = frame.loc[keep, list(META_COLUMNS)].reset_index(drop=True)
    pred["ml"] = p[keep]
    pred["blend"] = blend(pred["engine"].to_numpy(), pred["ml"].to_numpy())
    res = summarise(pred, cfg, prob=prob)
    res.skipped = skipped
    first = pd.Timestamp(pred["ts"].min())
    res.model = (
        f"{cand.name}"
        + (" blended with the engine in log-odds" if prob == "blend" else "")
        + f", retrained every {cfg.refit_days} days on the outcomes known by then; judged from "
        f"{first:%Y-%m-%d} on ({len(pred):,} of {len(frame):,} rows, the engine and the "
        "baseline on the same rows)"
    )
    return res


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
