"""Liquidation prices: published worked examples, table cases and a slow bisection reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bti_core.risk.liquidation import (
    Brackets,
    brackets_for,
    isolated_liquidation_price,
    liquidation_price,
    maintenance_margin,
)


def flat(mmr: float) -> Brackets:
    return Brackets.from_frame(
        "TEST",
        pd.DataFrame(
            {"notional_floor": [0], "notional_cap": [1e18], "max_leverage": [125], "mmr": [mmr]}
        ),
    )


def test_bybit_worked_example_20000_long_50x() -> None:
    # Bybit help centre, "Liquidation price (USDT contract)": entry 20,000, 50×, MMR 0.5 %
    # liquidates near 19,700 (Bybit's own formula EP·(1 − IMR + MMR) gives exactly 19,700).
    lp = isolated_liquidation_price(20_000, 50, +1, flat(0.005))
    assert lp == pytest.approx(19_698.49, abs=0.01)
    assert abs(lp - 19_700) / 19_700 < 1e-3


@pytest.mark.parametrize(
    ("entry", "lev", "side", "mmr"),
    [
        (20_000, 50, 1, 0.005),
        (20_000, 10, -1, 0.005),
        (3_000, 5, 1, 0.01),
        (3_000, 100, -1, 0.004),
        (1.5, 2, 1, 0.02),
    ],
)
def test_shortcut_formula_without_cum_or_fees(
    entry: float, lev: float, side: int, mmr: float
) -> None:
    expected = entry * (1 - 1 / lev) / (1 - mmr) if side > 0 else entry * (1 + 1 / lev) / (1 + mmr)
    assert isolated_liquidation_price(entry, lev, side, flat(mmr)) == pytest.approx(expected)


def test_btcusdt_cum_matches_binance_published_values() -> None:
    # Binance BTCUSDT brackets (2021): maintenance amounts 0, 50, 1,300, 16,300, 266,300, …
    b = brackets_for("BTC/USDT:USDT")
    assert b.cum[:6].tolist() == pytest.approx([0, 50, 1_300, 16_300, 266_300, 1_266_300])
    assert b.cum[-1] == pytest.approx(100_016_300)
    # maintenance margin is continuous across tier boundaries thanks to cum
    for cap in b.cap[:-1]:
        assert maintenance_margin(cap, b) == pytest.approx(
            maintenance_margin(cap * (1 + 1e-12), b), rel=1e-9
        )
    assert b.max_leverage_for(50_000) == 125 and b.max_leverage_for(50_001) == 100


def _bisect(
    ep: float, q: float, side: int, wb: float, b: Brackets, fee_close: float = 0.0
) -> float:
    """Slow reference: the mark price where equity equals the tiered maintenance requirement."""

    def gap(p: float) -> float:
        equity = wb + side * q * (p - ep)
        return equity - (maintenance_margin(q * p, b) + q * p * fee_close)

    lo, hi = 1e-9, ep * 1e3  # gap is monotone in p: one root, found wherever it lies
    if side > 0 and gap(lo) > 0:
        return 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if (gap(mid) > 0) == (side > 0):
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


@settings(max_examples=200, deadline=None)
@given(
    ep=st.floats(100, 100_000),
    notional=st.floats(100, 5e8),
    lev=st.floats(1, 125),
    side=st.sampled_from([1, -1]),
    fee=st.sampled_from([0.0, 0.0004]),
)
def test_vectorised_price_matches_bisection_reference(
    ep: float, notional: float, lev: float, side: int, fee: float
) -> None:
    b = brackets_for("BTCUSDT")
    q = notional / ep
    lp = float(liquidation_price(ep, q, side, notional / lev, b, fee_close=fee))
    ref = _bisect(ep, q, side, notional / lev, b, fee)
    assert lp == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_tier_recomputed_when_liquidation_moves_the_notional() -> None:
    b = brackets_for("BTCUSDT")
    # 1.02M notional long at 20× opens in tier 4 (2.5 %); at its liquidation price the notional
    # is under 1M, tier 3 (1 %, cum 1,300), where the price is recomputed: 57,498.5
    ep, q = 60_000.0, 17.0
    lp = float(liquidation_price(ep, q, 1, ep * q / 20, b))
    assert b.tier(q * lp) == 2
    assert lp == pytest.approx((51_000 + 1_300 - q * ep) / (q * 0.01 - q))
    assert lp == pytest.approx(_bisect(ep, q, 1, ep * q / 20, b), rel=1e-9)


def test_cross_margin_uses_wallet_and_other_positions() -> None:
    b = flat(0.005)
    alone = liquidation_price(20_000, 1, 1, 5_000, b)
    with_loss_elsewhere = liquidation_price(
        20_000, 1, 1, 5_000, b, other_upnl=-1_000, other_maintenance=200
    )
    assert with_loss_elsewhere > alone
    assert with_loss_elsewhere == pytest.approx((5_000 - 200 - 1_000 - 20_000) / (0.005 - 1))


def test_array_in_array_out_and_unliquidatable_long() -> None:
    b = brackets_for("ETHUSDT")
    lps = isolated_liquidation_price(
        np.full(1_000_000, 3_000.0), np.linspace(1, 50, 1_000_000), 1, b
    )
    assert lps.shape == (1_000_000,) and (np.diff(lps) >= -1e-9).all()  # more leverage, closer LP
    assert isolated_liquidation_price(3_000, 1, 1, b) == 0.0  # 1× long: never liquidated
    short = isolated_liquidation_price(3_000, 1, -1, b)
    assert short > 3_000 * 1.9
