"""Quoting: price an order's cover from the symbol's shared Monte Carlo table, explain it
with the risk index and check it against underwriting; the quote is stored with an expiry."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlmodel import Session

from bti_core.auth import AuthError
from bti_core.db.engine import session_scope
from bti_core.db.models import AppUser, Policy, QuoteRecord
from bti_core.db.repository import (
    add_quote,
    claim_outcomes,
    get_quote,
    open_cover_of,
    open_cover_summary,
    open_positions,
    policy_for_quote,
    refused_filings,
    user_policy_rows,
)
from bti_core.db.statuses import Peril, PolicyStatus
from bti_core.errors import BTIError
from bti_core.orders import Cover, MarginMode, Order, OrderError
from bti_core.policies.context import PolicyContext
from bti_core.policies.positions import (
    PositionTerms,
    adl_cap,
    cover_on,
    lp_warning,
    position_order,
)
from bti_core.pricing import Premium, PricingConfig, price, reprice
from bti_core.risk.adl import CRASH_MOVE, P_FUND_EMPTY, AdlRisk, adl_probability, crash_level
from bti_core.risk.engine import SymbolRisk
from bti_core.risk.index import Contribution, RiskIndex, TraderHistory, macro_signal_at, risk_index
from bti_core.risk.liquidation import brackets_for, liquidation_price
from bti_core.underwriting import (
    LEVERAGE_BUCKETS,
    Check,
    Exposure,
    check_concentration,
    check_cover,
    check_market_entry,
    check_premium,
    leverage_band,
    same_position,
    smallest_order,
)

if TYPE_CHECKING:
    pass

PRICE_PLACES = Decimal("0.00000001")
ROLE_TTL = 30.0  # seconds a quote trusts a role it has seen


class QuoteError(BTIError, LookupError):
    """A quote that cannot be bought (unknown, someone else's)."""


@dataclass(frozen=True)
class QuoteView:
    record: QuoteRecord
    order: Order
    cover: Cover
    risk: RiskIndex
    premium: Premium
    checks: list[Check]
    model: str = ""  # what the probability was simulated from (`SymbolRisk.model_summary`)
    learned: str = ""  # the learned model consulted, and whether it priced the premium
    position: PositionTerms | None = None  # the linked exchange position insured, if any
    warnings: list[str] = field(default_factory=list)  # worth reading before buying
    peril: Peril = Peril.LIQUIDATION  # what the cover pays for

    @property
    def insurable(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x))).quantize(PRICE_PLACES, rounding=ROUND_HALF_UP)


class Quoting:
    """Prices and stores quotes; also the reads a purchase shares with it (a trader's role,
    exposure and cover on a position)."""

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    def allowed_symbols(self) -> list[str]:
        return self.ctx.risk.warehouse.symbols()

    def trader_history(self, user_id: str, s: Session | None = None) -> TraderHistory:
        """The trader's record for the risk index (in ``s`` when given)."""
        if s is None:
            with session_scope(self.ctx.db) as fresh:
                return self.trader_history(user_id, fresh)
        return self._history(s, user_id, user_policy_rows(s, user_id=user_id))

    @staticmethod
    def _history(
        s: Session, user_id: str, rows: Sequence[tuple[str, Decimal, str, Decimal]]
    ) -> TraderHistory:
        mine = [
            (status, lev)
            for u, _, status, lev in rows
            if u == user_id and status != PolicyStatus.DECLINED
        ]
        if not mine:
            return TraderHistory()
        liquidations = claims = 0
        if any(status in ("claimed", "paid") for status, _ in mine):  # every claim does that
            outcomes = claim_outcomes(s, user_id=user_id)
            claims = len(outcomes)
            # a liquidation the market showed, or one paid on the trader's own record
            liquidations = sum(
                src in ("market_scan", "stream") or st == "paid" for src, st in outcomes
            )
        claims += refused_filings(s, user_id=user_id)  # records that proved nothing count too
        return TraderHistory(
            policies=len(mine),
            liquidations=liquidations,
            claims=claims,
            average_leverage=float(np.mean([float(lev) for _, lev in mine])),
        )

    def restore(self, *, user_id: str, quote_id: str) -> QuoteView:
        """A stored quote as `quote` returned it, for the trader who asked for it, while it can
        still be bought (the Buy page shows it again after a reload). `QuoteError` when it is
        unknown or someone else's (one message for both: an id proves nothing), bought, or
        expired. The learned model's note is not stored, so it is not shown again."""
        with session_scope(self.ctx.db) as s:
            r = get_quote(s, quote_id=quote_id)
            bought = None if r is None else policy_for_quote(s, quote_id=quote_id)
        if r is None or r.user_id != user_id:
            raise QuoteError(f"there is no quote {quote_id[:8]} of yours")
        if bought is not None:
            raise QuoteError(f"quote {quote_id[:8]} was bought: it is policy #{bought.id}")
        if r.expires_at <= self.ctx.clock():
            raise QuoteError(
                f"quote {quote_id[:8]} expired at {r.expires_at:%H:%M:%S} UTC; ask for a new one"
            )
        order, cover = order_and_cover(r)
        position = PositionTerms.of_json(r.inputs["position"]) if "position" in r.inputs else None
        return QuoteView(
            r,
            order,
            cover,
            RiskIndex(r.risk_index, tuple(Contribution(**c) for c in r.risk_breakdown)),
            Premium.of_json(r.premium_breakdown),
            [Check(**c) for c in r.checks],
            self.ctx.risk.symbol_risk(r.symbol).model_summary(),
            "",
            position,
            _warnings(order, position),
            peril_of(r),
        )

    @staticmethod
    def position_cover(s: Session, user_id: str, order: Order) -> Decimal:
        """The open cover ``user_id`` already has on the position ``order`` describes."""
        rows = open_positions(s, user_id=user_id, symbol=order.symbol, side=str(order.side))
        return sum(
            (
                cov
                for q, ep, cov in rows
                if same_position(order, order.symbol, str(order.side), q, ep)
            ),
            Decimal(0),
        )

    def exposure_now(self, s: Session) -> Exposure:
        """The open cover in ``s`` as the concentration caps read it (one read): by symbol,
        side and leverage band, and what a market-wide move of `Limits.crash_move` against
        each side would claim at each stored symbol's mark now."""
        move = float(self.ctx.limits.crash_move)
        marks = {sym: m for sym in self.allowed_symbols() if (m := self._mark(sym)) is not None}
        rows = open_cover_summary(
            s,
            LEVERAGE_BUCKETS,
            falls_to={sym: m * (1 - move) for sym, m in marks.items()},
            rises_to={sym: m * (1 + move) for sym, m in marks.items()},
        )
        crash = {"long": Decimal(0), "short": Decimal(0)}
        for _, side, _, _, claimed in rows:
            crash[side] = crash.get(side, Decimal(0)) + claimed
        return Exposure(
            by_band={(sym, side, band): total for sym, side, band, total, _ in rows},
            crash=crash,
        )

    def concentration_now(self) -> Exposure:
        """`exposure_now` in a read of its own (the Risk queries page)."""
        with session_scope(self.ctx.db) as s:
            return self.exposure_now(s)

    def _mark(self, symbol: str) -> float | None:
        """``symbol``'s mark now; None (its cover counted whole by the caps) when no bars are
        stored or the stored mark is no price (not finite, or not above zero)."""
        try:
            mark = self.ctx.risk.spot(symbol)
        except BTIError:
            return None
        return mark if math.isfinite(mark) and mark > 0 else None

    def concentration(
        self,
        order: Order,
        cover: Cover,
        liquidation_price: float | None,
        exposure: Exposure,
        *,
        spot: float | None = None,
    ) -> list[Check]:
        """The pool's concentration caps (`underwriting.check_concentration`) against
        ``exposure`` (`exposure_now`)."""
        return check_concentration(
            order,
            cover,
            liquidation_price=liquidation_price,
            exposure=exposure,
            mark=spot if spot is not None else self._mark(order.symbol),
            limits=self.ctx.limits,
        )

    def require_trader(self, user_id: str, s: Session | None = None) -> None:
        """Underwriters do not buy cover with their account (read fresh: `buy` calls it)."""
        if s is None:
            with session_scope(self.ctx.db) as fresh:
                return self.require_trader(user_id, fresh)
        user = s.get(AppUser, user_id)
        self._roles[user_id] = (None if user is None else user.role, time.monotonic())
        self._refuse_underwriter(user_id, None if user is None else user.role)

    @cached_property
    def _roles(self) -> dict[str, tuple[str | None, float]]:
        return {}

    def _role_for_quote(self, s: Session, user_id: str) -> None:
        """The role check of a quote (no money moves on a quote: a role seen in the last
        ``ROLE_TTL`` seconds is trusted; `buy` checks afresh)."""
        seen = self._roles.get(user_id)
        if seen is None or time.monotonic() - seen[1] > ROLE_TTL:
            return self.require_trader(user_id, s)
        self._refuse_underwriter(user_id, seen[0])

    @staticmethod
    def _refuse_underwriter(user_id: str, role: str | None) -> None:
        if role == "underwriter":
            raise AuthError(
                f"{user_id} is an underwriter: underwriters decide claims and do not buy "
                "cover with that account; sign in as a trader to insure an order"
            )

    def quote_position(
        self,
        *,
        user_id: str,
        position_id: int,
        cover: Cover,
        peril: Peril = Peril.LIQUIDATION,
    ) -> QuoteView:
        """Price cover on a linked exchange position (`positions.position_order`: the
        exchange's numbers and its liquidation price) against ``peril`` and store the quote."""
        with session_scope(self.ctx.db) as s:
            order, terms = position_order(s, user_id, position_id, self.ctx.clock())
        return self.quote(user_id=user_id, order=order, cover=cover, position=terms, peril=peril)

    def quote(
        self,
        *,
        user_id: str,
        order: Order,
        cover: Cover,
        position: PositionTerms | None = None,
        peril: Peril = Peril.LIQUIDATION,
        replacing: Policy | None = None,
    ) -> QuoteView:
        """Price the cover of an order and store the quote (with any failed checks); with
        ``position``, the order is that linked position's and its liquidation price the
        exchange's. ``peril`` ADL (a linked position only) prices auto-deleveraging cover
        (`risk.adl`): it pays its amount, so it has no share or deductible. ``replacing``: the
        open policy this cover would replace (a change, `changes`): its own cover is left out
        of the trader's, the position's, the pool's and the symbol's and band's open cover
        (not of the crash cap's: the cautious reading)."""
        adl_cover = peril is Peril.ADL
        if adl_cover and position is None:
            raise OrderError(
                "auto-deleveraging cover is sold on a linked exchange position only (its claim "
                "is the exchange's ADL record): link the account, then pick the position"
            )
        if adl_cover and (cover.share != 1 or cover.deductible != 0):
            raise OrderError(
                "auto-deleveraging cover pays its whole amount: leave the covered share at 1 "
                "and the deductible at 0"
            )
        with session_scope(self.ctx.db) as s:  # who asks, what is open, their record
            self._role_for_quote(s, user_id)
            rows = user_policy_rows(s, user_id=user_id)
            exposure = self.exposure_now(s)  # the pool's open cover is its total
            mine, pool = open_cover_of(s, user_id=user_id), exposure.total
            history = self._history(s, user_id, rows)
            on_position = self.position_cover(s, user_id, order)
            if replacing is not None:
                own = replacing.coverage
                mine, pool, on_position = mine - own, pool - own, max(Decimal(0), on_position - own)
                exposure = exposure.without(
                    replacing.symbol, replacing.side, leverage_band(replacing.leverage), own
                )
            if position is not None:
                on_position = max(on_position, cover_on(s, position.position_id))
                adl_held = cover_on(s, position.position_id, Peril.ADL)
        now = self.ctx.clock()
        sr = self.ctx.risk.symbol_risk(order.symbol)
        br = brackets_for(order.symbol)
        side = order.side.sign
        q, ep = float(order.quantity), float(order.entry_price)
        lp = _bti_lp(order)
        warnings = _warnings(order, position)
        if position is not None and position.liquidation_price is not None:
            lp = float(position.liquidation_price)  # the exchange's own, for this position
        max_lev = Decimal(str(br.max_leverage_for(q * ep)))
        extra: dict[str, Any] = {}
        if adl_cover:
            assert position is not None
            adl = self._adl(sr, cover, side, position)
            p, se, base_p, reached = adl[0].probability, adl[1], adl[2], False
            ml_p, priced_p, learned_note = None, p, ""
            payout = cover.coverage.quantize(Decimal("0.01"))
            distance = CRASH_MOVE  # the move that empties the fund (`risk.adl`)
            extra = {"peril": peril.value, "adl": adl[0].as_json()}
        else:
            reached = (sr.spot <= lp) if side > 0 else (sr.spot >= lp)
            p_arr, se_arr = sr.probability(lp, cover.duration_hours, side)
            p = 1.0 if reached else float(p_arr)
            se = 0.0 if reached else float(se_arr)
            base_p = float(sr.baseline(lp, cover.duration_hours, side))
            ml_p, priced_p, learned_note = self._learned(sr, lp, cover, order, side, p, reached)
            payout = cover.payout(order.margin).quantize(Decimal("0.01"))
            distance = abs(sr.spot - lp) / sr.spot if lp > 0 else 1.0
        learned = self.ctx.learned
        checks = check_cover(
            order,
            cover,
            allowed_symbols=self.allowed_symbols(),
            symbol_max_leverage=max_lev,
            user_exposure=mine,
            pool_locked=pool,
            liquidation_reached=reached,
            limits=self.ctx.limits,
            liquidation_price=None if adl_cover else lp,
            payout=payout,
            position_cover=Decimal(0) if adl_cover else on_position,
        )
        if adl_cover:
            assert position is not None
            checks.append(adl_cap(position.position_id, order.margin, adl_held, cover.coverage))
        checks.append(check_market_entry(order, sr.spot))
        checks += self.concentration(
            order, cover, None if adl_cover else lp, exposure, spot=sr.spot
        )
        index = risk_index(
            probability=p,
            side=side,
            leverage=float(order.leverage),
            max_leverage=float(min(max_lev, self.ctx.limits.max_leverage)),
            coverage=float(cover.coverage),
            margin=float(order.margin),
            duration_hours=cover.duration_hours,
            max_duration_hours=self.ctx.limits.max_duration_hours,
            notional=float(order.notional),
            order_type=str(order.order_type),
            margin_mode=str(order.margin_mode),
            distance_to_liquidation=distance,
            market=sr.features,
            trader=history,
            macro_signal=macro_signal_at(self.ctx.macro, pd.Timestamp(now)),
        )
        capacity = self.ctx.limits.pool_capacity
        utilisation = min(1.0, float((pool + cover.coverage) / capacity)) if capacity > 0 else 1.0
        premium = price(
            payout=payout,
            probability=priced_p,
            n_paths=sr.table.n_paths,
            utilisation=utilisation,
            config=self.ctx.pricing,
        )
        smallest = (
            ""
            if premium.total < payout or adl_cover
            else smallest_order(order, cover, premium.total, payout, premium.fee)
        )
        checks.append(check_premium(premium.total, payout, smallest))
        record = QuoteRecord(
            id=uuid.uuid4().hex,
            created_at=now,
            expires_at=now + self.ctx.quote_ttl,
            user_id=user_id,
            symbol=order.symbol,
            inputs=_inputs(order, cover)
            | ({} if position is None else {"position": position.as_json()})
            | extra,
            liquidation_price=_dec(lp),
            spot=_dec(sr.spot),
            probability=p,
            probability_se=se,
            baseline_probability=base_p,
            ml_probability=ml_p,
            model_id=learned.id if learned is not None and ml_p is not None else None,
            **_explained(index, premium, checks),
        )
        with session_scope(self.ctx.db) as s:
            add_quote(s, quote=record)
        return QuoteView(
            record,
            order,
            cover,
            index,
            premium,
            checks,
            sr.model_summary(),
            learned_note,
            position,
            warnings,
            peril,
        )

    @staticmethod
    def _adl(
        sr: SymbolRisk, cover: Cover, side: int, position: PositionTerms
    ) -> tuple[AdlRisk, float, float]:
        """(the position's ADL risk, its standard error, the GBM baseline's ADL probability):
        the crash in the position's favour is the first passage of a position on the other
        side to `crash_level` (`risk.adl`)."""
        level = crash_level(sr.spot, side)
        p_crash, se_crash = sr.probability(level, cover.duration_hours, -side)
        risk = adl_probability(float(p_crash), position.adl_quantile, level)
        scale = P_FUND_EMPTY * risk.reach
        base = adl_probability(
            min(1.0, float(sr.baseline(level, cover.duration_hours, -side))),
            position.adl_quantile,
            level,
        )
        return risk, float(se_crash) * scale, base.probability

    def _learned(
        self,
        sr: SymbolRisk,
        lp: float,
        cover: Cover,
        order: Order,
        side: int,
        p: float,
        reached: bool,
    ) -> tuple[float | None, float, str]:
        """(the learned model's probability, the one the premium uses, what the quote says of
        it). The premium uses the model only if its validation beat the Monte Carlo engine."""
        if self.ctx.learned is None:
            return None, p, ""
        ml = sr.learned_probability(
            self.ctx.learned.row, lp, cover.duration_hours, side, float(order.leverage)
        )
        if ml is None:
            return None, p, f"{self.ctx.learned.id}: no market features for {order.symbol} yet"
        if reached:
            return ml, p, f"{self.ctx.learned.id}: the liquidation price is already reached"
        if self.ctx.learned.uses_model:
            return ml, ml, f"{self.ctx.learned.id} prices this premium ({self.ctx.learned.reason})"
        return ml, p, f"{self.ctx.learned.id}, shown for comparison: {self.ctx.learned.reason}"

    def premium_curve(
        self, view: QuoteView, leverages: Sequence[float], durations: Sequence[int]
    ) -> pd.DataFrame:
        """`what_if` on the symbol's current table (a read: nothing is stored)."""
        return what_if(
            view,
            self.ctx.risk.symbol_risk(view.order.symbol),
            leverages,
            durations,
            self.ctx.pricing,
        )


def what_if(
    view: QuoteView,
    sr: SymbolRisk,
    leverages: Sequence[float],
    durations: Sequence[int],
    config: PricingConfig | None = None,
) -> pd.DataFrame:
    """The premium of ``view``'s order at other leverages and durations, for a chart beside
    the quote (nothing is stored; the premium charged is always `price`'s).

    Quantity, entry, side and margin mode stay; the margin is ``notional / L``, the coverage
    the same share of it as quoted (``coverage / margin``), the payout ``cover.payout`` of
    that margin; ``p`` from the same Monte Carlo table, priced by `reprice` at the quote's
    utilisation. Columns: leverage, hours, liquidation_price, probability, payout, premium.
    """
    order, cover = view.order, view.cover
    br = brackets_for(order.symbol)
    side = order.side.sign
    q, ep = float(order.quantity), float(order.entry_price)
    share_of_margin = float(cover.coverage / order.margin) if order.margin > 0 else 0.0
    rows = []
    for lev in leverages:
        margin = q * ep / lev
        if order.margin_mode is MarginMode.CROSS and order.wallet_balance is not None:
            basis = max(float(order.wallet_balance), margin)
        else:
            basis = margin
        lp = float(liquidation_price(ep, q, side, basis, br))
        coverage = Decimal(repr(round(margin * share_of_margin, 2)))
        # a tiny order at high leverage: its share of the margin rounds to no cover at all
        payout = (
            0.0
            if coverage <= 0
            else float(
                Cover(coverage, cover.duration_hours, cover.share, cover.deductible).payout(
                    Decimal(repr(margin))
                )
            )
        )
        for hours in durations:
            rows.append((float(lev), int(hours), lp, payout))
    frame = pd.DataFrame(rows, columns=["leverage", "hours", "liquidation_price", "payout"])
    p, _ = sr.probability(frame["liquidation_price"].to_numpy(), frame["hours"].to_numpy(), side)
    reached = (
        (sr.spot <= frame["liquidation_price"])
        if side > 0
        else (sr.spot >= frame["liquidation_price"])
    )
    frame["probability"] = np.where(reached, 1.0, np.asarray(p, dtype=float))
    frame["premium"] = reprice(
        payout=frame["payout"].to_numpy(),
        probability=frame["probability"].to_numpy(),
        n_paths=sr.table.n_paths,
        utilisation=view.premium.utilisation,
        config=config,
    )
    frame.loc[frame["payout"] <= 0, "premium"] = 0.0  # no cover is sold, so none is charged
    return frame


def _bti_lp(order: Order) -> float:
    """BTI's liquidation price of an order (`risk.liquidation.liquidation_price`)."""
    wallet = order.wallet_balance if order.margin_mode is MarginMode.CROSS else None
    margin_or_wallet = float(wallet if wallet is not None else order.margin)
    q, ep = float(order.quantity), float(order.entry_price)
    return float(
        liquidation_price(ep, q, order.side.sign, margin_or_wallet, brackets_for(order.symbol))
    )


def _warnings(order: Order, position: PositionTerms | None) -> list[str]:
    """What a quote on a linked position says before it is bought (the exchange's liquidation
    price far from BTI's)."""
    if position is None or position.liquidation_price is None:
        return []
    return [w for w in [lp_warning(position, _bti_lp(order))] if w]


def order_and_cover(quote: QuoteRecord) -> tuple[Order, Cover]:
    """The order and the cover a stored quote was made from (`_inputs`)."""
    c = quote.inputs["cover"]
    cover = Cover(
        coverage=Decimal(c["coverage"]),
        duration_hours=int(c["duration_hours"]),
        share=Decimal(c["share"]),
        deductible=Decimal(c["deductible"]),
    )
    return Order(**quote.inputs["order"]), cover


def peril_of(quote: QuoteRecord) -> Peril:
    """What a stored quote's cover pays for (quotes before ADL cover name none)."""
    return Peril(quote.inputs.get("peril", Peril.LIQUIDATION.value))


def _flat(x: Any) -> dict[str, Any]:
    """A flat dataclass's fields by name (`dataclasses.asdict` deep-copies every value: a
    quarter of a millisecond a quote for these, whose values are all immutable)."""
    return {f.name: getattr(x, f.name) for f in fields(x)}


def _inputs(order: Order, cover: Cover) -> dict[str, Any]:
    """The order and the cover as typed, as strings (what `buy` rebuilds them from)."""
    return {
        "order": {k: None if v is None else str(v) for k, v in _flat(order).items()},
        "cover": {k: str(v) for k, v in _flat(cover).items()},
    }


def _explained(index: RiskIndex, premium: Premium, checks: list[Check]) -> dict[str, Any]:
    """The quote's explanation: the risk index and its factors, the premium and how it is
    made, and every check."""
    return {
        "risk_index": index.value,
        "risk_breakdown": [_flat(c) for c in index.contributions],
        "payout": premium.payout,
        "premium": premium.total,
        "premium_breakdown": {k: str(v) for k, v in _flat(premium).items()},
        "checks": [_flat(c) for c in checks],
    }
