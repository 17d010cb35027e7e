"""The risk engine: per-symbol volatility fits and shared Monte Carlo path tables, refreshed
from the warehouse, and the liquidation probability of any order as a table lookup.

One `SymbolRisk` per symbol holds what a refresh computed (fitted GJR-GARCH, path table, the
spot mark price, the baseline's 30-day volatility); `RiskEngine` keeps them and refreshes a
symbol when newer bars arrive. Fitting and simulating happen here, never in a page render.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bti_core.errors import NoDataError
from bti_core.market.schema import FUNDING_TIMEFRAME, Kind, canonical_symbol
from bti_core.market.warehouse import Warehouse
from bti_core.risk.constants import FIT_WINDOW
from bti_core.risk.features import market_frame, order_vector
from bti_core.risk.index import MarketFeatures, market_features
from bti_core.risk.probability import (
    ENGINE_INNOVATIONS,
    HOURS_PER_YEAR,
    FloatArray,
    Innovations,
    PathTable,
    VolFit,
    first_passage_gbm,
    fit_gjr,
    simulate_path_table,
)
from bti_core.risk.protocols import RowModel

MIN_FIT_BARS = 24 * 30
BASELINE_WINDOW_HOURS = 24 * 30
FEATURE_WINDOW = pd.Timedelta(days=90)
HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class SymbolRisk:
    symbol: str
    as_of: pd.Timestamp  # open time of the last bar used
    spot: float  # last mark close
    fit: VolFit
    table: PathTable
    baseline_sigma: float  # annualised, realised over the last 30 days
    features: MarketFeatures  # market state for the risk index
    market: pd.Series | None = None  # `features.market_frame` at the last bar (learned models)

    def probability(
        self,
        liquidation_price: FloatArray | float,
        hours: FloatArray | float,
        side: FloatArray | int,
    ) -> tuple[FloatArray, FloatArray]:
        """Engine probability and standard error, measured from the current mark price."""
        lp = np.asarray(liquidation_price, dtype=float)
        with np.errstate(divide="ignore"):
            b = np.where(lp > 0, np.log(np.maximum(lp, 1e-300) / self.spot), -np.inf)
        return self.table.probability(b, hours, side)

    def learned_probability(
        self,
        model: RowModel,
        liquidation_price: float,
        hours: float,
        side: int,
        leverage: float,
    ) -> float | None:
        """A learned model's P(liquidation) for one order, from this refresh's market features,
        GARCH variance and the engine's and baseline's probabilities; None without features."""
        if self.market is None or liquidation_price <= 0:
            return None
        p, _ = self.probability(liquidation_price, hours, side)
        x = order_vector(
            self.market.to_dict(),
            side=side,
            leverage=float(leverage),
            horizon=float(hours),
            engine=float(p),
            baseline=float(self.baseline(liquidation_price, hours, side)),
            sigma2=self.fit.sigma2_next,
            log_barrier=float(np.log(liquidation_price / self.spot)),
        )
        return model(x, side=side, leverage=float(leverage), horizon=float(hours))

    def model_summary(self) -> str:
        """What the paths were simulated from, in a trader's units: the fit's window and tail
        (ν), the volatility now (√(σ²·8760)) and the trend the paths take after the first day
        (``e^(168·μ) − 1`` a week)."""
        days = len(self.fit.residuals) / 24
        vol = float(np.sqrt(self.fit.sigma2_next * HOURS_PER_YEAR))
        head = (
            f"Model: GJR-GARCH-t on {days:.0f} days of hourly mark prices "
            f"(ν = {self.fit.params.nu:.1f}); volatility now {vol:.0%} a year; "
        )
        if self.fit.mu == 0:
            return head + "no trend (the window's mean return is within a standard error of zero)"
        week = float(np.expm1(168 * self.fit.mu))
        return head + (
            f"from the second day a trend of {week:+.1%} a week "
            "(the window's mean return, shrunk by its t-statistic)"
        )

    def baseline(
        self,
        liquidation_price: FloatArray | float,
        hours: FloatArray | float,
        side: FloatArray | int,
    ) -> FloatArray:
        """GBM closed form with the 30-day realised volatility, zero drift in the log price."""
        sig = self.baseline_sigma
        return first_passage_gbm(
            self.spot,
            liquidation_price,
            sig,
            np.asarray(hours) / HOURS_PER_YEAR,
            side,
            mu=sig**2 / 2,
        )


def hourly_mark(warehouse: Warehouse, symbol: str, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The last `FIT_WINDOW` of hourly mark-price bars (resampled if only finer ones are
    stored; last-price bars where no mark prices are) up to ``end``."""
    try:
        bars = warehouse.bars(symbol, "1h", None, end, kind=Kind.MARK)
    except NoDataError:
        bars = warehouse.bars(symbol, "1h", None, end, kind=Kind.OHLCV)
    if bars.empty:
        return bars
    return bars[bars["ts"] > bars["ts"].iloc[-1] - FIT_WINDOW].reset_index(drop=True)


def build_symbol_risk(
    symbol: str,
    mark: pd.DataFrame,
    *,
    bars: pd.DataFrame | None = None,
    funding: pd.DataFrame | None = None,
    n_paths: int = 20_000,
    seed: int = 0,
    innovations: Innovations = ENGINE_INNOVATIONS,
) -> SymbolRisk:
    """Fit and simulate from hourly mark bars (the last row is 'now'); ``bars`` (last price)
    and ``funding`` feed the risk index's market features."""
    if len(mark) < MIN_FIT_BARS:
        raise NoDataError(
            f"{symbol}: {len(mark)} hourly bars; the risk model needs at least {MIN_FIT_BARS} "
            "(30 days)"
        )
    close = mark["close"].to_numpy(dtype=float)
    r = np.diff(np.log(close))
    fit = fit_gjr(r)
    table = simulate_path_table(fit, n_paths=n_paths, seed=seed, innovations=innovations)
    recent = r[-BASELINE_WINDOW_HOURS:]
    sigma = float(np.sqrt(np.mean(recent**2) * HOURS_PER_YEAR))
    features = (
        market_features(bars, funding)
        if bars is not None and len(bars) >= 60
        else MarketFeatures.neutral(float(close[-1]))
    )
    market = None
    if bars is not None and len(bars) >= 24 * 7:
        market = market_frame(bars, mark, funding).iloc[-1]
    return SymbolRisk(
        canonical_symbol(symbol),
        mark["ts"].iloc[-1],
        float(close[-1]),
        fit,
        table,
        sigma,
        features,
        market,
    )


Spans = Sequence[tuple[pd.Timestamp, pd.Timestamp]]


def without_spans(bars: pd.DataFrame, spans: Spans, step: pd.Timedelta) -> pd.DataFrame:
    """``bars`` (of length ``step``) less every bar that overlaps one of ``spans`` (closed
    intervals of bar opens, any finer timeframe)."""
    if not spans or bars.empty:
        return bars
    ts = bars["ts"]
    out = pd.Series(False, index=bars.index)
    for a, b in spans:
        out |= (ts + step > a) & (ts <= b)
    return bars[~out].reset_index(drop=True)


class RiskEngine:
    """Keeps one `SymbolRisk` per symbol, rebuilt when the warehouse has a newer bar.

    ``replays`` names the stretches of a symbol written by crash replays: they are left out of
    the fit, the risk index's features and the baseline volatility (a replay is a demo of
    claims, not of pricing), while the spot stays the latest mark, replayed or not."""

    def __init__(
        self,
        warehouse: Warehouse,
        *,
        n_paths: int = 20_000,
        seed: int = 0,
        replays: Callable[[str], Spans] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.n_paths = n_paths
        self.seed = seed
        self.replays = replays
        # symbol -> (the source's last bar when built, what was built)
        self._cache: dict[str, tuple[pd.Timestamp, SymbolRisk]] = {}
        self._lock = threading.Lock()

    def symbol_risk(self, symbol: str) -> SymbolRisk:
        sym = canonical_symbol(symbol)
        last = self._last_bar(sym)
        with self._lock:
            cached = self._cache.get(sym)
            if cached is not None and cached[0] >= last:
                return cached[1]
        mark = hourly_mark(self.warehouse, sym)
        recent = mark["ts"].iloc[-1] - FEATURE_WINDOW
        try:
            bars = self.warehouse.bars(sym, "1h", recent)
        except NoDataError:
            bars = None
        try:
            funding = self.warehouse.query(Kind.FUNDING, sym, FUNDING_TIMEFRAME, recent)
        except NoDataError:
            funding = None
        spans = self.replays(sym) if self.replays is not None and not mark.empty else ()
        fit_mark = without_spans(mark, spans, HOUR)
        if bars is not None:
            bars = without_spans(bars, spans, HOUR)
        risk = build_symbol_risk(
            sym, fit_mark, bars=bars, funding=funding, n_paths=self.n_paths, seed=self.seed
        )
        if len(fit_mark) < len(mark):  # priced from the mark now, on the market's own volatility
            risk = replace(risk, as_of=mark["ts"].iloc[-1], spot=float(mark["close"].iloc[-1]))
        with self._lock:
            self._cache[sym] = (last, risk)
        return risk

    def spot(self, symbol: str) -> float:
        """The latest mark close (last close where no mark prices are stored)."""
        sym = canonical_symbol(symbol)
        for kind in (Kind.MARK, Kind.OHLCV):
            tfs = self.warehouse.timeframes(sym, kind)
            if tfs:
                return float(self.warehouse.latest(kind, sym, tfs[0])["close"])
        raise NoDataError(f"no market data for {sym}")

    def _last_bar(self, symbol: str) -> pd.Timestamp:
        for kind in (Kind.MARK, Kind.OHLCV):
            for tf in self.warehouse.timeframes(symbol, kind):
                d = self.warehouse.dataset(kind, symbol, tf)
                if d is not None and d.last is not None:
                    return d.last
        raise NoDataError(
            f"no market data for {symbol}: import some with `bti ingest` or `bti demo`"
        )
