"""Sentences for the pages: lifecycle events and amounts in words a trader reads (pure)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

Link = Callable[[object, str], str]  # (what to search in the explorer, text) → markdown link


def bti(amount: object) -> str:
    """``1234.5`` → ``1,234.50 BTI``."""
    return f"{float(str(amount)):,.2f} BTI"


def compact(amount: object) -> str:
    """An amount short enough for a row of six metrics (the unit goes in the label, the exact
    figure in the help): ``9,876``, ``14.4k``, ``1.23M``."""
    x = float(str(amount))
    if abs(x) < 1e4:
        return f"{x:,.0f}".replace("-", "−")
    for div, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "B")):
        short = f"{x / div:.3g}"
        if abs(float(short)) < 1000:
            return f"{short}{suffix}".replace("-", "−")
    return f"{x / 1e9:,.0f}B".replace("-", "−")


def when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _tx(detail: dict[str, Any], link: Link) -> str:
    tx = detail.get("tx")
    return f" (transaction {link(tx, str(tx)[:10] + '…')})" if isinstance(tx, str) and tx else ""


#: where a claim came from (``Claim.source``): a word for a table, and a phrase for a sentence
CLAIM_SOURCES: dict[str, tuple[str, str]] = {
    "market_scan": ("market", "found in the market"),
    "stream": ("price stream", "seen by the price stream, confirmed"),
    "trader": ("trader's record", "filed with the trader's exchange record"),
    "exchange_adl": ("exchange ADL record", "opened on the exchange's auto-deleveraging record"),
}


def claim_source(source: str, *, short: bool = False) -> str:
    """``source`` in words (`CLAIM_SOURCES`); an unknown one as it is stored."""
    words = CLAIM_SOURCES.get(source)
    return source if words is None else words[0 if short else 1]


def _position_change(change: str, d: dict[str, Any]) -> str:
    """A change the exchange reported of an insured position, with the figures that moved."""
    before, after = d.get("before") or {}, d.get("after") or {}
    moved = [
        f"{name} {before[k]} → {after[k]}"
        for k, name in (
            ("size", "size"),
            ("leverage", "leverage"),
            ("margin", "margin"),
            ("liquidation_price", "liquidation price"),
        )
        if k in before and k in after and before[k] != after[k]
    ]
    words = {
        "opened": "opened",
        "grown": "grew",
        "reduced": "was reduced",
        "margin": "had its margin changed",
        "leverage": "had its leverage changed",
        "closed": "was closed",
        "reopened": "was opened again",
    }.get(change, change)
    return f"The exchange reports the position {words}" + (f": {'; '.join(moved)}" if moved else "")


def _priced(d: dict[str, Any], link: Link) -> str:
    """What a change cost: its charge or refund, and the transaction."""
    charge, refund = float(d.get("charge", 0)), float(d.get("refund", 0))
    paid = f"; {bti(charge)} paid" if charge else f"; {bti(refund)} refunded" if refund else ""
    return f"{paid} (credit {bti(d.get('credit', 0))} for the unused premium){_tx(d, link)}"


def policy_event(event: str, detail: dict[str, Any], at: datetime, link: Link) -> str:
    """One lifecycle event as a dated sentence."""
    d = detail or {}
    match event:
        case "created":
            text = "Policy created from the quote; the premium is being paid on-chain"
        case "premium_collected":
            chain_id = d.get("chain_policy_id")
            token = f" · on-chain policy {link(f'policy {chain_id}', f'#{chain_id}')}"
            text = (
                f"Premium of {bti(d.get('amount', 0))} collected"
                f"{token if chain_id is not None else ''}{_tx(d, link)}"
            )
        case "active":
            until = d.get("until")
            text = "Cover active" + (
                f" until {datetime.fromisoformat(until):%Y-%m-%d %H:%M} UTC" if until else ""
            )
        case "declined":
            reasons = d.get("reasons") or []
            text = "Declined, no premium taken" + (
                ": " + "; ".join(map(str, reasons)) if reasons else ""
            )
        case "expired" if d.get("closed_at"):
            text = "Cover ended: the position was closed on the exchange (no refund)"
        case "expired":
            text = "Cover window ended without a liquidation"
        case str(e) if e.startswith("position "):
            text = _position_change(e.removeprefix("position "), d)
        case "claimed":
            source = str(d.get("source"))
            said = "filed by you" if source == "trader" else claim_source(source)
            text = f"Claim #{d.get('claim_id')} opened ({said})"
        case "paid":
            text = f"Claim #{d.get('claim_id')} paid: {bti(d.get('amount', 0))}{_tx(d, link)}"
        case "claim_refused":
            reasons = d.get("reasons") or []
            text = "A liquidation record was refused; the cover still stands" + (
                ": " + "; ".join(map(str, reasons)) if reasons else ""
            )
        case "extended":
            end = (d.get("end") or {}).get("to")
            text = (
                f"Cover extended until {datetime.fromisoformat(end):%Y-%m-%d %H:%M} UTC"
                if end
                else "Cover extended"
            ) + _priced(d, link)
        case "raised":
            cov = (d.get("coverage") or {}).get("to")
            text = (f"Cover raised to {float(cov):,.2f} USDT" if cov else "Cover raised") + _priced(
                d, link
            )
        case "cancelled":
            text = f"Cancelled by you: {bti(d.get('refund', 0))} of unused premium refunded" + _tx(
                d, link
            )
        case "continued":
            text = (
                f"Partly liquidated: the cover goes on for the remaining {d.get('quantity')} as "
                f"policy #{d.get('policy_id')} (pays up to {bti(d.get('kept', 0))})"
            )
        case "continuation_of":
            text = (
                f"The cover of policy #{d.get('policy_id')} on what the partial liquidation "
                f"left ({d.get('liquidated')} liquidated and paid there)"
            )
        case "renewal_consented":
            n = int(d.get("times", 1))
            text = (
                f"Automatic renewal agreed: {n} time{'s' if n != 1 else ''}, at most "
                f"{bti(d.get('max_premium', 0))} each"
            )
        case "renewal_withdrawn":
            text = "Automatic renewal withdrawn by you"
        case "renewal_stopped":
            text = f"Automatic renewal stopped: {d.get('reason', '')}"
        case "renewed":
            text = (
                f"Renewed automatically as policy #{d.get('policy_id')} "
                f"({bti(d.get('premium', 0))} premium)"
            )
        case "renewal_of":
            text = f"Bought automatically: the renewal of policy #{d.get('policy_id')}"
        case "cover_released":
            text = f"The pool released the cover it had locked{_tx(d, link)}"
        case _:
            extra = ", ".join(f"{k} {v}" for k, v in d.items())
            text = event.replace("_", " ").capitalize() + (f" ({extra})" if extra else "")
    return f"**{at:%Y-%m-%d %H:%M}** UTC · {text}"


def why_probability(p: float, baseline: float) -> str:
    """Plain words for a trader on BTI's probability beside the textbook (GBM) one: why fat
    tails and volatility clustering make it higher (or, rarely, lower)."""
    if baseline <= 0 or p <= 0:
        return (
            "The chance the mark price reaches your liquidation price before the cover ends, "
            "from thousands of simulated price paths."
        )
    ratio = p / baseline
    if ratio >= 1.5:
        return (
            f"BTI's chance is {ratio:,.1f}× the textbook figure: crypto prices jump more often "
            "than a bell curve allows (fat tails), and a volatile hour tends to be followed by "
            "another (clustering), so a liquidation price is reached more often than a calm "
            "average suggests. The premium is priced on BTI's figure."
        )
    if ratio <= 1 / 1.5:
        return (
            f"BTI's chance is {1 / ratio:,.1f}× below the textbook figure: the market is "
            "calmer now than over the last month, and the simulated paths start from today's "
            "volatility."
        )
    return "BTI's chance is close to the textbook figure: the market is behaving like its average."


#: each forecaster in a trader's words (`risk.forecast.FORECASTERS`)
FORECASTERS: dict[str, str] = {
    "random_walk": "today's price spread by its recent swings (a random walk)",
    "prophet": "the price's trend and daily and weekly rhythm (Prophet)",
    "ewma": "recent swings, the latest counting most (EWMA)",
    "garch": "recent swings, calm and stormy spells each lasting a while (GARCH)",
    "har": "the swings of the last day, week and month together (HAR)",
}


def forecaster(name: str) -> str:
    """A forecaster as a caption names it: what it reads, its name in brackets."""
    return FORECASTERS.get(name, name.replace("_", " "))
