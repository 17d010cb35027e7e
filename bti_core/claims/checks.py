"""Automatic audit of a claim (pure): each check returns pass / fail / unsure with its evidence.

Hard checks (a fail denies the claim automatically): the trigger lies inside the policy's window;
the mark price confirms the liquidation (a last-price wick alone liquidates nobody); a trader's
exchange record matches the insured terms. Soft checks (a non-pass refers the claim to an
underwriter): adverse selection, the trader's signals, the model's score at purchase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNSURE = "unsure"


HARD = frozenset({"in_window", "mark_confirms", "terms_match"})
# what each check asks, in words (pages and reasons say these, not the names)
TITLES = {
    "in_window": "Inside the cover window",
    "mark_confirms": "Mark price reached the liquidation price",
    "terms_match": "Trader's record matches the policy",
    "adverse_selection": "Not bought into a move",
    "user_signals": "Trader's history",
    "model_score": "Model's expectation",
    "exchange_confirms": "The exchange's own record",
}


def title(name: str) -> str:
    return TITLES.get(name, name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class AuditCheck:
    name: str
    outcome: Outcome
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


@dataclass(frozen=True)
class PolicyFacts:
    side: str
    symbol: str
    quantity: float
    entry_price: float
    leverage: float
    liquidation_price: float
    start: datetime
    end: datetime
    probability: float  # model's P(liquidation) at purchase
    risk_index: float
    bought: datetime | None = None  # the purchase (``start`` unless the cover was continued)


@dataclass(frozen=True)
class ClaimFacts:
    source: str  # market_scan / stream / trader
    trigger_at: datetime
    bars: list[dict[str, Any]]  # evidence window: ts, high, low (mark), last_high, last_low
    record: dict[str, Any] | None = None  # a trader's exchange liquidation record
    exchange: dict[str, Any] | None = None  # the exchange's ADL record (`claims.exchange`)
    pre_purchase_move: float | None = None  # mark's move toward LP over the 24 h before purchase
    distance_at_purchase: float | None = None  # |mark − LP| / mark at purchase
    # the proof (`market.triggers`, `claims.proof`): the bar that proves the liquidation, from
    # its open to its close — or, for a stream's ticks, the run of ticks beyond the level
    proof_bar: datetime | None = None
    until: datetime | None = None
    confirmation: dict[str, Any] | None = None

    @classmethod
    def of(
        cls, source: str, trigger_at: datetime, evidence: dict[str, Any], **kw: Any
    ) -> ClaimFacts:
        """The facts a claim's stored evidence holds (`ClaimsService` writes it)."""

        def when(key: str) -> datetime | None:
            v = evidence.get(key)
            return None if v is None else _ts(v)

        return cls(
            source=source,
            trigger_at=trigger_at,
            bars=list(evidence.get("bars", [])),
            record=evidence.get("record"),
            exchange=evidence.get("exchange"),
            proof_bar=when("bar"),
            until=when("until"),
            confirmation=evidence.get("confirmation"),
            **kw,
        )


@dataclass(frozen=True)
class TraderFacts:
    claims_last_30d: int = 0
    earlier_claims: int = 0
    earlier_leverages: tuple[float, ...] = ()
    # other traders who paid from the same wallet or filed records of the same exchange account
    shared_owner_with: tuple[str, ...] = ()


def in_window(p: PolicyFacts, c: ClaimFacts) -> AuditCheck:
    """The liquidation lies inside ``[start, end)``: its moment, and the whole span of the bar
    that proves it (a bar proves the mark was there somewhere in its span, so one that starts
    before the purchase or ends after the window proves no time inside it)."""
    first = min(c.trigger_at, c.proof_bar) if c.proof_bar is not None else c.trigger_at
    last = c.until if c.until is not None else None
    ev = {
        "trigger_at": c.trigger_at.isoformat(),
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        **({"proof_until": last.isoformat()} if last is not None else {}),
    }
    inside = p.start <= first and c.trigger_at < p.end and (last is None or last <= p.end)
    if inside:
        return AuditCheck(
            "in_window", Outcome.PASS, "the liquidation is inside the cover window", ev
        )
    what = (
        f"the liquidation at {c.trigger_at:%Y-%m-%d %H:%M} UTC"
        if last is None or (p.start <= first and not c.trigger_at < p.end)
        else f"the bar that proves it ({first:%Y-%m-%d %H:%M} – {last:%H:%M} UTC)"
    )
    return AuditCheck(
        "in_window",
        Outcome.FAIL,
        f"{what} is outside the cover window "
        f"({p.start:%Y-%m-%d %H:%M} – {p.end:%Y-%m-%d %H:%M} UTC)",
        ev,
    )


def mark_confirms(p: PolicyFacts, c: ClaimFacts) -> AuditCheck:
    """The mark price reached the liquidation price: in the bar that proves the claim (the bar
    holding its time where no proof bar is named), or — for a stream's claim — over the run of
    ticks that stayed beyond the level for the confirmation window."""
    lp = p.liquidation_price
    key_mark, key_last = ("low", "last_low") if p.side == "long" else ("high", "last_high")
    below = "below" if p.side == "long" else "above"

    def reached(v: Any) -> bool:
        return v is not None and (v <= lp if p.side == "long" else v >= lp)

    run = c.confirmation
    if run is not None and run.get("by") == "persistence":
        ev = {"liquidation_price": lp, "confirmation": run}
        held = float(run.get("seconds", 0))
        need = float(run.get("required_seconds", 0))
        extreme = run.get("extreme")
        if held >= need > 0 and reached(extreme) and reached(run.get("last_price")):
            return AuditCheck(
                "mark_confirms",
                Outcome.PASS,
                f"the mark price stayed {below} the liquidation price {lp:,.2f} for "
                f"{held:,.0f} s ({int(run.get('ticks', 0))} ticks from {run.get('stream')}; "
                f"{need:,.0f} s confirm a liquidation)",
                {**ev, "mark_extreme": extreme, "mark_at_trigger": run.get("first_price")},
            )
        return AuditCheck(
            "mark_confirms",
            Outcome.FAIL,
            f"the ticks beyond the liquidation price lasted {held:,.0f} s, under the "
            f"{need:,.0f} s that confirm a liquidation",
            ev,
        )
    at = c.proof_bar or c.trigger_at
    bars = [b for b in c.bars if b.get("ts") is not None]
    holding = [b for b in bars if _ts(b["ts"]) <= at]
    bar = max(holding, key=lambda b: _ts(b["ts"])) if holding else None
    if bar is None:
        return AuditCheck("mark_confirms", Outcome.UNSURE, "no mark-price bar holds the event")
    when = f"{_ts(bar['ts']):%Y-%m-%d %H:%M} UTC"
    ev = {"liquidation_price": lp, "bar": bar["ts"], "trigger_at": c.trigger_at.isoformat()}
    if reached(bar.get(key_mark)):
        mark = float(bar[key_mark])
        return AuditCheck(
            "mark_confirms",
            Outcome.PASS,
            f"the mark price reached {mark:,.2f} in the bar of {when}, {below} the liquidation "
            f"price {lp:,.2f}",
            {**ev, "mark_extreme": mark, "mark_at_trigger": mark},
        )
    if reached(bar.get(key_last)):
        return AuditCheck(
            "mark_confirms",
            Outcome.FAIL,
            "only the last price reached the liquidation price; the mark price did not, and "
            "liquidation triggers on the mark price (a last-price wick liquidates nobody)",
            ev,
        )
    return AuditCheck(
        "mark_confirms",
        Outcome.FAIL,
        f"the mark price did not reach the liquidation price {lp:,.2f} in the bar of {when} "
        f"(its {key_mark} was {float(bar.get(key_mark) or 0):,.2f})",
        ev,
    )


def terms_match(p: PolicyFacts, c: ClaimFacts, tolerance: float = 0.01) -> AuditCheck:
    if c.source != "trader" or c.record is None:
        return AuditCheck(
            "terms_match", Outcome.PASS, "opened from the insured terms by the market scan"
        )
    r = c.record
    problems = []
    if str(r.get("symbol", "")).upper() != p.symbol:
        problems.append(f"symbol {r.get('symbol')} is not the insured {p.symbol}")
    if str(r.get("side", "")).lower() != p.side:
        problems.append(f"side {r.get('side')} is not the insured {p.side}")
    qty = float(r.get("quantity", "nan"))
    if not abs(qty - p.quantity) <= tolerance * p.quantity:
        problems.append(
            f"quantity {qty:g} differs from the insured {p.quantity:g} by more than 1 %"
        )
    price = float(r.get("price", "nan"))
    if not abs(price - p.liquidation_price) <= 0.05 * p.liquidation_price:
        problems.append(
            f"liquidation price {price:,.2f} is more than 5 % from the insured "
            f"{p.liquidation_price:,.2f}"
        )
    if problems:
        return AuditCheck("terms_match", Outcome.FAIL, "; ".join(problems), {"record": r})
    return AuditCheck(
        "terms_match", Outcome.PASS, "the exchange record matches the insured order", {"record": r}
    )


def adverse_selection(p: PolicyFacts, c: ClaimFacts, *, confirmed: bool = False) -> AuditCheck:
    """Signs the cover was bought into a move: a liquidation within an hour of buying it (not
    a sign on its own when the exchange's own record ``confirmed`` the liquidation of a linked
    position: the record rules out a glitch or a forged trigger, and the premium priced that
    hour), or a purchase while the mark was moving toward liquidation faster than the distance
    left."""
    flags = []
    bought = p.bought or p.start
    if c.trigger_at - bought < timedelta(hours=1) and not confirmed:
        flags.append("liquidated within an hour of buying the cover")
    if (
        c.pre_purchase_move is not None
        and c.distance_at_purchase is not None
        and c.pre_purchase_move > c.distance_at_purchase
    ):
        flags.append(
            "bought while the mark was moving fast toward liquidation "
            f"({c.pre_purchase_move:.1%} in the 24 h before purchase, more than the "
            f"{c.distance_at_purchase:.1%} left)"
        )
    ev = {
        "hours_from_purchase": round((c.trigger_at - bought).total_seconds() / 3600, 2),
        "pre_purchase_move": c.pre_purchase_move,
        "distance_at_purchase": c.distance_at_purchase,
    }
    if flags:
        return AuditCheck("adverse_selection", Outcome.UNSURE, "; ".join(flags), ev)
    return AuditCheck(
        "adverse_selection", Outcome.PASS, "no sign the cover was bought into a move", ev
    )


def user_signals(p: PolicyFacts, t: TraderFacts) -> AuditCheck:
    flags = []
    if t.claims_last_30d >= 3:
        flags.append(f"{t.claims_last_30d} claims in the last 30 days")
    if t.earlier_claims >= 2:
        flags.append(f"{t.earlier_claims} earlier claims: repeated near-liquidation trading")
    if t.shared_owner_with:
        flags.append(
            "the same wallet or exchange account appears for other traders: "
            + ", ".join(t.shared_owner_with)
        )
    if t.earlier_leverages:
        typical = sorted(t.earlier_leverages)[len(t.earlier_leverages) // 2]
        if p.leverage >= 2 * typical:
            flags.append(
                f"leverage {p.leverage:g}× is at least twice the trader's usual {typical:g}×"
            )
    ev = {
        "claims_last_30d": t.claims_last_30d,
        "earlier_claims": t.earlier_claims,
        "earlier_leverages": list(t.earlier_leverages),
        "shared_owner_with": list(t.shared_owner_with),
    }
    if flags:
        return AuditCheck("user_signals", Outcome.UNSURE, "; ".join(flags), ev)
    return AuditCheck("user_signals", Outcome.PASS, "nothing unusual in the trader's record", ev)


def model_score(
    p: PolicyFacts, probability_before_trigger: float | None = None, floor: float = 0.01
) -> AuditCheck:
    """The model at purchase against the model just before the trigger (the probability, from
    the bar before the event, of reaching the liquidation price in the window's remaining
    time): a liquidation the model gave under ``floor`` both times is a surprise."""
    ev = {
        "probability_at_purchase": p.probability,
        "probability_before_trigger": probability_before_trigger,
        "risk_index": p.risk_index,
    }
    before = probability_before_trigger
    if p.probability < floor and (before is None or before < floor):
        return AuditCheck(
            "model_score",
            Outcome.UNSURE,
            f"the model gave this liquidation {p.probability:.2%} at purchase (under {floor:.0%}): "
            "a surprise worth a look",
            ev,
        )
    tail = f", {before:.1%} just before the event" if before is not None else ""
    return AuditCheck(
        "model_score",
        Outcome.PASS,
        f"the model priced it at {p.probability:.1%} at purchase{tail}",
        ev,
    )


def exchange_confirms(
    p: PolicyFacts, record: dict[str, Any], *, waited: bool, wait_minutes: float
) -> AuditCheck | None:
    """A linked policy's claim against the exchange's forced orders (`claims.exchange`): pass
    on a liquidation of the insured side inside the window; ``None`` (decide later) while the
    record is not there and the wait is not over; then unsure, so an underwriter sees the mark's
    fact and the exchange's silence side by side."""
    state = record.get("state")
    orders = record.get("orders", [])
    if state == "confirmed" and orders:
        first, more = orders[0], len(orders) - 1
        total = sum(float(o["quantity"]) for o in orders)
        price = float(first["price"])
        did = "auto-deleveraged" if record.get("kind") == "adl" else "liquidated"
        return AuditCheck(
            "exchange_confirms",
            Outcome.PASS,
            f"the exchange {did} {total:g} {p.symbol} {p.side} at {price:,.2f} on "
            f"{_ts(first['time']):%Y-%m-%d %H:%M:%S} UTC (order {first['order_id']}"
            f"{f' and {more} more' if more else ''})",
            {"record": record},
        )
    if not waited:
        return None
    why = (
        f"the exchange could not be read ({record.get('error')})"
        if state == "unreachable"
        else "the exchange has no liquidation of this position inside the window"
    )
    return AuditCheck(
        "exchange_confirms",
        Outcome.UNSURE,
        f"{why}; waited {wait_minutes:g} minutes after the mark reached the liquidation price "
        f"(asked at {_ts(record.get('asked_at')):%H:%M:%S} UTC)",
        {"record": record},
    )


def adl_checks(p: PolicyFacts, c: ClaimFacts, t: TraderFacts) -> list[AuditCheck]:
    """Every check of a claim on auto-deleveraging cover, opened on the exchange's ADL record
    (``c.exchange``): the record inside the window and confirming, and the trader's history.
    No mark can show an ADL, so the mark's checks do not apply."""
    record = c.exchange or {}
    confirms = exchange_confirms(p, record, waited=True, wait_minutes=0)
    assert confirms is not None
    if record.get("kind") != "adl":
        confirms = AuditCheck(
            "exchange_confirms",
            Outcome.FAIL,
            "an ADL claim needs the exchange's auto-deleveraging record",
            {"record": record},
        )
    return [in_window(p, c), confirms, user_signals(p, t)]


def hard_checks(p: PolicyFacts, c: ClaimFacts) -> list[AuditCheck]:
    """The checks a claim must pass before it is opened at all (a trigger that fails one is
    refused and uses up nothing): inside the window, the mark reached the level, the record
    matches the insured terms."""
    return [in_window(p, c), mark_confirms(p, c), terms_match(p, c)]


def audit(
    p: PolicyFacts,
    c: ClaimFacts,
    t: TraderFacts,
    probability_before_trigger: float | None = None,
    *,
    confirmed: bool = False,
) -> list[AuditCheck]:
    """Every check; ``confirmed``: the exchange's own record confirmed the liquidation."""
    return [
        in_window(p, c),
        mark_confirms(p, c),
        terms_match(p, c),
        adverse_selection(p, c, confirmed=confirmed),
        user_signals(p, t),
        model_score(p, probability_before_trigger),
    ]


def _ts(v: Any) -> datetime:
    import pandas as pd

    return pd.Timestamp(v).to_pydatetime()
