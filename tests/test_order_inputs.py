"""Order and cover fields as people type them (issue 16, finding 6)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bti_core.orders import Cover, Order, OrderError, to_decimal


def test_a_decimal_comma_is_refused_not_read_as_a_bigger_number() -> None:
    with pytest.raises(
        OrderError, match=r"leverage must be a number with a dot for decimals.*'1,5'"
    ):
        Order("BTCUSDT", "long", "0.1", "60000", "1,5")
    assert to_decimal("1,000.5", "quantity") == Decimal("1000.5")
    assert to_decimal("12,345,678", "quantity") == Decimal(12345678)
    for typed in ("1,5", "10,00", "1,0000", ",5", "1,,000"):
        with pytest.raises(OrderError, match="dot for decimals"):
            to_decimal(typed, "quantity")


def test_a_duration_typed_as_text_is_read_and_a_bad_one_says_what_it_got() -> None:
    assert Cover(coverage="100", duration_hours="24").duration_hours == 24  # type: ignore[arg-type]
    assert Cover(coverage=100, duration_hours=24.0).duration_hours == 24  # type: ignore[arg-type]
    for bad in ("24.5", "1e3", "", True, None, 0, 721, "day"):
        with pytest.raises(OrderError) as info:
            Cover(coverage=100, duration_hours=bad)  # type: ignore[arg-type]
        assert "whole number of hours from 1 to 720" in str(info.value)
        assert repr(bad) in str(info.value)


def test_values_that_are_not_numbers_name_the_field() -> None:
    for bad in (True, None, [1], {"a": 1}, "nan", "inf", "1e999999999"):
        with pytest.raises(OrderError, match="quantity must be"):
            Order("BTCUSDT", "long", bad, "60000", "10")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("price", "size"),
    [(60_000.0, 0.1), (3_000.0, 2.0), (150.0, 50.0), (0.5, 10_000.0), (0.0, 1.0)],
)
def test_a_default_size_is_round_and_near_five_thousand_usdt(price: float, size: float) -> None:
    from bti_core.orders import default_quantity

    assert default_quantity(price) == size
