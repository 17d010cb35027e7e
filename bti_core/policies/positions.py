"""Cover on a linked exchange position (`bti_core.accounts`): the order is the exchange's own
numbers, and the cover follows the position.

Terms (what the Buy page and `bti policies quote --position` state):

- **Insurable interest.** All cover on one exchange position together never exceeds its
  margin, whoever bought it (one exchange account backs one BTI user's cover already).
- **The position as quoted.** A purchase goes through only if the position is still open with
  the size, leverage and margin mode it was quoted on and no less margin; otherwise it is
  declined with what changed, and a new quote prices the position as it is.
- **The liquidation price insured** is the exchange's own for the position at the quote (it
  counts added margin and a cross wallet, which BTI's formula for an order cannot see); BTI's is
  shown beside it, with a warning when they differ by more than `LP_TOLERANCE`.
- **Changed after purchase.** Margin withdrawn or leverage raised later moves the exchange's
  liquidation nearer: the cover pays only the liquidation its insured terms would have had —
  the mark must still reach the insured liquidation price inside the window, and the exchange's
  record must show the position liquidated. A liquidation the changed position suffered before
  the mark got there pays nothing.
- **Shrunk after purchase.** A claim pays in proportion to what the exchange liquidated: the
  margin lost is the insured margin × (liquidated quantity ÷ insured quantity), at most 1.
- **Closed after purchase.** A position the trader closes ends the cover; the premium is not
  refunded (it paid for the time the position was open and insured).
- **Auto-deleveraging cover** (optional, a policy of its own): pays its amount when the
  exchange auto-deleverages the position inside the window, in proportion to the quantity
  deleveraged (its ADL forced orders), confirmed by that record alone (no mark can show an
  ADL). All ADL cover on one position is at most `risk.adl.CAP_SHARE` of its margin; it is
  priced by `risk.adl`. A liquidation, or a closing by the trader, ends it without a claim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlmodel import Session, col, select

from bti_core.db.models import ExchangeAccount, ExchangePosition, Policy
from bti_core.db.statuses import OPEN_STATUSES, AccountStatus, Peril, PositionState
from bti_core.orders import Order, OrderError
from bti_core.risk.adl import CAP_SHARE
from bti_core.underwriting import Check

#: how old the exchange's last report of a position may be for a quote or a purchase on it
FRESH = timedelta(minutes=5)
#: BTI's and the exchange's liquidation prices may differ by this share before the quote warns
LP_TOLERANCE = Decimal("0.005")


@dataclass(frozen=True)
class PositionTerms:
    """The linked position as it was quoted (kept in the quote's inputs)."""

    position_id: int
    account_id: int
    size: Decimal
    entry_price: Decimal
    leverage: int
    margin_mode: str
    margin: Decimal
    liquidation_price: Decimal | None
    exchange_ms: int
    adl_quantile: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: None if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def of_json(cls, d: dict[str, Any]) -> PositionTerms:
        return cls(
            position_id=int(d["position_id"]),
            account_id=int(d["account_id"]),
            size=Decimal(d["size"]),
            entry_price=Decimal(d["entry_price"]),
            leverage=int(d["leverage"]),
            margin_mode=str(d["margin_mode"]),
            margin=Decimal(d["margin"]),
            liquidation_price=None
            if d.get("liquidation_price") is None
            else Decimal(d["liquidation_price"]),
            exchange_ms=int(d["exchange_ms"]),
            adl_quantile=None if d.get("adl_quantile") is None else int(d["adl_quantile"]),
        )


def _linked(s: Session, user_id: str, position_id: int) -> tuple[ExchangePosition, ExchangeAccount]:
    pos = s.get(ExchangePosition, position_id)
    account = None if pos is None else s.get(ExchangeAccount, pos.account_id)
    if pos is None or account is None or account.username != user_id:
        raise OrderError(f"you have no linked position #{position_id}")  # others' read as absent
    return pos, account


def position_order(
    s: Session, user_id: str, position_id: int, now: datetime
) -> tuple[Order, PositionTerms]:
    """The order a linked position is (the exchange's numbers) and its terms; refused, with the
    reason, for a position that is not the trader's, closed, on an account whose key no longer
    works, or last read more than `FRESH` ago."""
    pos, account = _linked(s, user_id, position_id)
    if account.status != AccountStatus.LINKED.value:
        raise OrderError(
            f"account #{account.id} is {account.status}: link it again with a working key "
            "before insuring its positions"
        )
    if pos.status != PositionState.OPEN.value:
        raise OrderError(f"position #{position_id} ({pos.symbol} {pos.side}) is closed")
    if now - pos.seen_at > FRESH:
        raise OrderError(
            f"the exchange last reported position #{position_id} at {pos.seen_at:%H:%M:%S} UTC, "
            f"more than {FRESH.seconds // 60} minutes ago: read the account again (Sync), then "
            "quote"
        )
    assert pos.id is not None
    assert account.id is not None
    order = Order(
        symbol=pos.symbol,
        side=pos.side,  # type: ignore[arg-type]
        quantity=pos.size,
        entry_price=pos.entry_price,
        leverage=Decimal(pos.leverage),
        margin_mode=pos.margin_mode,  # type: ignore[arg-type]
    )
    terms = PositionTerms(
        position_id=pos.id,
        account_id=account.id,
        size=pos.size,
        entry_price=pos.entry_price,
        leverage=pos.leverage,
        margin_mode=pos.margin_mode,
        margin=pos.margin,
        liquidation_price=pos.liquidation_price,
        exchange_ms=pos.exchange_ms,
        adl_quantile=pos.adl_quantile,
    )
    return order, terms


def cover_on(s: Session, position_id: int, peril: Peril = Peril.LIQUIDATION) -> Decimal:
    """The open (pending or active) cover against ``peril`` on a linked position, whoever
    holds it."""
    rows = s.exec(
        select(col(Policy.coverage)).where(
            Policy.position_id == position_id,
            col(Policy.status).in_(OPEN_STATUSES),
            Policy.peril == peril.value,
        )
    ).all()
    return sum(rows, Decimal(0))


def adl_cap(position_id: int, margin: Decimal, held: Decimal, coverage: Decimal) -> Check:
    """ADL cover on one position, this purchase's with what is held, within `CAP_SHARE` of
    its margin (to the cent, rounded up)."""
    cap = (margin * CAP_SHARE).quantize(Decimal("0.01"), rounding=ROUND_CEILING)
    return Check(
        "adl_cap",
        held + coverage <= cap,
        f"ADL cover on position #{position_id} is at most {CAP_SHARE:.0%} of its margin, "
        f"{cap:,.2f} USDT; it has {held:,.2f}, so {max(Decimal(0), cap - held):,.2f} more can "
        "be bought (the data on ADL are thin: a cap keeps a pricing error small)",
    )


def lp_warning(terms: PositionTerms, bti_lp: float) -> str | None:
    """Words for a quote when the exchange's liquidation price and BTI's differ."""
    lp = terms.liquidation_price
    if lp is None or bti_lp <= 0:
        return None
    gap = abs(Decimal(repr(bti_lp)) - lp) / lp
    if gap <= LP_TOLERANCE:
        return None
    return (
        f"the exchange liquidates this position at {lp:,.2f}; BTI's formula for the order gives "
        f"{bti_lp:,.2f} ({gap:.1%} apart: added margin, a cross wallet or another tier). The "
        "cover insures the exchange's price"
    )


def purchase_checks(
    s: Session,
    user_id: str,
    quoted: PositionTerms,
    order: Order,
    coverage: Decimal,
    now: datetime,
    peril: Peril = Peril.LIQUIDATION,
) -> list[Check]:
    """The position now against the quote, and its cover with this purchase (in the purchase's
    serialised transaction, so two purchases on one position cannot both fit)."""
    try:
        _, now_terms = position_order(s, user_id, quoted.position_id, now)
    except OrderError as e:
        return [Check("position_open", False, f"{e}; the cover was not bought")]
    changed = [
        f"{what} {before} → {after}"
        for what, before, after in (
            ("size", quoted.size, now_terms.size),
            ("leverage", f"{quoted.leverage}×", f"{now_terms.leverage}×"),
            ("margin mode", quoted.margin_mode, now_terms.margin_mode),
        )
        if before != after
    ]
    if now_terms.margin < quoted.margin:
        changed.append(f"margin {quoted.margin:,.2f} → {now_terms.margin:,.2f} USDT")
    checks = []
    if changed:
        checks.append(
            Check(
                "position_unchanged",
                False,
                f"the position changed since the quote ({'; '.join(changed)}): ask for a new "
                "quote of the position as it is",
            )
        )
    held = cover_on(s, quoted.position_id, peril)
    if peril is Peril.ADL:
        cap = adl_cap(quoted.position_id, order.margin, held, coverage)
        return checks + ([] if cap.passed else [cap])
    # the margin as shown, to the cent rounded up (as `underwriting.check_cover` allows)
    if held + coverage > order.margin.quantize(Decimal("0.01"), rounding=ROUND_CEILING):
        checks.append(
            Check(
                "position_cover",
                False,
                f"position #{quoted.position_id} already has {held:,.2f} USDT of cover; its "
                f"margin of {order.margin:,.2f} USDT allows "
                f"{max(Decimal(0), order.margin - held):,.2f} more: one position is insured "
                "for at most what it can lose",
            )
        )
    return checks
