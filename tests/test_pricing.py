"""Orders, cover, premium and underwriting: table cases and Hypothesis properties."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bti_core.orders import Cover, Order, OrderError
from bti_core.pricing import PricingConfig, price, utilisation_loading, wilson_upper
from bti_core.underwriting import (
    CapacityError,
    Limits,
    UnderwritingError,
    check_cover,
    check_premium,
    require,
)


def order(**kw: object) -> Order:
    base: dict[str, object] = {
        "symbol": "BTCUSDT",
        "side": "long",
        "quantity": "0.5",
        "entry_price": "40000",
        "leverage": "10",
    }
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"quantity": "-1"}, "quantity must be positive"),
        ({"leverage": "0"}, "leverage must be positive"),
        ({"leverage": "0.5"}, "leverage must be at least 1×"),
        ({"entry_price": "NaN"}, "entry price must be a finite number"),
        ({"entry_price": float("nan")}, "entry price must be a finite number"),
        ({"quantity": "abc"}, "quantity must be a number; got 'abc'"),
        ({"side": "up"}, "side must be one of long, short; got 'up'"),
        ({"margin_mode": "portfolio"}, "margin mode must be one of isolated, cross"),
        ({"symbol": "NOPE"}, "expected a perpetual"),
        (
            {"margin_mode": "cross", "wallet_balance": "100"},
            "at least the order's margin of 2,000.00 USDT in cross mode; got 100.00 USDT",
        ),
    ],
)
def test_bad_orders_are_refused_with_reasons(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        order(**kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"coverage": "0"}, "coverage must be positive"),
        ({"duration_hours": 0}, "from 1 to 720"),
        ({"duration_hours": 721}, "from 1 to 720"),
        ({"duration_hours": 1.5}, "whole number of hours"),
        ({"share": "1.5"}, r"covered share must be in \(0, 1\]"),
        ({"deductible": "-1"}, "deductible must be from 0 to"),
    ],
)
def test_bad_cover_is_refused_with_reasons(kw: dict, message: str) -> None:
    base: dict[str, object] = {"coverage": "1000", "duration_hours": 24}
    base.update(kw)
    with pytest.raises(OrderError, match=message):
        Cover(**base)  # type: ignore[arg-type]


def test_order_arithmetic_is_exact() -> None:
    o = order(quantity="0.3", entry_price="0.1", leverage="3")
    assert o.notional == Decimal("0.03")
    assert o.margin == Decimal("0.01")


@given(
    coverage=st.decimals(min_value=1, max_value=100_000, places=2),
    share=st.decimals(min_value=Decimal("0.01"), max_value=1, places=2),
    deductible=st.decimals(min_value=0, max_value=10_000, places=2),
    lost=st.decimals(min_value=0, max_value=1_000_000, places=2),
)
def test_payout_never_exceeds_cover(
    coverage: Decimal, share: Decimal, deductible: Decimal, lost: Decimal
) -> None:
    c = Cover(coverage=coverage, duration_hours=24, share=share, deductible=deductible)
    assert Decimal(0) <= c.payout(lost) <= coverage


@settings(max_examples=300)
@given(
    p=st.floats(0, 1),
    dp=st.floats(0, 0.5),
    u=st.floats(0, 0.95),
    du=st.floats(0, 0.04),
    payout=st.decimals(min_value=1, max_value=50_000, places=2),
    dpay=st.decimals(min_value=0, max_value=1_000, places=2),
)
def test_premium_never_falls_when_risk_utilisation_or_payout_rise(
    p: float, dp: float, u: float, du: float, payout: Decimal, dpay: Decimal
) -> None:
    a = price(payout=payout, probability=p, n_paths=20_000, utilisation=u)
    b = price(
        payout=payout + dpay, probability=min(1.0, p + dp), n_paths=20_000, utilisation=u + du
    )
    assert b.total >= a.total
    assert a.total > 0 and a.probability_charged >= a.probability


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0.0, 20_000, 1.0) == pytest.approx(1 / 20_001, rel=1e-3)
    assert wilson_upper(1.0, 20_000, 1.0) == pytest.approx(1.0)
    assert wilson_upper(0.1, 20_000, 1.0) == pytest.approx(0.1 + math.sqrt(0.09 / 20_000), rel=1e-3)


@given(
    p=st.floats(0, 1),
    u=st.floats(0, 1),
    payout=st.decimals("0.01", "1000000", places=2),
)
def test_the_premium_is_bounded_by_the_capped_loading(p: float, u: float, payout: Decimal) -> None:
    """At any utilisation the premium is at most (1 + λ_max) × the expected loss + the fee
    (before the cap, 96 % utilisation priced a 50,000 payout at 343,176)."""
    cfg = PricingConfig()
    prem = price(payout=payout, probability=p, n_paths=20_000, utilisation=u, config=cfg)
    bound = prem.expected_loss * Decimal(repr(1 + cfg.max_loading)) + cfg.fee + Decimal("0.02")
    assert prem.total <= bound


def test_a_premium_at_or_above_the_payout_is_declined() -> None:
    prem = price(payout=Decimal(50_000), probability=0.9, n_paths=20_000, utilisation=0.96)
    check = check_premium(prem.total, Decimal(50_000))
    assert not check.passed and "costs more than it could pay" in check.reason
    assert check_premium(Decimal("1.00"), Decimal("0.50")).passed is False  # dust: fee ≥ payout
    assert check_premium(Decimal("10"), Decimal("100")).passed


def test_utilisation_loading_rises_then_stops_at_its_cap() -> None:
    cfg = PricingConfig()
    assert utilisation_loading(0.0, cfg) == cfg.base_loading
    assert utilisation_loading(0.3, cfg) < utilisation_loading(0.5, cfg) < cfg.max_loading
    assert utilisation_loading(0.9, cfg) == utilisation_loading(1.0, cfg) == cfg.max_loading
    with pytest.raises(ValueError, match="utilisation"):
        utilisation_loading(1.01, cfg)


def _checks(o: Order, c: Cover, **kw: object) -> list:
    base: dict[str, object] = {
        "allowed_symbols": ["BTCUSDT", "ETHUSDT"],
        "symbol_max_leverage": Decimal(125),
        "user_exposure": Decimal(0),
        "pool_locked": Decimal(0),
        "liquidation_reached": False,
        "limits": Limits(pool_capacity=Decimal(10_000), max_exposure_per_user=Decimal(5_000)),
    }
    base.update(kw)
    return check_cover(o, c, **base)  # type: ignore[arg-type]


def test_underwriting_passes_a_normal_cover() -> None:
    checks = _checks(order(), Cover(coverage="2000", duration_hours=24))
    assert all(c.passed for c in checks)
    require(checks)


@pytest.mark.parametrize(
    ("o", "c", "kw", "name", "reason"),
    [
        (
            order(),
            Cover(coverage="2000.01", duration_hours=24),
            {},
            "coverage_within_margin",
            "coverage 2,000.01 USDT exceeds the order's margin of 2,000.00 USDT",
        ),
        (
            order(symbol="SOLUSDT"),
            Cover(coverage="10", duration_hours=24),
            {},
            "symbol",
            "SOLUSDT is not insured; insured symbols: BTCUSDT, ETHUSDT",
        ),
        (
            order(leverage="60"),
            Cover(coverage="10", duration_hours=24),
            {"symbol_max_leverage": Decimal(50)},
            "leverage",
            "leverage 60× is above the 50× allowed",
        ),
        (
            order(),
            Cover(coverage="2000", duration_hours=24),
            {"user_exposure": Decimal(4_000)},
            "user_exposure",
            "1,000.00 USDT left",
        ),
        (
            order(),
            Cover(coverage="2000", duration_hours=24),
            {"pool_locked": Decimal(7_500)},
            "pool_capacity",
            "up to 90% of its 10,000.00 USDT capacity and has 1,500.00 USDT left",
        ),
        (
            order(leverage="1"),
            Cover(coverage="10", duration_hours=24),
            {"liquidation_price": 0.0},
            "can_be_liquidated",
            "cannot be liquidated, so there is nothing to insure",
        ),
        (
            order(),
            Cover(coverage="10", duration_hours=24),
            {"payout": Decimal("0.00")},
            "payout_positive",
            "a liquidation would pay 0.00 USDT",
        ),
        (
            order(),
            Cover(coverage="2000", duration_hours=24),
            {"liquidation_reached": True},
            "not_already_liquidated",
            "already beyond",
        ),
    ],
)
def test_underwriting_reasons(o: Order, c: Cover, kw: dict, name: str, reason: str) -> None:
    failed = [x for x in _checks(o, c, **kw) if not x.passed]
    assert [x.name for x in failed] == [name]
    assert reason in failed[0].reason
    with pytest.raises(
        CapacityError if name == "pool_capacity" else UnderwritingError,
        match="|".join([reason[:20]]),
    ):
        require(failed)


def test_vectorised_reprice_matches_decimal_price() -> None:
    import numpy as np

    from bti_core.pricing import reprice

    ps = np.array([0.0, 0.001, 0.05, 0.4, 0.97])
    pays = np.array([10.0, 250.0, 1_000.0, 5_000.0, 20.0])
    fast = reprice(payout=pays, probability=ps, n_paths=20_000, utilisation=0.3)
    exact = [
        float(
            price(
                payout=Decimal(str(a)), probability=float(p), n_paths=20_000, utilisation=0.3
            ).total
        )
        for a, p in zip(pays, ps, strict=True)
    ]
    assert fast == pytest.approx(
        exact, abs=0.02
    )  # the Decimal premium rounds each part up to the cent
