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


def duration_text(seconds: float) -> str:
    """A span as a person says it: ``2 min``, ``36 h``, ``7 days`` (whole units, the largest
    that fits; ``0 s`` for none)."""
    s = max(0, round(seconds))
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= size and (s % size == 0 or s >= 2 * size):
            n = s / size
            text = f"{n:g}" if n == int(n) else f"{n:.1f}"
            return f"{text} {'day' if unit == 'days' and n == 1 else unit}"
    return f"{s} s"
