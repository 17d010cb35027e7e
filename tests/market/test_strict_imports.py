"""What a careless or hostile file must not do (issue 16): every case here was accepted, or
failed without a place, before the importers were made strict."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bti_core.cli import app
from bti_core.db.engine import make_engine, migrate
from bti_core.errors import DataFormatError
from bti_core.market.ingest import Ingestor
from bti_core.market.reading import ImportLimits
from bti_core.market.schema import Kind
from bti_core.market.sources import BINANCE_KLINE_COLUMNS, read_file
from bti_core.market.warehouse import Warehouse
from tests.fuzz.conftest import tree_hash

HEADER = ",".join(BINANCE_KLINE_COLUMNS)
NOW = pd.Timestamp("2024-06-01 12:00", tz="UTC")


def kline(ts: pd.Timestamp, o: float, h: float, lo: float, c: float, v: float = 10.0) -> str:
    ms = int(ts.timestamp() * 1000)
    return f"{ms},{o},{h},{lo},{c},{v},{ms + 3_599_999},0,0,0,0,0"


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Ingestor, Path, Path]:
    """An ingestor at a fixed present, over a warehouse that already holds a day of BTCUSDT."""
    wh = Warehouse(tmp_path / "wh")
    db_file = tmp_path / "bti.db"
    engine = make_engine(f"sqlite:///{db_file}")
    migrate(engine)
    ing = Ingestor(wh, engine, clock=lambda: NOW)
    start = NOW - pd.Timedelta(hours=30)
    rows = [kline(start + pd.Timedelta(hours=i), 100, 101, 99, 100.5) for i in range(24)]
    f = tmp_path / "in" / "BTCUSDT-1h-2024-05.csv"
    f.parent.mkdir()
    f.write_text("\n".join(rows) + "\n")
    ing.ingest_paths([f])
    engine.dispose()
    return ing, tmp_path / "wh", db_file


def refused(ing: Ingestor, path: Path, roots: tuple[Path, Path]) -> DataFormatError:
    before = tree_hash(*roots)
    with pytest.raises(DataFormatError) as info:
        ing.ingest_paths([path])
    assert tree_hash(*roots) == before, "a refused import changed the warehouse or the database"
    return info.value


# --- 1. times that cannot have happened --------------------------------------------------------


def test_a_bar_dated_after_the_present_is_refused_with_file_and_line(
    stores: tuple[Ingestor, Path, Path], tmp_path: Path
) -> None:
    ing, wh, db = stores
    f = tmp_path / "markPriceKlines" / "BTCUSDT-1h-2024-06-01.csv"
    f.parent.mkdir()
    ok = kline(NOW - pd.Timedelta(hours=1), 100, 101, 99, 100)
    future = kline(NOW + pd.Timedelta(hours=20), 100, 101, 10, 100)  # a low under any liq.
    f.write_text(f"{HEADER}\n{ok}\n{future}\n")
    err = refused(ing, f, (wh, db))
    assert err.line == 3 and f.name in str(err)
    assert "to now (2024-06-01 12:05 UTC" in str(err) and "2024-06-02 08:00:00 UTC" in str(err)


@pytest.mark.parametrize(
    ("stamp", "year"),
    [
        ("2099-01-01T00:00:00Z", "2099"),
        ("1970-01-01T00:00:00Z", "1970"),
        ("5138-11-16T00:00:00Z", "5138"),
    ],
)
def test_implausible_years_are_refused_with_the_line(
    stores: tuple[Ingestor, Path, Path], tmp_path: Path, stamp: str, year: str
) -> None:
    ing, wh, db = stores
    f = tmp_path / "ETHUSDT_1h_mark.csv"
    f.write_text(
        "timestamp_utc,open,high,low,close,volume\n"
        f"2024-05-31T00:00:00Z,1,2,0.5,1.5,1\n{stamp},1,2,0.5,1.5,1\n"
    )
    err = refused(ing, f, (wh, db))
    assert err.line == 3
    assert "expected times from 2009-01-03 to now" in str(err) and year in str(err)
    assert "nanosecond" not in str(err)


def test_binance_ms_in_year_5138_and_seconds_are_refused_as_unit_mistakes(tmp_path: Path) -> None:
    for name, value in (("BTCUSDT-1h-2024-01.csv", 99_999_999_999_999), ("X", 1704067200)):
        f = tmp_path / "BTCUSDT-1h-2024-01.csv"
        f.write_text(f"{value},1,2,0.5,1.5,10,0,0,0,0,0,0\n")
        with pytest.raises(DataFormatError) as info:
            read_file(f, now=NOW)
        assert info.value.line == 1, name
        assert "milliseconds or microseconds since 1970" in str(info.value)


def test_a_future_frame_from_any_source_is_refused(stores: tuple[Ingestor, Path, Path]) -> None:
    ing, wh, db = stores
    frame = pd.DataFrame(
        {
            "ts": pd.date_range(NOW, periods=3, freq="1h", tz="UTC"),
            **{c: [1.0, 1.0, 1.0] for c in ("open", "high", "low", "close", "volume")},
        }
    )
    before = tree_hash(wh, db)
    with pytest.raises(DataFormatError, match=r"binanceusdm, row 2: expected times from 2009"):
        ing.ingest_frame(
            frame, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="binanceusdm"
        )
    assert tree_hash(wh, db) == before


# --- 2. a header is read by name --------------------------------------------------------------


def test_a_binance_header_is_mapped_by_name(tmp_path: Path) -> None:
    swapped = HEADER.replace("open,high,low,close", "close,high,low,open")
    f = tmp_path / "BTCUSDT-1h-2024-01.csv"
    f.write_text(f"{swapped}\n1704067200000,42475.2,42554.5,42289.6,42314.0,6.4,0,0,0,0,0,0\n")
    _, df = read_file(f, now=NOW)
    assert (df["open"].iloc[0], df["close"].iloc[0]) == (42314.0, 42475.2)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (HEADER.replace("close,", "closing,", 1), "missing close; unknown closing"),
        (HEADER.replace("volume,", "open,", 1), "missing volume; repeated open"),
        (HEADER + ",extra", "unknown extra"),
    ],
)
def test_a_header_that_is_not_the_format_is_refused(
    tmp_path: Path, header: str, problem: str
) -> None:
    f = tmp_path / "BTCUSDT-1h-2024-01.csv"
    f.write_text(f"{header}\n1704067200000,1,2,0.5,1.5,10,0,0,0,0,0,0\n")
    with pytest.raises(DataFormatError) as info:
        read_file(f, now=NOW)
    assert info.value.line == 1 and problem in str(info.value) and "any order" in str(info.value)


def test_normalised_and_funding_headers_are_read_by_name_too(tmp_path: Path) -> None:
    f = tmp_path / "BTCUSDT_1h_ohlcv.csv"
    f.write_text("volume,close,low,high,open,timestamp_utc\n7,1.5,0.5,2,1,2024-01-01T00:00:00Z\n")
    _, df = read_file(f, now=NOW)
    assert df.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [1, 2, 0.5, 1.5, 7]
    g = tmp_path / "BTCUSDT-fundingRate-2024-01.csv"
    g.write_text("last_funding_rate,calc_time,funding_interval_hours\n0.0001,1704067200000,8\n")
    _, fr = read_file(g, now=NOW)
    assert fr["funding_rate"].iloc[0] == 0.0001


# --- 3. a file whose every row is dropped is an error -----------------------------------------


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (  # open times off the hourly grid (e.g. a 30-minute file named 1h)
            [
                kline(
                    NOW - pd.Timedelta(minutes=30 * (i + 1)) + pd.Timedelta(minutes=1),
                    1,
                    2,
                    0.5,
                    1.5,
                )
                for i in range(24)
            ],
            "open times off the timeframe grid",
        ),
        (  # every bar impossible: high under low
            [kline(NOW - pd.Timedelta(hours=i + 1), 1, 0.5, 2, 1.5) for i in range(24)],
            "impossible bars",
        ),
    ],
)
def test_a_file_that_keeps_no_row_is_an_error_that_stores_nothing(
    stores: tuple[Ingestor, Path, Path], tmp_path: Path, rows: list[str], why: str
) -> None:
    ing, wh, db = stores
    f = tmp_path / "SOLUSDT-1h-2024-05.csv"
    f.write_text("\n".join(rows) + "\n")
    err = refused(ing, f, (wh, db))
    assert f.name in str(err) and "none kept of 24" in str(err) and why in str(err)
    assert ing.warehouse.symbols() == ["BTCUSDT"]


def test_a_bad_file_in_a_folder_stores_nothing_of_the_good_ones(
    stores: tuple[Ingestor, Path, Path], tmp_path: Path
) -> None:
    ing, wh, db = stores
    folder = tmp_path / "batch"
    folder.mkdir()
    good = [kline(NOW - pd.Timedelta(hours=i + 1), 1, 2, 0.5, 1.5) for i in range(5)]
    (folder / "ADAUSDT-1h-2024-05.csv").write_text("\n".join(good) + "\n")
    (folder / "XRPUSDT-1h-2024-05.csv").write_text(kline(NOW, 1, 0.5, 2, 1) + "\n")
    err = refused(ing, folder, (wh, db))
    assert "XRPUSDT-1h-2024-05.csv" in str(err)
    assert ing.warehouse.symbols() == ["BTCUSDT"]


# --- 4. an interrupted write lists nothing ----------------------------------------------------


def test_temp_files_and_empty_datasets_are_not_listed_and_are_swept(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh")
    folder = tmp_path / "wh" / "ohlcv" / "DOGEUSDT"
    folder.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = folder / f".tmp-{dead.stdout.strip()}-1-1h.parquet"
    stale.write_bytes(b"PAR1 half a file")
    assert wh.symbols() == [] and wh.timeframes("DOGEUSDT") == [] and wh.datasets() == []
    assert wh.sweep() == 1 and not stale.exists()
    assert wh.write(Kind.OHLCV, "DOGEUSDT", "1h", pd.DataFrame({"ts": []})).rows_total == 0
    assert not (folder / "1h.parquet").exists(), "an empty frame created an empty dataset"


_KILLED_IMPORT = r"""
import sys
from pathlib import Path
from bti_core.market.ingest import Ingestor
from bti_core.market.warehouse import Warehouse
from tests.fuzz.conftest import tree_hash
Ingestor(Warehouse(Path(sys.argv[1])), None).ingest_paths([Path(sys.argv[2])])
"""


@pytest.mark.slow
def test_an_import_killed_during_its_first_write_lists_no_symbol(tmp_path: Path) -> None:
    """A real process, killed with SIGKILL while it writes a new symbol's first file."""
    start = pd.Timestamp("2020-01-01", tz="UTC")
    f = tmp_path / "BTCUSDT_1m_ohlcv.csv"
    n = 600_000
    ts = pd.date_range(start, periods=n, freq="1min").strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame(
        {"timestamp_utc": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 1.0}
    ).to_csv(f, index=False)
    root = tmp_path / "wh"
    folder = root / "ohlcv" / "BTCUSDT"
    caught = False
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_IMPORT, str(root), str(f)])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if folder.is_dir() and any(p.name.startswith(".tmp-") for p in folder.iterdir()):
                caught = True
                break
            time.sleep(0.002)
        proc.kill()
        proc.wait()
        if caught:
            break
        for p in root.rglob("*.parquet"):  # it finished first; start again
            p.unlink()
    wh = Warehouse(root)
    if (folder / "1m.parquet").exists():
        pytest.skip("the writer renamed its file before the kill on every attempt")
    assert caught, "never saw the writer's temp file"
    assert wh.symbols() == [] and wh.datasets() == []
    assert wh.sweep() >= 1 and not list(folder.glob("*.parquet"))


# one kill point in `make test` (a symbol half written); BTI_KILL_POINTS=1,2,3,5,8 for more
KILL_POINTS = [int(k) for k in os.environ.get("BTI_KILL_POINTS", "5").split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_files", KILL_POINTS)
def test_a_demo_killed_halfway_is_redone_by_if_missing(
    data_dir: Path, kill_after_files: int
) -> None:
    """`bti demo` killed (SIGKILL) after its first file(s): every symbol listed has all its
    data, and `bti demo --if-missing` (what `make run` runs) completes the demo."""
    root = data_dir / "warehouse"
    env = {**os.environ, "BTI_DATA_DIR": str(data_dir)}
    bti = [sys.executable, "-m", "bti_core.cli"]
    proc = subprocess.Popen(
        [*bti, "demo", "--days", "30", "--quiet"], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            len([p for p in root.rglob("*.parquet") if not p.name.startswith(".")])
            >= kill_after_files
        ):
            break
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    wh = Warehouse(root)
    for symbol in wh.symbols():  # listed means complete
        assert wh.timeframes(symbol, Kind.MARK) == ["1h"], symbol
        assert wh.timeframes(symbol, Kind.FUNDING) == ["8h"], symbol
    assert len(wh.symbols()) < 4, "the demo finished before the kill"
    out = subprocess.run(
        [*bti, "demo", "--days", "30", "--if-missing", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "interrupted" in out.stdout
    assert wh.symbols() == ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for symbol in wh.symbols():
        assert wh.timeframes(symbol, Kind.MARK) == ["1h"] and wh.timeframes(
            symbol, Kind.FUNDING
        ) == ["8h"]
        # 30 days of bars, less the exchange quirks the demo adds (placeholders, maintenance)
        assert wh.dataset(Kind.OHLCV, symbol, "1h").rows > 30 * 24 - 6  # type: ignore[union-attr]
    again = subprocess.run(
        [*bti, "demo", "--if-missing"], env=env, capture_output=True, text=True, check=True
    )
    assert "kept" in again.stdout


# --- 5. bounded size ------------------------------------------------------------------------


def _bomb(path: Path, rows: int) -> Path:
    row = kline(pd.Timestamp("2024-01-01", tz="UTC"), 1, 2, 0.5, 1.5) + "\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(path.with_suffix(".csv").name, row * rows)
    return path


def test_a_small_zip_holding_a_huge_csv_is_refused_above_the_ceiling(tmp_path: Path) -> None:
    z = _bomb(tmp_path / "BTCUSDT-1h-2024-01.zip", 400_000)
    assert z.stat().st_size < 200_000
    with pytest.raises(
        DataFormatError,
        match=r"at most 10 MiB of data per file once decompressed \(BTI_IMPORT_MAX_MB",
    ):
        read_file(z, limits=ImportLimits(max_bytes=10 << 20), now=NOW)
    with pytest.raises(DataFormatError, match=r"at most 1,000 rows per file \(BTI_IMPORT_MAX_ROWS"):
        read_file(z, limits=ImportLimits(max_rows=1000, block_bytes=1 << 16), now=NOW)


def test_a_lying_zip_header_is_caught_by_counting(tmp_path: Path) -> None:
    """The member's declared size is a claim; the stream counts what it inflates."""
    z = _bomb(tmp_path / "BTCUSDT-1h-2024-01.zip", 200_000)
    data = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.infolist()[0]
    real = info.file_size.to_bytes(4, "little")
    data = data.replace(real, (1000).to_bytes(4, "little"))  # local and central headers
    z.write_bytes(bytes(data))
    with pytest.raises(DataFormatError) as err:
        read_file(z, limits=ImportLimits(max_bytes=1 << 20), now=NOW)
    assert "at most 1 MiB" in str(err.value) or "readable" in str(err.value)


@pytest.mark.parametrize(
    ("offset_local", "offset_central", "value", "why"),
    [
        (8, 10, 99, "That compression method is not supported"),  # method 99 (AES)
        (6, 8, 0x20, "compressed patched data"),  # flag bit 5
        (4, 6, 235, "zip file version 23.5"),  # needs a later zip version
    ],
)
def test_a_zip_python_cannot_read_is_refused_with_the_reason(
    tmp_path: Path, offset_local: int, offset_central: int, value: int, why: str
) -> None:
    """Found by fuzzing: zipfile raises NotImplementedError (not BadZipFile) for these, which
    escaped the importer as a crash."""
    z = _bomb(tmp_path / "BTCUSDT-1h-2024-01.zip", 10)
    data = bytearray(z.read_bytes())
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + offset_local : local + offset_local + 2] = value.to_bytes(2, "little")
    data[central + offset_central : central + offset_central + 2] = value.to_bytes(2, "little")
    z.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"a readable CSV, \.csv\.gz or \.zip file") as err:
        read_file(z, now=NOW)
    assert why in str(err.value) and z.name in str(err.value)


def test_the_ceilings_come_from_the_settings(data_dir: Path, tmp_path: Path) -> None:
    z = _bomb(tmp_path / "BTCUSDT-1h-2024-01.zip", 50_000)
    out = CliRunner().invoke(app, ["ingest", str(z)], env={"BTI_IMPORT_MAX_ROWS": "100"})
    assert out.exit_code == 2 and "at most 100 rows per file" in out.output
    assert Warehouse(data_dir / "warehouse").symbols() == []


_PEAK = r"""
import resource, sys
from pathlib import Path
from bti_core.market.sources import read_file
src, df = read_file(Path(sys.argv[1]))
print(len(df), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_a_190_mb_csv_in_a_small_zip_is_read_in_blocks(tmp_path: Path) -> None:
    """The issue's case: before, a 544 KB zip of a 190 MB CSV peaked at 1.3 GB of memory."""
    z = _bomb(tmp_path / "BTCUSDT-1h-2024-01.zip", 3_000_000)
    assert z.stat().st_size < 1_000_000
    base = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, bti_core.market.sources; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(z)], capture_output=True, text=True, check=True
    )
    rows, peak = map(int, out.stdout.split())
    assert rows == 3_000_000
    # the parsed columns are 3,000,000 × 7 × 8 bytes = 168 MB; the text is never held whole
    assert peak - int(base.stdout) < 700, f"peak {peak} MB over a {int(base.stdout)} MB baseline"


# --- 6. messages with a place ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "line", "says"),
    [  # blank lines count: the line is the one an editor shows
        (
            "2024-01-01T00:00:00Z,1,2,0.5,1.5,1\n\n2024-01-01 01:00:00,1,2,0.5,1.5,1",
            4,
            "mixes times with and without a zone",
        ),
        (
            "2024-01-01T00:00:00Z,1,2,0.5,1.5,1\n\n\n2099-01-01T00:00:00Z,1,2,0.5,1.5,1",
            5,
            "expected times from 2009-01-03",
        ),
    ],
)
def test_a_bad_time_names_its_line(tmp_path: Path, rows: str, line: int, says: str) -> None:
    f = tmp_path / "BTCUSDT_1h_ohlcv.csv"
    f.write_text(f"timestamp_utc,open,high,low,close,volume\n{rows}\n")
    with pytest.raises(DataFormatError) as info:
        read_file(f, now=NOW)
    assert info.value.line == line and says in str(info.value)


def test_a_parquet_time_out_of_range_names_the_row(tmp_path: Path) -> None:
    f = tmp_path / "BTCUSDT_1h_ohlcv.parquet"
    ts = pd.Series(
        pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00", "2230-01-01 00:00"], utc=True)
    )
    pd.DataFrame(
        {"ts": ts, **{c: [1.0, 1.0, 1.0] for c in ("open", "high", "low", "close", "volume")}}
    ).to_parquet(f)
    with pytest.raises(DataFormatError) as info:
        read_file(f, now=NOW)
    assert info.value.row == 3 and "row 3" in str(info.value) and "2230-01-01" in str(info.value)
