"""The probability that an exchange auto-deleverages (ADL) an insured position inside a cover
window, for pricing ADL cover (the model card: ``docs/model-card-adl.md``).

An exchange liquidates a bankrupt position into its insurance fund; when the fund cannot
absorb the loss (a fast move empties it), the exchange closes *profitable* positions on the
other side at the bankrupt one's price, highest in its ADL ranking first (Binance USDⓈ-M
"Auto-Deleveraging", ranking by profit × effective leverage, shown as a quantile 0…4; Bybit's
rank 1…5). So ADL needs two things at once:

- **a crash in the insured position's favour** that bankrupts the other side: the mark moves
  by at least ``CRASH_MOVE`` toward the insured position's profit inside the window,
  ``p_crash = P(first passage to spot · (1 ± CRASH_MOVE) within T)`` from the same Monte Carlo
  table that prices liquidation (GJR-GARCH-t paths, `risk.engine.SymbolRisk.probability`),
  times ``P_FUND_EMPTY``, the chance that such a crash empties the fund;
- **the queue reaching the position**: ``REACH[q]`` for ADL quantile ``q`` (1 when the exchange
  gives none).

    p_adl = max(FLOOR, P_FUND_EMPTY · p_crash · REACH[q])

Every constant errs toward a higher price, because the data are thin (exchanges publish no ADL
history): a slow move counts like a fast one, a quantile is read at the quote though a
favourable move raises it, and ``FLOOR`` prices the crash no model sees. The cover is capped
at ``CAP_SHARE`` of the position's margin (`policies.positions`), so an error in these
assumptions costs the pool little.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

#: the move in the insured position's favour that bankrupts the other side: BTC fell about
#: 15 % within the hour of 10 October 2025 (and −40 % on 12 March 2020) when Binance and Bybit
#: auto-deleveraged widely
CRASH_MOVE = 0.15
#: P(the insurance fund cannot absorb the bankrupt side | such a move)
P_FUND_EMPTY = 0.5
#: P(the ADL queue reaches a position | an ADL of its side), by Binance quantile 0…4 (each a
#: fifth of the ranking; 4 is deleveraged first)
REACH = (0.10, 0.20, 0.35, 0.60, 1.00)
#: the least probability charged for a window (the crash no model sees)
FLOOR = 0.005
#: ADL cover on one position is at most this share of its margin
CAP_SHARE = Decimal("0.25")


@dataclass(frozen=True)
class AdlRisk:
    """A position's ADL probability for one window, with the parts it is made of."""

    probability: float
    crash_probability: float  # P(the mark reaches ``crash_level`` inside the window)
    crash_level: float
    reach: float
    quantile: int | None
    floored: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def crash_level(spot: float, side: int) -> float:
    """The mark at which the other side of a ``side`` (+1 long, −1 short) position is bankrupt
    enough to empty the fund: ``spot · (1 + side · CRASH_MOVE)``."""
    return spot * (1 + side * CRASH_MOVE)


def reach(quantile: int | None) -> float:
    """`REACH` for a quantile 0…4; 1 for none (the exchange does not say)."""
    if quantile is None:
        return 1.0
    if not 0 <= quantile < len(REACH):
        raise ValueError(f"ADL quantile must be 0 to {len(REACH) - 1}; got {quantile}")
    return REACH[quantile]


def adl_probability(crash_probability: float, quantile: int | None, level: float) -> AdlRisk:
    """``max(FLOOR, P_FUND_EMPTY · crash_probability · REACH[quantile])`` (module docstring),
    ``crash_probability`` being the chance the mark reaches ``level`` (`crash_level`)."""
    if not 0.0 <= crash_probability <= 1.0:
        raise ValueError(f"crash probability must be in [0, 1]; got {crash_probability}")
    r = reach(quantile)
    raw = P_FUND_EMPTY * crash_probability * r
    return AdlRisk(max(FLOOR, raw), crash_probability, level, r, quantile, raw < FLOOR)
