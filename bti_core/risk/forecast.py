"""Forecasts of the mark price and of realised volatility, 1 hour to 7 days ahead, with 80 %
and 95 % intervals: Prophet beside the naive forecasts it has to beat.

**Targets**, at an origin t and horizon h hours, from hourly mark-price log returns r:
the mark price ``p(t + h)``, and the realised volatility over the horizon
``v_h(t) = sqrt(8760 · mean(r²(t+1), …, r²(t+h)))`` (annualised).

**Forecasters** each give a predictive distribution as samples (`N_SAMPLES` per horizon):

- price, *random walk*: ``log p(t+h) = log p(t) + σ √h z`` with σ the window's hourly return
  deviation;
- price, *Prophet* (Taylor & Letham 2018) on the log price: piecewise-linear trend, daily and
  weekly seasonality, its posterior-predictive samples (trend changes and noise);
- volatility: a variance path ``σ²(t+k)`` from *EWMA* (RiskMetrics 1996, λ = 0.94 a day, so
  ``0.94^(1/24)`` an hour; flat ahead), *GARCH(1,1)* (Bollerslev 1986, `arch`, Gaussian, zero
  mean), *HAR* (Corsi 2009: log realised variance over the horizon regressed on the last day's,
  week's and month's, by least squares over the window; its residuals bootstrapped), or
  *Prophet* on ``log r²`` (trend + intraday and weekly seasonality; ``exp`` of the fit times
  the mean of its exponentiated residuals — Duan's 1983 smearing — is a variance whatever the
  shocks' law). Each path is turned into samples of the
  realised variance as ``mean_k σ²(t+k) · χ²₁`` (the sampling noise of squared returns; HAR's
  samples are its bootstrapped residuals instead).

Every forecaster sees the `WINDOW_DAYS` before the origin only (Prophet's fit is bounded).

**Scores** per horizon over the origins of a folder (`evaluate`):
MASE (Hyndman & Koehler 2006) — the median's absolute error divided by the window's in-sample
error of the h-step no-change forecast (``p(s+h)`` by ``p(s)``; ``v_h(s)`` by ``v_h(s−h)``), so
below 1 beats what doing nothing did in the window; coverage of the 80 % and 95 % intervals;
CRPS (Gneiting & Raftery 2007), from the samples as ``E|X − y| − ½ E|X − X'|``, of
``100 · log p`` for price (percent, comparable across symbols) and of ``100 · v`` for
volatility (vol points). The forecaster with the lowest CRPS relative to the naive reference,
averaged over the horizons, is the best one and drives what the pages show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from bti_core.timeutil import to_utc

Progress = Callable[[int, int, str], None]
Target = Literal["price", "vol"]
TARGETS: tuple[Target, ...] = ("price", "vol")
HORIZONS = (1, 4, 24, 72, 168)
LEVELS = (0.8, 0.95)
WINDOW_DAYS = 90
N_SAMPLES = 500
HOURS_PER_YEAR = 8760.0
EWMA_LAMBDA = 0.94 ** (1 / 24)
VAR_FLOOR = 1e-10  # an hour's squared return when the bar did not move (log of it is finite)
FORECASTERS: dict[Target, tuple[str, ...]] = {
    "price": ("random_walk", "prophet"),
    "vol": ("ewma", "garch", "har", "prophet"),
}
REFERENCE: dict[Target, str] = {"price": "random_walk", "vol": "ewma"}


def check_forecaster(target: str, forecaster: str) -> None:
    if target not in FORECASTERS:
        raise ValueError(f"unknown target {target!r}; the targets are price and vol")
    if forecaster not in FORECASTERS[target]:
        allowed = ", ".join(FORECASTERS[target])
        raise ValueError(f"unknown {target} forecaster {forecaster!r}; choose one of {allowed}")


@dataclass(frozen=True)
class Forecast:
    """A predictive distribution per horizon, as samples in the target's units (price in the
    quote currency, volatility annualised as a fraction)."""

    symbol: str
    target: Target
    forecaster: str
    origin: pd.Timestamp
    last: float  # the target at the origin: the mark price, or the realised vol of the last day
    horizons: tuple[int, ...]
    samples: np.ndarray = field(repr=False)  # (len(horizons), n_samples)

    def quantiles(self, q: Sequence[float]) -> np.ndarray:
        return np.asarray(np.quantile(self.samples, q, axis=1).T, dtype=float)

    def frame(self) -> pd.DataFrame:
        """Per horizon: the time it lands, the median and the 80 % and 95 % bounds."""
        qs = self.quantiles([0.5, 0.1, 0.9, 0.025, 0.975])
        return pd.DataFrame(
            {
                "horizon": list(self.horizons),
                "ts": [self.origin + pd.Timedelta(hours=h) for h in self.horizons],
                "median": qs[:, 0],
                "lo80": qs[:, 1],
                "hi80": qs[:, 2],
                "lo95": qs[:, 3],
                "hi95": qs[:, 4],
            }
        )


# ---------------------------------------------------------------------------------------------
# forecasters: (log prices of the window, horizons, rng) -> samples (len(horizons), N)


def _returns(log_p: np.ndarray) -> np.ndarray:
    r = np.diff(log_p)
    return r[np.isfinite(r)]


def _price_random_walk(log_p: np.ndarray, hz: Sequence[int], rng: np.random.Generator) -> Any:
    sigma = float(np.std(_returns(log_p), ddof=1))
    z = rng.standard_normal((len(hz), N_SAMPLES))
    return np.exp(log_p[-1] + sigma * np.sqrt(np.asarray(hz, float))[:, None] * z)


def _prophet_paths(
    y: np.ndarray, origin: pd.Timestamp, hmax: int, seed: int
) -> tuple[Any, Any, Any]:
    """Prophet on an hourly series ending at ``origin``: posterior-predictive samples of the
    next ``hmax`` hours (with noise), of their noise-free mean (trend samples + seasonality),
    and the fit's residuals in the window."""
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    get_logger().setLevel(logging.WARNING)  # its first call sets DEBUG: call it, then quiet it
    ok = np.isfinite(y)
    ds = pd.date_range(end=origin.tz_convert(None), periods=len(y), freq="h")
    m = Prophet(
        daily_seasonality=True,
        weekly_seasonality=True,
        yearly_seasonality=False,
        uncertainty_samples=N_SAMPLES,
    )
    m.fit(pd.DataFrame({"ds": ds[ok], "y": y[ok]}), seed=seed)
    future = pd.DataFrame(
        {"ds": pd.date_range(ds[-1] + pd.Timedelta(hours=1), periods=hmax, freq="h")}
    )
    state = np.random.get_state()  # noqa: NPY002 - Prophet samples from numpy's global generator
    try:
        np.random.seed(seed % 2**32)  # noqa: NPY002
        draws = m.predictive_samples(future)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    point = m.predict(future)
    seasonal = (point["yhat"] - point["trend"]).to_numpy()[:, None]
    fitted = m.predict(pd.DataFrame({"ds": ds[ok]}))["yhat"].to_numpy()
    return draws["yhat"], draws["trend"] + seasonal, y[ok] - fitted


def _price_prophet(log_p: np.ndarray, hz: Sequence[int], origin: pd.Timestamp, seed: int) -> Any:
    yhat, _, _ = _prophet_paths(log_p, origin, max(hz), seed)
    return np.exp(yhat[np.asarray(hz) - 1])


def _realised_variance(var_path: np.ndarray, hz: Sequence[int], rng: np.random.Generator) -> Any:
    """Samples of mean(r²) over each horizon from variance paths (hmax, S) or one path (hmax,):
    ``mean_k σ²(t+k) z_k²``."""
    hmax = max(hz)
    paths = var_path if var_path.ndim == 2 else np.repeat(var_path[:, None], N_SAMPLES, axis=1)
    sq = paths[:hmax] * rng.chisquare(1, (hmax, paths.shape[1]))
    cum = np.cumsum(sq, axis=0)
    return cum[np.asarray(hz) - 1] / np.asarray(hz, float)[:, None]


def _ewma_variance(r: np.ndarray) -> float:
    s2 = float(np.mean(r[: min(len(r), 24 * 7)] ** 2))
    w = EWMA_LAMBDA ** np.arange(len(r))[::-1]  # the recursion, unrolled: weights on r²
    return float(EWMA_LAMBDA ** len(r) * s2 + (1 - EWMA_LAMBDA) * np.sum(w * r**2))


def _vol_ewma(r: np.ndarray, hz: Sequence[int], rng: np.random.Generator) -> Any:
    return _realised_variance(np.full(max(hz), _ewma_variance(r)), hz, rng)


def _vol_garch(r: np.ndarray, hz: Sequence[int], rng: np.random.Generator) -> Any:
    from arch import arch_model

    scale = 100.0  # arch fits best on returns in percent
    res = arch_model(r * scale, mean="Zero", vol="GARCH", p=1, q=1, dist="normal").fit(
        disp="off", show_warning=False
    )
    path = res.forecast(horizon=max(hz), reindex=False).variance.to_numpy()[-1] / scale**2
    return _realised_variance(np.asarray(path, float), hz, rng)


def _har_regressors(r2: np.ndarray) -> np.ndarray:
    """log of the mean squared return over the last day, week and month at each hour."""
    c = np.concatenate([[0.0], np.cumsum(r2)])
    out = np.full((len(r2), 3), np.nan)
    for j, n in enumerate((24, 168, 720)):
        idx = np.arange(n, len(r2) + 1)
        out[idx - 1, j] = np.log(np.maximum((c[idx] - c[idx - n]) / n, VAR_FLOOR))
    return out


def _vol_har(r: np.ndarray, hz: Sequence[int], rng: np.random.Generator) -> Any:
    r2 = r**2
    x = _har_regressors(r2)
    c = np.concatenate([[0.0], np.cumsum(r2)])
    out = np.empty((len(hz), N_SAMPLES))
    for i, h in enumerate(hz):
        t = np.arange(len(r2) - h)  # an hour whose next h returns are inside the window
        y = np.log(np.maximum((c[t + 1 + h] - c[t + 1]) / h, VAR_FLOOR))
        ok = np.isfinite(x[t]).all(axis=1)
        a = np.column_stack([np.ones(ok.sum()), x[t][ok]])
        if len(a) < 50:
            raise ValueError(
                f"HAR at {h} h needs at least 50 fitted hours; the window gave {len(a)}"
            )
        beta, *_ = np.linalg.lstsq(a, y[ok], rcond=None)
        resid = y[ok] - a @ beta
        mean = float(np.r_[1.0, x[-1]] @ beta)
        out[i] = np.exp(mean + rng.choice(resid, N_SAMPLES))
    return out


def _vol_prophet(
    r: np.ndarray, hz: Sequence[int], origin: pd.Timestamp, seed: int, rng: np.random.Generator
) -> Any:
    r2 = r**2
    floor = max(0.01 * float(np.nanmean(r2)), VAR_FLOOR)  # an hour that did not move
    _, mean, resid = _prophet_paths(np.log(np.maximum(r2, floor)), origin, max(hz), seed)
    # Duan's (1983) smearing: E[r²] = exp(fit) · mean(exp(residual)), whatever the shocks' law
    smear = float(np.mean(np.exp(resid)))
    return _realised_variance(np.exp(mean) * smear, hz, rng)


def forecast(
    closes: pd.Series,
    target: Target,
    forecaster: str,
    *,
    symbol: str = "",
    horizons: Sequence[int] = HORIZONS,
    window_days: int = WINDOW_DAYS,
    seed: int = 0,
) -> Forecast:
    """Forecast ``target`` from hourly mark closes (a Series on a UTC time index, up to the
    origin, which is its last hour) with ``forecaster``, fitted on the last ``window_days``."""
    check_forecaster(target, forecaster)
    hz = tuple(sorted({int(h) for h in horizons}))
    if not hz or hz[0] < 1:
        raise ValueError(f"horizons must be whole hours of at least 1, got {list(horizons)}")
    s = closes.dropna()
    s = s[s > 0]
    if s.empty:
        raise ValueError(f"{symbol or 'the series'}: no positive closes to forecast from")
    origin = to_utc(s.index[-1])
    grid = pd.date_range(end=origin, periods=window_days * 24, freq="h")
    window = s.reindex(grid)  # hours without a bar stay NaN: no return spans a gap
    if window.notna().sum() < 24 * 30:
        raise ValueError(
            f"{symbol or 'the series'}: {int(window.notna().sum())} hourly bars in the "
            f"{window_days} days before {origin:%Y-%m-%d %H:%M}; a forecast needs at least 720"
        )
    log_p = np.log(window.to_numpy(dtype=float))
    r = np.diff(log_p)
    r_ok = r[np.isfinite(r)]
    rng = np.random.default_rng(seed)
    if target == "price":
        log_p_f = pd.Series(log_p).ffill().to_numpy()
        if forecaster == "random_walk":
            samples = _price_random_walk(log_p_f, hz, rng)
        else:
            samples = _price_prophet(log_p, hz, origin, seed)
        last = float(s.iloc[-1])
    else:
        if forecaster == "ewma":
            var = _vol_ewma(r_ok, hz, rng)
        elif forecaster == "garch":
            var = _vol_garch(r_ok, hz, rng)
        elif forecaster == "har":
            var = _vol_har(r_ok, hz, rng)
        else:
            var = _vol_prophet(r, hz, origin, seed, rng)
        samples = np.sqrt(HOURS_PER_YEAR * np.maximum(var, 0.0))
        last = float(np.sqrt(HOURS_PER_YEAR * np.mean(r_ok[-24:] ** 2)))
    return Forecast(symbol, target, forecaster, origin, last, hz, np.asarray(samples, float))
