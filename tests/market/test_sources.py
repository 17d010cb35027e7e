"""Importers. The golden files are written by the tests themselves, in the exact layout of their
origin: Binance's public data portal (data.binance.vision, futures/um klines and
markPriceKlines: 12 columns, a header row only since 2022, open times in ms, in µs since 2025;
fundingRate: calc_time,funding_interval_hours,last_funding_rate) and the normalised CSV of
../shared/data (timestamp_utc,open,high,low,close,volume)."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from bti_core.errors import DataFormatError, UnknownSymbolError
from bti_core.market.identify import Format, identify
from bti_core.market.schema import Kind, canonical_symbol, ccxt_symbol
from bti_core.market.sources import read_file, write_normalised_csv, write_parquet

HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
# 2024-01-01 00:00 and 01:00 UTC
ROWS_MS = [
    "1704067200000,42314.00,42554.50,42289.60,42475.20,6428.812,1704070799999,272800000.1,61239,3370.163,143000000.2,0",
    "1704070800000,42475.20,42600.00,42400.10,42569.90,5000.000,1704074399999,212800000.1,51239,2500.000,106000000.2,0",
]


def _us(row: str) -> str:
    f = row.split(",")
    f[0], f[6] = f[0] + "000", f[6] + "999"
    return ",".join(f)


@pytest.mark.parametrize(
    ("header", "rows", "name"),
    [
        (True, ROWS_MS, "BTCUSDT-1h-2024-01.csv"),
        (False, ROWS_MS, "BTCUSDT-1h-2024-01.csv"),
        (True, [_us(r) for r in ROWS_MS], "BTCUSDT-1h-2025-01-01.csv"),
        (False, [ROWS_MS[0], _us(ROWS_MS[1])], "BTCUSDT-1h-2024-01-01.csv"),  # mixed units
    ],
)
def test_binance_klines_with_or_without_header_ms_or_us(
    tmp_path: Path, header: bool, rows: list[str], name: str
) -> None:
    p = tmp_path / name
    p.write_text("\n".join(([HEADER] if header else []) + rows) + "\n")
    src, df = read_file(p)
    assert (src.format, src.kind, src.symbol, src.timeframe) == (
        Format.BINANCE_KLINES,
        Kind.OHLCV,
        "BTCUSDT",
        "1h",
    )
    assert list(df.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert df["ts"].tolist() == [
        pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert df["close"].tolist() == [42475.2, 42569.9]
    assert df["volume"].iloc[0] == pytest.approx(6428.812)


def test_binance_zip_and_mark_price_folder(tmp_path: Path) -> None:
    folder = tmp_path / "futures" / "um" / "monthly" / "markPriceKlines" / "BTCUSDT" / "1h"
    folder.mkdir(parents=True)
    p = folder / "BTCUSDT-1h-2024-01.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("BTCUSDT-1h-2024-01.csv", "\n".join([HEADER, *ROWS_MS]))
    src, df = read_file(p)
    assert src.kind is Kind.MARK
    assert len(df) == 2


@pytest.mark.parametrize("kind_dir", ["indexPriceKlines", "premiumIndexKlines"])
def test_binance_index_and_premium_klines_are_refused(tmp_path: Path, kind_dir: str) -> None:
    """They share the klines' file names; read as last prices they would overwrite the trades
    (a premium index is a rate near 0), so the name says what they are and what is read."""
    folder = tmp_path / "futures" / "um" / "monthly" / kind_dir / "BTCUSDT" / "1h"
    folder.mkdir(parents=True)
    p = folder / "BTCUSDT-1h-2024-01.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("BTCUSDT-1h-2024-01.csv", "\n".join([HEADER, *ROWS_MS]))
    with pytest.raises(DataFormatError, match="index and premium-index klines are not read"):
        identify(p)
    assert identify(p, kind=Kind.OHLCV).kind is Kind.OHLCV  # the user's explicit word wins


def test_binance_funding_file(tmp_path: Path) -> None:
    p = tmp_path / "BTCUSDT-fundingRate-2024-01.csv"
    p.write_text(
        "calc_time,funding_interval_hours,last_funding_rate\n1704067200000,8,0.00037409\n1704096000005,8,0.00022000\n"
    )
    src, df = read_file(p)
    assert (src.kind, src.timeframe) == (Kind.FUNDING, "8h")
    assert df["funding_rate"].tolist() == [0.00037409, 0.00022]
    assert df["ts"].iloc[1] == pd.Timestamp("2024-01-01 08:00:00.005", tz="UTC")


def test_normalised_gzip_csv(tmp_path: Path) -> None:
    p = tmp_path / "ETHUSDT_1h_mark.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write(
            "timestamp_utc,open,high,low,close,volume\n2021-05-19T13:00:00Z,2500,2600,2000,2100,0.0\n"
        )
    src, df = read_file(p)
    assert (src.format, src.kind, src.symbol) == (Format.NORMALISED, Kind.MARK, "ETHUSDT")
    assert df["low"].iloc[0] == 2000.0


def test_normalised_funding_file_is_always_8h(tmp_path: Path) -> None:
    p = tmp_path / "BTCUSDT_1h_funding_rate.csv"
    p.write_text("timestamp_utc,funding_rate\n2020-03-13T08:00:00Z,-0.003\n")
    src, df = read_file(p)
    assert (src.kind, src.timeframe) == (Kind.FUNDING, "8h")
    assert df["funding_rate"].iloc[0] == -0.003


def test_parquet_round_trip(tmp_path: Path, demo: dict) -> None:
    bars = demo["BTCUSDT"].ohlcv.head(50)
    p = write_parquet(bars, tmp_path / "BTCUSDT_1h_ohlcv.parquet")
    _src, back = read_file(p)
    pd.testing.assert_frame_equal(back, bars.reset_index(drop=True), check_dtype=False)
    csv = write_normalised_csv(bars, tmp_path / "BTCUSDT_1h_ohlcv.csv.gz", Kind.OHLCV)
    _src, again = read_file(csv)
    pd.testing.assert_frame_equal(again[["ts", "close"]], back[["ts", "close"]])


@pytest.mark.parametrize(
    ("name", "content", "line", "expected"),
    [
        (
            "BTCUSDT_1h_ohlcv.csv",
            "timestamp_utc,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n2024-01-01T01:00:00Z,1,abc,0.5,1.5,3\n",
            3,
            "high as a number",
        ),
        (
            "BTCUSDT_1h_ohlcv.csv",
            "timestamp_utc,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5\n",
            2,
            "6 comma-separated fields",
        ),
        (
            "BTCUSDT_1h_ohlcv.csv",
            "timestamp_utc,open,high,low,close,volume\nyesterday,1,2,0.5,1.5,3\n",
            2,
            "timestamp_utc as an ISO-8601 UTC time",
        ),
        ("BTCUSDT_1h_ohlcv.csv", "time,o,h,l,c,v\n", 1, "the header"),
        (
            "BTCUSDT-1h-2024-01.csv",
            ROWS_MS[0] + "\n1704070800000,x,1,1,1,1,1,1,1,1,1,0\n",
            2,
            "open as a number",
        ),
        ("BTCUSDT-1h-2024-01.csv", "hello,world\n", 1, "Binance kline rows"),
        (
            "BTCUSDT-fundingRate-2024-01.csv",
            "calc_time,funding_interval_hours,last_funding_rate\n1704067200000,8,zero\n",
            2,
            "last_funding_rate",
        ),
    ],
)
def test_malformed_files_name_file_line_and_expectation(
    tmp_path: Path, name: str, content: str, line: int, expected: str
) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataFormatError) as info:
        read_file(p)
    msg = str(info.value)
    assert info.value.line == line
    assert name in msg and f"line {line}" in msg and expected in msg


@pytest.mark.parametrize("name", ["prices.csv", "BTCUSDT_1h_candles.csv", "BTCUSDT_7h_ohlcv.csv"])
def test_unknown_file_names_are_refused_with_the_accepted_forms(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_text("timestamp_utc,open,high,low,close,volume\n")
    with pytest.raises(DataFormatError, match="SYMBOL_1h_ohlcv"):
        identify(p)


def test_empty_and_corrupt_files(tmp_path: Path) -> None:
    empty = tmp_path / "BTCUSDT_1h_ohlcv.csv"
    empty.write_text("timestamp_utc,open,high,low,close,volume\n")
    with pytest.raises(DataFormatError, match="at least one row"):
        read_file(empty)
    bad_zip = tmp_path / "BTCUSDT-1h-2024-01.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="readable"):
        read_file(bad_zip)


@pytest.mark.parametrize(
    ("raw", "canonical", "unified"),
    [
        ("BTCUSDT", "BTCUSDT", "BTC/USDT:USDT"),
        ("btc/usdt:usdt", "BTCUSDT", "BTC/USDT:USDT"),
        ("ETH-USDC", "ETHUSDC", "ETH/USDC:USDC"),
        ("1000PEPEUSDT", "1000PEPEUSDT", "1000PEPE/USDT:USDT"),
    ],
)
def test_symbol_names(raw: str, canonical: str, unified: str) -> None:
    assert canonical_symbol(raw) == canonical
    assert ccxt_symbol(raw) == unified
    assert canonical_symbol(ccxt_symbol(raw)) == canonical


@pytest.mark.parametrize("bad", ["", "BTC", "BTC/EUR", "DROP TABLE"])
def test_unknown_symbols(bad: str) -> None:
    with pytest.raises(UnknownSymbolError, match="expected a perpetual"):
        canonical_symbol(bad)
