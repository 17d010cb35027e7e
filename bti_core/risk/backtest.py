"""Walk-forward backtest of the liquidation-probability engine against realised liquidations.

At every start hour t (thinned by ``stride_hours``), for each side, leverage and horizon, an
isolated position is opened at the last-price close of bar t, priced with data up to t only,
and counted as liquidated if the mark price reaches its liquidation price in bars t+1 … t+h.

Engine: GJR-GARCH(1,1)-t refitted every ``refit_days`` on the trailing ``fit_window_days`` of
hourly mark returns; between refits the conditional variance is filtered hour by hour with the
fitted parameters. Paths are simulated once per refit for a grid of starting variances
(filtered historical simulation: the first day's 24-hour residual blocks drawn from the window's
days that began in the same variance state, mirrored blocks after it, and from the second day the
window's mean return shrunk by its t-statistic as drift — `simulate_path_table`'s
``"fhs_state_day"`` and `shrunk_drift`); a start hour's probability interpolates, in log
variance, between the two grid tables around its own variance — the same lookup as a live quote.

Baseline: the GBM closed form with the realised volatility of the previous 30 days.

Scores: Brier score ``mean((p − y)²)`` and log loss ``−mean(y·ln p + (1 − y)·ln(1 − p))``
(p clipped to [1e-6, 1 − 1e-6]); per cell (side × leverage × horizon) the realised rate, the
mean prediction and their ratio. A cell is calibrated when realised/predicted ∈ [0.8, 1.25];
cells with a realised rate under 0.3 % are not counted. Beside each ratio, a 90 % interval from a
block bootstrap over symbol × month (`ratio_interval`) says whether a miss is more than luck.
The book sells each position's cover
(payout = the margin) at ``p⁺·(1 + loading)``; its loss ratio by year and the pool's worst
drawdown (cumulative premiums − payouts, in margins) are reported.

Bars of an hour or less are accepted (sub-hourly ones are aggregated to hours first).

What was tried and measured on the development data, variant by variant, is in
`docs/2026-12-02-engine-research-log.md`; every variant can be rerun with `bti backtest`'s
options.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from bti_core.market.folders import load_folder
from bti_core.pricing import wilson_upper
from bti_core.risk.constants import FIT_WINDOW
from bti_core.risk.liquidation import brackets_for, isolated_liquidation_price
from bti_core.risk.metrics import brier, log_loss
from bti_core.risk.probability import (
    ENGINE_INNOVATIONS,
    ENGINE_MEAN,
    HOURS_PER_YEAR,
    Innovations,
    Mean,
    VolFit,
    VolModel,
    VolParams,
    first_passage_gbm,
    fit_gjr,
    simulate_path_table,
)

Progress = Callable[[int, int, str], None]
CALIBRATED = (0.8, 1.25)  # realised/predicted band of a calibrated cell
MIN_COUNTED_RATE = 0.003  # cells realised less often are too thin to judge
INTERVAL_DRAWS = 2_000  # bootstrap draws behind each cell's 90 % interval
HOUR = pd.Timedelta(hours=1)


# what a backtest can judge
Probability = Literal["engine", "ml", "blend"]


@dataclass(frozen=True)
class BacktestConfig:
    leverages: tuple[int, ...] = (5, 10, 20, 50)
    horizons: tuple[int, ...] = (24, 72, 168)
    stride_hours: int = 1  # every start hour: the cost is in the paths, not the starts
    refit_days: int = 30
    fit_window_days: int = FIT_WINDOW.days  # the live engine's
    min_history_days: int = 90
    n_paths: int = 8_000
    variance_levels: int = 9
    loading: float = 0.2
    innovations: Innovations = ENGINE_INNOVATIONS
    block_hours: int = 24
    mirror: bool = True  # antithetic blocks (z, −z); False keeps the residuals' skew
    mean: Mean = ENGINE_MEAN  # "zero": no drift; "constant": the window's mean return, unshrunk
    vol_model: VolModel = "gjr"
    demean: bool = True
    n_states: int = 5
    seed: int = 0


@dataclass
class BacktestResult:
    config: BacktestConfig
    cells: pd.DataFrame
    pooled: dict[str, float]
    by_year: pd.DataFrame
    worst_drawdown: float
    predictions: pd.DataFrame = field(repr=False)
    skipped: list[str] = field(default_factory=list)  # files and symbols left out, and why
    prob: Probability = (
        "engine"  # the probability judged: the engine's, a learned model's, or a blend
    )
    model: str = ""  # the learned model behind "ml" and "blend", and how it was retrained

    @property
    def counted(self) -> pd.DataFrame:
        return self.cells[self.cells["counted"]]

    @property
    def calibrated(self) -> int:
        return int(self.cells["calibrated"].sum())

    def summary_line(self) -> str:
        p = self.pooled
        parts = [
            f"{name} brier={p[f'{name}_brier']:.5f} logloss={p[f'{name}_logloss']:.5f}"
            for name in dict.fromkeys([self.prob, "engine", "baseline"])
        ]
        return (
            "backtest: " + " | ".join(parts) + " | "
            f"calibrated cells {self.calibrated}/{len(self.counted)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "prob": self.prob,
            "model": self.model,
            "cells": self.cells.to_dict(orient="records"),
            "pooled": self.pooled,
            "by_year": self.by_year.to_dict(orient="records"),
            "worst_drawdown_margins": self.worst_drawdown,
            "calibrated_cells": self.calibrated,
            "counted_cells": len(self.counted),
            "skipped": self.skipped,
            "symbols": (
                sorted(map(str, self.predictions["symbol"].unique()))
                if "symbol" in self.predictions
                else []
            ),
        }


def _future_extremes(
    low: np.ndarray, high: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each t: min of low[t+1 … t+h] and max of high[t+1 … t+h] (NaN where the window runs
    past the data)."""
    s_low = pd.Series(low[::-1]).rolling(horizon, min_periods=horizon).min().to_numpy()[::-1]
    s_high = pd.Series(high[::-1]).rolling(horizon, min_periods=horizon).max().to_numpy()[::-1]
    fut_low = np.full(len(low), np.nan)
    fut_high = np.full(len(high), np.nan)
    fut_low[:-1] = s_low[1:]
    fut_high[:-1] = s_high[1:]
    return fut_low, fut_high


def _filter_variance(params: VolParams, r: np.ndarray, s2_0: float) -> np.ndarray:
    """σ²_{t+1} for each t from the GJR recursion, starting at σ²_0 before r[0]."""
    out = np.empty(len(r))
    s2 = s2_0
    for i, x in enumerate(r):
        s2 = float(params.next_variance(float(x), s2))
        out[i] = s2
    return out


def _symbol_predictions(
    symbol: str,
    last: pd.DataFrame,
    mark: pd.DataFrame,
    cfg: BacktestConfig,
    progress: Progress | None,
) -> pd.DataFrame:
    df = last[["ts", "close"]].merge(
        mark[["ts", "high", "low", "close"]].rename(columns={"close": "mark_close"}), on="ts"
    )
    full = pd.DataFrame({"ts": pd.date_range(df["ts"].iloc[0], df["ts"].iloc[-1], freq="1h")})
    df = full.merge(df, on="ts", how="left")  # gaps stay NaN: no start and no outcome there
    mc = df["mark_close"].to_numpy()
    r = np.diff(np.log(mc), prepend=np.nan)
    brackets = brackets_for(symbol)
    first_start = df["ts"].iloc[0] + pd.Timedelta(days=cfg.min_history_days)
    times = pd.DatetimeIndex(df["ts"])
    refit_times = pd.date_range(first_start, df["ts"].iloc[-1], freq=f"{cfg.refit_days}D")
    rows: list[pd.DataFrame] = []
    fut = {
        h: _future_extremes(df["low"].to_numpy(), df["high"].to_numpy(), h) for h in cfg.horizons
    }
    rv30 = np.sqrt(
        pd.Series(r**2).rolling(24 * 30, min_periods=24 * 20).mean() * HOURS_PER_YEAR
    ).to_numpy()
    for k, t0 in enumerate(refit_times):
        if progress:
            progress(k, len(refit_times), f"{symbol} refit {t0:%Y-%m-%d}")
        t1 = (
            refit_times[k + 1]
            if k + 1 < len(refit_times)
            else df["ts"].iloc[-1] + pd.Timedelta(hours=1)
        )
        i0 = int(times.searchsorted(t0))
        i1 = int(times.searchsorted(t1))
        lo = max(1, int(times.searchsorted(t0 - pd.Timedelta(days=cfg.fit_window_days))))
        hist = r[lo:i0]
        hist = hist[np.isfinite(hist)]
        try:
            fit = fit_gjr(hist, mean=cfg.mean, model=cfg.vol_model)
        except (ValueError, np.linalg.LinAlgError):
            continue
        seg_r = np.nan_to_num(r[i0:i1], nan=0.0)
        # σ² for the hour after t, filtered from the demeaned returns
        s2_next = _filter_variance(fit.params, seg_r - fit.mu, fit.sigma2_next)
        starts = np.arange(i0, i1)
        keep = (
            ((starts - i0) % cfg.stride_hours == 0)
            & np.isfinite(mc[starts])
            & np.isfinite(df["close"].to_numpy()[starts])
        )
        starts, s2_start = starts[keep], s2_next[keep]
        if len(starts) == 0:
            continue
        levels = np.exp(
            np.linspace(
                np.log(s2_start.min() * 0.999), np.log(s2_start.max() * 1.001), cfg.variance_levels
            )
        )
        tables = [
            simulate_path_table(
                VolFit(fit.params, float(v), fit.residuals, fit.mu, fit.log_var),
                n_paths=cfg.n_paths,
                horizons=cfg.horizons,
                innovations=cfg.innovations,
                # a stream per symbol, refit and level: BTC's and ETH's noise independent
                seed=int(
                    np.random.SeedSequence(
                        [cfg.seed, zlib.crc32(symbol.encode()), k, j]
                    ).generate_state(1)[0]
                ),
                block_hours=cfg.block_hours,
                mirror=cfg.mirror,
                demean=cfg.demean,
                n_states=cfg.n_states,
            )
            for j, v in enumerate(levels)
        ]
        pos = np.interp(np.log(s2_start), np.log(levels), np.arange(len(levels)))
        j_lo = np.clip(np.floor(pos).astype(int), 0, len(levels) - 2)
        w = pos - j_lo
        entry = df["close"].to_numpy()[starts]
        spot = mc[starts]
        for side in (1, -1):
            for lev in cfg.leverages:
                lp = isolated_liquidation_price(entry, float(lev), side, brackets)
                with np.errstate(divide="ignore"):
                    b = np.where(lp > 0, np.log(np.maximum(lp, 1e-300) / spot), -np.inf)
                for h in cfg.horizons:
                    p = np.zeros(len(starts))
                    for j in np.unique(j_lo):
                        sel = j_lo == j
                        p_lo, _ = tables[j].probability(b[sel], h, side)
                        p_hi, _ = tables[j + 1].probability(b[sel], h, side)
                        p[sel] = (1 - w[sel]) * p_lo + w[sel] * p_hi
                    sig = rv30[starts]
                    base = first_passage_gbm(spot, lp, sig, h / HOURS_PER_YEAR, side, mu=sig**2 / 2)
                    f_low, f_high = fut[h]
                    reached = (f_low[starts] <= lp) if side > 0 else (f_high[starts] >= lp)
                    known = np.isfinite(f_low[starts]) & np.isfinite(sig)
                    already = (spot <= lp) if side > 0 else (spot >= lp)
                    ok = known & ~already
                    if not ok.any():
                        continue
                    rows.append(
                        pd.DataFrame(
                            {
                                "symbol": symbol,
                                "ts": df["ts"].to_numpy()[starts][ok],
                                "side": "long" if side > 0 else "short",
                                "leverage": lev,
                                "horizon": h,
                                "engine": p[ok],
                                "baseline": base[ok],
                                "liquidated": reached[ok].astype(np.int8),
                                "n_paths": cfg.n_paths,
                                # what the learned models read beside the two probabilities
                                "sigma2": s2_start[ok],
                                "log_barrier": b[ok],
                            }
                        )
                    )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return brier(p, y), log_loss(p, y)


def ratio_interval(
    cell: pd.DataFrame,
    *,
    column: str = "engine",
    draws: int = INTERVAL_DRAWS,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval for a cell's realised/predicted ratio by a block bootstrap over symbol × calendar
    month (Künsch 1989): liquidations come in clusters (one crash liquidates every position
    opened in the days before it), so positions are resampled in whole months, not one by one.
    Each draw takes as many months as the cell has, with replacement, and divides their
    liquidations by their summed predictions; the interval is the draws' central ``level``."""
    ts = cell["ts"]
    month = (ts.dt.tz_convert(None) if ts.dt.tz is not None else ts).dt.to_period("M")
    sums = cell.groupby([cell["symbol"], month])[["liquidated", column]].sum()
    y, p = sums["liquidated"].to_numpy(float), sums[column].to_numpy(float)
    pick = np.random.default_rng(seed).integers(0, len(y), (draws, len(y)))
    ratio = y[pick].sum(axis=1) / np.maximum(p[pick].sum(axis=1), 1e-12)
    tail = (1 - level) / 2
    return float(np.quantile(ratio, tail)), float(np.quantile(ratio, 1 - tail))


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney: the chance a liquidated start was given a higher
    probability than one that was not, ties counting half); NaN without both outcomes."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(p)
    return float((ranks[y > 0].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


PROBABILITIES: tuple[Probability, ...] = ("engine", "ml", "blend")  # "baseline": the reference


def summarise(
    pred: pd.DataFrame, cfg: BacktestConfig, prob: Probability = "engine"
) -> BacktestResult:
    """Judge the probability column ``prob`` cell by cell, beside the engine's and the GBM
    baseline's on the same rows: ``{name}_mean``, ``_brier``, ``_logloss`` and ``_auc`` for each
    of them, and the ratio, its interval and the verdict for ``prob``."""
    if prob not in pred.columns:
        raise ValueError(f"the predictions carry no {prob!r} probability")
    names = list(dict.fromkeys([prob, "engine", "baseline"]))
    cells = []
    for key, g in pred.groupby(["side", "leverage", "horizon"]):
        side, lev, h = cast(tuple[str, int, int], key)
        y = g["liquidated"].to_numpy(float)
        realised = float(y.mean())
        ci_lo, ci_hi = ratio_interval(g, column=prob)
        cell: dict[str, Any] = {
            "side": side,
            "leverage": int(lev),
            "horizon": int(h),
            "n": len(g),
            "realised": realised,
            "ratio": realised / max(float(g[prob].mean()), 1e-12),
            "ratio_lo": ci_lo,  # 90 % month-block bootstrap interval of the ratio
            "ratio_hi": ci_hi,
            "baseline_ratio": realised / max(float(g["baseline"].mean()), 1e-12),
        }
        for name in names:
            b, ll = _scores(g[name].to_numpy(), y)
            cell[f"{name}_mean"] = float(g[name].mean())
            cell[f"{name}_brier"] = b
            cell[f"{name}_logloss"] = ll
            # how well each ranks the cell's start hours (pooled across cells, leverage
            # alone would rank most of it)
            cell[f"{name}_auc"] = _auc(g[name].to_numpy(), y)
        cells.append(cell)
    y = pred["liquidated"].to_numpy(float)
    pooled = {"n": float(len(pred)), "realised": float(y.mean())}
    for name in names:
        b, ll = _scores(pred[name].to_numpy(), y)
        pooled[f"{name}_mean"] = float(pred[name].mean())
        pooled[f"{name}_brier"] = b
        pooled[f"{name}_logloss"] = ll
    if prob == "engine":  # the engine's own Monte Carlo error: price its upper bound
        n = pred["n_paths"].to_numpy()
        p_up = np.array(
            [wilson_upper(float(p), int(k), 1.0) for p, k in zip(pred["engine"], n, strict=True)]
        )
    else:
        p_up = pred[prob].to_numpy(float)
    premium = np.maximum(p_up, 1e-4) * (1 + cfg.loading)
    book = pd.DataFrame(
        {
            "settle": pred["ts"] + pd.to_timedelta(pred["horizon"], unit="h"),
            "premium": premium,
            "payout": y,
        }
    ).sort_values("settle")
    book["year"] = book["settle"].dt.year
    by_year = (
        book.groupby("year")
        .agg(policies=("premium", "size"), premiums=("premium", "sum"), payouts=("payout", "sum"))
        .reset_index()
    )
    by_year["loss_ratio"] = by_year["payouts"] / by_year["premiums"]
    pnl = (book["premium"] - book["payout"]).cumsum().to_numpy()
    drawdown = (
        float(np.max(np.maximum.accumulate(np.concatenate([[0.0], pnl]))[1:] - pnl))
        if len(pnl)
        else 0.0
    )
    table = pd.DataFrame(cells)
    for name in names:
        pooled[f"{name}_auc_within_cell"] = float(table[f"{name}_auc"].mean())
    table["counted"] = table["realised"] >= MIN_COUNTED_RATE
    table["calibrated"] = table["counted"] & table["ratio"].between(*CALIBRATED)
    return BacktestResult(cfg, table, pooled, by_year, drawdown, pred, prob=prob)


def run_backtest(
    folder: str | Path, cfg: BacktestConfig | None = None, progress: Progress | None = None
) -> BacktestResult:
    cfg = cfg or BacktestConfig()
    skipped: list[str] = []
    data = load_folder(folder, skipped)
    preds = []
    for sym, (last, mark) in data.items():
        p = _symbol_predictions(sym, last, mark, cfg, progress)
        if len(p):
            preds.append(p)
        else:
            days = (mark["ts"].iloc[-1] - mark["ts"].iloc[0]) / pd.Timedelta(days=1)
            skipped.append(
                f"{sym}: left out, {days:.0f} days of bars; a start needs "
                f"{cfg.min_history_days} days before it and {max(cfg.horizons)} hours after"
            )
    if not preds:
        raise ValueError(
            f"{folder}: not enough history for a backtest (need {cfg.min_history_days} days "
            f"before a start and {max(cfg.horizons)} hours after it)"
        )
    res = summarise(pd.concat(preds, ignore_index=True), cfg)
    res.skipped = skipped
    return res
