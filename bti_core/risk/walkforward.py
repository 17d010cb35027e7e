"""Time-series cross-validation without look-ahead: purged, embargoed walk-forward folds and leave-
one-group-out splits (López de Prado 2018, Advances in Financial Machine Learning, ch. 7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray  # row positions
    test: np.ndarray


def purged_walk_forward(
    ts: pd.Series,
    horizon_hours: pd.Series | np.ndarray,
    *,
    n_folds: int = 4,
    embargo_hours: float | None = None,
) -> list[Fold]:
    """Walk-forward folds over time blocks, training rows purged of label windows that reach
    the test block and embargoed ``embargo_hours`` more (default: the longest horizon)."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be at least 1, got {n_folds}")
    t = pd.DatetimeIndex(ts)
    h = pd.to_timedelta(np.asarray(horizon_hours, dtype=float), unit="h")
    embargo = pd.Timedelta(
        hours=float(np.max(horizon_hours) if embargo_hours is None else embargo_hours)
    )
    if embargo < pd.Timedelta(hours=float(np.max(horizon_hours))):
        raise ValueError("the embargo must be at least the longest label horizon")
    edges = pd.date_range(t.min(), t.max() + pd.Timedelta(hours=1), periods=n_folds + 2)
    label_end = t + h
    folds = []
    for k in range(1, n_folds + 1):
        start, end = edges[k], edges[k + 1]
        test = np.flatnonzero((t >= start) & (t < end))
        train = np.flatnonzero(label_end + embargo <= start)
        if len(test) == 0 or len(train) == 0:
            continue
        folds.append(Fold(f"{start:%Y-%m-%d}…{end:%Y-%m-%d}", train, test))
    if not folds:
        raise ValueError("too little history for a walk-forward fold")
    return folds


def leave_one_out(
    frame: pd.DataFrame, by: Literal["symbol", "year"], *, embargo_hours: float | None = None
) -> list[Fold]:
    """One fold per symbol (or calendar year): train on the others, test on it. A year left
    out is purged on both sides: no training label window reaches into it, and no training
    start lies within the embargo after it."""
    t = pd.DatetimeIndex(frame["ts"])
    groups = frame["symbol"].to_numpy() if by == "symbol" else t.year.to_numpy()
    h = frame["horizon"].to_numpy(dtype=float)
    embargo = pd.Timedelta(hours=float(h.max() if embargo_hours is None else embargo_hours))
    label_end = t + pd.to_timedelta(h, unit="h")
    folds = []
    for g in sorted(set(groups.tolist())):
        test_mask = groups == g
        train_mask = ~test_mask
        if by == "year":
            start, end = t[test_mask].min(), t[test_mask].max()
            train_mask &= (label_end + embargo <= start) | (t > end + embargo)
        if test_mask.sum() == 0 or train_mask.sum() == 0:
            continue
        folds.append(Fold(str(g), np.flatnonzero(train_mask), np.flatnonzero(test_mask)))
    return folds
