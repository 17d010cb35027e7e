"""What a market-data file is, from its name and folder: its format, kind, symbol and timeframe
(`identify`), and the files a folder holds (`discover`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bti_core.errors import DataFormatError
from bti_core.market.schema import FUNDING_TIMEFRAME, TIMEFRAMES, Kind, canonical_symbol


class Format(StrEnum):
    NORMALISED = "normalised"
    BINANCE_KLINES = "binance-klines"
    BINANCE_FUNDING = "binance-funding"
    PARQUET = "parquet"


@dataclass(frozen=True)
class SourceFile:
    """A file identified: what it holds and how to read it."""

    path: Path
    format: Format
    kind: Kind
    symbol: str
    timeframe: str


_TF = "|".join(sorted(TIMEFRAMES, key=len, reverse=True))


_NORMALISED_NAME = re.compile(
    rf"^(?P<symbol>[A-Za-z0-9]+)_(?P<tf>{_TF})_(?P<kind>ohlcv|mark|funding_rate|funding)$"
)


_BINANCE_NAME = re.compile(
    rf"^(?P<symbol>[A-Z0-9]+)-(?P<tf>{_TF}|fundingRate)-\d{{4}}-\d{{2}}(?:-\d{{2}})?$"
)


_MARK_DIRS = ("markpriceklines", "mark")


# Binance publishes these beside klines/ under the same file names; they are not prices a
# position trades or is liquidated at (the premium index is a rate near 0), so they are refused
# rather than read as last-price bars.
_OTHER_KLINE_DIRS = {
    "indexpriceklines": "index-price klines",
    "premiumindexklines": "premium-index klines",
}


_KIND_BY_SUFFIX = {
    "ohlcv": Kind.OHLCV,
    "mark": Kind.MARK,
    "funding_rate": Kind.FUNDING,
    "funding": Kind.FUNDING,
}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".zip", ".csv", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def identify(
    path: str | Path,
    *,
    kind: Kind | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
) -> SourceFile:
    """Work out a file's format, kind, symbol and timeframe from its name and first line.

    Explicit arguments override what the name says. Raises `DataFormatError` naming the file and
    the accepted names when something cannot be worked out.
    """
    p = Path(path)
    stem = _stem(p)
    if p.suffix.lower() == ".parquet":
        fmt = Format.PARQUET
        m = _NORMALISED_NAME.match(stem)
        name_symbol = m.group("symbol") if m else None
        name_tf = m.group("tf") if m else None
        name_kind = _KIND_BY_SUFFIX[m.group("kind")] if m else None
    elif m := _NORMALISED_NAME.match(stem):
        fmt = Format.NORMALISED
        name_symbol, name_tf, name_kind = (
            m.group("symbol"),
            m.group("tf"),
            _KIND_BY_SUFFIX[m.group("kind")],
        )
    elif m := _BINANCE_NAME.match(stem):
        name_symbol = m.group("symbol")
        if m.group("tf") == "fundingRate":
            fmt, name_tf, name_kind = Format.BINANCE_FUNDING, FUNDING_TIMEFRAME, Kind.FUNDING
        else:
            fmt, name_tf = Format.BINANCE_KLINES, m.group("tf")
            dirs = [part.lower() for part in p.parts[:-1]]
            other = next((_OTHER_KLINE_DIRS[d] for d in dirs if d in _OTHER_KLINE_DIRS), None)
            if other is not None and kind is None:
                raise DataFormatError(
                    p,
                    "last-price klines (a klines/ folder) or mark-price klines "
                    "(markPriceKlines/); index and premium-index klines are not read",
                    got=other,
                )
            in_mark_dir = any(d in _MARK_DIRS for d in dirs)
            name_kind = Kind.MARK if in_mark_dir else Kind.OHLCV
    else:
        raise DataFormatError(
            p,
            "a file named like SYMBOL_1h_ohlcv.csv(.gz), SYMBOL_1h_mark.csv, "
            "SYMBOL_1h_funding_rate.csv, Binance's BTCUSDT-1h-2024-01.zip / "
            "BTCUSDT-fundingRate-2024-01.csv, or SYMBOL_1h_ohlcv.parquet "
            "(or give the symbol, kind and timeframe explicitly)",
            got=p.name,
        )

    the_kind = kind or name_kind
    the_symbol = symbol or name_symbol
    the_tf = timeframe or name_tf
    if the_kind is None or the_symbol is None or the_tf is None:
        raise DataFormatError(
            p, "a name like SYMBOL_1h_ohlcv.parquet, or an explicit symbol, kind and timeframe"
        )
    if the_kind is Kind.FUNDING:
        the_tf = FUNDING_TIMEFRAME
    if the_tf not in TIMEFRAMES:
        raise DataFormatError(p, f"a timeframe among {', '.join(TIMEFRAMES)}", got=the_tf)
    return SourceFile(p, fmt, the_kind, canonical_symbol(the_symbol), the_tf)


SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".zip", ".parquet")


def discover(path: str | Path) -> list[Path]:
    """The importable files under a path (the path itself if it is a file), in name order."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise DataFormatError(p, "an existing file or folder", got="no such path")
    return sorted(
        f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUPPORTED_SUFFIXES)
    )
