"""The one composition root: `build_services(settings)` wires every service the CLI, the
dashboard and the worker use, from one `Settings`, so no entry point can wire a service
differently (before this, the CLI dropped the pool-capacity limit and the macro table).

Everything is built on first use: the Market page needs no chain, `bti data summary` no risk
engine. Building is cheap; what is expensive (the chain connection, fitted risk tables) is
held by the `Services` object, which the dashboard caches once per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy.engine import Engine

from bti_core.accounts.service import AccountsService
from bti_core.accounts.vault import Vault
from bti_core.capital import CapitalService
from bti_core.chain.client import ChainClient
from bti_core.chain.wallets import LOCAL_CHAIN_ID, CustodialWallets, require_local_chain
from bti_core.claims.service import ClaimsService
from bti_core.config import Settings
from bti_core.db.engine import make_engine, migrate
from bti_core.errors import BTIError
from bti_core.market.ingest import Ingestor
from bti_core.market.reading import ImportLimits
from bti_core.market.replay import written_by_replays
from bti_core.market.warehouse import Warehouse
from bti_core.policies import InsuranceService
from bti_core.risk.engine import RiskEngine
from bti_core.risk.index import load_macro_signals
from bti_core.underwriting import Limits

if TYPE_CHECKING:
    from bti_core.risk.registry import LiveModel


@dataclass(frozen=True)
class Wiring:
    """What a set of services was built from: two entry points with equal wirings behave
    alike (the test of the composition root compares these)."""

    database_url: str
    warehouse_dir: str
    chain: str
    limits: Limits
    pricing: Any
    macro_days: int
    claims_auto_limit: str
    claims_review_hours: int


class Services:
    """The engine's services for one `Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._chain_lock = threading.Lock()

    @cached_property
    def db(self) -> Engine:
        eng = make_engine(self.settings.resolved_database_url)
        migrate(eng)
        return eng

    @cached_property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings.warehouse_dir)

    @cached_property
    def ingestor(self) -> Ingestor:
        return Ingestor(
            self.warehouse,
            self.db,
            wick_tolerance=self.settings.wick_tolerance,
            limits=ImportLimits.from_settings(self.settings),
        )

    @cached_property
    def risk(self) -> RiskEngine:
        return RiskEngine(self.warehouse, replays=partial(written_by_replays, self.db))

    @cached_property
    def macro(self) -> pd.Series | None:
        s = self.settings
        return load_macro_signals(s.macro_file) if s.macro_file else None

    @cached_property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            pool_capacity=s.pool_capacity,
            max_symbol_share=s.max_symbol_share,
            max_band_share=s.max_band_share,
            crash_move=s.crash_move,
            max_crash_share=s.max_crash_share,
        )

    @cached_property
    def webhook_networks(self) -> tuple[Any, ...]:
        """The non-public networks webhooks may reach (``BTI_WEBHOOK_ALLOW_NETWORKS``)."""
        from bti_core.outbound import networks

        return networks(self.settings.webhook_allow_networks)

    @cached_property
    def accounts(self) -> AccountsService:
        """Linked exchange accounts; the demo exchange only on the local chain."""
        return AccountsService(
            self.db,
            Vault(self.settings.resolved_accounts_key_file),
            demo_url=self.settings.demo_exchange_url,
            require_demo=self.require_demo,
        )

    @cached_property
    def wallets(self) -> CustodialWallets:
        """The demo's custodial wallets (local dev chain only; the secret is per install)."""
        return CustodialWallets.at(self.settings.data_dir / "wallet.secret")

    @property
    def chain(self) -> ChainClient:
        """The chain client, connected on first use (the local node is started then)."""
        with self._chain_lock:
            if "_chain" not in self.__dict__:
                from bti_core.chain.runtime import connect

                self.__dict__["_chain"] = connect(self.settings)
            client: ChainClient = self.__dict__["_chain"]
            return client

    @property
    def chain_id(self) -> int:
        """The chain's id: the connected client's, else asked of the node without deploying
        or connecting (`chain_id_of`)."""
        if "_chain" in self.__dict__:
            return int(self.__dict__["_chain"].chain_id)
        if "_chain_id" not in self.__dict__:
            from bti_core.chain.runtime import chain_id_of

            self.__dict__["_chain_id"] = chain_id_of(self.settings)
        return int(self.__dict__["_chain_id"])

    @property
    def is_demo_chain(self) -> bool:
        """Whether demos may run here: only on the local development chain (an unreachable
        ``BTI_RPC_URL`` counts as not: a demo is refused rather than guessed)."""
        try:
            return self.chain_id == LOCAL_CHAIN_ID
        except BTIError:
            return False

    def require_demo(self, what: str) -> None:
        """Refuse ``what`` (a demo: accounts, faucet, crash replay, demo markets or book) on any
        chain but the local development chain (`chain.wallets.require_local_chain`)."""
        require_local_chain(self.chain_id, what, self.settings.rpc_url)

    def use_chain(self, client: ChainClient) -> None:
        """Use an already connected client (tests, `bti chain up`)."""
        self.__dict__["_chain"] = client

    @cached_property
    def insurance(self) -> InsuranceService:
        return InsuranceService(
            self.db,
            self.risk,
            limits=self.limits,
            macro=self.macro,
            chain=self.chain,
            wallets=self.wallets,
            learned_loader=lambda: self.learned,
            accounts=self.accounts,
        )

    @cached_property
    def capital(self) -> CapitalService:
        """Capital providers: deposits, withdrawal requests, the pool's history and yield."""
        return CapitalService(self.chain, self.insurance.wallet_of)

    @cached_property
    def learned(self) -> LiveModel | None:
        """The newest registered learned model that loads (None before `bti train`)."""
        from bti_core.risk.registry import load_latest

        model, _ = load_latest(self.db)
        return model

    @cached_property
    def claims(self) -> ClaimsService:
        s = self.settings
        return ClaimsService(
            self.db,
            self.warehouse,
            self.chain,
            auto_limit=s.claims_auto_limit,
            review_hours=s.claims_review_hours,
            risk=self.risk,
            accounts=self.accounts,
            exchange_wait=timedelta(minutes=s.claims_exchange_wait_minutes),
        )

    def wiring(self) -> Wiring:
        ins, claims = self.insurance, self.claims
        return Wiring(
            database_url=self.db.url.render_as_string(hide_password=True),
            warehouse_dir=str(self.warehouse.root),
            chain=f"{self.chain.chain_id}@{self.chain.url}/{self.chain.deployment.pool}",
            limits=ins.limits,
            pricing=ins.pricing,
            macro_days=0 if ins.macro is None else len(ins.macro),
            claims_auto_limit=str(claims.auto_limit),
            claims_review_hours=claims.review_hours,
        )

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()


def build_services(settings: Settings) -> Services:
    """The services for ``settings`` (nothing is opened until it is used)."""
    return Services(settings)
