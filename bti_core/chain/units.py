"""The one place where money crosses between `Decimal` (the domain) and integer token units
(the chain). BTI has 18 decimals; one BTI stands for one USDT of cover."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

DECIMALS = 18
_SCALE = Decimal(10) ** DECIMALS


class UnitsError(ValueError):
    """An amount that cannot be expressed in token units."""


def to_units(amount: Decimal | int | str) -> int:
    """``amount`` BTI as integer token units (exact; refuses negative, NaN and sub-unit
    precision rather than rounding money)."""
    try:
        d = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise UnitsError(f"amount must be a decimal number of BTI; got {amount!r}") from exc
    if not d.is_finite():
        raise UnitsError(f"amount must be finite; got {amount!r}")
    if d < 0:
        raise UnitsError(f"amount must not be negative; got {d}")
    units = d * _SCALE
    if units != units.to_integral_value():
        raise UnitsError(f"amount {d} has more than {DECIMALS} decimal places")
    return int(units)


def from_units(units: int) -> Decimal:
    """Integer token units as a `Decimal` amount of BTI (exact)."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise UnitsError(f"token units must be an integer; got {units!r}")
    return Decimal(units) / _SCALE if units else Decimal(0)


def format_bti(units: int) -> str:
    """``1234500000000000000000`` → ``'1,234.50 BTI'`` (for messages)."""
    return f"{from_units(units):,.2f} BTI"
