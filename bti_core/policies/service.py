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
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy.engine import Engine

from bti_core.chain.client import ChainClient
from bti_core.chain.wallets import CustodialWallets
from bti_core.db.types import utcnow
from bti_core.policies.expiry import Expiry
from bti_core.policies.listing import Listing
from bti_core.pricing import PricingConfig
from bti_core.risk.engine import RiskEngine
from bti_core.underwriting import (
    Limits,
)

if TYPE_CHECKING:
    from bti_core.risk.registry import LiveModel


class InsuranceService(Expiry, Listing):
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
        self.db = db
        self.risk = risk
        self.limits = limits or Limits()
        self.pricing = pricing or PricingConfig()
        self.quote_ttl = quote_ttl
        self.macro = macro
        self.clock = clock
        self.chain = chain
        self.payment_window = payment_window  # the signed quote's deadline after a purchase
        self.wallets = wallets or CustodialWallets()
        self.learned = learned  # a registered model, shown beside the engine (`bti train`)
