"""Ingest and query speed of the market warehouse.

Prints:
1. seconds to clean and store 1,000,000 one-minute bars (last price checked against the mark
   price), beside the bare cost of writing the same table to Parquet with pyarrow (reference);
   then the same bars imported from files (a Binance kline zip and a normalised .csv.gz: read
   in blocks, time-checked, cleaned and stored), beside a bare unzip-and-parse (reference);
2. DuckDB range-query latency over a 10,000,000-bar file: one day, one week and one month of
   1m bars at random places, the latest bar, and a month resampled to 1h; beside pandas reading
   the whole file and filtering (reference).

Goals (issue #2): ≤ 5 s and ≤ 200 ms on the 2-core machine. Run: `make bench` or
`.venv/bin/python benchmarks/ingest.py`.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bti_core.market.cleaning import clean_bars
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.sources import BINANCE_KLINE_COLUMNS, write_normalised_csv
from bti_core.market.synthetic import DEFAULT_SYMBOLS, DemoMarket, generate_demo_markets
from bti_core.market.warehouse import Warehouse


def random_walk_bars(n: int, seed: int = 0) -> pd.DataFrame:
    """Cheap 1m bars for the 10M-row file (the generator's GARCH loop would take a minute)."""
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.standard_t(4, n) * 4e-4))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    wig = np.abs(rng.standard_normal((n, 2))) * 2e-4
    return pd.DataFrame(
        {
            "ts": pd.date_range("2006-01-01", periods=n, freq="1min", tz="UTC").astype(
                "datetime64[us, UTC]"
            ),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wig[:, 0]),
            "low": np.minimum(open_, close) * (1 - wig[:, 1]),
            "close": close,
            "volume": rng.gamma(2.0, 5.0, n),
            "flags": np.zeros(n, dtype=np.uint8),
        }
    )


def import_files(root: Path, m: DemoMarket) -> None:
    """Import the same 1,000,000 bars from files, as `bti ingest` does: a Binance kline zip and
    a normalised .csv.gz, read in blocks, checked, cleaned and stored (best of 3)."""
    print("\n== import: read, check, clean and store 1,000,000 one-minute bars from a file")
    files = root / "files"
    (files / "markPriceKlines").mkdir(parents=True)
    ms_open = m.ohlcv["ts"].astype("int64").to_numpy() // 1000
    kl = pd.DataFrame({c: 0 for c in BINANCE_KLINE_COLUMNS}, index=m.ohlcv.index)
    kl["open_time"], kl["close_time"] = ms_open, ms_open + 59_999
    for c in ("open", "high", "low", "close", "volume"):
        kl[c] = m.ohlcv[c]
    csv_bytes = kl.to_csv(index=False, header=False).encode()
    zpath = files / "BTCUSDT-1m-2024-01.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("BTCUSDT-1m-2024-01.csv", csv_bytes)
    gz = files / "ETHUSDT_1m_ohlcv.csv.gz"
    write_normalised_csv(m.ohlcv, gz, Kind.OHLCV)
    for label, path in (("Binance kline zip", zpath), ("normalised .csv.gz", gz)):
        best = float("inf")
        for i in range(3):
            ing = Ingestor(Warehouse(root / f"imp-{label[:3]}-{i}"), None)
            t0 = time.perf_counter()
            ing.ingest_paths([path])
            best = min(best, time.perf_counter() - t0)
        print(f"{label:<20} {path.stat().st_size / 1e6:5.1f} MB: {best:.2f} s")
    t0 = time.perf_counter()
    with zipfile.ZipFile(zpath) as z:
        pacsv.read_csv(
            io.BytesIO(z.read("BTCUSDT-1m-2024-01.csv")),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        )
    t_ref = time.perf_counter() - t0
    print(f"reference, unzip + bare pyarrow CSV parse of the kline file: {t_ref:.2f} s")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bti-bench-"))
    print("== ingest: clean and store 1,000,000 one-minute bars")
    markets = generate_demo_markets(
        DEFAULT_SYMBOLS[:1], start="2024-01-01", periods=1_000_000, timeframe="1m", seed=4
    )
    m = markets["BTCUSDT"]
    wh = Warehouse(root / "wh")
    t0 = time.perf_counter()
    mark, _ = clean_bars(m.mark, symbol="BTCUSDT", timeframe="1m", kind="mark")
    wh.write("mark", "BTCUSDT", "1m", mark)
    t_mark = time.perf_counter() - t0
    t0 = time.perf_counter()
    bars, report = clean_bars(m.ohlcv, symbol="BTCUSDT", timeframe="1m", mark=mark)
    t_clean = time.perf_counter() - t0
    res = wh.write("ohlcv", "BTCUSDT", "1m", bars)
    t_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = wh.write("ohlcv", "BTCUSDT", "1m", bars)
    t_again = time.perf_counter() - t0
    t0 = time.perf_counter()
    pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), root / "ref.parquet")
    t_ref = time.perf_counter() - t0
    print(
        f"last-price bars: clean {t_clean:.2f} s + store = {t_total:.2f} s "
        f"({res.rows_added:,} rows; goal ≤ 5 s)"
    )
    print(f"mark-price bars: clean + store {t_mark:.2f} s")
    print(f"re-import of the same bars: {t_again:.2f} s, {again.rows_added} rows added")
    print(
        f"reference, bare pyarrow Parquet write: {t_ref:.2f} s "
        f"(ingest/reference = {t_total / t_ref:.1f}x)"
    )
    print(f"cleaning found: {report.changed}")

    import_files(root, m)

    print("\n== query: DuckDB over 10,000,000 one-minute bars (one Parquet file)")
    big = random_walk_bars(10_000_000)
    wh.write("ohlcv", "BIGUSDT", "1m", big)
    size = wh.path("ohlcv", "BIGUSDT", "1m").stat().st_size
    print(
        f"file: {size / 1e6:.0f} MB, {len(big):,} rows, {big['ts'].iloc[0]:%Y-%m-%d} → "
        f"{big['ts'].iloc[-1]:%Y-%m-%d}"
    )
    rng = np.random.default_rng(1)
    first, last = big["ts"].iloc[0], big["ts"].iloc[-1]
    wh.query("ohlcv", "BIGUSDT", "1m", first, first + pd.Timedelta(days=1))  # warm the OS cache
    results: dict[str, float] = {}
    for label, span in (("1 day", "1D"), ("1 week", "7D"), ("1 month", "30D")):
        times = []
        for _ in range(30):
            start = first + (last - first - pd.Timedelta(span)) * float(rng.random())
            t0 = time.perf_counter()
            out = wh.query("ohlcv", "BIGUSDT", "1m", start, start + pd.Timedelta(span))
            times.append(time.perf_counter() - t0)
        p50, p95 = statistics.median(times), float(np.percentile(times, 95))
        results[label] = p50
        print(
            f"range {label:<8} ({len(out):>6,} rows): p50 {ms(p50)}, p95 {ms(p95)}  (goal ≤ 200 ms)"
        )
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        wh.latest("ohlcv", "BIGUSDT", "1m")
        times.append(time.perf_counter() - t0)
    print(f"latest bar: p50 {ms(statistics.median(times))}")
    times = []
    for _ in range(10):
        start = first + (last - first - pd.Timedelta(days=30)) * float(rng.random())
        t0 = time.perf_counter()
        out = wh.resample("BIGUSDT", "1m", "1h", start, start + pd.Timedelta(days=30))
        times.append(time.perf_counter() - t0)
    print(f"resample 1 month 1m → 1h ({len(out)} bars): p50 {ms(statistics.median(times))}")
    t0 = time.perf_counter()
    whole = pd.read_parquet(wh.path("ohlcv", "BIGUSDT", "1m"))
    sel = whole[(whole["ts"] >= first) & (whole["ts"] < first + pd.Timedelta(days=1))]
    t_ref = time.perf_counter() - t0
    print(
        f"reference, pandas read whole file + filter 1 day ({len(sel):,} rows): {ms(t_ref)} "
        f"(reference/DuckDB 1 day = {t_ref / results['1 day']:.0f}x)"
    )


if __name__ == "__main__":
    main()
