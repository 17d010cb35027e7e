"""The Buy page's form in its URL: a reload, a bookmark or a shared link shows the same order,
cover and (while it can still be bought) quote.

Everything in a link is typed by someone: a value that is not understood is left out, with a
note that says which and what is allowed, and the form keeps its default there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

SIDES = ("long", "short")
ORDER_TYPES = ("market", "limit")
MARGIN_MODES = ("isolated", "cross")
PERILS = ("liquidation", "adl")
MAX_NUMBER = 1e12  # above any quantity, price or amount BTI insures
_QUOTE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class BuyLink:
    """The form's values as a link holds them (``None``: not in the link, the form's default).
    ``duration`` in hours, ``share`` in percent."""

    symbol: str | None = None
    side: str | None = None
    order_type: str | None = None
    margin_mode: str | None = None
    qty: float | None = None
    price: float | None = None  # a limit order's
    leverage: int | None = None
    wallet: float | None = None  # cross margin's balance
    coverage: float | None = None
    duration: int | None = None
    share: int | None = None
    deductible: float | None = None
    position: int | None = None  # a linked position's id
    peril: str | None = None
    quote: str | None = None

    def to_params(self) -> dict[str, str]:
        """The link's query parameters (only the values set), numbers without needless
        figures."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            text = str(v)
            if isinstance(v, float):  # 5000, not 5000.0; all the figures typed (:g keeps six)
                text = f"{v:g}" if float(f"{v:g}") == v else repr(v)
            out[f.name] = text
        return out

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, str],
        *,
        symbols: Sequence[str],
        durations: Sequence[int],
    ) -> tuple[BuyLink, list[str]]:
        """The link's values that BTI understands, and a note for each one it does not."""
        problems: list[str] = []
        values: dict[str, object] = {}

        def choice(name: str, allowed: Sequence[str]) -> None:
            raw = params.get(name)
            if raw is None:
                return
            if raw in allowed:
                values[name] = raw
            else:
                problems.append(f"{name} {_shown(raw)}: one of {', '.join(allowed)}")

        def number(name: str, integer: bool = False, lo: float = 0, hi: float = MAX_NUMBER) -> None:
            raw = params.get(name)
            if raw is None:
                return
            try:
                v = float(raw)
            except ValueError:
                v = math.nan
            whole = math.isfinite(v) and v == int(v)
            if not math.isfinite(v) or not lo <= v <= hi or (integer and not whole):
                kind = "a whole number" if integer else "a number"
                problems.append(f"{name} {_shown(raw)}: {kind} from {lo:g} to {hi:g}")
                return
            values[name] = int(v) if integer else v

        choice("symbol", list(symbols))
        choice("side", SIDES)
        choice("order_type", ORDER_TYPES)
        choice("margin_mode", MARGIN_MODES)
        for name in ("qty", "price", "wallet", "coverage", "deductible"):
            number(name)
        number("leverage", integer=True, lo=2, hi=125)
        number("share", integer=True, lo=10, hi=100)
        if values.get("share", 0) % 5:  # type: ignore[operator]
            problems.append(f"share {_shown(params['share'])}: 10 to 100 in steps of 5")
            del values["share"]
        number("position", integer=True, lo=1, hi=2**63 - 1)
        raw_duration = params.get("duration")
        if raw_duration is not None:
            if raw_duration.isdigit() and int(raw_duration) in durations:
                values["duration"] = int(raw_duration)
            else:
                allowed = ", ".join(str(d) for d in durations)
                problems.append(f"duration {_shown(raw_duration)}: hours, one of {allowed}")
        choice("peril", PERILS)
        raw_quote = params.get("quote")
        if raw_quote is not None:
            if _QUOTE_ID.match(raw_quote):
                values["quote"] = raw_quote
            else:
                problems.append(f"quote {_shown(raw_quote)}: a quote's id (32 hex digits)")
        return cls(**values), problems  # type: ignore[arg-type]


def _shown(raw: str) -> str:
    """A typed value as a note quotes it: short, whatever was typed."""
    return repr(raw if len(raw) <= 24 else raw[:24] + "…")
