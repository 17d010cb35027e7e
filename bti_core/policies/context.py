"""What every part of the insurance service reads (`InsuranceService` builds one and hands
the same object to its quoting, purchases, expiry and listing): one object shared by
reference, so a change to it (tighter limits, another chain) reaches every part at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy.engine import Engine

from bti_core.accounts.service import AccountsService
from bti_core.chain.client import ChainClient
from bti_core.chain.wallets import CustodialWallets
from bti_core.pricing import PricingConfig
from bti_core.risk.engine import RiskEngine
from bti_core.underwriting import Limits

if TYPE_CHECKING:
    from bti_core.risk.registry import LiveModel


@dataclass
class PolicyContext:
    db: Engine
    risk: RiskEngine
    limits: Limits
    pricing: PricingConfig
    quote_ttl: timedelta  # how long a quote may be bought
    macro: pd.Series | None  # the market-wide signal of the risk index
    clock: Callable[[], datetime]
    chain: ChainClient | None
    payment_window: timedelta  # the signed quote's deadline after a purchase
    wallets: CustodialWallets
    accounts: AccountsService | None = None  # linked exchange accounts (cover on positions)
    # a registered model, shown beside the engine (`bti train`), or what loads it when a quote
    # first asks: loading imports scikit-learn (~1.7 s), which a command that only moves
    # money (a faucet, a claims run) would pay for nothing
    _learned: LiveModel | None = None
    _load_learned: Callable[[], LiveModel | None] | None = field(default=None, repr=False)

    @property
    def learned(self) -> LiveModel | None:
        if self._load_learned is not None:
            self._learned, self._load_learned = self._load_learned(), None
        return self._learned

    @learned.setter
    def learned(self, model: LiveModel | None) -> None:
        self._learned, self._load_learned = model, None
