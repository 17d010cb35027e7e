"""What the risk engine asks of a learned model, as a protocol: the engine calls a model for
one order without importing the model layer (`bti_core.risk.models.RowPredictor` is the one
implementation)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RowModel(Protocol):
    """P(liquidation) of one order (side ±1) from its feature vector (`features.ALL_COLUMNS`)."""

    def __call__(
        self, features: np.ndarray, *, side: int, leverage: float, horizon: float
    ) -> float: ...
