"""Warehouse: idempotent merges, atomic writes, range queries and resampling in DuckDB."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bti_core.errors import NoDataError
from bti_core.market.cleaning import clean_bars
from bti_core.market.schema import Kind
from bti_core.market.warehouse import Warehouse
from tests.conftest import hourly


def _cleaned(n: int, start: str = "2024-01-01") -> pd.DataFrame:
    return clean_bars(hourly(n, start=start), symbol="BTCUSDT", timeframe="1h")[0]


def test_reimport_adds_nothing_and_leaves_file_identical(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    bars = _cleaned(100)
    first = wh.write("ohlcv", "BTCUSDT", "1h", bars)
    before = wh.path("ohlcv", "BTCUSDT", "1h").read_bytes()
    again = wh.write("ohlcv", "BTCUSDT", "1h", bars)
    assert (first.rows_added, first.rows_total) == (100, 100)
    assert (again.rows_added, again.rows_updated, again.rows_total) == (0, 0, 100)
    assert wh.path("ohlcv", "BTCUSDT", "1h").read_bytes() == before


def test_overlapping_import_merges_and_counts_updates(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    bars = _cleaned(100)
    wh.write("ohlcv", "BTCUSDT", "1h", bars.iloc[:60])
    changed = bars.iloc[50:].copy()
    changed.loc[changed.index[0], "close"] *= 1.01  # a corrected bar
    res = wh.write("ohlcv", "BTCUSDT", "1h", changed)
    assert (res.rows_added, res.rows_updated, res.rows_total) == (40, 1, 100)
    out = wh.query("ohlcv", "BTCUSDT", "1h")
    assert out["ts"].is_monotonic_increasing and out["ts"].is_unique
    assert out.loc[50, "close"] == changed["close"].iloc[0]
    # an older file imported later is merged in order too
    res = wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(10, start="2023-12-31 00:00"))
    assert res.rows_added == 10
    assert wh.query("ohlcv", "BTCUSDT", "1h")["ts"].is_monotonic_increasing


def test_interrupted_write_leaves_previous_state_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = Warehouse(tmp_path)
    wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(100))
    before = wh.query("ohlcv", "BTCUSDT", "1h")

    real = pq.write_table

    def dies_halfway(table, where, **kw):  # type: ignore[no-untyped-def]
        real(table.slice(0, 10), where, **kw)  # part of the file is on disk …
        raise KeyboardInterrupt("killed")  # … when the process is stopped

    monkeypatch.setattr(pq, "write_table", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(50, start="2024-02-01"))
    monkeypatch.setattr(pq, "write_table", real)

    pd.testing.assert_frame_equal(wh.query("ohlcv", "BTCUSDT", "1h"), before)
    assert [
        p.name
        for p in wh.path("ohlcv", "BTCUSDT", "1h").parent.iterdir()
        if not p.name.endswith(".lock")
    ] == ["1h.parquet"]


def test_stale_temporary_from_a_dead_writer_is_cleared(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(10))
    stale = wh.path("ohlcv", "BTCUSDT", "1h").with_name(".tmp-999-1-1h.parquet")
    stale.write_bytes(b"half a file")
    wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(10, start="2024-03-01"))
    assert not stale.exists()


def test_range_query_latest_and_catalogue(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    bars = _cleaned(72)
    wh.write("ohlcv", "BTCUSDT", "1h", bars)
    day2 = wh.query("ohlcv", "BTCUSDT", "1h", "2024-01-02", "2024-01-03")
    assert len(day2) == 24 and day2["ts"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert str(day2["ts"].dtype) == "datetime64[us, UTC]"
    pd.testing.assert_frame_equal(
        day2.reset_index(drop=True), bars.iloc[24:48].reset_index(drop=True)
    )
    assert wh.latest("ohlcv", "BTCUSDT", "1h")["ts"] == bars["ts"].iloc[-1]
    assert len(wh.query("ohlcv", "BTCUSDT", "1h", limit=5)) == 5
    (d,) = wh.datasets()
    assert (d.symbol, d.rows, d.first, d.last) == (
        "BTCUSDT",
        72,
        bars["ts"].iloc[0],
        bars["ts"].iloc[-1],
    )
    assert wh.symbols() == ["BTCUSDT"]


def test_missing_data_error_says_what_exists(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(5))
    with pytest.raises(NoDataError, match=r"stored timeframes: 1h.*bti ingest"):
        wh.query("ohlcv", "BTCUSDT", "5m")


@pytest.mark.parametrize(("target", "rows", "bars"), [("4h", 12, 4), ("1d", 2, 24)])
def test_resample_matches_pandas(tmp_path: Path, target: str, rows: int, bars: int) -> None:
    wh = Warehouse(tmp_path)
    src = _cleaned(48)
    wh.write("ohlcv", "BTCUSDT", "1h", src)
    out = wh.resample("BTCUSDT", "1h", target)
    ref = (
        src.set_index("ts")
        .resample(pd.Timedelta(target))
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    )
    assert len(out) == rows and (out["bars"] == bars).all()
    for col in ("open", "high", "low", "close", "volume"):
        assert out[col].to_numpy() == pytest.approx(ref[col].to_numpy())
    assert out["ts"].tolist() == ref.index.tolist()
    # bars() falls back to resampling when the timeframe is not stored
    pd.testing.assert_frame_equal(wh.bars("BTCUSDT", target), out)


def test_resample_refuses_shorter_or_uneven_targets(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    wh.write("ohlcv", "BTCUSDT", "1h", _cleaned(5))
    with pytest.raises(ValueError, match="whole multiple"):
        wh.resample("BTCUSDT", "1h", "1m")


def _writer(root: str, start: str) -> None:
    Warehouse(root).write("ohlcv", "BTCUSDT", "1h", _cleaned(500, start=start))


@pytest.mark.slow
def test_concurrent_writers_in_two_processes_lose_nothing(tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    starts = ["2024-01-01", "2024-03-01", "2024-05-01", "2024-07-01"]
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s)) for s in starts]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    out = Warehouse(tmp_path).query("ohlcv", "BTCUSDT", "1h")
    assert len(out) == 2000 and out["ts"].is_unique and out["ts"].is_monotonic_increasing


def test_catalogue_and_stamp_follow_every_write(tmp_path: Path) -> None:
    """Footers are read once per version of a file (pages list symbols and ranges on every
    run); a write by anyone, here a second handle as another process would be, is seen at
    once: the stamp changes and the catalogue reads the new footer."""
    wh, other = Warehouse(tmp_path), Warehouse(tmp_path)
    assert wh.stamp("BTCUSDT") == () and wh.symbols() == []
    bars = _cleaned(48)
    other.write("ohlcv", "BTCUSDT", "1h", bars.iloc[:24])
    first = wh.stamp("BTCUSDT")
    assert [s[0] for s in first] == ["ohlcv/1h.parquet"]
    assert wh.dataset("ohlcv", "BTCUSDT", "1h").last == bars["ts"].iloc[23]  # type: ignore[union-attr]
    assert wh.stamp("BTCUSDT") == first  # nothing written: the same stamp

    other.write("ohlcv", "BTCUSDT", "1h", bars.iloc[24:])
    other.write("mark", "BTCUSDT", "1h", bars)
    second = wh.stamp("BTCUSDT")
    assert second != first and len(second) == 2
    d = wh.dataset("ohlcv", "BTCUSDT", "1h")
    assert d is not None and (d.rows, d.last) == (48, bars["ts"].iloc[-1])
    assert wh.timeframes("BTCUSDT", Kind.MARK) == ["1h"]
    assert wh.latest("ohlcv", "BTCUSDT", "1h")["ts"] == bars["ts"].iloc[-1]
