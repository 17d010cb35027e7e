"""Underwriting: limits and compliance checks, each with the reason a trader can act on."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from bti_core.errors import BTIError
from bti_core.orders import MAX_DURATION_HOURS, Cover, Order


@dataclass(frozen=True)
class Limits:
    max_leverage: Decimal = Decimal("100")  # platform cap, on top of each symbol's brackets
    max_duration_hours: int = MAX_DURATION_HOURS
    max_coverage_per_policy: Decimal = Decimal("50000")
    max_exposure_per_user: Decimal = Decimal("100000")
    pool_capacity: Decimal = Decimal("1000000")
    # cover is sold only while the pool stays below this share of its capacity: near full,
    # one crash would take the whole pool, and the price would have to exceed the payout
    max_utilisation: Decimal = Decimal("0.9")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str


class UnderwritingError(BTIError, ValueError):
    """Cover declined; carries every failed check."""

    def __init__(self, failed: list[Check]) -> None:
        self.failed = failed
        super().__init__("; ".join(c.reason for c in failed))


class CapacityError(UnderwritingError):
    """The pool cannot take this cover."""


def _usdt(x: Decimal) -> str:
    return f"{x:,.2f} USDT"


def check_cover(
    order: Order,
    cover: Cover,
    *,
    allowed_symbols: Iterable[str],
    symbol_max_leverage: Decimal,
    user_exposure: Decimal,
    pool_locked: Decimal,
    liquidation_reached: bool,
    limits: Limits = Limits(),
    liquidation_price: float | None = None,
    payout: Decimal | None = None,
    position_cover: Decimal = Decimal(0),
) -> list[Check]:
    """All checks, passed or not (the quote shows them). ``liquidation_price`` and ``payout``
    (when known) add the checks that the order can be liquidated at all and that a
    liquidation pays something. ``position_cover``: the open cover already bought on the same
    described position (`position_key`): all of it together stays within its margin."""
    allowed = sorted(allowed_symbols)
    cap_lev = min(limits.max_leverage, symbol_max_leverage)
    sellable = limits.pool_capacity * limits.max_utilisation
    free = max(Decimal(0), sellable - pool_locked)
    exposure_left = max(Decimal(0), limits.max_exposure_per_user - user_exposure)
    checks = [
        Check(
            "symbol",
            order.symbol in allowed,
            f"{order.symbol} is not insured; insured symbols: {', '.join(allowed) or 'none'}",
        ),
        Check(
            "coverage_within_margin",
            # the margin as shown, to the cent rounded up: typing the displayed margin is allowed
            cover.coverage <= order.margin.quantize(Decimal("0.01"), rounding=ROUND_CEILING),
            f"coverage {_usdt(cover.coverage)} exceeds the order's margin of {_usdt(order.margin)}",
        ),
        Check(
            "position_cover",
            # the first cover on a position is `coverage_within_margin`'s to judge
            position_cover <= 0
            or position_cover + cover.coverage
            <= order.margin.quantize(Decimal("0.01"), rounding=ROUND_CEILING),
            f"this position ({order.symbol} {order.side} {order.quantity} at "
            f"{order.entry_price:,.2f}) already has {_usdt(position_cover)} of cover; its margin "
            f"of {_usdt(order.margin)} allows at most "
            f"{_usdt(max(Decimal(0), order.margin - position_cover))} more: one position is "
            "insured once, up to its margin",
        ),
        Check(
            "coverage_limit",
            cover.coverage <= limits.max_coverage_per_policy,
            f"coverage {_usdt(cover.coverage)} is above the per-policy limit of "
            f"{_usdt(limits.max_coverage_per_policy)}",
        ),
        Check(
            "leverage",
            order.leverage <= cap_lev,
            f"leverage {order.leverage}× is above the {cap_lev}× allowed for {order.symbol} at "
            f"{_usdt(order.notional)} notional",
        ),
        Check(
            "duration",
            cover.duration_hours <= limits.max_duration_hours,
            f"duration {cover.duration_hours} h is above the {limits.max_duration_hours} h limit",
        ),
        Check(
            "user_exposure",
            cover.coverage <= exposure_left,
            f"this cover would take your open cover to {_usdt(user_exposure + cover.coverage)}, "
            f"above the {_usdt(limits.max_exposure_per_user)} limit per trader "
            f"({_usdt(exposure_left)} left)",
        ),
        Check(
            "pool_capacity",
            cover.coverage <= free,
            f"capacity exhausted: the pool sells cover up to {limits.max_utilisation:.0%} of "
            f"its {_usdt(limits.pool_capacity)} capacity and has {_usdt(free)} left "
            f"(asked {_usdt(cover.coverage)})",
        ),
        Check(
            "not_already_liquidated",
            not liquidation_reached,
            "the mark price is already beyond this order's liquidation price",
        ),
    ]
    if liquidation_price is not None:
        checks.append(
            Check(
                "can_be_liquidated",
                # above float rounding of 0 (a 1× long's liquidation price is 0 exactly)
                liquidation_price > float(order.entry_price) * 1e-9,
                f"a {order.leverage}× {order.side} has no liquidation price above zero: it "
                "cannot be liquidated, so there is nothing to insure",
            )
        )
    if payout is not None:
        checks.append(
            Check(
                "payout_positive",
                payout > 0,
                f"a liquidation would pay {_usdt(payout)}: insure a larger order, a larger "
                "share of the margin or a smaller deductible",
            )
        )
    return checks


MARKET_ENTRY_TOLERANCE = 0.01  # the mark moves while a trader types; a stale form moves more


SAME_ENTRY = Decimal("0.01")  # entries this close describe one position (a market entry's band)


def same_position(a: Order, symbol: str, side: str, quantity: Decimal, entry: Decimal) -> bool:
    """Whether a policy's order (``symbol, side, quantity, entry``) describes the position of
    ``a``: one account, symbol, side and size, and an entry within `SAME_ENTRY` (a market
    order's entry is the mark when quoted, so a new quote a minute later is the same
    position, not another)."""
    return (
        symbol == a.symbol
        and side == str(a.side)
        and quantity == a.quantity
        and abs(entry - a.entry_price) <= SAME_ENTRY * a.entry_price
    )


def check_market_entry(order: Order, mark: float) -> Check:
    """A market order fills at the mark price: its entry may differ from the current mark by
    at most `MARKET_ENTRY_TOLERANCE` (a form that kept another symbol's or an older price)."""
    entry = float(order.entry_price)
    gap = entry / mark - 1 if mark > 0 else math.inf
    return Check(
        "market_entry",
        str(order.order_type) != "market" or abs(gap) <= MARKET_ENTRY_TOLERANCE,
        f"a market order fills at {order.symbol}'s mark price, {mark:,.2f} USDT now; the entry "
        f"given, {entry:,.2f} USDT, is {gap:+.1%} from it (at most "
        f"±{MARKET_ENTRY_TOLERANCE:.0%}): use the current mark, or a limit order for another price",
    )


def check_premium(premium: Decimal, payout: Decimal, smallest: str = "") -> Check:
    """A premium must stay below what the cover pays, or buying it is a certain loss;
    ``smallest`` says what the trader could insure instead (`smallest_order`)."""
    return Check(
        "premium_below_payout",
        premium < payout,
        f"the premium {_usdt(premium)} is not below the payout {_usdt(payout)}: this cover "
        "costs more than it could pay" + (f"; {smallest}" if smallest else ""),
    )


def smallest_order(
    order: Order, cover: Cover, premium: Decimal, payout: Decimal, fee: Decimal
) -> str:
    """Words for the smallest order like ``order`` (same symbol, side, leverage and cover terms)
    whose cover is worth its premium. The premium is ``payout · r + fee`` (`pricing.price`), so
    it is below the payout when ``payout > fee / (1 − r)``, and the payout is
    ``share · margin − deductible``: the margin must exceed ``(fee / (1 − r) + deductible) /
    share``, the quantity that margin × leverage ÷ entry."""
    if payout <= 0:
        return ""
    r = (premium - fee) / payout
    if r >= 1:
        return (
            "no size of this order can be insured: its chance of liquidation in the window is "
            "too high for cover to be worth buying"
        )
    margin = (fee / (1 - r) + cover.deductible) / cover.share
    quantity = margin * order.leverage / order.entry_price
    return (
        f"the smallest {order.symbol} order BTI can insure at {order.leverage}× is about "
        f"{quantity:.4g} ({quantity * order.entry_price:,.0f} USDT notional): below it the "
        f"{fee:,.2f} BTI policy fee is more than the cover is worth"
    )


def require(checks: list[Check]) -> None:
    """Raise with every failed check; `CapacityError` when capacity is among them."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return
    if any(c.name == "pool_capacity" for c in failed):
        raise CapacityError(failed)
    raise UnderwritingError(failed)
