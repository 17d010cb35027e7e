"""Every importer format, fuzzed: generated files that are mostly well formed, with one or more
things wrong (a value, a time, a header, the layout, the compression, the bytes).

Property: `Ingestor.ingest_paths` either stores rows that are all valid, or raises a `BTIError`
naming the file and what is allowed, leaving the warehouse and the database byte-for-byte as
they were. Any other exception fails the case."""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bti_core.db.engine import make_engine, migrate
from bti_core.errors import BTIError
from bti_core.market.cleaning import MAX_ABS_FUNDING_RATE, OHLC_RELATIVE_SLACK
from bti_core.market.ingest import Ingestor
from bti_core.market.reading import ImportLimits
from bti_core.market.schema import Kind, allowed_times, timeframe_delta
from bti_core.market.sources import BINANCE_FUNDING_COLUMNS, BINANCE_KLINE_COLUMNS
from bti_core.market.warehouse import Warehouse
from tests.fuzz.conftest import assert_names, cases, tally, tree_hash

NOW = pd.Timestamp("2024-06-01 12:00", tz="UTC")
# the formats' own column names: what a well-formed file's header holds
KLINE_HEADER = BINANCE_KLINE_COLUMNS
FUNDING_HEADER = BINANCE_FUNDING_COLUMNS
BAR_HEADER = ("timestamp_utc", "open", "high", "low", "close", "volume")


@dataclass
class Store:
    ingestor: Ingestor
    warehouse: Path
    db: Path
    inbox: Path
    counter: itertools.count[int]

    def state(self) -> str:
        return tree_hash(self.warehouse, self.db)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("fuzz-import")
    engine = make_engine(f"sqlite:///{root / 'bti.db'}")
    migrate(engine)
    # small ceilings, so that generated files can reach them
    limits = ImportLimits(max_bytes=256 << 10, max_rows=400, block_bytes=1 << 14)
    ing = Ingestor(Warehouse(root / "wh"), engine, limits=limits, clock=lambda: NOW)
    return Store(ing, root / "wh", root / "bti.db", root / "in", itertools.count())


# --- values ------------------------------------------------------------------------------------
# Hypothesis draws a file's structure and what goes wrong in it; the bulk of the numbers come
# from a NumPy generator seeded by a drawn integer (a draw per cell would cost more than the
# import it tests).

garbage = st.one_of(
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e999", "-0", "0x10", "1,5", "١٢", "None"]),
    st.text(alphabet='0123456789.,-+eE :TZ"\\x;\t', max_size=12),
    st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
)


def spoil(draw: st.DrawFn, rows: list[list[str]]) -> list[list[str]]:
    """Half the files are left clean; the rest get one to three cells replaced."""
    if rows and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            r = draw(st.integers(0, len(rows) - 1))
            c = draw(st.integers(0, len(rows[r]) - 1))
            rows[r][c] = draw(garbage)
    return rows


@st.composite
def bar_rows(draw: st.DrawFn, epoch: bool) -> list[list[str]]:
    """Hourly bars before ``NOW`` (sometimes reaching past it), with times on the grid or off
    it, in ms, µs or seconds, some bars impossible."""
    n = draw(st.integers(0, 40))
    start_h = (
        draw(st.integers(-24 * 40, -n)) if draw(st.integers(0, 5)) else draw(st.integers(-n, 48))
    )
    step = draw(st.sampled_from([1, 1, 1, 1, 2, 0]))  # 0: every row the same time
    jitter = draw(st.sampled_from([0] * 6 + [1, 1800]))  # seconds off the grid, every third row
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    price = float(10 ** rng.uniform(-6, 6))
    o = price * (1 + rng.uniform(-0.05, 0.05, n))
    c = price * (1 + rng.uniform(-0.05, 0.05, n))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.02, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.02, n))
    flip = rng.random(n) < draw(st.sampled_from([0.0, 0.0, 0.05, 1.0]))  # high under low
    h, lo = np.where(flip, lo, h), np.where(flip, h, lo)
    v = rng.gamma(2.0, 100.0, n)
    times = [
        NOW + pd.Timedelta(hours=start_h + i * step, seconds=jitter if i % 3 == 2 else 0)
        for i in range(n)
    ]
    if epoch:
        unit = draw(st.sampled_from([1000, 1000, 1000, 1_000_000, 1]))  # ms, µs, s
        stamps = [str(int(t.timestamp()) * unit) for t in times]
    else:
        fmt = draw(
            st.sampled_from(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S+00:00"])
        )
        stamps = [t.strftime(fmt) for t in times]
    rows = []
    for i in range(n):
        cells = [stamps[i], *(repr(float(x)) for x in (o[i], h[i], lo[i], c[i], v[i]))]
        if epoch:
            ms = int(times[i].timestamp() * 1000)
            cells += [str(ms + 3_599_999), "0", "0", "0", "0", "0"]
        rows.append(cells)
    return spoil(draw, rows)


def lay_out(draw: st.DrawFn, header: tuple[str, ...] | None, rows: list[list[str]]) -> bytes:
    """CSV text, sometimes with its layout broken: columns permuted or renamed, a field lost,
    blank lines, CRLF, a byte-order mark, a cut-off end."""
    if header is not None and draw(st.booleans()):  # the same columns in another order
        order = draw(st.permutations(range(len(header))))
        header = tuple(header[i] for i in order)
        rows = [[r[i] if i < len(r) else "" for i in order] for r in rows]
    if header is not None and draw(st.integers(0, 15)) == 0:  # a wrong name
        header = (*header[:-1], draw(st.sampled_from(["", "Close", "price", header[0]])))
    lines = ([",".join(header)] if header is not None else []) + [",".join(r) for r in rows]
    if lines and draw(st.integers(0, 15)) == 0:  # a line with a field lost or added
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i].rsplit(",", 1)[0] if draw(st.booleans()) else lines[i] + ",1"
    if lines and draw(st.integers(0, 10)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), "")
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["\n", ""]))
    data = text.encode()
    if draw(st.integers(0, 20)) == 0:
        data = b"\xef\xbb\xbf" + data
    if data and draw(st.integers(0, 20)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


def wrap(draw: st.DrawFn, data: bytes, csv_name: str) -> tuple[str, bytes]:
    """Plain, gzip or zip, sometimes a corrupt archive."""
    how = draw(st.sampled_from(["plain", "plain", "gzip", "zip"]))
    if how == "gzip":
        out = gzip.compress(data)
        name = csv_name + ".gz"
    elif how == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(csv_name, data)
            if draw(st.integers(0, 15)) == 0:
                z.writestr("second.csv", data)
        out = buf.getvalue()
        name = csv_name.removesuffix(".csv") + ".zip"
    else:
        return csv_name, data
    if draw(st.integers(0, 12)) == 0:  # a flipped or cut byte in the archive
        i = draw(st.integers(0, len(out) - 1))
        out = out[:i] + bytes([out[i] ^ 0xFF]) + out[i + 1 :] if draw(st.booleans()) else out[:i]
    return name, out


# --- the property ------------------------------------------------------------------------------


def check_stored(store: Store, results: list) -> None:  # type: ignore[type-arg]
    """Everything an accepted import stored is a valid bar or funding rate."""
    wh = store.ingestor.warehouse
    lo, hi = allowed_times(NOW)
    for r in results:
        assert r.report.rows_out > 0, "an import that kept no row was accepted"
        df = wh.query(r.kind, r.symbol, r.timeframe)
        ts = df["ts"]
        assert ts.is_monotonic_increasing and ts.is_unique
        assert ts.min() >= lo and ts.max() <= hi, "a time outside 2009..now was stored"
        if r.kind is Kind.FUNDING:
            rate = df["funding_rate"].to_numpy()
            assert np.isfinite(rate).all() and (np.abs(rate) <= MAX_ABS_FUNDING_RATE).all()
            continue
        step = timeframe_delta(r.timeframe).value // 1000
        assert (ts.astype("int64") % step == 0).all(), "a bar off the timeframe grid was stored"
        o, h, low, c, v = (df[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
        assert (
            np.isfinite([o, h, low, c, v]).all() and (np.minimum.reduce([o, h, low, c]) > 0).all()
        )
        slack = 1 + OHLC_RELATIVE_SLACK
        assert (h * slack >= np.maximum.reduce([o, c, low])).all()
        assert (low <= np.minimum(o, c) * slack).all() and (v >= 0).all()


def run_case(store: Store, entry: str, name: str, data: bytes, *, subdir: str = "") -> None:
    folder = store.inbox / str(next(store.counter)) / subdir
    folder.mkdir(parents=True)
    path = folder / name
    path.write_bytes(data)
    before = store.state()
    try:
        results = store.ingestor.ingest_paths([path])
    except BTIError as exc:
        assert_names(str(exc), name, "expected")
        assert store.state() == before, f"a refused import changed stored data: {exc}"
        tally(entry, "refused")
    else:
        check_stored(store, results)
        tally(entry, "accepted")
    finally:
        path.unlink()


# --- one test per format ---------------------------------------------------------------------


@cases(700)
@given(data=st.data())
def test_normalised_bars_csv(store: Store, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["ohlcv", "mark"]))
    symbol = data.draw(st.sampled_from(["BTCUSDT", "ETHUSDT"]))
    rows = data.draw(bar_rows(epoch=False))
    raw = lay_out(data.draw, BAR_HEADER, rows)
    name, blob = wrap(data.draw, raw, f"{symbol}_1h_{kind}.csv")
    entry = "importer: normalised CSV" + ("" if name.endswith(".csv") else " (.gz/.zip)")
    run_case(store, entry, name, blob)


@cases(800)
@given(data=st.data())
def test_binance_klines_csv_with_or_without_header(store: Store, data: st.DataObject) -> None:
    symbol = data.draw(st.sampled_from(["BTCUSDT", "SOLUSDT"]))
    rows = data.draw(bar_rows(epoch=True))
    header = KLINE_HEADER if data.draw(st.booleans()) else None
    raw = lay_out(data.draw, header, rows)
    name, blob = wrap(data.draw, raw, f"{symbol}-1h-2024-05.csv")
    mark = data.draw(st.booleans())
    entry = "importer: Binance klines " + ("CSV" if name.endswith(".csv") else "zip/gzip")
    run_case(store, entry, name, blob, subdir="markPriceKlines" if mark else "klines")


@st.composite
def funding_rows(draw: st.DrawFn, epoch: bool) -> list[list[str]]:
    n = draw(st.integers(0, 30))
    start_h = draw(st.integers(-24 * 60, 24)) // 8 * 8
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rates = rng.normal(1e-4, draw(st.sampled_from([1e-4, 1e-3, 0.1])), n)
    delay = rng.integers(0, 50, n)  # settlement delay, ms
    rows = []
    for i in range(n):
        t = NOW + pd.Timedelta(hours=start_h + 8 * i, milliseconds=int(delay[i]))
        if epoch:
            rows.append([str(int(t.timestamp() * 1000)), "8", repr(float(rates[i]))])
        else:
            rows.append([t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), repr(float(rates[i]))])
    return spoil(draw, rows)


@cases(500)
@given(data=st.data())
def test_funding_files(store: Store, data: st.DataObject) -> None:
    binance = data.draw(st.booleans())
    rows = data.draw(funding_rows(epoch=binance))
    if binance:
        raw = lay_out(data.draw, FUNDING_HEADER, rows)
        name, blob = wrap(data.draw, raw, "BTCUSDT-fundingRate-2024-05.csv")
    else:
        raw = lay_out(data.draw, ("timestamp_utc", "funding_rate"), rows)
        name, blob = wrap(data.draw, raw, "ETHUSDT_8h_funding_rate.csv")
    run_case(store, "importer: funding " + ("(Binance)" if binance else "(normalised)"), name, blob)


@cases(500)
@given(data=st.data())
def test_parquet(store: Store, data: st.DataObject) -> None:
    rows = data.draw(bar_rows(epoch=False))
    n = len(rows)
    start = NOW + pd.Timedelta(hours=data.draw(st.integers(-24 * 30, 24)))
    unit = data.draw(st.sampled_from(["us", "ns", "ms", "s"]))
    years = data.draw(st.sampled_from([0, 0, 0, -60, 300, 3000]))
    ts = pd.date_range(start, periods=n, freq="1h").as_unit("us") if years == 0 else None
    if ts is None:  # a time out of range, as Parquet can hold it
        base = np.datetime64(int(start.value // 1000), "us") + np.timedelta64(years * 365, "D")
        arr = pa.array(base + np.arange(n) * np.timedelta64(1, "h"), pa.timestamp("us"))
    else:
        arr = pa.array(ts.tz_convert(None).to_numpy(), pa.timestamp("us"))
    with contextlib.suppress(pa.ArrowInvalid):  # outside that unit's range: keep µs
        arr = arr.cast(
            pa.timestamp(unit, tz=data.draw(st.sampled_from([None, "UTC", "Asia/Tokyo"])))
        )
    cols = {"ts": arr}
    for k, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        vals = []
        for r in rows:
            try:
                vals.append(float(r[k]))
            except ValueError:
                vals.append(None)
        cols[name] = pa.array(vals, pa.float64())
    if data.draw(st.integers(0, 10)) == 0:
        cols.pop(data.draw(st.sampled_from(sorted(cols))))
    if data.draw(st.integers(0, 10)) == 0:
        cols["close"] = pa.array([str(i) for i in range(n)])
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    blob = buf.getvalue()
    if data.draw(st.integers(0, 12)) == 0:
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    run_case(store, "importer: Parquet", "BTCUSDT_1h_ohlcv.parquet", blob)


@cases(500)
@given(
    name=st.sampled_from(
        [
            "BTCUSDT_1h_ohlcv.csv",
            "BTCUSDT-1h-2024-01.csv",
            "BTCUSDT-1h-2024-01.zip",
            "BTCUSDT_1h_mark.csv.gz",
            "BTCUSDT_1h_ohlcv.parquet",
            "BTCUSDT-fundingRate-2024-01.csv",
        ]
    ),
    blob=st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)),
)
def test_arbitrary_bytes(store: Store, name: str, blob: bytes) -> None:
    run_case(store, "importer: arbitrary bytes", name, blob)
