"""How the forecasters are judged (`bti forecast --evaluate`): each at origins a week apart on the
window before it, scored by MASE against the naive forecaster, interval coverage and CRPS per
horizon; the best of each target is saved for the pages."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bti_core import files
from bti_core.risk.forecast import (
    FORECASTERS,
    HORIZONS,
    HOURS_PER_YEAR,
    REFERENCE,
    TARGETS,
    WINDOW_DAYS,
    Progress,
    Target,
    check_forecaster,
    forecast,
)


def crps(samples: np.ndarray, y: float) -> float:
    """CRPS of a sample forecast: ``E|X − y| − ½ E|X − X'|`` (Gneiting & Raftery 2007, eq. 21),
    the second term from the sorted samples in O(n log n)."""
    x = np.sort(np.asarray(samples, float))
    n = len(x)
    spread = 2.0 * np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / n**2
    return float(np.mean(np.abs(x - y)) - 0.5 * spread)


def realised_vol(log_p: np.ndarray, i: int, h: int) -> float:
    """``v_h`` at position ``i``: annualised root mean squared return of the next h hours."""
    r = np.diff(log_p[i : i + h + 1])
    if len(r) < h or not np.isfinite(r).all():
        return math.nan
    return float(np.sqrt(HOURS_PER_YEAR * np.mean(r**2)))


def _naive_scale(log_p: np.ndarray, target: Target, h: int) -> float:
    """The window's mean absolute error of the h-step no-change forecast (MASE's denominator)."""
    if target == "price":
        p = np.exp(log_p)
        err = np.abs(p[h:] - p[:-h])
    else:
        r2 = np.diff(log_p) ** 2
        c = np.concatenate([[0.0], np.cumsum(np.nan_to_num(r2))])
        v = np.sqrt(HOURS_PER_YEAR * (c[h:] - c[:-h]) / h)  # v over the h hours ending at each
        err = np.abs(v[h:] - v[:-h])
    err = err[np.isfinite(err)]
    return float(np.mean(err)) if len(err) else math.nan


@dataclass
class ForecastReport:
    # target, forecaster, horizon, n, mase, cover80, cover95, crps, fit_s, crps_ratio
    scores: pd.DataFrame
    best: dict[str, str]
    verdicts: list[str]
    config: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        rows = json.loads(self.scores.to_json(orient="records"))
        return {
            "config": self.config,
            "scores": rows,
            "best": self.best,
            "verdicts": self.verdicts,
            "skipped": self.skipped,
        }


def evaluate(
    closes: dict[str, pd.Series],
    *,
    forecasters: dict[Target, Sequence[str]] | None = None,
    horizons: Sequence[int] = HORIZONS,
    window_days: int = WINDOW_DAYS,
    step_days: int = 7,
    seed: int = 0,
    progress: Progress | None = None,
) -> ForecastReport:
    """Every forecaster at origins every ``step_days`` (each with only the window before it),
    scored against what happened ``h`` hours later."""
    chosen = {t: tuple(forecasters.get(t, ())) for t in TARGETS} if forecasters else FORECASTERS
    for t, names in chosen.items():
        for n in names:
            check_forecaster(t, n)
    hz = tuple(sorted({int(h) for h in horizons}))
    plan: list[tuple[str, pd.Timestamp]] = []
    series: dict[str, pd.Series] = {}
    skipped: list[str] = []
    for sym, s in closes.items():
        s = s.dropna()
        idx = pd.DatetimeIndex(s.index)
        full = s.reindex(pd.date_range(idx[0], idx[-1], freq="h"))
        series[sym] = full
        first = idx[0] + pd.Timedelta(days=window_days)
        last = idx[-1] - pd.Timedelta(hours=max(hz))
        if first > last:
            skipped.append(f"{sym}: {len(s)} hours; an origin needs {window_days} days before it")
            continue
        plan.extend((sym, o) for o in pd.date_range(first, last, freq=f"{step_days}D"))
    if not plan:
        raise ValueError(
            f"too little history to evaluate a forecast: an origin needs {window_days} days of "
            f"hourly bars before it and {max(hz)} hours after it"
        )
    rows: list[dict[str, Any]] = []
    total = len(plan)
    for k, (sym, origin) in enumerate(plan):
        if progress:
            progress(k, total, f"{sym} {origin:%Y-%m-%d}")
        full = series[sym]
        i = int(full.index.get_indexer(pd.DatetimeIndex([origin]))[0])
        if i < 0 or not np.isfinite(full.iloc[i]):
            continue
        log_all = np.log(full.to_numpy(dtype=float))
        hist = full.iloc[: i + 1]
        window = log_all[max(0, i + 1 - window_days * 24) : i + 1]
        for target, names in chosen.items():
            actual = {
                h: (log_all[i + h] if target == "price" else realised_vol(log_all, i, h))
                for h in hz
            }
            scale = {h: _naive_scale(window, target, h) for h in hz}
            for name in names:
                t0 = time.perf_counter()
                try:
                    f = forecast(
                        hist,
                        target,
                        name,
                        symbol=sym,
                        horizons=hz,
                        window_days=window_days,
                        seed=seed + k,
                    )
                except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
                    skipped.append(f"{sym} {origin:%Y-%m-%d} {target} {name}: {exc}")
                    continue
                seconds = time.perf_counter() - t0
                for j, h in enumerate(hz):
                    y = actual[h]
                    if not np.isfinite(y):
                        continue
                    x = f.samples[j]
                    if target == "price":
                        truth, point = float(np.exp(y)), float(np.median(x))
                        c = crps(100 * np.log(x), 100 * y)
                    else:
                        truth, point = float(y), float(np.median(x))
                        c = crps(100 * x, 100 * y)
                    lo80, hi80, lo95, hi95 = np.quantile(x, [0.1, 0.9, 0.025, 0.975])
                    rows.append(
                        {
                            "symbol": sym,
                            "origin": origin,
                            "target": target,
                            "forecaster": name,
                            "horizon": h,
                            "ae_scaled": abs(point - truth) / scale[h]
                            if scale[h] > 0
                            else math.nan,
                            "in80": lo80 <= truth <= hi80,
                            "in95": lo95 <= truth <= hi95,
                            "crps": c,
                            "seconds": seconds,  # the fit and its samples, all horizons
                        }
                    )
    if progress:
        progress(total, total, "done")
    if not rows:
        raise ValueError("no forecast could be scored: " + "; ".join(skipped[:3]))
    obs = pd.DataFrame(rows)
    scores = (
        obs.groupby(["target", "forecaster", "horizon"], sort=False)
        .agg(
            n=("crps", "size"),
            mase=("ae_scaled", "mean"),
            cover80=("in80", "mean"),
            cover95=("in95", "mean"),
            crps=("crps", "mean"),
            fit_s=("seconds", "mean"),
        )
        .reset_index()
    )
    ref = scores[scores["forecaster"] == scores["target"].map(REFERENCE)]
    ref_crps = ref.set_index(["target", "horizon"])["crps"]
    scores["crps_ratio"] = [
        c / ref_crps.get((t, h), math.nan)
        for t, h, c in zip(scores["target"], scores["horizon"], scores["crps"], strict=True)
    ]
    best: dict[str, str] = {}
    verdicts: list[str] = []
    for tgt, g in scores.groupby("target", sort=False):
        tname = str(tgt)
        ratio = g.groupby("forecaster", sort=False)["crps_ratio"].mean()
        if ratio.notna().any():
            best[tname] = str(ratio.idxmin())
        if "prophet" in set(g["forecaster"]):
            others = g[g["forecaster"] != "prophet"]
            for row in g[g["forecaster"] == "prophet"].to_dict(orient="records"):
                h = int(row["horizon"])
                rivals = others[others["horizon"] == h]
                if rivals.empty:
                    continue
                top = rivals.sort_values("crps").iloc[0]
                word = "beats" if row["crps"] < top["crps"] else "does not beat"
                verdicts.append(
                    f"{tname} {h} h: Prophet {word} {top['forecaster']} "
                    f"(CRPS {row['crps']:.3f} against {top['crps']:.3f}; "
                    f"MASE {row['mase']:.2f} against {top['mase']:.2f})"
                )
    config = {
        "horizons": list(hz),
        "window_days": window_days,
        "step_days": step_days,
        "seed": seed,
        "symbols": sorted(closes),
        "origins": len(plan),
        "forecasters": {t: list(v) for t, v in chosen.items()},
    }
    return ForecastReport(scores, best, verdicts, config, skipped)


def format_report(rep: ForecastReport) -> str:
    lines = [
        f"{'target':<7}{'forecaster':<13}{'hours':>6}{'n':>6}{'MASE':>7}{'cover80':>9}"
        f"{'cover95':>9}{'CRPS':>9}{'/naive':>8}{'fit s':>7}"
    ]
    for r in rep.scores.itertuples():
        best = " *" if rep.best.get(str(r.target)) == r.forecaster else ""
        lines.append(
            f"{r.target:<7}{r.forecaster:<13}{r.horizon:>6}{r.n:>6}{r.mase:>7.2f}"
            f"{r.cover80:>9.1%}{r.cover95:>9.1%}{r.crps:>9.3f}{r.crps_ratio:>8.3f}"
            f"{r.fit_s:>7.2f}{best}"
        )
    lines.append(
        "MASE: error of the median over the window's h-step no-change error; CRPS: price in % "
        "of log price, volatility in annualised vol points; /naive: CRPS over the random walk's "
        "(price) or EWMA's (vol); fit s: seconds per forecast (fit and samples, all horizons); "
        "* the best forecaster (lowest mean /naive)"
    )
    lines.extend(rep.verdicts)
    lines.extend(f"skipped: {s}" for s in rep.skipped[:10])
    if len(rep.skipped) > 10:
        lines.append(f"skipped: … and {len(rep.skipped) - 10} more")
    lines.append("best: " + ", ".join(f"{t} → {n}" for t, n in rep.best.items()))
    return "\n".join(lines)


def save_skill(rep: ForecastReport, folder: Path) -> Path:
    """The evaluation, where the pages read which forecaster is best (``skill.json``)."""
    path = folder / "skill.json"
    files.write_text(path, json.dumps(rep.to_json(), indent=2, default=str))
    return path
