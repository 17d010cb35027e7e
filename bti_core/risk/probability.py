"""Probability that the mark price reaches a liquidation price within a policy window.

**Baseline — first passage of geometric Brownian motion** (Harrison 1985, *Brownian Motion and
Stochastic Flow Systems*, §1.8; Shreve 2004, *Stochastic Calculus for Finance II*, §7.2): with
``b = ln(LP/S0) < 0`` for a long and ``ν = μ − σ²/2``,

    P(min_{t≤T} ln(S_t/S0) ≤ b) = Φ((b − νT)/(σ√T)) + exp(2νb/σ²)·Φ((b + νT)/(σ√T)),

``2Φ(b/(σ√T))`` when ν = 0. A short mirrors it with the running maximum (b → −b, ν → −ν).

**Engine — Monte Carlo under GJR-GARCH(1,1)** (Glosten, Jagannathan & Runkle 1993) fitted with
`arch`, innovations either Student-t or bootstrapped standardised residuals (filtered historical
simulation, Barone-Adesi, Giannopoulos & Vosper 1999). Paths of a symbol are simulated once per
refresh; every policy on that symbol is then priced by a lookup (`numpy.searchsorted`) in the
sorted running minimum / maximum of the log price at its horizon, so a quote costs a lookup, not
a simulation. Between hourly points the path is a Brownian bridge and its extreme is drawn
exactly: for a step from x0 to x1 with variance v,
``min = (x0 + x1 − √((x1 − x0)² − 2v·ln U))/2``, U ~ U(0, 1) (the bridge's minimum law), so
hourly steps do not miss the intra-hour excursions that liquidate positions. Residuals are
resampled in 24-hour blocks (Künsch 1989) so a crash day's run of shocks is kept whole; the
first day's blocks come from days that began in the same variance state as now (in volatile
states crashes are common and rallies of the same size rare), and from the second day the log
price drifts by the fit window's mean return shrunk by its t-statistic (`shrunk_drift`);
antithetic pairs (z, −z) reduce variance (`simulate_path_table` lists the variants and their
backtests); the standard error reported is the binomial one, ``√(p(1−p)/N)``, an upper
bound here since the paired indicators are negatively correlated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr, ndtr

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | int | npt.ArrayLike
HOURS_PER_YEAR = 24 * 365


def first_passage_gbm(
    spot: ArrayLike,
    barrier: ArrayLike,
    sigma: ArrayLike,
    t_years: ArrayLike,
    side: ArrayLike,
    *,
    mu: ArrayLike = 0.0,
) -> FloatArray:
    """P(the price touches ``barrier`` by ``t_years``) under GBM with drift ``mu``, volatility
    ``sigma`` (annualised). side = +1 (long: barrier below) or −1 (short: barrier above)."""
    s0 = np.asarray(spot, dtype=float)
    lp = np.asarray(barrier, dtype=float)
    sig = np.asarray(sigma, dtype=float)
    t = np.asarray(t_years, dtype=float)
    sd = np.asarray(side, dtype=float)
    s0, lp, sig, t, sd = np.broadcast_arrays(s0, lp, sig, t, sd)
    nu = sd * (np.asarray(mu, dtype=float) - sig**2 / 2)  # mirrored for shorts
    with np.errstate(divide="ignore", invalid="ignore"):
        b = sd * np.log(lp / s0)  # < 0 while the barrier is not yet reached
        vt = sig * np.sqrt(t)
        first = ndtr((b - nu * t) / vt)
        log_second = 2 * nu * b / sig**2 + log_ndtr((b + nu * t) / vt)
        p = first + np.exp(log_second)
    p = np.where(b >= 0, 1.0, p)  # already at or beyond the barrier
    p = np.where((lp <= 0) & (sd > 0), 0.0, p)  # a long with no liquidation price
    p = np.where((t <= 0) & (b < 0), 0.0, p)
    return np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)


_ABS_NORMAL = float(np.sqrt(2 / np.pi))  # E|z| for a standard normal, as `arch` centres it


@dataclass(frozen=True)
class VolParams:
    """A volatility model on hourly log returns (fractions, not percent); ``nu`` the Student-t
    degrees of freedom of the fit.

    - ``gjr`` (default; Glosten, Jagannathan & Runkle 1993):
      ``σ²_{t+1} = ω + (α + γ·1[r_t < 0])·r_t² + β·σ²_t``.
    - ``egarch`` (Nelson 1991, as `arch` writes it), with ``z_t = r_t/σ_t``:
      ``ln σ²_{t+1} = ω + α(|z_t| − √(2/π)) + γ·z_t + β·ln σ²_t``.
    """

    omega: float
    alpha: float
    gamma: float
    beta: float
    nu: float
    model: VolModel = "gjr"

    def next_variance(self, r: FloatArray | float, s2: FloatArray | float) -> FloatArray:
        """σ²_{t+1} from the return r_t and its variance σ²_t (vectorised)."""
        r, s2 = np.asarray(r, dtype=float), np.asarray(s2, dtype=float)
        if self.model == "egarch":
            z = r / np.sqrt(s2)
            return np.exp(
                self.omega
                + self.alpha * (np.abs(z) - _ABS_NORMAL)
                + self.gamma * z
                + self.beta * np.log(s2)
            )
        return self.omega + (self.alpha + self.gamma * (r < 0)) * r * r + self.beta * s2

    @property
    def persistence(self) -> float:
        """GJR: α + γ/2 + β (symmetric innovations); EGARCH: β, that of ln σ²."""
        return self.beta if self.model == "egarch" else self.alpha + self.gamma / 2 + self.beta

    @property
    def unconditional_variance(self) -> float:
        """GJR only (EGARCH's depends on the innovations' law)."""
        return self.omega / max(1e-6, 1 - self.persistence)


@dataclass(frozen=True)
class VolFit:
    """A fitted volatility model and the state to simulate from."""

    params: VolParams
    sigma2_next: float  # conditional variance of the next hourly return
    residuals: FloatArray  # standardised residuals, for filtered historical simulation
    mu: float = 0.0  # hourly mean of the log return (drift of the simulated log price)
    log_var: FloatArray | None = None  # ln σ²_t beside each residual (the state it came from)


VolModel = Literal["gjr", "egarch"]  # GJR-GARCH(1,1)-t (the engine's) or EGARCH(1,1)-t
Mean = Literal["shrunk", "zero", "constant"]
ENGINE_MEAN: Mean = "shrunk"  # the live engine's drift, and the backtest's default


def shrunk_drift(returns: FloatArray) -> float:
    """The sample mean return shrunk towards zero by how well the data pin it down:

        μ̂ = m · max(0, 1 − se²/m²),   m = mean(r),   se² = Σ r² / n²

    — the empirical-Bayes posterior mean under a N(0, τ²) prior on the drift with τ² estimated
    by moments as max(0, m² − se²), i.e. the positive-part James–Stein rule for one mean
    (James & Stein 1961; Efron & Morris 1973, JASA 68). se² is White's (1980)
    heteroskedasticity-consistent variance of the mean, since hourly variances move tenfold.
    A window whose mean is within one standard error of zero (|t| ≤ 1) gets no drift; one with
    |t| = 2 keeps three quarters of its mean. On 180 days of BTC or ETH hours |t| is 0–3."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return 0.0
    m = float(np.mean(r))
    se2 = float(np.sum(r**2)) / len(r) ** 2
    if m == 0.0 or se2 >= m * m:
        return 0.0
    return m * (1.0 - se2 / (m * m))


def fit_gjr(
    returns: FloatArray,
    *,
    mean: Mean = ENGINE_MEAN,
    model: VolModel = "gjr",
) -> VolFit:
    """Fit GJR-GARCH(1,1)-t to hourly log returns with `arch` (scaled to percent for the
    optimiser, as `arch` recommends, then scaled back).

    The drift ``mu`` of the simulated log price: ``"shrunk"`` (the engine's) fits the variance
    with a zero mean and takes `shrunk_drift` of the window; ``"constant"`` lets `arch` estimate
    the mean with the variance; ``"zero"`` has none."""
    from arch import arch_model

    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < 200:
        raise ValueError(f"need at least 200 returns to fit GJR-GARCH, got {len(r)}")
    if mean not in ("shrunk", "zero", "constant"):
        raise ValueError(f"mean must be shrunk, zero or constant, got {mean!r}")
    vol: Literal["EGARCH", "GARCH"] = "EGARCH" if model == "egarch" else "GARCH"
    arch_mean: Literal["constant", "zero"] = "constant" if mean == "constant" else "zero"
    res = arch_model(r * 100, mean=arch_mean, vol=vol, p=1, o=1, q=1, dist="t").fit(
        disp="off", show_warning=False
    )
    p = res.params
    beta = float(p["beta[1]"])
    params = VolParams(
        # percent² → fraction²: σ² scales by 1e-4, ln σ² shifts by ln 1e-4 (times 1 − β)
        omega=float(p["omega"]) / 1e4
        if model == "gjr"
        else float(p["omega"]) + (beta - 1) * np.log(1e4),
        alpha=float(p["alpha[1]"]),
        gamma=float(p["gamma[1]"]),
        beta=beta,
        nu=float(p["nu"]),
        model=model,
    )
    forecast = res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0] / 1e4
    std = np.asarray(res.std_resid, dtype=float)
    log_var = 2 * np.log(np.asarray(res.conditional_volatility, dtype=float) / 100)
    ok = np.isfinite(std) & np.isfinite(log_var)
    if mean == "constant":
        mu = float(p["mu"]) / 100
    elif mean == "shrunk":
        mu = shrunk_drift(r)
    else:
        mu = 0.0
    return VolFit(params, float(forecast), std[ok], mu, log_var[ok])


# Horizons (hours) at which running extremes are kept: a policy's horizon is rounded up to the
# next grid point, so its probability is never understated.
DEFAULT_HORIZONS: tuple[int, ...] = (
    *range(1, 25),
    *range(30, 169, 6),
    *range(192, 721, 24),
)


_CLIP = 40.0  # |ln(S_t/S_0)| beyond this is e^40: clipping changes no probability
_OFFSET = 100.0  # > 2·_CLIP, so shifted rows never overlap


@dataclass(frozen=True)
class PathTable:
    """Sorted running extremes of simulated log prices, ``ln(S_t/S_0)``, per horizon.

    Row k (horizon k) is sorted, clipped to ±`_CLIP`, shifted by ``k·_OFFSET`` and the rows laid
    end to end, so each flattened array is sorted as a whole: one ``searchsorted`` answers
    barriers at every horizon at once.
    """

    horizons: npt.NDArray[np.int64]
    flat_min: FloatArray  # len(horizons) × n_paths
    flat_max: FloatArray
    n_paths: int

    @classmethod
    def from_rows(
        cls,
        horizons: npt.ArrayLike,
        run_min: npt.NDArray[np.floating],
        run_max: npt.NDArray[np.floating],
    ) -> PathTable:
        """From per-horizon rows of running minima / maxima (each row sorted ascending)."""
        shift = np.arange(len(run_min), dtype=float)[:, None] * _OFFSET

        def flat(rows: npt.NDArray[np.floating]) -> FloatArray:
            return (np.clip(rows.astype(float), -_CLIP, _CLIP) + shift).ravel()

        return cls(
            np.asarray(horizons, dtype=np.int64), flat(run_min), flat(run_max), run_min.shape[1]
        )

    def horizon_index(self, hours: ArrayLike) -> npt.NDArray[np.intp]:
        h = np.asarray(hours, dtype=float)
        if (h > self.horizons[-1]).any() or (h <= 0).any():
            raise ValueError(
                f"horizon must be in (0, {self.horizons[-1]}] hours; got {np.min(h)}–{np.max(h)}"
            )
        return np.searchsorted(self.horizons, h, side="left")

    def probability(
        self, log_barrier: ArrayLike, hours: ArrayLike, side: ArrayLike, *, presorted: bool = False
    ) -> tuple[FloatArray, FloatArray]:
        """P(hit) and its standard error for barriers ``ln(LP/S0)`` (< 0 long, > 0 short),
        vectorised over policies. Keys are sorted first (searchsorted is fastest on sorted keys);
        a book kept in (side, horizon, barrier) order passes ``presorted=True`` to skip that,
        since a new spot price shifts every barrier of a symbol alike and keeps the order.
        """
        b = np.asarray(log_barrier, dtype=float)
        sd = np.asarray(side, dtype=float)
        idx = self.horizon_index(hours)
        b, sd, idx = np.broadcast_arrays(b, sd, idx)
        shape = b.shape
        b, sd, idx = b.ravel(), sd.ravel(), idx.ravel()
        q = np.clip(b, -_CLIP, _CLIP) + idx * _OFFSET
        base = idx * self.n_paths
        hits = np.empty(len(q), dtype=np.int64)
        for is_long, flat in ((True, self.flat_min), (False, self.flat_max)):
            sel = np.flatnonzero(sd > 0) if is_long else np.flatnonzero(sd <= 0)
            if len(sel) == 0:
                continue
            if presorted:
                if (np.diff(q[sel]) < 0).any():
                    raise ValueError(
                        "presorted=True but barriers are not in (horizon, barrier) order"
                    )
                order = sel
            else:
                order = sel[np.argsort(q[sel])]
            pos = np.searchsorted(flat, q[order], side="right" if is_long else "left") - base[order]
            hits[order] = pos if is_long else self.n_paths - pos
        p = (hits / self.n_paths).reshape(shape)
        se = np.sqrt(p * (1 - p) / self.n_paths)
        return p, se


Innovations = Literal["fhs_state_day", "fhs_block", "fhs_state", "fhs", "fhs_skewed", "t", "normal"]
ENGINE_INNOVATIONS: Innovations = "fhs_state_day"  # the live engine's, and the backtest's default


def simulate_path_table(
    fit: VolFit,
    *,
    n_paths: int = 20_000,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
    innovations: Innovations = ENGINE_INNOVATIONS,
    seed: int = 0,
    constant_variance: bool = False,
    block_hours: int = 24,
    mirror: bool = True,
    n_states: int = 5,
    demean: bool = True,
) -> PathTable:
    """Simulate hourly GARCH paths (GJR or EGARCH) from the fitted state; tabulate running extremes.

    Innovations:

    - ``"fhs_state_day"`` (the engine's): the first block as in ``"fhs_state"`` below, the
      rest as in ``"fhs_block"``; the drift ``fit.mu`` starts after the first block. The
      variance state known now says how the next day tends to go (in volatile states rallies
      are far rarer than crashes); beyond it the state is unknown and shocks are mirrored, and
      a trend, if the data show one, shows over days, not within the first day.
    - ``"fhs_block"``: filtered historical simulation with a block bootstrap
      (Künsch 1989) — each path draws ``block_hours`` consecutive standardised residuals at a
      time, so the serial dependence GARCH leaves in them (a crash day's run of same-signed
      shocks) survives into the paths. Antithetic partner: the same block negated.
    - ``"fhs"``: residuals drawn one hour at a time, antithetic partner ``−z``.
    - ``"fhs_skewed"``: one hour at a time, the residual of rank k paired with that of rank
      M−1−k, i.e. F⁻¹(U) with F⁻¹(1−U), which keeps the empirical law, skew included.
    - ``"t"`` / ``"normal"``: the parametric laws, antithetic ``−z``.
    - ``"fhs_state"``: 24-hour blocks as above, unmirrored and demeaned, each drawn from the
      history's blocks that began in the same quantile (of ``n_states``) of the conditional
      variance as the path is in now, so the skew and the forecast error of volatile and calm
      states follow them.

    ``mirror=False`` draws every path's blocks independently instead of in antithetic pairs,
    keeping the residuals' skew (and their mean: a bull year's residuals drift up).

    What each variant scored in the backtest is in `docs/2026-12-02-engine-research-log.md`.

    ``constant_variance`` freezes σ² at its start value (GBM-like paths, for validation).
    """
    if n_paths < 2 or n_paths % 2:
        raise ValueError(f"n_paths must be an even number ≥ 2 (antithetic pairs), got {n_paths}")
    if block_hours < 1:
        raise ValueError(f"block_hours must be ≥ 1, got {block_hours}")
    rng = np.random.default_rng(seed)
    prm = fit.params
    steps = int(max(horizons))
    half = n_paths // 2
    keep = {h - 1: i for i, h in enumerate(horizons)}
    run_min = np.empty((len(horizons), n_paths), dtype=np.float32)
    run_max = np.empty((len(horizons), n_paths), dtype=np.float32)

    chron = fit.residuals / np.std(fit.residuals)  # in time order, unit variance
    by_state = innovations in ("fhs_state", "fhs_state_day")
    if (by_state or innovations == "fhs_block") and len(chron) <= block_hours:
        raise ValueError(f"need more than {block_hours} residuals for blocks, got {len(chron)}")
    resid = np.sort(chron)
    state = chron - chron.mean() if demean else chron  # state blocks carry no drift of their own
    if by_state:
        if fit.log_var is None or len(fit.log_var) != len(chron):
            raise ValueError(f"{innovations} needs the fit's conditional variances (log_var)")
        # candidate block starts grouped by the variance state they began in (quantile bins)
        first = fit.log_var[: len(chron) - block_hours + 1]
        edges = np.quantile(first, np.linspace(0, 1, n_states + 1)[1:-1])
        bins = np.searchsorted(edges, first, side="right")
        pool = np.argsort(bins, kind="stable")
        counts = np.bincount(bins, minlength=n_states)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # a state no block began in (tied variances: a fit with no ARCH effect) borrows the
        # nearest one that has blocks, rather than drawing one block for every path
        filled = np.flatnonzero(counts)
        nearest = filled[np.abs(np.arange(n_states)[:, None] - filled).argmin(axis=1)]
    t_scale = np.sqrt((prm.nu - 2) / prm.nu) if innovations == "t" else 1.0

    # The paths run in float32 with every step written into buffers allocated once: half the
    # memory traffic of float64 and twice the SIMD lanes, which is what a step costs. Seven
    # significant digits are far below the Monte Carlo error (1/√n ≈ 0.7 % at 20,000 paths).
    f32 = np.float32
    chron32, resid32, state32 = chron.astype(f32), resid.astype(f32), state.astype(f32)
    y = np.zeros(n_paths, f32)  # 2·ln(S_t/S_0), doubled so the bridge midpoint needs no halving
    lo2 = np.zeros(n_paths, f32)  # 2 × running minimum
    hi2 = np.zeros(n_paths, f32)  # 2 × running maximum
    s2 = np.full(n_paths, fit.sigma2_next, f32)
    z, r, d2, e, c, tmp, coef = (np.empty(n_paths, f32) for _ in range(7))
    d = r if fit.mu == 0 else np.empty(n_paths, f32)
    neg = np.empty(n_paths, bool)
    # the first block of "fhs_state_day" is drawn by state and without drift
    state_steps = block_hours if innovations == "fhs_state_day" else 0
    mu = f32(0.0 if state_steps else fit.mu)
    alpha, gamma, beta, omega = f32(prm.alpha), f32(prm.gamma), f32(prm.beta), f32(prm.omega)
    block_start = np.zeros(half, dtype=np.int64)
    for step in range(steps):
        k = step % block_hours
        if step == state_steps > 0:
            mu = f32(fit.mu)
        if innovations == "fhs_state" or step < state_steps:
            if k == 0:
                b = nearest[np.searchsorted(edges, np.log(s2), side="right")]
                block_start = pool[offsets[b] + (rng.random(n_paths) * counts[b]).astype(np.int64)]
            np.take(state32, block_start + k, out=z)
        elif innovations in ("fhs_block", "fhs_state_day"):
            if k == 0:
                n_blocks = half if mirror else n_paths
                block_start = rng.integers(0, len(chron) - block_hours + 1, n_blocks)
            if mirror:
                np.take(chron32, block_start + k, out=z[:half])
                np.negative(z[:half], out=z[half:])
            else:
                np.take(chron32, block_start + k, out=z)
        elif innovations == "fhs_skewed":
            rank = rng.integers(0, len(resid), half)
            np.take(resid32, rank, out=z[:half])
            np.take(resid32, len(resid) - 1 - rank, out=z[half:])
        elif innovations == "fhs":
            np.take(resid32, rng.integers(0, len(resid), half), out=z[:half])
            np.negative(z[:half], out=z[half:])
        else:
            if innovations == "t":
                z[:half] = rng.standard_t(prm.nu, half) * t_scale
            else:
                rng.standard_normal(dtype=f32, out=z[:half])
            np.negative(z[:half], out=z[half:])  # symmetric laws: −z is F⁻¹(1−U)
        np.sqrt(s2, out=r)
        r *= z  # r_t = σ_t·z_t
        if fit.mu != 0:
            np.add(r, mu, out=d)  # the step of the log price
        # Exact extremes of the Brownian bridge between the hourly points, given both ends:
        # min = (x + x₁ − √(d² + 2σ²E))/2 and max = (x + x₁ + √(…))/2 with E ~ Exp(1)
        # (the law of the bridge's maximum; −ln U with U uniform is E).
        np.multiply(d, d, out=d2)
        rng.standard_exponential(dtype=f32, out=e)
        e *= s2
        e += e
        e += d2
        np.sqrt(e, out=e)
        np.add(y, d, out=c)  # x + x₁, doubled units
        np.subtract(c, e, out=tmp)
        np.minimum(lo2, tmp, out=lo2)
        np.add(c, e, out=tmp)
        np.maximum(hi2, tmp, out=hi2)
        np.add(c, d, out=y)
        if not constant_variance:
            if prm.model == "gjr":  # σ² ← ω + (α + γ·1[r < 0])·r² + β·σ²
                np.less(r, 0, out=neg)
                np.multiply(neg, gamma, out=coef)
                coef += alpha
                coef *= d2 if fit.mu == 0 else np.multiply(r, r, out=tmp)
                s2 *= beta
                s2 += coef
                s2 += omega
            else:
                s2[:] = prm.next_variance(r.astype(float), s2.astype(float))
        if step in keep:
            i = keep[step]
            np.multiply(lo2, 0.5, out=run_min[i])
            run_min[i].sort()
            np.multiply(hi2, 0.5, out=run_max[i])
            run_max[i].sort()
    return PathTable.from_rows(horizons, run_min, run_max)
