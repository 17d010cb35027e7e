"""The `bti` command end to end on a temporary data folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from bti_core.cli import app
from bti_core.db.engine import make_engine, session_scope
from bti_core.db.repository import latest_ingest_runs
from bti_core.market.schema import Kind
from bti_core.market.sources import write_normalised_csv
from bti_core.market.warehouse import Warehouse

runner = CliRunner()


def test_demo_then_summary(data_dir: Path) -> None:
    res = runner.invoke(app, ["demo", "--days", "20", "--end", "2025-03-01"])
    assert res.exit_code == 0, res.output
    assert "listing placeholders" in res.output
    wh = Warehouse(data_dir / "warehouse")
    assert wh.symbols() == ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert wh.latest(Kind.OHLCV, "SOLUSDT", "1h")["ts"] == pd.Timestamp("2025-03-01", tz="UTC")
    again = runner.invoke(app, ["demo", "--if-missing"])
    assert "keeping it" in again.output
    summary = runner.invoke(app, ["data", "summary"])
    assert (
        summary.exit_code == 0
        and "BTCUSDT" in summary.output
        and "Latest imports" in summary.output
    )


def test_ingest_folder_reports_and_is_idempotent(
    data_dir: Path, tmp_path: Path, demo: dict
) -> None:
    src = tmp_path / "in"
    m = demo["BTCUSDT"]
    write_normalised_csv(m.mark, src / "BTCUSDT_1h_mark.csv.gz", Kind.MARK)
    write_normalised_csv(m.ohlcv, src / "BTCUSDT_1h_ohlcv.csv.gz", Kind.OHLCV)
    write_normalised_csv(m.funding, src / "BTCUSDT_1h_funding_rate.csv.gz", Kind.FUNDING)
    first = runner.invoke(app, ["ingest", str(src)])
    assert first.exit_code == 0, first.output
    assert "2 exchange listing placeholders, removed" in first.output
    second = runner.invoke(app, ["ingest", str(src)])
    assert second.exit_code == 0
    with session_scope(make_engine()) as s:
        runs = latest_ingest_runs(s, symbol="BTCUSDT", kind="ohlcv")
        assert [r.rows_added for r in runs] == [0, len(m.ohlcv) - 2]
        assert (
            runs[0].report["counts"]["unconfirmed_wicks"]
            == runs[1].report["counts"]["unconfirmed_wicks"]
        )


def test_bad_file_in_folder_writes_nothing(data_dir: Path, tmp_path: Path, demo: dict) -> None:
    src = tmp_path / "in"
    write_normalised_csv(demo["BTCUSDT"].ohlcv, src / "BTCUSDT_1h_ohlcv.csv", Kind.OHLCV)
    bad = src / "ETHUSDT_1h_ohlcv.csv"
    bad.write_text(
        "timestamp_utc,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n2024-01-01T01:00:00Z,1,2,0.5,oops,3\n"
    )
    res = runner.invoke(app, ["ingest", str(src)])
    assert res.exit_code == 2
    out = "".join(res.output.split())  # rich wraps long lines
    assert "ETHUSDT_1h_ohlcv.csv,line3:expectedcloseasanumber;got'oops'" in out
    assert Warehouse(data_dir / "warehouse").datasets() == []


def test_ingest_without_arguments_and_export(data_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["ingest"])
    assert res.exit_code != 0 and "give files or folders" in res.output
    runner.invoke(app, ["demo", "--days", "3", "--end", "2025-01-10"])
    out = tmp_path / "btc.parquet"
    res = runner.invoke(app, ["data", "export", "BTCUSDT", str(out)])
    assert res.exit_code == 0 and out.exists()
    bad = runner.invoke(app, ["data", "export", "BTCUSDT", str(tmp_path / "btc.xlsx")])
    assert bad.exit_code == 2 and "usea.parquet" in "".join(bad.output.split())
