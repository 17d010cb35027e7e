"""What a caller asks of the forecasts (`bti forecast`, the worker): judge every forecaster
on a folder of bars and keep the best, or refresh the forecasts of the stored symbols. The
models and their scores are in `bti_core.risk.forecast`; this module only orchestrates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from bti_core.market.folders import load_folder
from bti_core.market.schema import canonical_symbol
from bti_core.market.warehouse import Warehouse
from bti_core.risk import forecast as fc
from bti_core.risk import forecast_evaluation as fe
from bti_core.risk import forecast_store as fs

TargetName = Literal["price", "vol", "both"]


def _targets(target: TargetName) -> list[fc.Target]:
    if target not in (*fc.TARGETS, "both"):
        raise ValueError(f"unknown target {target!r}; use price, vol or both")
    return [t for t in fc.TARGETS if target in (t, "both")]


def evaluate_folder(
    data: Path,
    folder: Path,
    *,
    symbols: Sequence[str] = (),
    target: TargetName = "both",
    window_days: int = fc.WINDOW_DAYS,
    step_days: int = 7,
    seed: int = 0,
    progress: fc.Progress | None = None,
) -> tuple[fe.ForecastReport, Path]:
    """Backtest every forecaster of ``target`` on the mark bars in ``data`` (all symbols, or
    ``symbols``) and save the skill table in ``folder``, which makes the best the one pages
    use. Returns the report and the file written."""
    skipped: list[str] = []
    loaded = load_folder(data, skipped)
    wanted = {canonical_symbol(s) for s in symbols}
    unknown = wanted - set(loaded)
    if unknown:
        raise ValueError(
            f"no mark bars for {', '.join(sorted(unknown))} in {data}; it holds "
            f"{', '.join(sorted(loaded)) or 'none'}"
        )
    closes = {
        s: fs.hourly_mark_closes(mark)
        for s, (_, mark) in loaded.items()
        if not wanted or s in wanted
    }
    chosen: dict[fc.Target, Sequence[str]] = {t: fc.FORECASTERS[t] for t in _targets(target)}
    rep = fe.evaluate(
        closes,
        forecasters=None if target == "both" else chosen,
        window_days=window_days,
        step_days=step_days,
        seed=seed,
        progress=progress,
    )
    rep.skipped[:0] = skipped
    return rep, fe.save_skill(rep, folder)


def refresh_stored(
    warehouse: Warehouse,
    folder: Path,
    *,
    symbols: Sequence[str] = (),
    target: TargetName = "both",
    forecaster: str | None = None,
    window_days: int = fc.WINDOW_DAYS,
    seed: int = 0,
) -> Iterator[fc.Forecast]:
    """The forecasts of the stored symbols (all, or ``symbols``), each refitted only when its
    bars moved on (`forecast_store.refresh` keeps a cache in ``folder``). ``forecaster`` (default:
    the best of the last evaluation) must forecast the target asked; with "both", the targets
    it forecasts."""
    names = [canonical_symbol(s) for s in symbols] if symbols else warehouse.symbols()
    if not names:
        raise ValueError(
            f"the warehouse at {warehouse.root} is empty: run `bti demo` or `bti ingest PATH`"
        )
    targets = _targets(target)
    if forecaster is not None and target == "both":
        targets = [t for t in targets if forecaster in fc.FORECASTERS[t]]
        if not targets:
            raise ValueError(
                f"unknown forecaster {forecaster!r}; for price: "
                f"{', '.join(fc.FORECASTERS['price'])}; for vol: "
                f"{', '.join(fc.FORECASTERS['vol'])}"
            )
    for sym in names:
        series = fs.warehouse_closes(warehouse, sym, window_days)
        for t in targets:
            yield fs.refresh(folder, sym, series, t, forecaster, window_days=window_days, seed=seed)
