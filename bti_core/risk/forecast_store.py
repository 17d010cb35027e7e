"""What the pages and the worker use of the forecasts (`bti_core.risk.forecast`): the series
they are made from (the warehouse's hourly mark closes), the forecaster chosen by the last
evaluation (its skill file), and the forecasts cached on disk, refreshed when the bars move on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bti_core import files
from bti_core.risk.forecast import (
    FORECASTERS,
    HOURS_PER_YEAR,
    REFERENCE,
    TARGETS,
    WINDOW_DAYS,
    Forecast,
    Target,
    check_forecaster,
    forecast,
)
from bti_core.timeutil import to_utc, to_utc_index

CACHE_VERSION = 1
# the evaluation on the development data, shipped: what pages use until `--evaluate` runs here
DEV_SKILL = Path(__file__).with_name("forecast_skill_dev.json")


def load_skill(folder: Path) -> dict[str, Any] | None:
    """The last evaluation run here (``skill.json``), else the one shipped from the development
    data (`DEV_SKILL`, marked by its ``source``); None if neither reads."""
    for path in (folder / "skill.json", DEV_SKILL):
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return None


def best_forecaster(folder: Path, target: Target) -> str:
    """The evaluation's winner for ``target``; the naive reference if it names none we know."""
    skill = load_skill(folder)
    name = (skill or {}).get("best", {}).get(target)
    return name if name in FORECASTERS[target] else REFERENCE[target]


def _cache_path(
    folder: Path, symbol: str, target: str, forecaster: str, origin: pd.Timestamp, window_days: int
) -> Path:
    # the version in the name: a cache written by older forecasting code is never read
    return folder / (
        f"{symbol}_{target}_{forecaster}_{origin:%Y%m%dT%H}_{window_days}d_v{CACHE_VERSION}.json"
    )


def _to_json(f: Forecast) -> str:
    return json.dumps(
        {
            "symbol": f.symbol,
            "target": f.target,
            "forecaster": f.forecaster,
            "origin": f.origin.isoformat(),
            "last": f.last,
            "horizons": list(f.horizons),
            "samples": np.round(f.samples, 10).tolist(),
        }
    )


def _from_json(text: str) -> Forecast:
    d = json.loads(text)
    return Forecast(
        d["symbol"],
        d["target"],
        d["forecaster"],
        pd.Timestamp(d["origin"]),
        float(d["last"]),
        tuple(d["horizons"]),
        np.asarray(d["samples"], float),
    )


def cached(
    folder: Path, symbol: str, target: Target, forecaster: str | None = None
) -> Forecast | None:
    """The latest cached forecast of ``symbol`` by the best (or the given) forecaster, without
    fitting anything: what a page reads."""
    name = forecaster or best_forecaster(folder, target)
    files = sorted(folder.glob(f"{symbol}_{target}_{name}_*_v{CACHE_VERSION}.json"))
    for path in reversed(files):
        try:
            return _from_json(path.read_text())
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue
    return None


def refresh(
    folder: Path,
    symbol: str,
    closes: pd.Series,
    target: Target,
    forecaster: str | None = None,
    *,
    window_days: int = WINDOW_DAYS,
    seed: int = 0,
) -> Forecast:
    """The forecast at the series' last hour, from the cache when it holds one for that hour
    (so many processes fit each hour once), else fitted and written; older ones are swept."""
    name = forecaster or best_forecaster(folder, target)
    check_forecaster(target, name)
    s = closes.dropna()
    if s.empty:
        raise ValueError(f"{symbol}: no bars to forecast from")
    origin = to_utc(s.index[-1])
    path = _cache_path(folder, symbol, target, name, origin, window_days)
    if path.exists():
        try:
            return _from_json(path.read_text())
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged file is refitted below
    f = forecast(s, target, name, symbol=symbol, window_days=window_days, seed=seed)
    files.write_text(path, _to_json(f))
    for old in folder.glob(f"{symbol}_{target}_{name}_*.json"):
        if old != path:
            old.unlink(missing_ok=True)
    return f


def hourly_mark_closes(frame: pd.DataFrame) -> pd.Series:
    """Hourly closes (on a UTC index) from bars of any timeframe up to an hour."""
    ts = to_utc_index(pd.DatetimeIndex(frame["ts"]))
    s = pd.Series(frame["close"].to_numpy(dtype=float), index=ts)
    return s.resample("1h", label="left", closed="left").last().dropna()


def _last_bar(warehouse: Any, symbol: str) -> tuple[Any, pd.Timestamp]:
    """The series forecasts read (mark bars; last-price bars where no mark is stored) and the
    time of its newest bar over every stored timeframe."""
    from bti_core.market.schema import Kind

    kind = Kind.MARK if warehouse.timeframes(symbol, Kind.MARK) else Kind.OHLCV
    tfs = warehouse.timeframes(symbol, kind)
    if not tfs:
        raise ValueError(f"{symbol}: no bars stored; import some with `bti ingest` or `bti demo`")
    return kind, max(pd.Timestamp(warehouse.latest(kind, symbol, tf)["ts"]) for tf in tfs)


def last_bar_time(warehouse: Any, symbol: str) -> pd.Timestamp:
    """Open time of ``symbol``'s newest stored bar (what a forecast's staleness is told
    against)."""
    return _last_bar(warehouse, symbol)[1]


def warehouse_closes(warehouse: Any, symbol: str, window_days: int = WINDOW_DAYS) -> pd.Series:
    """The last ``window_days`` of hourly mark closes of ``symbol`` from the warehouse (the
    exchange liquidates on the mark price; last-price bars where no mark is stored)."""
    kind, end = _last_bar(warehouse, symbol)
    start = end - pd.Timedelta(days=window_days + 1)
    return hourly_mark_closes(warehouse.bars(symbol, "1h", start, kind=kind))


def refresh_due(
    warehouse: Any, folder: Path, seen: dict[str, Any], *, window_days: int = WINDOW_DAYS
) -> int:
    """The worker's duty: for every stored symbol whose last bar moved since ``seen`` (or whose
    best forecasters changed: an evaluation just ran), fit the price and volatility forecasts
    by the best forecasters — once an hour a symbol; the cache makes a second worker's fit of
    the same hour a read. Returns how many symbols it fitted."""
    from bti_core.market.schema import Kind

    names = tuple(best_forecaster(folder, t) for t in TARGETS)
    fitted = 0
    for symbol in warehouse.symbols(Kind.MARK) or warehouse.symbols():
        try:
            _, last = _last_bar(warehouse, symbol)
        except ValueError:
            continue
        key = (last.floor("h"), names)
        if seen.get(symbol) == key:
            continue
        seen[symbol] = key  # a symbol with too little history is not retried until it moves
        try:
            closes = warehouse_closes(warehouse, symbol, window_days)
            for target, name in zip(TARGETS, names, strict=True):
                refresh(folder, symbol, closes, target, name, window_days=window_days)
        except (ValueError, np.linalg.LinAlgError):
            continue
        fitted += 1
    return fitted


def _skill_row(
    folder: Path, target: Target, forecaster: str, horizon: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The last evaluation and ``forecaster``'s row in it at ``horizon`` (else its last)."""
    skill = load_skill(folder)
    if skill is None:
        return None, None
    rows = [
        r
        for r in skill.get("scores", [])
        if r.get("target") == target and r.get("forecaster") == forecaster
    ]
    return skill, next((r for r in rows if r.get("horizon") == horizon), rows[-1] if rows else None)


def skill_plain(folder: Path, target: Target, forecaster: str, horizon: int = 24) -> str:
    """How often ``forecaster``'s bands held in the last evaluation, in a trader's words (the
    scores themselves are in `skill_note`)."""
    skill, row = _skill_row(folder, target, forecaster, horizon)
    if skill is None or row is None:
        return "It has not been tested on past data yet."
    return (
        f"Tested on past data {row['horizon']} h ahead, the outcome fell inside the darker band "
        f"(meant to hold it 80 % of the time) {row['cover80']:.0%} of the time, and inside the "
        f"lighter one (95 %) {row['cover95']:.0%}."
    )


def skill_note(folder: Path, target: Target, forecaster: str, horizon: int = 24) -> str:
    """A sentence on how ``forecaster`` scored in the last evaluation, for a page caption."""
    skill, row = _skill_row(folder, target, forecaster, horizon)
    if skill is None:
        return "No evaluation has been run, so this is the naive reference."
    if row is None:
        return f"{forecaster} was not in the last evaluation."
    h = row["horizon"]
    rivals = [
        r
        for r in skill.get("scores", [])
        if r.get("target") == target and r.get("horizon") == h and r.get("forecaster") != forecaster
    ]
    rival = min(rivals, key=lambda r: r["crps"]) if rivals else None
    cfg = skill.get("config", {})
    where = "the development data's evaluation" if "source" in skill else "the last evaluation"
    against = (
        f"its CRPS was {row['crps'] / rival['crps']:.2f}× that of "
        f"{rival['forecaster'].replace('_', ' ')}, the best of the others; "
        if rival
        else ""
    )
    return (
        f"In {where} ({cfg.get('origins', '?')} origins on "
        f"{', '.join(cfg.get('symbols', []))}), at {h} h {against}its 80 % interval held the "
        f"outcome {row['cover80']:.0%} of the time and its 95 % one {row['cover95']:.0%}."
        + (
            " `bti forecast --evaluate --data FOLDER` judges them on yours."
            if "source" in skill
            else ""
        )
    )


def realised_vol_series(closes: pd.Series, hours: int = 24) -> pd.Series:
    """Annualised realised volatility over the trailing ``hours`` at each hour."""
    r = np.log(closes).diff()
    return np.sqrt(HOURS_PER_YEAR * (r**2).rolling(hours, min_periods=hours // 2).mean()).dropna()
