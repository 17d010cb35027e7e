"""Is the market still the one quoted? The newest mark price BTI holds (the stored bars'
last close or a stream's last trusted tick, whichever is newer) and its extreme since the
quote, and the checks a purchase makes of them: refused when the mark has reached the
liquidation price since the quote, or come more than `QUOTE_DRIFT` of the quoted distance
closer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy.engine import Engine

from bti_core.db.engine import session_scope
from bti_core.db.models import QuoteRecord
from bti_core.db.repository import stream_marks
from bti_core.errors import BTIError
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.market.warehouse import Warehouse
from bti_core.orders import Order
from bti_core.underwriting import Check

# A quote is priced at the mark's distance to the liquidation price when it was made; it is
# bought only while the mark has not come more than a fifth of that distance closer (a 20× long
# quoted 4.5 % from liquidation is refused once the mark is within 3.6 %), and never once the
# mark has reached the level: cover on a position already liquidated is a claim, not insurance.
QUOTE_DRIFT = 0.2


@dataclass(frozen=True)
class FreshMark:
    """The freshest mark price BTI has seen, and its extreme since a moment (the quote's)."""

    price: float
    at: datetime
    extreme: float | None  # the lowest (a long) or highest (a short) since, None: unknown
    extreme_at: datetime | None = None


def fresh_mark(
    warehouse: Warehouse, db: Engine, symbol: str, side: int, since: datetime, now: datetime
) -> FreshMark | None:
    """The newest mark price of ``symbol`` that BTI holds — the stored bars' last close or
    a stream's last trusted tick, whichever is newer — and the mark's extreme on the side
    of ``side``'s liquidation since ``since`` (the bars that end after it)."""
    wh = warehouse
    best: tuple[pd.Timestamp, float] | None = None
    extreme: tuple[float, pd.Timestamp] | None = None
    t0, now_ = pd.Timestamp(since), pd.Timestamp(now)
    for tf in wh.timeframes(symbol, Kind.MARK):
        step = timeframe_delta(tf)
        try:
            bars = wh.query(Kind.MARK, symbol, tf, t0 - step, now_)
            newest = wh.dataset(Kind.MARK, symbol, tf)
        except BTIError:
            continue
        # bars closed by now_, and the one forming now_ (the series' newest): a bar of
        # history that closes after ``now_`` holds prices from after it (a demo book)
        opens = pd.to_datetime(bars["ts"], utc=True)
        forming = newest is not None and newest.last is not None
        bars = bars[
            (opens + step <= now_) | (opens == (newest.last if forming else pd.NaT))  # type: ignore[union-attr]
        ]
        if not len(bars):
            continue
        end = pd.Timestamp(bars["ts"].iloc[-1]) + step
        if best is None or end > best[0]:
            best = (end, float(bars["close"].iloc[-1]))
        col_ = bars["low"] if side > 0 else bars["high"]
        i = int(col_.to_numpy().argmin() if side > 0 else col_.to_numpy().argmax())
        v, at = float(col_.iloc[i]), pd.Timestamp(bars["ts"].iloc[i])
        if extreme is None or (v < extreme[0] if side > 0 else v > extreme[0]):
            extreme = (v, at)
    with session_scope(db) as s:
        for ms, price in stream_marks(s, symbol=symbol):
            at = pd.Timestamp(ms, unit="ms", tz="UTC")
            if at > now_:
                continue
            if at >= t0 and (
                extreme is None or (price < extreme[0] if side > 0 else price > extreme[0])
            ):
                extreme = (price, at)
            if best is None or at > best[0]:
                best = (at, price)
    if best is None:
        return None
    return FreshMark(
        best[1],
        best[0].to_pydatetime(),
        None if extreme is None else extreme[0],
        None if extreme is None else extreme[1].to_pydatetime(),
    )


def fresh_checks(fresh: FreshMark | None, quote: QuoteRecord, order: Order) -> list[Check]:
    """The mark at the moment of buying against the one quoted (`QUOTE_DRIFT`): refused
    when it has reached the liquidation price since the quote, or come more than a fifth
    of the quoted distance closer."""
    side = order.side.sign
    lp, quoted = float(quote.liquidation_price), float(quote.spot)
    if fresh is None or lp <= 0 or quoted <= 0:
        return []

    def distance(mark: float) -> float:
        return side * (mark - lp) / mark

    reached = fresh.extreme is not None and distance(fresh.extreme) <= 0
    if reached or distance(fresh.price) <= 0:
        when = fresh.extreme_at if reached and fresh.extreme_at else fresh.at
        mark = fresh.extreme if reached and fresh.extreme is not None else fresh.price
        return [
            Check(
                "not_liquidated_since_quote",
                False,
                f"the mark price reached {mark:,.2f} at {when:%H:%M} UTC, through this "
                f"order's liquidation price {lp:,.2f}, after the quote: the position is "
                "already liquidated and cannot be insured; nothing was charged",
            )
        ]
    d_q, d_now = distance(quoted), distance(fresh.price)
    adl = quote.inputs.get("adl")
    if adl is not None:  # ADL cover: the move priced is the one *toward* the crash level
        level = float(adl["crash_level"])
        a_q, a_now = side * (level - quoted) / quoted, side * (level - fresh.price) / fresh.price
        if a_q > 0 and a_now < (1 - QUOTE_DRIFT) * a_q:
            return [
                Check(
                    "mark_moved_since_quote",
                    False,
                    f"the mark price moved from {quoted:,.2f} when quoted to "
                    f"{fresh.price:,.2f} ({fresh.at:%H:%M:%S} UTC), {a_now:.2%} from the crash "
                    f"level {level:,.2f} the ADL cover is priced on instead of {a_q:.2%}: ask "
                    "for a new quote",
                )
            ]
    if d_q > 0 and d_now < (1 - QUOTE_DRIFT) * d_q:
        return [
            Check(
                "mark_moved_since_quote",
                False,
                f"the mark price moved from {quoted:,.2f} when quoted to {fresh.price:,.2f} "
                f"({fresh.at:%H:%M:%S} UTC), {d_now:.2%} from the liquidation price "
                f"{lp:,.2f} instead of {d_q:.2%}: a quote holds while the mark stays within "
                f"{QUOTE_DRIFT:.0%} of its distance; ask for a new quote",
            )
        ]
    return []
