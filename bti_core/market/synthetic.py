"""Synthetic demo markets: several USDT-M perpetuals, deterministic by seed.

The model, per symbol *i* and bar *t* (Δ = bar length in hours):

- **Returns**: ``r_t = σ_t·z_t + μ + c_t``, a driftless log price (μ offsets the crashes' mean
  drift, so a demo does not trend to zero), GJR-GARCH(1,1) variance
  ``σ²_{t+1} = ω + (α + γ·1[r_t<0])·r_t² + β·σ²_t`` (Glosten, Jagannathan & Runkle 1993) with
  standardised Student-t innovations of ν degrees of freedom. A common market factor drives all
  symbols: ``z_i = w_t·(ρ_i·g_t + √(1−ρ_i²)·e_{i,t})·√((ν−2)/ν)`` with ``w_t = √(ν/χ²_ν)`` shared,
  so the symbols are correlated and their fat tails arrive together (multivariate t).
- **Crash days**: Poisson, ``crash_days_per_year`` a year, shared by every symbol: a log drop
  D ~ U(15 %, 40 %) (scaled by each symbol's crash beta) spread over 4–10 hours, then a partial
  rebound of 30 % over the next day. The GJR recursion turns each crash into a volatile week.
- **Intrabar path**: a Brownian bridge of `SUBSTEPS` steps from open to close gives high and low.
- **Mark vs last**: the bridge path is the mark price; the last price is the mark times
  ``exp(b_t)``, basis AR(1) (φ = 0.55, sd 5.5·10⁻⁴, mean that follows the last day's return, as
  perpetual premiums do in trends), plus rare last-price wicks of 3–12 % that the mark price does
  not follow (p = 0.15 % a bar).
- **Funding** every 8 h (00:00, 08:00, 16:00 UTC): ``F = P + clamp(I − P, −0.05 %, 0.05 %)``,
  I = 0.01 %, P the mean basis over the interval (Binance's formula), capped at ±0.3 %.
- **Volume** (base asset): log-normal, rising with |z| and with σ_t, a daily cycle, ×3 in crashes.

Calibration (Binance USDT-M hourly bars, 2019-09 → 2021-12, ../shared/data, fitted with
``arch``'s GJR-GARCH(1,1)-t on percentage log returns; the demo never reads that data):

======================  ==========  ==========  =====================================
figure                   BTCUSDT     ETHUSDT     used here
======================  ==========  ==========  =====================================
annualised volatility    0.785       1.006       0.60–1.10 by symbol (2024-like levels)
excess kurtosis, 1h      58.6        32.8        fat tails from ν and crashes
ACF of |r|, lag 1        0.278       0.276       from GJR persistence
GJR α / γ / β            .046/.009/.950  .052/.017/.940   .050/.015/.935 (persistence .9925,
                                                 below the sample's ≈1 so a demo stays stable)
Student-t ν              3.26        3.67        3.5
basis sd / AR(1)         5.5e-4/.59  5.4e-4/.46  5.5e-4 / .55
funding mean / sd        2.0e-4/3.2e-4  2.9e-4/4.1e-4  from the formula above
days below −10 %         10 of 845   17 of 765   ≈3 crash days a year plus GARCH tails
log-volume sd            0.91        0.88        ≈0.9; corr(|r|, log V) ≈ 0.5
======================  ==========  ==========  =====================================

``with_exchange_quirks`` adds what real exchange files hold, so the cleaning report has work to
do: two listing placeholder bars at the start of the first symbol, and an exchange maintenance
window (two flat zero-volume bars then three missing bars) in the second.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bti_core.market.schema import (
    BAR_COLUMNS,
    FUNDING_TIMEFRAME,
    Kind,
    canonical_symbol,
    timeframe_delta,
)
from bti_core.timeutil import to_utc

if TYPE_CHECKING:
    from bti_core.market.ingest import Ingestor

SUBSTEPS = 8
HOURS_PER_YEAR = 24 * 365
NU = 3.5
ALPHA, GAMMA, BETA = 0.050, 0.015, 0.935
INTEREST = 0.0001  # I, per 8 h
FUNDING_CLAMP = 0.0005
FUNDING_CAP = 0.003
BASIS_PHI, BASIS_SD, BASIS_MEAN = 0.55, 5.5e-4, 1.0e-4
WICK_PROBABILITY = 0.0015


@dataclass(frozen=True)
class SymbolSpec:
    """One demo perpetual: start price, annualised volatility, correlation to the market
    factor, how hard crashes hit it, and its median hourly volume in quote currency."""

    symbol: str
    price: float
    annual_vol: float
    rho: float
    crash_beta: float
    quote_volume_per_hour: float


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCUSDT", 43_000.0, 0.60, 1.00, 1.00, 450e6),
    SymbolSpec("ETHUSDT", 2_300.0, 0.75, 0.85, 1.25, 250e6),
    SymbolSpec("SOLUSDT", 95.0, 1.05, 0.75, 1.60, 90e6),
    SymbolSpec("BNBUSDT", 310.0, 0.65, 0.70, 1.10, 30e6),
)


@dataclass(frozen=True)
class DemoMarket:
    symbol: str
    timeframe: str
    ohlcv: pd.DataFrame  # last-price bars
    mark: pd.DataFrame  # mark-price bars (volume 0, as the exchange publishes them)
    funding: pd.DataFrame  # realised funding at each funding time

    def ingest(self, ingestor: Ingestor, *, source: str = "demo", funding: bool = True) -> None:
        """Store this market's mark and last-price bars (and its funding) through ``ingestor``:
        cleaned and recorded as any import is. The one place tests, benchmarks and demos
        store a generated market."""
        for kind, frame, tf in (
            (Kind.MARK, self.mark, self.timeframe),
            (Kind.OHLCV, self.ohlcv, self.timeframe),
            (Kind.FUNDING, self.funding, FUNDING_TIMEFRAME),
        ):
            if kind is Kind.FUNDING and not funding:
                continue
            ingestor.ingest_frame(frame, symbol=self.symbol, kind=kind, timeframe=tf, source=source)


def _crash_drift(rng: np.random.Generator, n: int, bar_hours: float, per_year: float) -> np.ndarray:
    """Market-wide log-return drift added by crash days (negative, then a partial rebound)."""
    drift = np.zeros(n)
    years = n * bar_hours / HOURS_PER_YEAR
    for _ in range(rng.poisson(per_year * years)):
        depth = rng.uniform(0.15, 0.40)
        fall_bars = max(1, round(rng.integers(4, 11) / bar_hours))
        rebound_bars = max(1, round(24 / bar_hours))
        at = int(rng.integers(0, max(1, n - fall_bars - rebound_bars)))
        drift[at : at + fall_bars] -= depth / fall_bars
        drift[at + fall_bars : at + fall_bars + rebound_bars] += 0.3 * depth / rebound_bars
    return drift


def generate_demo_markets(
    specs: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS,
    *,
    start: pd.Timestamp | str = "2025-01-01",
    periods: int = 24 * 365,
    timeframe: str = "1h",
    seed: int = 1,
    crash_days_per_year: float = 3.0,
    with_exchange_quirks: bool = True,
) -> dict[str, DemoMarket]:
    """Generate ``periods`` bars per symbol from ``start``; the same seed gives the same data."""
    if periods < 2:
        raise ValueError(f"periods must be at least 2, got {periods}")
    if not specs:
        raise ValueError("give at least one symbol")
    step = timeframe_delta(timeframe)
    bar_hours = step / pd.Timedelta(hours=1)
    t0 = to_utc(start).floor(step)
    ts = pd.DatetimeIndex(
        pd.date_range(t0, periods=periods, freq=step), dtype="datetime64[us, UTC]"
    )

    rng = np.random.default_rng(seed)
    n, k = periods, len(specs)
    rho = np.array([s.rho for s in specs])
    var_bar = np.array([s.annual_vol**2 / HOURS_PER_YEAR * bar_hours for s in specs])
    omega = var_bar * (1 - (ALPHA + GAMMA / 2 + BETA))
    cap = 25 * var_bar

    # Innovations: multivariate t through a shared chi-square mixing variable.
    g = rng.standard_normal(n)
    e = rng.standard_normal((n, k))
    w = np.sqrt(NU / rng.chisquare(NU, n))
    z = w[:, None] * (rho * g[:, None] + np.sqrt(1 - rho**2) * e) * np.sqrt((NU - 2) / NU)
    crash_beta = np.array([s.crash_beta for s in specs])
    crash = _crash_drift(rng, n, bar_hours, crash_days_per_year)[:, None] * crash_beta
    # Crashes take E[D]·(1 − 0.3) a time; give it back as drift so prices have no trend to zero.
    drift = crash_days_per_year * 0.275 * 0.7 * crash_beta * bar_hours / HOURS_PER_YEAR

    r = np.empty((n, k))
    sigma2 = np.empty((n, k))
    s2 = var_bar.copy()
    for t in range(n):  # the GJR recursion is sequential by nature
        sigma2[t] = s2
        rt = np.sqrt(s2) * z[t] + drift + crash[t]
        r[t] = rt
        s2 = np.minimum(omega + (ALPHA + GAMMA * (rt < 0)) * rt * rt + BETA * s2, cap)
    sigma = np.sqrt(sigma2)

    markets: dict[str, DemoMarket] = {}
    for i, spec in enumerate(specs):
        markets[canonical_symbol(spec.symbol)] = _bars_for(
            spec, ts, r[:, i], sigma[:, i], z[:, i], crash[:, i] != 0, bar_hours, timeframe, rng
        )
    return _add_quirks(markets, rng) if with_exchange_quirks else markets


def _bars_for(
    spec: SymbolSpec,
    ts: pd.DatetimeIndex,
    r: np.ndarray,
    sigma: np.ndarray,
    z: np.ndarray,
    in_crash: np.ndarray,
    bar_hours: float,
    timeframe: str,
    rng: np.random.Generator,
) -> DemoMarket:
    n = len(r)
    log_close = np.log(spec.price) + np.cumsum(r)
    log_open = np.concatenate([[np.log(spec.price)], log_close[:-1]])

    # Brownian bridge from open to close for the intrabar extremes of the mark price.
    inc = rng.standard_normal((n, SUBSTEPS)) * (sigma[:, None] / np.sqrt(SUBSTEPS))
    walk = np.cumsum(inc, axis=1)
    frac = np.arange(1, SUBSTEPS + 1) / SUBSTEPS
    bridge = walk - frac * walk[:, -1:] + frac * r[:, None]
    path_hi = np.maximum(bridge.max(axis=1), 0.0)
    path_lo = np.minimum(bridge.min(axis=1), 0.0)
    open_m, close_m = np.exp(log_open), np.exp(log_close)
    mark = pd.DataFrame(
        {
            "ts": ts,
            "open": open_m,
            # max/min again: exp(log_open + r) and exp(cumsum) may differ in the last bit
            "high": np.maximum(np.exp(log_open + path_hi), np.maximum(open_m, close_m)),
            "low": np.minimum(np.exp(log_open + path_lo), np.minimum(open_m, close_m)),
            "close": close_m,
            "volume": 0.0,
        }
    )

    # Basis (last/mark − 1): AR(1) whose mean follows the last day's move.
    day = max(1, round(24 / bar_hours))
    trend = pd.Series(r).rolling(day, min_periods=1).sum().to_numpy()
    basis = BASIS_MEAN + 0.01 * trend + _ar1(rng, n, BASIS_PHI, BASIS_SD)
    jitter = np.abs(rng.standard_normal((n, 2))) * BASIS_SD
    close_l = mark["close"].to_numpy() * np.exp(basis)
    open_l = np.concatenate([[mark["open"].iloc[0] * np.exp(BASIS_MEAN)], close_l[:-1]])
    high_l = np.maximum(
        mark["high"].to_numpy() * np.exp(basis + jitter[:, 0]), np.maximum(open_l, close_l)
    )
    low_l = np.minimum(
        mark["low"].to_numpy() * np.exp(basis - jitter[:, 1]), np.minimum(open_l, close_l)
    )
    wick = rng.random(n) < WICK_PROBABILITY
    low_l[wick] *= 1 - rng.uniform(0.03, 0.12, int(wick.sum()))

    hour = ts.hour.to_numpy()
    base_quote = spec.quote_volume_per_hour * bar_hours
    log_v = (
        np.log(base_quote)
        + 0.5 * np.log(sigma / np.sqrt(np.mean(sigma**2)))
        + 0.35 * (np.abs(z) - 0.8)
        + 0.25 * np.sin(2 * np.pi * (hour - 8) / 24)
        + _ar1(rng, n, 0.7, 0.5)
        + np.log(3.0) * in_crash
    )
    volume = np.round(np.exp(log_v) / close_l, 3)
    ohlcv = pd.DataFrame(
        {"ts": ts, "open": open_l, "high": high_l, "low": low_l, "close": close_l, "volume": volume}
    )

    # Funding at 00/08/16 UTC from the mean basis (premium index) of the interval before it.
    premium = pd.Series(basis, index=ts).rolling(pd.Timedelta(hours=8), min_periods=1).mean()
    at = ts[(ts.hour % 8 == 0) & (ts.minute == 0)]
    p = premium.reindex(at).to_numpy()
    rate = np.clip(
        p + np.clip(INTEREST - p, -FUNDING_CLAMP, FUNDING_CLAMP), -FUNDING_CAP, FUNDING_CAP
    )
    funding = pd.DataFrame({"ts": at, "funding_rate": np.round(rate, 8)})

    return DemoMarket(spec.symbol, timeframe, ohlcv[list(BAR_COLUMNS)], mark, funding)


def market_context(m: DemoMarket, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Demo open interest and long/short ratio for ``m``, one reading per bar, made from its
    mark prices so that they behave as the real series do: open interest (in contracts)
    drifts with a slow AR(1) and is cut by deleveraging when the price falls fast (a 5 % fall
    in a bar closes about 15 % of it); the accounts' long share mean-reverts around one half
    and chases the last day's move (retail buys strength)."""
    rng = np.random.default_rng(seed + 7919 * len(m.symbol))
    close = m.mark["close"].to_numpy(dtype=float)
    r = np.diff(np.log(close), prepend=np.log(close[0]))
    n = len(close)
    level = _ar1(rng, n, 0.995, 0.08) + np.log(2.5e8 / close[0])  # ≈ 250 M USDT at the start
    cut = np.cumsum(np.minimum(0.0, 3.0 * np.minimum(r, 0.0) + 0.01) * (r < -0.01))
    oi = np.exp(level + cut)
    day = pd.Series(r).rolling(24, min_periods=1).sum().to_numpy()
    share = 0.5 + 0.5 * np.tanh(_ar1(rng, n, 0.98, 0.15) + 4.0 * day)
    share = np.clip(share, 0.2, 0.8)
    ts = m.mark["ts"]
    open_interest = pd.DataFrame(
        {"ts": ts, "open_interest": np.round(oi, 3), "open_interest_value": np.round(oi * close, 2)}
    )
    long_short = pd.DataFrame(
        {
            "ts": ts,
            "long_short_ratio": np.round(share / (1 - share), 4),
            "long_account": np.round(share, 4),
        }
    )
    return open_interest, long_short


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) ``x_t = φ·x_{t−1} + ε_t`` with standard deviation ``sd``.

    An exponentially weighted mean with ``adjust=False`` is ``y_t = φ·y_{t−1} + (1−φ)·u_t``:
    feeding it ``u = ε/(1−φ)`` gives the AR(1) at C speed.
    """
    u = rng.standard_normal(n) * sd * np.sqrt(1 - phi**2) / (1 - phi)
    u[0] = rng.standard_normal() * sd  # y_0 = u_0: start in the stationary distribution
    return np.asarray(pd.Series(u).ewm(alpha=1 - phi, adjust=False).mean().to_numpy())


def _add_quirks(markets: dict[str, DemoMarket], rng: np.random.Generator) -> dict[str, DemoMarket]:
    """Exchange artefacts that cleaning must catch: listing placeholders, a maintenance window."""
    out = dict(markets)
    names = list(markets)
    first = markets[names[0]]
    if len(first.ohlcv) > 10:
        bars = first.ohlcv.copy()
        price = float(round(bars["open"].iloc[2], -3) or bars["open"].iloc[2])
        bars.loc[:1, ["open", "high", "low", "close"]] = price
        bars.loc[:1, "volume"] = [0.002, 0.0]
        out[names[0]] = replace(first, ohlcv=bars)
    if len(names) > 1 and len(markets[names[1]].ohlcv) > 200:
        m = markets[names[1]]
        at = int(rng.integers(100, len(m.ohlcv) - 50))

        def maintenance(frame: pd.DataFrame) -> pd.DataFrame:
            f = frame.copy()
            flat = float(f["close"].iloc[at - 1])
            for col in ("open", "high", "low", "close"):
                f.loc[at : at + 1, col] = flat
            f.loc[at : at + 1, "volume"] = 0.0
            return f.drop(index=range(at + 2, at + 5)).reset_index(drop=True)

        out[names[1]] = replace(m, ohlcv=maintenance(m.ohlcv), mark=maintenance(m.mark))
    return out


def replay_crash(
    close0: float,
    *,
    start: pd.Timestamp | str,
    hours: int = 6,
    drop: float = 0.30,
    rest: int = 6,
    timeframe: str = "1h",
    last_wick: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Last-price and mark bars of a crash, for demos and tests: from ``close0`` the price falls
    by ``drop`` (log-linearly) over ``hours`` bars starting at ``start``, then rests for ``rest``
    bars. ``drop < 0`` makes a squeeze upwards. ``last_wick`` pushes the last price's extreme of
    the deepest bar that much further than the mark's (a wick the mark does not confirm)."""
    if not -5 < drop < 1:
        raise ValueError(f"drop must be in (−5, 1); got {drop}")
    if hours < 1 or rest < 0:
        raise ValueError("hours must be ≥ 1 and rest ≥ 0")
    step = timeframe_delta(timeframe)
    t0 = to_utc(start).ceil(step)
    n = hours + rest
    ts = pd.DatetimeIndex(pd.date_range(t0, periods=n, freq=step), dtype="datetime64[us, UTC]")
    path = close0 * np.exp(np.log(1 - drop) * np.minimum(np.arange(1, n + 1), hours) / hours)
    opens = np.concatenate([[close0], path[:-1]])
    hi = np.maximum(opens, path) * 1.001
    lo = np.minimum(opens, path) * 0.999
    mark = pd.DataFrame(
        {"ts": ts, "open": opens, "high": hi, "low": lo, "close": path, "volume": 0.0}
    )
    last = mark.copy()
    last["volume"] = 1_000.0
    deepest = hours - 1
    if last_wick:
        if drop >= 0:
            last.loc[deepest, "low"] = lo[deepest] * (1 - last_wick)
        else:
            last.loc[deepest, "high"] = hi[deepest] * (1 + last_wick)
    return last[list(BAR_COLUMNS)], mark[list(BAR_COLUMNS)]


def write_demo_folder(
    folder: Path,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    *,
    start: str = "2022-09-01",
    days: int = 300,
    seed: int = 21,
) -> Path:
    """Demo markets as a data folder in the development data's layout (``SYMBOL_1h_ohlcv``,
    ``_mark`` and ``_funding_rate`` .csv.gz), for `bti backtest`, `bti train` and
    `bti forecast --evaluate` without the real data."""
    from bti_core.market.schema import Kind
    from bti_core.market.sources import write_normalised_csv

    folder.mkdir(parents=True, exist_ok=True)
    markets = generate_demo_markets(start=start, periods=24 * days, seed=seed)
    for sym in symbols:
        m = markets[sym]
        write_normalised_csv(m.ohlcv, folder / f"{sym}_1h_ohlcv.csv.gz", Kind.OHLCV)
        write_normalised_csv(m.mark, folder / f"{sym}_1h_mark.csv.gz", Kind.MARK)
        write_normalised_csv(m.funding, folder / f"{sym}_1h_funding_rate.csv.gz", Kind.FUNDING)
    return folder
