"""Underwriting: limits and compliance checks, each with the reason a trader can act on."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from bti_core.errors import BTIError
from bti_core.orders import MAX_DURATION_HOURS, Cover, Order

# label, lower bound (exclusive, except the first), upper bound (inclusive): the bands the
# book is read by (Risk queries) and that one side's cover is capped by
LEVERAGE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("≤5×", 0.0, 5.0),
    ("5–10×", 5.0, 10.0),
    ("10–20×", 10.0, 20.0),
    ("20–50×", 20.0, 50.0),
    ("50×+", 50.0, float("inf")),
)


def leverage_band(leverage: Decimal | float) -> str:
    """The `LEVERAGE_BUCKETS` label of ``leverage``."""
    lev = float(leverage)
    return next((label for label, _, hi in LEVERAGE_BUCKETS if lev <= hi), LEVERAGE_BUCKETS[-1][0])


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
    # concentration, as shares of the capacity (`check_concentration`): one symbol; one side
    # in one leverage band (such cover is liquidated by the same move); and the cover one
    # market-wide move of `crash_move` within an hour would claim (Sherlock caps one event at
    # half its pool; crypto fell 15–70 % within 40 minutes on 10 October 2025)
    max_symbol_share: Decimal = Decimal("0.4")
    max_band_share: Decimal = Decimal("0.25")
    crash_move: Decimal = Decimal("0.3")
    max_crash_share: Decimal = Decimal("0.5")


@dataclass(frozen=True)
class Exposure:
    """The open cover as the pool's concentration caps read it, summed by the database
    (`Quoting.exposure_now`): per (symbol, side, leverage band), and, per side, what one
    market-wide move of `Limits.crash_move` against it would claim."""

    by_band: Mapping[tuple[str, str, str], Decimal]
    crash: Mapping[str, Decimal]

    def without(self, symbol: str, side: str, band: str, cover: Decimal) -> Exposure:
        """This exposure less ``cover`` of one (symbol, side, band) (a policy being changed);
        the crash figures as they are (the cautious reading)."""
        key = (symbol, side, band)
        by_band = dict(self.by_band)
        if key in by_band:
            by_band[key] = max(Decimal(0), by_band[key] - cover)
        return Exposure(by_band=by_band, crash=self.crash)

    @property
    def total(self) -> Decimal:
        """The pool's open cover (exact: the database sums each row's cover exactly)."""
        return sum(self.by_band.values(), Decimal(0))

    def on_symbol(self, symbol: str) -> Decimal:
        return sum((v for (sym, _, _), v in self.by_band.items() if sym == symbol), Decimal(0))

    def in_band(self, side: str, band: str) -> Decimal:
        return sum(
            (v for (_, sd, bd), v in self.by_band.items() if sd == side and bd == band),
            Decimal(0),
        )


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


def crash_move(side: str, limits: Limits) -> float:
    """The market-wide move that liquidates ``side``: a fall for longs, a rise for shorts."""
    return float(limits.crash_move) * (-1 if side == "long" else 1)


def claimed_by_move(side: str, liquidation_price: float, mark: float | None, move: float) -> bool:
    """Whether a move of ``move`` (−0.3 = −30 %) from ``mark`` reaches a ``side`` position's
    liquidation price: longs on a fall, shorts on a rise. No mark known: counted (the cautious
    reading)."""
    if move == 0 or side != ("long" if move < 0 else "short"):
        return False
    if mark is None:
        return True
    price = mark * (1 + move)
    return liquidation_price >= price if move < 0 else liquidation_price <= price


CONCENTRATION = ("symbol_cap", "band_cap", "crash_cap")  # the checks' names


@dataclass(frozen=True)
class CapUse:
    """How much of one concentration cap the open cover uses."""

    kind: str  # symbol | band | crash
    what: str  # "BTCUSDT", "longs at 5–10×", "a 30% fall of every symbol"
    used: Decimal
    limit: Decimal

    @property
    def left(self) -> Decimal:
        return max(Decimal(0), self.limit - self.used)

    @property
    def share(self) -> float:
        return float(self.used / self.limit) if self.limit > 0 else 1.0


def caps_in_use(exposure: Exposure, limits: Limits = Limits()) -> list[CapUse]:
    """Every concentration cap the open cover touches: each symbol (by name), each side and
    leverage band (in band order), and the market-wide fall and rise."""
    cap = limits.pool_capacity
    symbols = sorted({sym for sym, _, _ in exposure.by_band})
    bands = sorted(
        {(side, band) for _, side, band in exposure.by_band},
        key=lambda sb: (sb[0], [b[0] for b in LEVERAGE_BUCKETS].index(sb[1])),
    )
    rows = [
        CapUse("symbol", sym, exposure.on_symbol(sym), cap * limits.max_symbol_share)
        for sym in symbols
    ]
    rows += [
        CapUse(
            "band", f"{side}s at {band}", exposure.in_band(side, band), cap * limits.max_band_share
        )
        for side, band in bands
    ]
    move = f"{limits.crash_move:.0%}"
    rows += [
        CapUse(
            "crash",
            f"a {move} {'fall' if side == 'long' else 'rise'} of every symbol (claims {side}s)",
            exposure.crash.get(side, Decimal(0)),
            cap * limits.max_crash_share,
        )
        for side in ("long", "short")
    ]
    return rows


def check_concentration(
    order: Order,
    cover: Cover,
    *,
    liquidation_price: float | None,
    exposure: Exposure,
    mark: float | None,
    limits: Limits = Limits(),
) -> list[Check]:
    """The pool's concentration caps (`Limits`), each with how much it has left: open cover on
    ``order``'s symbol; on its side and leverage band; and, when a market-wide move of
    ``limits.crash_move`` against its side would take ``order``'s ``mark`` past
    ``liquidation_price``, all the cover such a move would claim (``exposure.crash[side]``)."""
    cap = limits.pool_capacity
    side, band, asked = str(order.side), leverage_band(order.leverage), cover.coverage
    on_symbol, in_band = exposure.on_symbol(order.symbol), exposure.in_band(side, band)
    symbol_cap, band_cap = cap * limits.max_symbol_share, cap * limits.max_band_share
    checks = [
        Check(
            "symbol_cap",
            on_symbol + asked <= symbol_cap,
            f"{order.symbol} already carries {_usdt(on_symbol)} of open cover; one symbol may "
            f"take at most {limits.max_symbol_share:.0%} of the pool's {_usdt(cap)} capacity "
            f"({_usdt(symbol_cap)}): {_usdt(max(Decimal(0), symbol_cap - on_symbol))} left "
            f"(asked {_usdt(asked)})",
        ),
        Check(
            "band_cap",
            in_band + asked <= band_cap,
            f"{side}s at {band} leverage already carry {_usdt(in_band)} of open cover (one move "
            f"liquidates them together); at most {limits.max_band_share:.0%} of the capacity "
            f"({_usdt(band_cap)}): {_usdt(max(Decimal(0), band_cap - in_band))} left "
            f"(asked {_usdt(asked)})",
        ),
    ]
    move = crash_move(side, limits)
    if liquidation_price is not None and claimed_by_move(side, liquidation_price, mark, move):
        hit = exposure.crash[side]
        crash_cap = cap * limits.max_crash_share
        what = "fall" if move < 0 else "rise"
        checks.append(
            Check(
                "crash_cap",
                hit + asked <= crash_cap,
                f"a {abs(move):.0%} {what} of every symbol within the hour would claim this "
                f"cover and {_usdt(hit)} already open; one such move may claim at most "
                f"{limits.max_crash_share:.0%} of the capacity ({_usdt(crash_cap)}): "
                f"{_usdt(max(Decimal(0), crash_cap - hit))} left (asked {_usdt(asked)})",
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
    """Raise with every failed check; `CapacityError` when the pool's capacity or one of its
    concentration caps is among them."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return
    if any(c.name in ("pool_capacity", *CONCENTRATION) for c in failed):
        raise CapacityError(failed)
    raise UnderwritingError(failed)
