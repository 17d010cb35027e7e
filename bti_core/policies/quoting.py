"""Quoting: price an order's cover from the symbol's shared Monte Carlo table, explain it
with the risk index and check it against underwriting; the quote is stored with an expiry."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bti_core.auth import AuthError, get_user
from bti_core.chain.client import ChainClient
from bti_core.chain.wallets import CustodialWallets
from bti_core.db.engine import session_scope
from bti_core.db.models import QuoteRecord
from bti_core.db.repository import (
    add_quote,
    claims_count,
    open_cover,
    policies_of,
)
from bti_core.errors import BTIError
from bti_core.orders import Cover, MarginMode, Order
from bti_core.pricing import Premium, PricingConfig, price
from bti_core.risk.engine import RiskEngine
from bti_core.risk.index import RiskIndex, TraderHistory, macro_signal_at, risk_index
from bti_core.risk.liquidation import brackets_for, liquidation_price
from bti_core.underwriting import (
    Check,
    Limits,
    check_cover,
    check_premium,
)

PRICE_PLACES = Decimal("0.00000001")


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

    @property
    def insurable(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x))).quantize(PRICE_PLACES, rounding=ROUND_HALF_UP)


class Quoting:
    """The quoting half of `InsuranceService` (its state is set by that class)."""

    db: Engine
    risk: RiskEngine
    limits: Limits
    pricing: PricingConfig
    quote_ttl: timedelta
    macro: pd.Series | None
    clock: Callable[[], datetime]
    chain: ChainClient | None
    payment_window: timedelta
    wallets: CustodialWallets

    def allowed_symbols(self) -> list[str]:
        return self.risk.warehouse.symbols()

    def trader_history(self, user_id: str) -> TraderHistory:
        with session_scope(self.db) as s:
            pols = [p for p in policies_of(s, user_id=user_id) if p.status != "declined"]
        if not pols:
            return TraderHistory()
        liquidated = sum(p.status in ("claimed", "paid") for p in pols)
        with session_scope(self.db) as s:
            claims = claims_count(s, user_id=user_id)
        return TraderHistory(
            policies=len(pols),
            liquidations=liquidated,
            claims=claims,
            average_leverage=float(np.mean([float(p.leverage) for p in pols])),
        )

    def _exposure(self, user_id: str, s: Session | None = None) -> tuple[Decimal, Decimal]:
        """(this trader's open cover, the pool's open cover), pending purchases included;
        in ``s`` when given (the purchase's serialised transaction)."""
        if s is None:
            with session_scope(self.db) as fresh:
                return self._exposure(user_id, fresh)
        return open_cover(s, user_id=user_id)

    def _require_trader(self, user_id: str) -> None:
        user = get_user(self.db, user_id)
        if user is not None and user.is_underwriter:
            raise AuthError(
                f"{user_id} is an underwriter: underwriters decide claims and do not buy "
                "cover with that account; sign in as a trader to insure an order"
            )

    def quote(self, *, user_id: str, order: Order, cover: Cover) -> QuoteView:
        """Price the cover of an order and store the quote (with any failed checks)."""
        self._require_trader(user_id)
        now = self.clock()
        sr = self.risk.symbol_risk(order.symbol)
        br = brackets_for(order.symbol)
        side = order.side.sign
        q, ep = float(order.quantity), float(order.entry_price)
        wallet = order.wallet_balance if order.margin_mode is MarginMode.CROSS else None
        margin_or_wallet = float(wallet if wallet is not None else order.margin)
        lp = float(liquidation_price(ep, q, side, margin_or_wallet, br))
        reached = (sr.spot <= lp) if side > 0 else (sr.spot >= lp)
        p_arr, se_arr = sr.probability(lp, cover.duration_hours, side)
        p = 1.0 if reached else float(p_arr)
        se = 0.0 if reached else float(se_arr)
        base_p = float(sr.baseline(lp, cover.duration_hours, side))
        max_lev = Decimal(str(br.max_leverage_for(q * ep)))
        mine, pool = self._exposure(user_id)
        payout = cover.payout(order.margin).quantize(Decimal("0.01"))
        checks = check_cover(
            order,
            cover,
            allowed_symbols=self.allowed_symbols(),
            symbol_max_leverage=max_lev,
            user_exposure=mine,
            pool_locked=pool,
            liquidation_reached=reached,
            limits=self.limits,
            liquidation_price=lp,
            payout=payout,
        )
        distance = abs(sr.spot - lp) / sr.spot if lp > 0 else 1.0
        index = risk_index(
            probability=p,
            side=side,
            leverage=float(order.leverage),
            max_leverage=float(min(max_lev, self.limits.max_leverage)),
            coverage=float(cover.coverage),
            margin=float(order.margin),
            duration_hours=cover.duration_hours,
            max_duration_hours=self.limits.max_duration_hours,
            notional=float(order.notional),
            order_type=str(order.order_type),
            margin_mode=str(order.margin_mode),
            distance_to_liquidation=distance,
            market=sr.features,
            trader=self.trader_history(user_id),
            macro_signal=macro_signal_at(self.macro, pd.Timestamp(now)),
        )
        capacity = self.limits.pool_capacity
        utilisation = min(1.0, float((pool + cover.coverage) / capacity)) if capacity > 0 else 1.0
        premium = price(
            payout=payout,
            probability=p,
            n_paths=sr.table.n_paths,
            utilisation=utilisation,
            config=self.pricing,
        )
        checks.append(check_premium(premium.total, payout))
        record = QuoteRecord(
            id=uuid.uuid4().hex,
            created_at=now,
            expires_at=now + self.quote_ttl,
            user_id=user_id,
            symbol=order.symbol,
            inputs=_inputs(order, cover),
            liquidation_price=_dec(lp),
            spot=_dec(sr.spot),
            probability=p,
            probability_se=se,
            baseline_probability=base_p,
            **_explained(index, premium, checks),
        )
        with session_scope(self.db) as s:
            add_quote(s, quote=record)
        return QuoteView(record, order, cover, index, premium, checks, sr.model_summary())


def _inputs(order: Order, cover: Cover) -> dict[str, Any]:
    """The order and the cover as typed, as strings (what `buy` rebuilds them from)."""
    return {
        "order": {k: None if v is None else str(v) for k, v in asdict(order).items()},
        "cover": {k: str(v) for k, v in asdict(cover).items()},
    }


def _explained(index: RiskIndex, premium: Premium, checks: list[Check]) -> dict[str, Any]:
    """The quote's explanation: the risk index and its factors, the premium and how it is
    made, and every check."""
    return {
        "risk_index": index.value,
        "risk_breakdown": [asdict(c) for c in index.contributions],
        "payout": premium.payout,
        "premium": premium.total,
        "premium_breakdown": {k: str(v) for k, v in asdict(premium).items()},
        "checks": [asdict(c) for c in checks],
    }
