"""Market context on one hourly axis: basis, funding, open interest and long/short ratio,
each read as of the hour (never a later reading), and a symbol without some of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bti_core.analytics.context import market_context
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import market_context as synthetic_context
from bti_core.market.warehouse import Warehouse


def test_the_context_joins_each_reading_as_of_the_hour(tmp_path: Path, demo: dict) -> None:
    m = demo["BTCUSDT"]
    wh = Warehouse(tmp_path)
    ing = Ingestor(wh, None)
    m.ingest(ing, source="t")
    oi, ls = synthetic_context(m)
    # open interest every fourth hour only: the hours between carry the last reading
    ing.ingest_frame(
        oi.iloc[::4], symbol="BTCUSDT", kind=Kind.OPEN_INTEREST, timeframe="4h", source="t"
    )
    start, end = m.mark["ts"].iloc[100], m.mark["ts"].iloc[200]
    ctx = market_context(wh, "BTCUSDT", start, end)
    stored = wh.query(Kind.MARK, "BTCUSDT", "1h", start, end)
    assert ctx["ts"].tolist() == stored["ts"].tolist()  # the mark price's hours
    row = ctx.iloc[10]
    t = row["ts"]
    mark = m.mark.set_index("ts")["close"]
    last = m.ohlcv.set_index("ts")["close"]
    assert row["basis"] == pytest.approx(mark[t] / last[t] - 1)
    f = m.funding[m.funding["ts"] <= t].iloc[-1]
    assert row["funding_rate"] == pytest.approx(f["funding_rate"])
    known = oi.iloc[::4]
    assert row["open_interest"] == pytest.approx(known[known["ts"] <= t]["open_interest"].iloc[-1])
    assert ctx["long_short_ratio"].isna().all()  # none stored
    # the demo's series behave: positive, the long share inside (0, 1), ratio = share ÷ (1 − share)
    assert (oi["open_interest"] > 0).all()
    assert ls["long_account"].between(0.2, 0.8).all()
    assert np.allclose(
        ls["long_short_ratio"], ls["long_account"] / (1 - ls["long_account"]), rtol=1e-3
    )


def test_a_symbol_without_data_gives_an_empty_frame(tmp_path: Path) -> None:
    ctx = market_context(
        Warehouse(tmp_path),
        "BTCUSDT",
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-01-02", tz="UTC"),
    )
    assert ctx.empty and "long_short_ratio" in ctx.columns
