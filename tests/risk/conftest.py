"""A small demo folder in the development data's format, and the training set built from it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bti_core.market.synthetic import write_demo_folder
from bti_core.risk.backtest import BacktestConfig
from bti_core.risk.models import build_training_set

SMALL = BacktestConfig(
    stride_hours=6,
    refit_days=60,
    min_history_days=60,
    n_paths=2_000,
    variance_levels=5,
    leverages=(10, 20, 50),
    horizons=(24, 72),
)


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo symbols, 300 days of hourly last, mark and funding files."""
    return write_demo_folder(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def training(model_folder: Path) -> pd.DataFrame:
    return build_training_set(model_folder, SMALL)
