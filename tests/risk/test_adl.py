"""The ADL probability kernel (`bti_core.risk.adl`): the formula, its floor and its bounds."""

from __future__ import annotations

import pytest

from bti_core.risk.adl import (
    CRASH_MOVE,
    FLOOR,
    P_FUND_EMPTY,
    REACH,
    adl_probability,
    crash_level,
    reach,
)


def test_the_crash_is_a_move_in_the_positions_favour() -> None:
    assert crash_level(100.0, +1) == pytest.approx(100 * (1 + CRASH_MOVE))  # a long: a rally
    assert crash_level(100.0, -1) == pytest.approx(100 * (1 - CRASH_MOVE))  # a short: a fall


def test_the_probability_is_the_crash_the_empty_fund_and_the_queue() -> None:
    r = adl_probability(0.2, 3, 115.0)
    assert r.probability == pytest.approx(P_FUND_EMPTY * 0.2 * REACH[3])
    assert not r.floored and r.crash_level == 115.0 and r.quantile == 3


def test_a_higher_quantile_never_prices_lower_and_no_quantile_prices_as_the_first() -> None:
    ps = [adl_probability(0.3, q, 1.0).probability for q in range(5)]
    assert ps == sorted(ps) and ps[0] < ps[-1]
    assert adl_probability(0.3, None, 1.0).probability == ps[-1] == reach(None) * 0.3 * 0.5


def test_the_floor_prices_the_crash_no_model_sees() -> None:
    r = adl_probability(0.0, 0, 1.0)
    assert r.probability == FLOOR and r.floored


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_probability_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="crash probability must be in"):
        adl_probability(bad, 2, 1.0)


@pytest.mark.parametrize("q", [-1, 5])
def test_a_quantile_outside_the_exchanges_range_is_refused(q: int) -> None:
    with pytest.raises(ValueError, match="ADL quantile must be 0 to 4"):
        reach(q)
