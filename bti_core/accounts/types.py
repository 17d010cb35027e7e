"""What an exchange says about a linked account, in exact numbers.

Every figure comes from the exchange's own strings through `decimal_field`, which refuses what
no real account can hold (NaN, infinities, negatives where a size is meant, more than 10¹⁵), so
a forged or garbled answer is an error with the field's name, never a number that moves money.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from bti_core.errors import ExchangeError

Side = Literal["long", "short"]
MarginMode = Literal["cross", "isolated"]
#: why the exchange closed a position itself: its liquidation engine, or auto-deleveraging
CloseKind = Literal["liquidation", "adl"]

LARGEST = Decimal(10) ** 15


def decimal_field(row: dict[str, Any], name: str, *, positive: bool = False) -> Decimal:
    """``row[name]`` as an exact `Decimal`, refused with the field's name when it is missing,
    not a finite number, negative (or zero, with ``positive``), or beyond 10¹⁵."""
    raw = row.get(name)
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise ExchangeError(f"the exchange's {name!r} is not a number: {raw!r}") from None
    if not value.is_finite() or abs(value) > LARGEST:
        raise ExchangeError(f"the exchange's {name!r} is out of range: {raw!r}")
    if positive and value <= 0:
        raise ExchangeError(f"the exchange's {name!r} must be above 0: {raw!r}")
    return value


def int_field(row: dict[str, Any], name: str, *, low: int = 0, high: int = 2**62) -> int:
    raw = row.get(name)
    try:
        value = int(str(raw))
    except ValueError:
        raise ExchangeError(f"the exchange's {name!r} is not an integer: {raw!r}") from None
    if not low <= value <= high:
        raise ExchangeError(f"the exchange's {name!r} must be in {low}…{high}: {raw!r}")
    return value


@dataclass(frozen=True)
class KeyRights:
    """What an API key may do, as the exchange reports it. BTI links only a key that can read
    and nothing else."""

    read: bool
    trade: bool
    withdraw: bool
    transfer: bool

    @property
    def beyond_reading(self) -> list[str]:
        """The powers a read-only key must not have, in words."""
        named = {"trade": self.trade, "withdraw": self.withdraw, "transfer funds": self.transfer}
        return [what for what, on in named.items() if on]


@dataclass(frozen=True)
class Position:
    """One open position as the exchange reports it.

    ``margin`` is what the trader stands to lose at liquidation: an isolated position's own
    wallet (its initial margin plus margin added), a cross position's initial margin
    (notional ÷ leverage), since a cross position's true stake is the whole account's balance.
    """

    symbol: str
    side: Side
    size: Decimal
    entry_price: Decimal
    mark_price: Decimal
    leverage: int
    margin_mode: MarginMode
    margin: Decimal
    liquidation_price: Decimal | None
    adl_quantile: int | None
    updated_ms: int

    @property
    def key(self) -> tuple[str, Side]:
        return (self.symbol, self.side)


@dataclass(frozen=True)
class ForcedOrder:
    """An order the exchange placed itself to close a position: the exchange's record of a
    liquidation or an auto-deleveraging, which is what confirms a claim."""

    order_id: str
    symbol: str
    side: Side  # the position's side, not the closing order's
    kind: CloseKind
    quantity: Decimal
    price: Decimal
    time_ms: int


@dataclass(frozen=True)
class Balance:
    asset: str
    wallet: Decimal
    available: Decimal
