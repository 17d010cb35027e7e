"""The insured order and the cover asked for, validated on construction.

Money and sizes are `Decimal` (exact, as typed by the trader); the risk maths converts to float
where it needs arrays. Every rejection says what was wrong and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from bti_core.errors import BTIError
from bti_core.market.schema import canonical_symbol

MAX_DURATION_HOURS = 720
# far above any real order (BTC at 10⁵ USDT, 10⁶ coins in existence) and still exact in
# Decimal's 28 digits at 8 decimal places; beyond it arithmetic would not be exact
MAX_AMOUNT = Decimal(1_000_000_000)


class OrderError(BTIError, ValueError):
    """An order or cover with a value BTI cannot insure."""


class Side(StrEnum):
    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1


class MarginMode(StrEnum):
    ISOLATED = "isolated"
    CROSS = "cross"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


def to_decimal(value: object, name: str) -> Decimal:
    """A finite Decimal from user input, or an `OrderError` naming the field."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OrderError(f"{name} must be a finite number; got {value}")
    try:
        d = Decimal(str(value).strip().replace(",", "").replace("_", ""))
    except (InvalidOperation, ValueError):
        raise OrderError(f"{name} must be a number; got {value!r}") from None
    if not d.is_finite():
        raise OrderError(f"{name} must be a finite number; got {value}")
    return d


@dataclass(frozen=True)
class Order:
    """A leveraged perpetual order. ``entry_price``: the limit price, or for a market order the
    mark price it fills at. ``wallet_balance``: the account's balance in cross mode."""

    symbol: str
    side: Side
    quantity: Decimal
    entry_price: Decimal
    leverage: Decimal
    margin_mode: MarginMode = MarginMode.ISOLATED
    order_type: OrderType = OrderType.MARKET
    wallet_balance: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", canonical_symbol(self.symbol))
        for name in ("side", "margin_mode", "order_type"):
            enum = {"side": Side, "margin_mode": MarginMode, "order_type": OrderType}[name]
            raw = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(str(raw).lower()))
            except ValueError:
                allowed = ", ".join(e.value for e in enum)
                raise OrderError(
                    f"{name.replace('_', ' ')} must be one of {allowed}; got {raw!r}"
                ) from None
        for name in ("quantity", "entry_price", "leverage"):
            v = to_decimal(getattr(self, name), name.replace("_", " "))
            if v <= 0:
                raise OrderError(f"{name.replace('_', ' ')} must be positive; got {v}")
            if v > MAX_AMOUNT:
                raise OrderError(
                    f"{name.replace('_', ' ')} must be at most {MAX_AMOUNT:,}; got {v:.6g}"
                )
            object.__setattr__(self, name, v)
        if self.leverage < 1:
            raise OrderError(f"leverage must be at least 1×; got {self.leverage}")
        if self.wallet_balance is not None:
            wb = to_decimal(self.wallet_balance, "wallet balance")
            if wb < self.margin:
                raise OrderError(
                    f"wallet balance {wb:,.2f} USDT is below the order's margin of "
                    f"{self.margin:,.2f} USDT"
                )
            object.__setattr__(self, "wallet_balance", wb)

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.entry_price

    @property
    def margin(self) -> Decimal:
        """Initial margin: notional / leverage."""
        return self.notional / self.leverage


@dataclass(frozen=True)
class Cover:
    """What the policy pays if the order is liquidated inside the window:
    ``min(coverage, max(0, share × lost margin − deductible))``."""

    coverage: Decimal
    duration_hours: int
    share: Decimal = field(default=Decimal("1"))
    deductible: Decimal = field(default=Decimal("0"))

    def __post_init__(self) -> None:
        cov = to_decimal(self.coverage, "coverage")
        if cov <= 0:
            raise OrderError(f"coverage must be positive; got {cov}")
        if cov > MAX_AMOUNT:
            raise OrderError(f"coverage must be at most {MAX_AMOUNT:,} USDT; got {cov:.6g}")
        object.__setattr__(self, "coverage", cov)
        try:
            hours = int(self.duration_hours)
        except (TypeError, ValueError):
            raise OrderError(
                f"duration must be a whole number of hours; got {self.duration_hours!r}"
            ) from None
        if not 1 <= hours <= MAX_DURATION_HOURS or hours != self.duration_hours:
            raise OrderError(
                f"duration must be a whole number of hours from 1 to {MAX_DURATION_HOURS} "
                "(30 days); "
                f"got {self.duration_hours}"
            )
        object.__setattr__(self, "duration_hours", hours)
        share = to_decimal(self.share, "covered share")
        if not Decimal("0") < share <= Decimal("1"):
            raise OrderError(f"covered share must be in (0, 1]; got {share}")
        object.__setattr__(self, "share", share)
        ded = to_decimal(self.deductible, "deductible")
        if not 0 <= ded <= MAX_AMOUNT:
            raise OrderError(f"deductible must be from 0 to {MAX_AMOUNT:,} USDT; got {ded:.6g}")
        object.__setattr__(self, "deductible", ded)

    def payout(self, lost_margin: Decimal) -> Decimal:
        """What a liquidation that lost ``lost_margin`` pays; never more than the coverage."""
        return min(self.coverage, max(Decimal(0), self.share * lost_margin - self.deductible))
