"""How numbers read wherever BTI writes them for a person (alert messages, pages): never in
exponent notation."""

from __future__ import annotations

import math


def price_text(x: float) -> str:
    """A price as the pages show it: two decimals with thousands separators from 1 up
    (55,812.40), four significant digits below (0.3512, 0.0001230); "–" for no number."""
    if x is None or not math.isfinite(x):
        return "–"
    if abs(x) >= 1 or x == 0:
        return f"{x:,.2f}"
    decimals = 3 - math.floor(math.log10(abs(x)))
    return f"{x:.{decimals}f}"
