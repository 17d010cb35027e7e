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

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Generic, TypeVar

import pandas as pd
from sqlalchemy.engine import Engine

from bti_core.accounts.service import AccountsService
from bti_core.chain.client import ChainClient
from bti_core.chain.wallets import CustodialWallets
from bti_core.db.types import utcnow
from bti_core.policies.changes import Changes
from bti_core.policies.context import PolicyContext
from bti_core.policies.expiry import Expiry
from bti_core.policies.listing import Listing
from bti_core.policies.purchase import Purchases
from bti_core.policies.quoting import Quoting
from bti_core.policies.renewals import Renewals
from bti_core.pricing import PricingConfig
from bti_core.risk.engine import RiskEngine
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
    accounts: _Shared[AccountsService | None] = _Shared()

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
        accounts: AccountsService | None = None,
        learned_loader: Callable[[], LiveModel | None] | None = None,
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
            accounts=accounts,
            _learned=learned,
            _load_learned=learned_loader,
        )
        self.quoting = Quoting(self.ctx)
        self.purchases = Purchases(self.ctx, self.quoting)
        self.expiry = Expiry(self.ctx, self.purchases)
        self.listing = Listing(self.ctx)
        self.changes = Changes(self.ctx, self.quoting, self.purchases)
        self.renewals = Renewals(self.ctx, self.quoting, self.purchases, self.changes)
        # the service's API is its parts' methods, bound here (each signature in one place)
        q, p = self.quoting, self.purchases
        self.quote, self.premium_curve = q.quote, q.premium_curve
        self.quote_position, self.restore_quote = q.quote_position, q.restore
        self.allowed_symbols, self.trader_history = q.allowed_symbols, q.trader_history
        self.concentration_now = q.concentration_now
        self.buy, self.permit_request, self.wallet_of = p.buy, p.permit_request, p.wallet_of
        self.fresh_mark, self.reconcile = p.fresh_mark, p.reconcile
        self.expire_due, self.end_closed = self.expiry.expire_due, self.expiry.end_closed
        self.policies, self.events = self.listing.policies, self.listing.events
        self.price_change, self.confirm_change = self.changes.price, self.changes.confirm
        self.newest_start = self.listing.newest_start
