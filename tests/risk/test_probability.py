"""Liquidation probability: the closed form against slow Monte Carlo references, and the
shared-path engine against the closed form where both must agree."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bti_core.market.synthetic import generate_demo_markets
from bti_core.risk.probability import (
    VolFit,
    VolParams,
    first_passage_gbm,
    fit_gjr,
    shrunk_drift,
    simulate_path_table,
)

SIGMA_H = 0.008  # hourly volatility (≈ 75 % a year)
SIGMA_Y = SIGMA_H * np.sqrt(8760)


def _slow_reference(
    b: float, hours: int, side: int, n: int = 40_000, steps_per_hour: int = 4, seed: int = 1
) -> float:
    """Driftless Brownian log price on a fine grid; between grid points the chance of a touch is
    the Brownian-bridge crossing probability exp(−2(x0−b)(x1−b)/(σ²Δ)) (Glasserman 2004, §6.4)."""
    rng = np.random.default_rng(seed)
    dt = 1 / steps_per_hour
    sd = SIGMA_H * np.sqrt(dt)
    x = np.zeros(n)
    alive = np.ones(n)  # probability of not having touched yet
    bb = side * b  # mirror shorts onto longs (driftless: symmetric)
    for _ in range(hours * steps_per_hour):
        x1 = x + sd * rng.standard_normal(n)
        d0, d1 = x - bb, x1 - bb
        cross = np.where((d0 > 0) & (d1 > 0), np.exp(-2 * d0 * d1 / sd**2), 1.0)
        alive *= 1 - cross
        x = x1
    return float(1 - alive.mean())


@pytest.mark.parametrize(
    ("lev", "hours", "side"), [(10, 24, 1), (20, 72, 1), (5, 168, -1), (50, 24, -1)]
)
def test_closed_form_matches_slow_monte_carlo(lev: float, hours: int, side: int) -> None:
    b = np.log1p(-side / lev)  # ln(LP/S0): a 1/lev move away, below a long, above a short
    closed = float(
        first_passage_gbm(1.0, np.exp(b), SIGMA_Y, hours / 8760, side, mu=SIGMA_Y**2 / 2)
    )
    slow = _slow_reference(b, hours, side)
    assert closed == pytest.approx(slow, abs=4 * np.sqrt(closed * (1 - closed) / 40_000) + 2e-3)


def test_closed_form_reduces_to_reflection_principle_without_drift() -> None:
    from scipy.stats import norm

    b, t = np.log(0.9), 3 / 365
    nu_zero = first_passage_gbm(1.0, 0.9, 0.8, t, 1, mu=0.8**2 / 2)
    assert nu_zero == pytest.approx(2 * norm.cdf(b / (0.8 * np.sqrt(t))))


def test_edge_cases() -> None:
    assert first_passage_gbm(100, 0, 0.8, 1, 1) == 0.0  # long that cannot be liquidated
    assert first_passage_gbm(100, 101, 0.8, 1, 1) == 1.0  # already below the barrier
    assert first_passage_gbm(100, 99, 0.8, 1, -1) == 1.0
    assert first_passage_gbm(100, 90, 0.8, 0, 1) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    lev=st.floats(1.5, 125),
    hours=st.floats(1, 720),
    sigma=st.floats(0.05, 3.0),
    mu=st.floats(-2, 2),
    side=st.sampled_from([1, -1]),
)
def test_probability_is_a_probability_and_rises_with_leverage_and_time(
    lev: float, hours: float, sigma: float, mu: float, side: int
) -> None:
    lp = 1 - side / lev
    p = first_passage_gbm(1.0, lp, sigma, hours / 8760, side, mu=mu)
    assert 0.0 <= p <= 1.0
    closer = first_passage_gbm(1.0, 1 - side / (lev * 1.5), sigma, hours / 8760, side, mu=mu)
    longer = first_passage_gbm(1.0, lp, sigma, hours * 1.5 / 8760, side, mu=mu)
    assert closer >= p - 1e-12 and longer >= p - 1e-12


def _constant_vol_fit() -> VolFit:
    return VolFit(VolParams(SIGMA_H**2, 0.0, 0.0, 0.0, 5.0), SIGMA_H**2, np.array([-1.0, 1.0]))


def test_engine_with_constant_gaussian_variance_matches_closed_form() -> None:
    table = simulate_path_table(
        _constant_vol_fit(),
        n_paths=60_000,
        horizons=(1, 6, 24, 72),
        innovations="normal",
        seed=3,
        constant_variance=True,
    )
    levs = np.array([5.0, 10.0, 20.0, 50.0])
    for hours in (6, 24, 72):
        for side in (1, -1):
            b = np.log1p(-side / levs)  # ln(LP/S0): below for a long, above for a short
            p, se = table.probability(b, hours, side)
            closed = first_passage_gbm(
                1.0, np.exp(b), SIGMA_Y, hours / 8760, side, mu=SIGMA_Y**2 / 2
            )
            assert np.all(np.abs(p - closed) <= 4 * se + 1e-3), (hours, side, p, closed)


def test_drift_moves_the_paths_as_the_closed_form_says() -> None:
    """A drift of 0.1 % an hour in the log price: up-barriers are hit more often and
    down-barriers less, as first passage of GBM with that drift gives (μ = ν + σ²/2)."""
    mu_h = 1e-3
    fit = dataclasses.replace(_constant_vol_fit(), mu=mu_h)
    table = simulate_path_table(
        fit, n_paths=60_000, horizons=(72,), innovations="normal", seed=4, constant_variance=True
    )
    still = simulate_path_table(
        _constant_vol_fit(),
        n_paths=60_000,
        horizons=(72,),
        innovations="normal",
        seed=4,
        constant_variance=True,
    )
    mu_y = (mu_h + SIGMA_H**2 / 2) * 8760
    for side in (1, -1):
        b = np.log1p(-side / np.array([5.0, 10.0, 20.0]))
        p, se = table.probability(b, 72, side)
        closed = first_passage_gbm(1.0, np.exp(b), SIGMA_Y, 72 / 8760, side, mu=mu_y)
        assert np.all(np.abs(p - closed) <= 4 * se + 1e-3), (side, p, closed)
        p0, _ = still.probability(b, 72, side)
        assert (p.sum() < p0.sum()) if side > 0 else (p.sum() > p0.sum()), (side, p, p0)


def test_blocks_without_mirroring_keep_the_residuals_skew() -> None:
    """Four days of gentle rise, then four hours of crash: unmirrored blocks keep the crash side
    heavy (an 8 % fall within a day is common, an 8 % rise never happens); mirrored blocks
    make both tails alike."""
    resid = np.tile(np.r_[np.full(92, 0.05), np.full(4, -1.15)], 100)
    fit = VolFit(VolParams(SIGMA_H**2, 0.0, 0.0, 0.0, 5.0), SIGMA_H**2, resid)

    def tails(mirror: bool) -> tuple[float, float]:
        t = simulate_path_table(
            fit,
            n_paths=20_000,
            horizons=(24,),
            innovations="fhs_block",
            seed=1,
            constant_variance=True,
            mirror=mirror,
        )
        down, _ = t.probability(-0.08, 24, 1)
        up, _ = t.probability(0.08, 24, -1)
        return float(down), float(up)

    down, up = tails(False)
    assert down > 0.2 and up < 0.005
    m_down, m_up = tails(True)
    assert m_down == pytest.approx(m_up, abs=0.02) and 0.05 < m_up < down


def test_state_blocks_follow_the_variance_state_they_came_from() -> None:
    """History: calm hours of small alternating shocks, then volatile ones of slow rises and
    four-hour crashes. A path starting calm draws only calm blocks (no crash ever); one starting
    volatile draws crash blocks (falls of eight standard deviations, no such rallies)."""
    calm = np.tile([0.5, -0.5], 24 * 100)
    crash = np.tile(np.r_[np.full(92, 0.05), np.full(4, -1.15)], 50)
    resid = np.r_[calm, crash]
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(calm) + len(crash))
    log_var = np.r_[np.full(len(calm), np.log(1e-5)), np.full(len(crash), np.log(1e-4))] + jitter
    fit = VolFit(VolParams(1e-5, 0.0, 0.0, 0.0, 5.0), 1e-5, resid, 0.0, log_var)

    def tails(s2: float) -> tuple[float, float]:
        t = simulate_path_table(
            dataclasses.replace(fit, sigma2_next=s2),
            n_paths=4_000,
            horizons=(24,),
            innovations="fhs_state",
            n_states=2,
            seed=3,
            constant_variance=True,
        )
        far = 8 * np.sqrt(s2)  # eight hourly standard deviations
        return float(t.probability(-far, 24, 1)[0]), float(t.probability(far, 24, -1)[0])

    assert tails(1e-5) == (0.0, 0.0)
    vol_down, vol_up = tails(1e-4)
    assert vol_down > 0.15 and vol_up == 0.0
    with pytest.raises(ValueError, match="log_var"):
        simulate_path_table(
            dataclasses.replace(fit, log_var=None), n_paths=2, innovations="fhs_state"
        )


def test_egarch_recursion_is_arch_s() -> None:
    """The variance recursion used to filter and simulate reproduces `arch`'s own conditional
    variance, for GJR and EGARCH, after the percent → fraction rescaling."""
    from arch import arch_model

    m = generate_demo_markets(start="2024-01-01", periods=24 * 120, seed=8)
    r = np.diff(np.log(m["BTCUSDT"].mark["close"].to_numpy()))
    for model, vol in (("gjr", "GARCH"), ("egarch", "EGARCH")):
        fit = fit_gjr(r, model=model)  # type: ignore[arg-type]
        res = arch_model(r * 100, mean="zero", vol=vol, p=1, o=1, q=1, dist="t").fit(disp="off")
        theirs = (np.asarray(res.conditional_volatility) / 100) ** 2
        s2, ours = theirs[0], []
        for x in r:
            s2 = float(fit.params.next_variance(x, s2))
            ours.append(s2)
        np.testing.assert_allclose(ours[:-1], theirs[1:], rtol=1e-8)
        assert ours[-1] == pytest.approx(fit.sigma2_next, rel=1e-8)
        table = simulate_path_table(fit, n_paths=2_000, horizons=(24, 168), seed=1)
        p, _ = table.probability(np.log([0.8, 0.9, 0.95]), 168, 1)
        assert (np.diff(p) >= 0).all() and 0 < p[-1] < 1


def test_lookup_is_vectorised_and_rounds_horizons_up() -> None:
    table = simulate_path_table(
        _constant_vol_fit(), n_paths=2_000, horizons=(24, 48), innovations="normal", seed=0
    )
    b = np.log(np.linspace(0.85, 0.99, 50))
    p_vec, _ = table.probability(b, np.full(50, 30.0), 1)
    p_each = [table.probability(x, 48, 1)[0] for x in b]
    assert p_vec.tolist() == pytest.approx(np.ravel(p_each).tolist())
    assert (np.diff(p_vec) >= 0).all()  # a barrier nearer the price is hit more often
    with pytest.raises(ValueError, match="horizon"):
        table.probability(b, 49, 1)


def test_fat_tails_raise_far_barrier_probability() -> None:
    """Same variance, Student-t(3) innovations: far barriers are hit more often than under the
    normal, the reason the GBM baseline underprices low-leverage cover."""
    fit = VolFit(VolParams(SIGMA_H**2, 0.0, 0.0, 0.0, 3.0), SIGMA_H**2, np.array([-1.0, 1.0]))
    normal = simulate_path_table(
        fit, n_paths=40_000, horizons=(24,), innovations="normal", seed=5, constant_variance=True
    )
    fat = simulate_path_table(
        fit, n_paths=40_000, horizons=(24,), innovations="t", seed=5, constant_variance=True
    )
    far = np.log(1 - 1 / 5)  # a 5× long, 20 % away: about 5 σ of a day
    assert fat.probability(far, 24, 1)[0] > normal.probability(far, 24, 1)[0]


def test_gjr_fit_recovers_the_generator() -> None:
    m = generate_demo_markets(
        start="2024-01-01",
        periods=24 * 365 * 2,
        seed=8,
        crash_days_per_year=0,
        with_exchange_quirks=False,
    )
    r = np.diff(np.log(m["BTCUSDT"].mark["close"].to_numpy()))
    fit = fit_gjr(r)
    assert 0.97 < fit.params.persistence < 1.0
    assert 2.5 < fit.params.nu < 6
    assert fit.residuals.std() == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="at least 200"):
        fit_gjr(r[:50])
    assert fit.mu == shrunk_drift(r)  # the engine's drift
    assert fit_gjr(r, mean="zero").mu == 0.0
    with pytest.raises(ValueError, match="shrunk, zero or constant"):
        fit_gjr(r, mean="median")  # type: ignore[arg-type]
    drifting = fit_gjr(r + 5e-4, mean="constant")  # +0.05 % an hour added to every return
    assert drifting.mu == pytest.approx(5e-4, abs=2e-4)
    assert drifting.residuals.mean() == pytest.approx(0.0, abs=0.05)


def test_presorted_book_gives_the_same_answer_and_is_checked() -> None:
    table = simulate_path_table(
        _constant_vol_fit(), n_paths=2_000, horizons=(24, 72), innovations="normal", seed=2
    )
    rng = np.random.default_rng(0)
    b = rng.normal(0, 0.05, 500)
    hours = rng.choice([24, 72], 500)
    side = np.where(rng.random(500) < 0.5, 1, -1)
    order = np.lexsort((b, hours, side))
    p_sorted, _ = table.probability(b[order], hours[order], side[order], presorted=True)
    p_plain, _ = table.probability(b, hours, side)
    assert p_sorted.tolist() == p_plain[order].tolist()
    with pytest.raises(ValueError, match="presorted"):
        table.probability(b, hours, side, presorted=True)


def test_fhs_skewed_keeps_the_residuals_skew_and_fhs_symmetrises_it() -> None:
    """Crash-skewed residuals: with "fhs_skewed" a barrier 4 % below is hit far more often than
    one 4 % above; "fhs" (mirrored antithetics) makes the two alike."""
    rng = np.random.default_rng(4)
    resid = np.concatenate([rng.normal(0.2, 0.8, 9_700), rng.normal(-6, 1.0, 300)])
    fit = VolFit(VolParams(SIGMA_H**2, 0.0, 0.0, 0.0, 5.0), SIGMA_H**2, resid)
    b = np.log(0.96)

    def both(innovations: str) -> tuple[float, float, float]:
        t = simulate_path_table(
            fit,
            n_paths=20_000,
            horizons=(6,),
            innovations=innovations,
            seed=1,
            constant_variance=True,
        )  # type: ignore[arg-type]
        (down, se), (up, _) = t.probability(b, 6, 1), t.probability(-b, 6, -1)
        return float(down), float(up), float(se)

    down, up, _ = both("fhs_skewed")
    assert down > 5 * up
    down, up, se = both("fhs")
    assert abs(down - up) < 4 * se


def test_block_bootstrap_keeps_runs_of_shocks_that_hourly_resampling_breaks() -> None:
    """Residuals that come in day-long same-signed runs: a day's move has √24 times the spread
    under 24-hour blocks as under hour-by-hour resampling, so a far barrier is hit far more often;
    with serially independent residuals the two schemes agree within their errors."""
    rng = np.random.default_rng(7)
    runs = np.repeat(rng.choice([-1.0, 1.0], 400), 24) * rng.uniform(0.5, 1.5, 9_600)
    iid = rng.standard_t(5, 9_600)
    b = np.log(0.93)

    def p_hit(resid: np.ndarray, innovations: str) -> tuple[float, float]:
        fit = VolFit(VolParams(SIGMA_H**2, 0.0, 0.0, 0.0, 5.0), SIGMA_H**2, resid)
        t = simulate_path_table(
            fit,
            n_paths=20_000,
            horizons=(24,),
            innovations=innovations,  # type: ignore[arg-type]
            seed=3,
            constant_variance=True,
        )
        p, se = t.probability(b, 24, 1)
        return float(p), float(se)

    block, _ = p_hit(runs, "fhs_block")
    hourly, _ = p_hit(runs, "fhs")
    assert block > 5 * hourly
    block, se_b = p_hit(iid, "fhs_block")
    hourly, se_h = p_hit(iid, "fhs")
    assert abs(block - hourly) < 4 * np.hypot(se_b, se_h)


def test_block_bootstrap_refuses_too_few_residuals() -> None:
    fit = VolFit(VolParams(SIGMA_H**2, 0.0, 0.0, 0.0, 5.0), SIGMA_H**2, np.linspace(-1, 1, 10))
    with pytest.raises(ValueError, match="more than 24 residuals"):
        simulate_path_table(fit, n_paths=100, horizons=(24,))


def test_shrunk_drift_keeps_what_the_data_pin_down_and_beats_the_raw_mean() -> None:
    """m·max(0, 1 − se²/m²): nothing when |t| ≤ 1, m·(1 − 1/t²) above, odd in the returns; over
    windows whose true drifts are about one standard error of the mean apart (as half a year
    of hourly crypto returns pins them down) its squared error is about 0.73 of the raw mean's."""
    rng = np.random.default_rng(11)
    noise = rng.standard_t(4, 4_320) * SIGMA_H / np.sqrt(2)  # 180 days of fat-tailed hours
    se = np.sqrt(np.sum(noise**2)) / len(noise)
    flat = noise - noise.mean() + 0.5 * se  # t = 0.5
    assert shrunk_drift(flat) == 0.0
    steep = noise - noise.mean() + 3 * se  # t ≈ 3: keeps about 8/9 of the mean
    m = float(steep.mean())
    t = m / (np.sqrt(np.sum(steep**2)) / len(steep))
    assert shrunk_drift(steep) == pytest.approx(m * (1 - 1 / t**2), rel=1e-9)
    assert 0.85 * m < shrunk_drift(steep) < m
    assert shrunk_drift(-steep) == pytest.approx(-shrunk_drift(steep), rel=1e-12)
    assert shrunk_drift(np.array([np.nan])) == 0.0

    raw_err, shrunk_err = [], []
    for _ in range(400):
        mu = rng.normal(0, se)
        r = mu + rng.standard_t(4, 4_320) * SIGMA_H / np.sqrt(2)
        raw_err.append((r.mean() - mu) ** 2)
        shrunk_err.append((shrunk_drift(r) - mu) ** 2)
    assert np.mean(shrunk_err) < 0.85 * np.mean(raw_err)


def _state_fit(mu: float = 0.0, s2: float = 1e-5) -> VolFit:
    """Calm hours of small alternating shocks, then volatile ones of slow rises and four-hour
    crashes, each with its conditional variance."""
    calm = np.tile([0.5, -0.5], 24 * 100)
    crash = np.tile(np.r_[np.full(92, 0.05), np.full(4, -1.15)], 50)
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(calm) + len(crash))
    log_var = np.r_[np.full(len(calm), np.log(1e-5)), np.full(len(crash), np.log(1e-4))] + jitter
    return VolFit(VolParams(1e-5, 0.0, 0.0, 0.0, 5.0), s2, np.r_[calm, crash], mu, log_var)


def _two_state_table(fit: VolFit, innovations: str, **kw: Any) -> Any:
    """A path table of ``fit`` drawn from two volatility states at a constant variance."""
    return simulate_path_table(
        fit,
        innovations=innovations,  # type: ignore[arg-type]
        n_states=2,
        constant_variance=True,
        **kw,
    )


def test_state_day_draws_the_first_day_by_state_and_mirrors_after_it() -> None:
    """From a volatile start the first day has the volatile history's crashes and none of its
    mirror-image rallies; from the second day on, blocks are mirrored, so rallies of that size
    appear (drawing every day by state, as "fhs_state" does, they all but never would). A calm start
    sees neither on its first day."""

    def tails(s2: float, hours: int, innovations: str = "fhs_state_day") -> tuple[float, float]:
        fit = dataclasses.replace(_state_fit(), sigma2_next=s2)
        t = _two_state_table(fit, innovations, n_paths=4_000, horizons=(24, 48), seed=3)
        far = 8 * np.sqrt(s2)
        return float(t.probability(-far, hours, 1)[0]), float(t.probability(far, hours, -1)[0])

    assert tails(1e-5, 24) == (0.0, 0.0)
    down, up = tails(1e-4, 24)
    assert down > 0.15 and up == 0.0
    down2, up2 = tails(1e-4, 48)
    assert down2 >= down and up2 > 0.02
    assert tails(1e-4, 48, "fhs_state")[1] < up2 / 10


def test_state_day_starts_the_drift_after_the_first_day() -> None:
    """Shocks too small to matter and a drift of 1 % an hour: under "fhs_state_day" the log
    price is flat for 24 hours and then climbs, reaching 0.48 by hour 72; under "fhs_block" it
    climbs from the first hour (0.72 by hour 72)."""

    def p_above(innovations: str, level: float, hours: int) -> float:
        fit = _state_fit(mu=0.01, s2=1e-12)  # σ of 1e-6 an hour
        t = _two_state_table(fit, innovations, n_paths=2_000, horizons=(24, 72), seed=0)
        return float(t.probability(level, hours, -1)[0])

    assert p_above("fhs_state_day", 0.01, 24) == 0.0
    assert p_above("fhs_state_day", 0.47, 72) == 1.0
    assert p_above("fhs_state_day", 0.49, 72) == 0.0
    assert p_above("fhs_block", 0.23, 24) == 1.0
    assert p_above("fhs_block", 0.71, 72) == 1.0


def test_state_blocks_from_tied_variances_draw_from_the_whole_history() -> None:
    """A fit with no ARCH effect has one variance for every hour, so only one state has blocks;
    a path starting below it borrows that state (the whole history) instead of every path
    drawing the same block: its chance of a 3σ-a-day fall matches the path that starts in it."""
    resid = np.random.default_rng(0).standard_t(5, 4_000)
    fit = VolFit(VolParams(1e-5, 0.0, 0.0, 0.0, 5.0), 1e-5, resid, 0.0, np.full(4_000, -11.5))

    def p_fall(s2: float) -> tuple[float, float]:
        t = simulate_path_table(
            dataclasses.replace(fit, sigma2_next=s2),
            n_paths=20_000,
            horizons=(24,),
            seed=2,
            constant_variance=True,
        )
        p, se = t.probability(-3 * np.sqrt(24 * s2), 24, 1)
        return float(p), float(se)

    (low, se_low), (same, se_same) = p_fall(1e-7), p_fall(np.exp(-11.5))
    assert 0.002 < same < 0.1
    assert abs(low - same) < 4 * np.hypot(se_low, se_same)


def _float64_paths(fit: VolFit, innovations: str, horizons: tuple[int, ...], n: int, seed: int):
    """The path recursion written plainly: one path at a time, in float64, drawing from the
    generator in the order `simulate_path_table` does (so both see the same shocks).

    Per hour: ``r = σ·z``, ``x₁ = x + r + μ``, the bridge's extremes
    ``(x + x₁ ∓ √((x₁ − x)² + 2σ²E))/2``, then ``σ² ← ω + (α + γ·1[r < 0])·r² + β·σ²``."""
    rng = np.random.default_rng(seed)
    p, half, block = fit.params, n // 2, 24
    chron = fit.residuals / np.std(fit.residuals)
    state = chron - chron.mean()
    z_all = np.zeros((max(horizons), n))
    e_all = np.zeros((max(horizons), n))
    starts = np.zeros(n, dtype=np.int64)
    for step in range(max(horizons)):
        k = step % block
        if innovations == "normal":
            zh = rng.standard_normal(half, dtype=np.float32).astype(float)
            z_all[step] = np.concatenate([zh, -zh])
        elif innovations == "fhs_state_day" and step < block:
            if k == 0:  # every path starts in the same state: blocks from the days that did
                assert fit.log_var is not None
                first = fit.log_var[: len(chron) - block + 1]
                edges = np.quantile(first, np.linspace(0, 1, 6)[1:-1])
                bins = np.searchsorted(edges, first, side="right")
                pool = np.argsort(bins, kind="stable")
                counts = np.bincount(bins, minlength=5)
                b = int(np.searchsorted(edges, np.log(np.float32(fit.sigma2_next)), side="right"))
                offset = int(np.concatenate([[0], np.cumsum(counts)[:-1]])[b])
                starts = pool[offset + (rng.random(n) * counts[b]).astype(np.int64)]
            z_all[step] = state[starts + k]
        else:  # mirrored 24-hour blocks
            if k == 0:
                starts = rng.integers(0, len(chron) - block + 1, half)
            zh = chron[starts + k]
            z_all[step] = np.concatenate([zh, -zh])
        e_all[step] = rng.standard_exponential(n, dtype=np.float32).astype(float)
    mins = np.zeros((len(horizons), n))
    maxs = np.zeros((len(horizons), n))
    for j in range(n):
        x = lo = hi = 0.0
        s2 = fit.sigma2_next
        for step in range(max(horizons)):
            mu = fit.mu if innovations != "fhs_state_day" or step >= block else 0.0
            r = np.sqrt(s2) * z_all[step, j]
            x1 = x + r + mu
            half_width = np.sqrt((x1 - x) ** 2 + 2 * s2 * e_all[step, j])
            lo = min(lo, (x + x1 - half_width) / 2)
            hi = max(hi, (x + x1 + half_width) / 2)
            s2 = p.omega + (p.alpha + p.gamma * (r < 0)) * r * r + p.beta * s2
            x = x1
            if step + 1 in horizons:
                i = horizons.index(step + 1)
                mins[i, j], maxs[i, j] = lo, hi
    return np.sort(mins, axis=1), np.sort(maxs, axis=1)


@pytest.mark.parametrize("innovations", ["normal", "fhs_block", "fhs_state_day"])
def test_float32_kernel_is_the_gjr_recursion_with_fitted_parameters(innovations: str) -> None:
    """The vectorised float32 kernel against the plain float64 loop, on the same shocks, with
    a fit's own non-zero α, γ, β and a drift (every other engine test freezes the variance)."""
    m = generate_demo_markets(
        start="2024-01-01",
        periods=24 * 200,
        seed=3,
        crash_days_per_year=0,
        with_exchange_quirks=False,
    )
    fit = fit_gjr(np.diff(np.log(m["ETHUSDT"].mark["close"].to_numpy())))
    assert min(fit.params.alpha, fit.params.gamma, fit.params.beta) > 1e-3
    fit = dataclasses.replace(fit, mu=3e-4, sigma2_next=4 * fit.sigma2_next)  # a volatile start
    horizons, n = (1, 7, 24, 48), 64
    table = simulate_path_table(fit, n_paths=n, horizons=horizons, innovations=innovations, seed=5)
    mins, maxs = _float64_paths(fit, innovations, horizons, n, seed=5)
    for i in range(len(horizons)):
        row = slice(i * n, (i + 1) * n)
        np.testing.assert_allclose(table.flat_min[row] - i * 100.0, mins[i], rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(table.flat_max[row] - i * 100.0, maxs[i], rtol=2e-4, atol=2e-6)
    # the variance did move: the paths' spread at 48 h is not the frozen-variance one
    frozen = simulate_path_table(
        fit,
        n_paths=n,
        horizons=horizons,
        innovations=innovations,
        seed=5,
        constant_variance=True,
    )
    assert np.abs(frozen.flat_min[3 * n :] - table.flat_min[3 * n :]).max() > 1e-3
