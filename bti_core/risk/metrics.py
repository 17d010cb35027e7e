"""Scores of a probability against outcomes, written once: the log loss, the Brier score
(Brier 1950) and the logit the stacked models and the features use. Probabilities are clipped
to [1e-6, 1 − 1e-6], so a confident miss costs ln 10⁶ ≈ 13.8 rather than infinity."""

from __future__ import annotations

import numpy as np
import pandas as pd

EPS = 1e-6


def clip_probability(p: np.ndarray | pd.Series | float) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)


def logit(p: np.ndarray | pd.Series | float) -> np.ndarray:
    """ln(p / (1 − p)) of the clipped probability."""
    q = clip_probability(p)
    return np.asarray(np.log(q / (1 - q)), dtype=float)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """−mean(y ln p + (1 − y) ln(1 − p))."""
    q = clip_probability(p)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    """mean((p − y)²)."""
    return float(np.mean((np.asarray(p, dtype=float) - y) ** 2))
