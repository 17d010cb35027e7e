"""A learned model judged as the engine is (`bti backtest --prob ml|blend`): retrained on the past
at each refit of the walk-forward backtest, alone or blended with the engine in log-odds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from bti_core.market.folders import load_folder
from bti_core.risk.backtest import BacktestConfig, BacktestResult, summarise
from bti_core.risk.metrics import logit
from bti_core.risk.models import (
    MAX_TRAIN_ROWS,
    META_COLUMNS,
    Candidate,
    Progress,
    build_training_set,
    fit_model,
)

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
