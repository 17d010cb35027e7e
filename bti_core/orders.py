"""The insured order and the cover asked for, validated on construction.

Money and sizes are `Decimal` (exact, as typed by the trader); the risk maths converts to float
where it needs arrays. Every rejection says what was wrong and what is allowed.
"""

from __future__ import annotations

import math
import numbers
import re
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


# A number as people type it: digits with a dot for decimals, commas only between groups of
# three (1,000.5); "1,5" is refused, not read as 15 (a decimal comma in much of the world).
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


def to_decimal(value: object, name: str) -> Decimal:
    """A finite Decimal from user input, or an `OrderError` naming the field."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str, Decimal)):
        raise OrderError(f"{name} must be a number; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise OrderError(f"{name} must be a finite number; got {value}")
    text = str(value).strip().replace("_", "")
    if "," in text:
        if not _GROUPED.match(text):
            raise OrderError(
                f"{name} must be a number with a dot for decimals (1.5, or 1,000.5 with "
                f"commas between thousands); got {value!r}"
            )
        text = text.replace(",", "")
    if len(text) > 64:
        raise OrderError(f"{name} must be a number of at most 64 characters; got {len(text)}")
    try:
        d = Decimal(text)
    except (InvalidOperation, ValueError):
        raise OrderError(f"{name} must be a number; got {value!r}") from None
    if not d.is_finite():
        raise OrderError(f"{name} must be a finite number; got {value}")
    return d


def to_hours(value: object, name: str = "duration", *, most: int = 720) -> int:
    """A whole number of hours from 1 to ``most``, from an int or text such as "24"."""
    allowed = f"a whole number of hours from 1 to {most}"
    if isinstance(value, bool):
        raise OrderError(f"{name} must be {allowed}; got {value!r}")
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        hours: object = int(text) if re.fullmatch(r"[+-]?\d{1,9}", text) else None
    elif (
        isinstance(value, numbers.Integral)
        or (isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value())
        or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    ):
        hours = int(value)
    else:
        hours = None
    if not isinstance(hours, int) or not 1 <= hours <= most:
        raise OrderError(f"{name} must be {allowed} (30 days); got {value!r}")
    return hours


def _amount(d: Decimal) -> str:
    """An amount for a message: 2 decimals, more when it is smaller than a cent."""
    return f"{d:,.2f}" if abs(d) >= Decimal("0.01") or d == 0 else f"{d.normalize():f}"


def default_quantity(price: float, notional: float = 5_000.0) -> float:
    """A round order size (1, 2 or 5 × 10ᵏ) whose notional at ``price`` is nearest
    ``notional`` USDT, for a form's first value: 0.1 BTC at 60,000, 2 ETH at 3,000, 50 SOL at
    150 (one size for every symbol made a SOL order too small to insure)."""
    if not (math.isfinite(price) and price > 0):
        return 1.0
    target = notional / price
    k = math.floor(math.log10(target))
    options = [m * 10.0**e for e in (k - 1, k, k + 1) for m in (1, 2, 5)]
    best = min(options, key=lambda q: abs(math.log(q / target)))
    return float(f"{best:.10g}")


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
                    "wallet balance must be at least the order's margin of "
                    f"{_amount(self.margin)} USDT in cross mode; got {_amount(wb)} USDT"
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
        hours = to_hours(self.duration_hours, most=MAX_DURATION_HOURS)
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
