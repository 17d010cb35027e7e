"""The insurance service: quote an order's cover, buy it, expire and list policies.

A quote is priced from the symbol's shared Monte Carlo table (a lookup), explained by the risk
index, checked by underwriting and stored with an expiry. Buying re-checks capacity and the
trader's exposure in the same serialised transaction that writes the policy ``pending``, pays
the premium in BTI through the pool contract and then marks it ``active`` with the
transaction; a quote buys at most one policy (a unique key) and a policy's terms at most one
on-chain purchase (a unique hash in the contract), so neither a double click nor a crash and
retry ever insures or charges twice. Each concern has its file: `quoting`, `purchase`,
`expiry`, `listing`; `lifecycle` holds the statuses and their one transition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pandas as pd
from eth_account.signers.local import LocalAccount
from sqlalchemy.engine import Engine

from bti_core.chain.client import ChainClient
from bti_core.chain.wallets import CustodialWallets
from bti_core.db.models import Policy, PolicyEvent
from bti_core.db.types import utcnow
from bti_core.orders import Cover, Order
from bti_core.policies.context import PolicyContext
from bti_core.policies.expiry import Expiry
from bti_core.policies.listing import Listing
from bti_core.policies.purchase import FreshMark, Permit, Purchases, ReconcileReport
from bti_core.policies.quoting import QuoteView, Quoting
from bti_core.pricing import PricingConfig
from bti_core.risk.engine import RiskEngine
from bti_core.risk.index import TraderHistory
from bti_core.underwriting import Limits

if TYPE_CHECKING:
    from bti_core.risk.registry import LiveModel

T = TypeVar("T")


class _Shared(Generic[T]):
    """An attribute of the service that is its `PolicyContext`'s: read and set there, so every
    part sees the change."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: InsuranceService, owner: type | None = None) -> T:
        return getattr(obj.ctx, self.name)

    def __set__(self, obj: InsuranceService, value: T) -> None:
        setattr(obj.ctx, self.name, value)


class InsuranceService:
    """Quotes (`Quoting`), purchases and their reconciliation (`Purchases`), expiry
    (`Expiry`) and the pages' reads (`Listing`), over one shared `PolicyContext`."""

    db: _Shared[Engine] = _Shared()
    risk: _Shared[RiskEngine] = _Shared()
    limits: _Shared[Limits] = _Shared()
    pricing: _Shared[PricingConfig] = _Shared()
    quote_ttl: _Shared[timedelta] = _Shared()
    macro: _Shared[pd.Series | None] = _Shared()
    payment_window: _Shared[timedelta] = _Shared()
    clock: _Shared[Callable[[], datetime]] = _Shared()
    chain: _Shared[ChainClient | None] = _Shared()
    wallets: _Shared[CustodialWallets] = _Shared()
    learned: _Shared[LiveModel | None] = _Shared()

    def __init__(
        self,
        db: Engine,
        risk: RiskEngine,
        *,
        limits: Limits | None = None,
        pricing: PricingConfig | None = None,
        quote_ttl: timedelta = timedelta(minutes=5),
        macro: pd.Series | None = None,
        clock: Callable[[], datetime] = utcnow,
        chain: ChainClient | None = None,
        payment_window: timedelta = timedelta(minutes=2),
        wallets: CustodialWallets | None = None,
        learned: LiveModel | None = None,
    ) -> None:
        self.ctx = PolicyContext(
            db=db,
            risk=risk,
            limits=limits or Limits(),
            pricing=pricing or PricingConfig(),
            quote_ttl=quote_ttl,
            macro=macro,
            clock=clock,
            chain=chain,
            payment_window=payment_window,
            wallets=wallets or CustodialWallets(),
            learned=learned,
        )
        self.quoting = Quoting(self.ctx)
        self.purchases = Purchases(self.ctx, self.quoting)
        self.expiry = Expiry(self.ctx, self.purchases)
        self.listing = Listing(self.ctx)

    # ------------------------------------------------------------------ quoting

    def allowed_symbols(self) -> list[str]:
        return self.quoting.allowed_symbols()

    def trader_history(self, user_id: str) -> TraderHistory:
        return self.quoting.trader_history(user_id)

    def quote(self, *, user_id: str, order: Order, cover: Cover) -> QuoteView:
        """Price the cover of an order and store the quote (`Quoting.quote`)."""
        return self.quoting.quote(user_id=user_id, order=order, cover=cover)

    def premium_curve(
        self, view: QuoteView, leverages: Sequence[float], durations: Sequence[int]
    ) -> pd.DataFrame:
        return self.quoting.premium_curve(view, leverages, durations)

    # ------------------------------------------------------------------ purchases

    def wallet_of(self, user_id: str) -> LocalAccount:
        return self.purchases.wallet_of(user_id)

    def buy(
        self,
        *,
        user_id: str,
        quote_id: str,
        wallet: str | None = None,
        permit: Permit | None = None,
    ) -> Policy:
        """Buy a quote's cover once (`Purchases.buy`)."""
        return self.purchases.buy(user_id=user_id, quote_id=quote_id, wallet=wallet, permit=permit)

    def permit_request(self, *, user_id: str, quote_id: str, wallet: str) -> dict[str, Any]:
        return self.purchases.permit_request(user_id=user_id, quote_id=quote_id, wallet=wallet)

    def fresh_mark(self, symbol: str, side: int, since: datetime) -> FreshMark | None:
        return self.purchases.fresh_mark(symbol, side, since)

    def reconcile(self) -> ReconcileReport:
        """Settle what a crash left pending (`Purchases.reconcile`)."""
        return self.purchases.reconcile()

    # ------------------------------------------------------------------ expiry and reads

    def expire_due(self) -> int:
        return self.expiry.expire_due()

    def newest_start(self, symbol: str) -> datetime | None:
        return self.listing.newest_start(symbol)

    def policies(self, user_id: str) -> pd.DataFrame:
        return self.listing.policies(user_id)

    def events(self, policy_id: int) -> list[PolicyEvent]:
        return self.listing.events(policy_id)
