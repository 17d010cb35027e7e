"""What every part of the insurance service reads (`InsuranceService` builds one and hands
the same object to its quoting, purchases, expiry and listing): one object shared by
reference, so a change to it (tighter limits, another chain) reaches every part at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    learned: LiveModel | None  # a registered model, shown beside the engine (`bti train`)
    accounts: AccountsService | None = None  # linked exchange accounts (cover on positions)
