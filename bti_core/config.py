"""One settings object for the whole engine (pydantic-settings, environment prefix ``BTI_``).

``BTI_DATA_DIR``      where the warehouse and local state live (default ``./data``)
``BTI_DATABASE_URL``  SQLAlchemy URL; default SQLite file ``<data_dir>/bti.db``
``BTI_RPC_URL``       an Ethereum JSON-RPC node; default: the local anvil node BTI starts
``BTI_CHAIN_PORT``    port of that local node on 127.0.0.1 (default 8545)
``BTI_ADMIN_KEY`` / ``BTI_CLAIMS_KEY`` / ``BTI_QUOTER_KEY``  the service's signing keys
                      (default: anvil's public dev accounts 0–2; set real ones for any other node)
``BTI_POOL_CAPACITY`` cover the insurance pool can carry, in USDT (default 1,000,000)
``BTI_MACRO_FILE``    a CSV ``date,signal`` of macro regime signals for the risk index
``BTI_CLAIMS_AUTO_LIMIT``     largest payout (BTI) approved without an underwriter (1,000)
``BTI_CLAIMS_REVIEW_HOURS``   an underwriter's time to decide a referred claim (24)
``BTI_CLAIMS_EXCHANGE_WAIT_MINUTES`` how long a linked policy's claim waits for the
                              exchange's liquidation record before it goes to an underwriter (30)
``BTI_CLAIMS_WATCH_SECONDS``  how often `bti worker` runs its round: scan for liquidations,
                              decide and pay, expire, reconcile (30)
``BTI_SESSION_HOURS``         how long a dashboard sign-in lasts, across reloads and tabs (24)
``BTI_WEBHOOK_ALLOW_NETWORKS`` non-public networks webhooks may reach (CIDR list; none)
``BTI_WEBHOOK_TIMEOUT_SECONDS`` the whole of one webhook delivery, at most (10)
``BTI_ACCOUNTS_KEY_FILE``     the key that encrypts linked exchange accounts' API secrets; keep
                              it apart from the database (default ``<data_dir>/keys/accounts.key``)
``BTI_DEMO_EXCHANGE_URL``     the demo exchange (Binance's protocol on 127.0.0.1) that `make run`
                              starts; unset, no demo exchange can be linked
``BTI_ACCOUNTS_SYNC_SECONDS`` how often the worker reads linked accounts' positions (60)
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# anvil's default accounts 0–2: public knowledge, meaningful only on a local dev chain
_ANVIL_DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTI_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Warehouse and local state")
    database_url: str | None = Field(default=None, description="SQLAlchemy database URL")
    rpc_url: str | None = Field(default=None, description="JSON-RPC node; None: local anvil")
    chain_port: int = Field(default=8545, ge=1024, le=65535, description="local anvil's port")
    admin_key: SecretStr = Field(default=SecretStr(_ANVIL_DEV_KEYS[0]))
    claims_key: SecretStr = Field(default=SecretStr(_ANVIL_DEV_KEYS[1]))
    quoter_key: SecretStr = Field(default=SecretStr(_ANVIL_DEV_KEYS[2]))
    wick_tolerance: float = Field(
        default=0.02,
        gt=0,
        lt=1,
        description="A last-price low (high) further than this fraction beyond the mark price's "
        "low (high) of the same bar is flagged as a wick the mark price does not confirm",
    )

    import_max_mb: int = Field(
        default=1024,
        ge=1,
        le=1 << 20,
        description="Largest decompressed size of one imported file, in MiB (a small archive "
        "can hold a huge CSV)",
    )
    import_max_rows: int = Field(
        default=5_000_000,
        ge=1,
        le=1_000_000_000,
        description="Most rows one imported file may hold",
    )

    pool_capacity: Decimal = Field(
        default=Decimal("1000000"), gt=0, description="Cover the pool can carry, in USDT"
    )
    max_symbol_share: Decimal = Field(
        default=Decimal("0.4"),
        gt=0,
        le=1,
        description="Most of the pool's capacity the open cover on one symbol may take",
    )
    max_band_share: Decimal = Field(
        default=Decimal("0.25"),
        gt=0,
        le=1,
        description="Most of the capacity one side in one leverage band may take",
    )
    crash_move: Decimal = Field(
        default=Decimal("0.3"),
        gt=0,
        lt=1,
        description="The market-wide move within an hour the crash cap is judged by",
    )
    max_crash_share: Decimal = Field(
        default=Decimal("0.5"),
        gt=0,
        le=1,
        description="Most of the capacity one such move may claim",
    )
    withdrawal_cooldown_seconds: int | None = Field(
        default=None,
        ge=0,
        le=90 * 24 * 3600,
        description="Cooldown between a capital provider's withdrawal request and its first "
        "moment, fixed when the pool is deployed; default 7 days (2 minutes on the local demo "
        "chain, so a demo can show a withdrawal through)",
    )
    macro_file: Path | None = Field(
        default=None, description="CSV date,signal (−1 stress … +1 calm) for the risk index"
    )

    claims_auto_limit: Decimal = Field(default=Decimal("1000"), ge=0)
    claims_review_hours: int = Field(default=24, ge=1, le=24 * 30)
    claims_exchange_wait_minutes: float = Field(
        default=30.0,
        ge=0,
        le=24 * 60,
        description="How long a linked policy's claim waits for the exchange's liquidation "
        "record before an underwriter sees it without one",
    )
    claims_watch_seconds: float = Field(default=30.0, ge=0, le=3600)
    session_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="How long a dashboard sign-in lasts"
    )

    webhook_allow_networks: str = Field(
        default="",
        description="Comma-separated networks (CIDR) webhooks may reach although they are not "
        "public (loopback, private, link-local): empty, none — e.g. 10.0.0.0/8 for receivers "
        "inside your own network",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="The whole of one webhook delivery, at most"
    )

    accounts_key_file: Path | None = Field(
        default=None, description="Encryption key of linked accounts' secrets (kept apart)"
    )
    demo_exchange_url: str | None = Field(
        default=None,
        pattern=r"^http://127\.0\.0\.1:[0-9]{2,5}$",
        description="The local demo exchange, http://127.0.0.1:PORT",
    )
    demo_exchange_ws_url: str | None = Field(
        default=None,
        pattern=r"^ws://127\.0\.0\.1:[0-9]{2,5}$",
        description="The local demo exchange's user data streams, ws://127.0.0.1:PORT",
    )
    accounts_sync_seconds: float = Field(default=60.0, ge=5, le=3600)
    accounts_user_streams: bool = Field(
        default=True,
        description="Follow linked Binance and Bybit accounts on their user data streams too "
        "(a message wakes a read of the account; the clock's reads go on)",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @cached_property
    def chain_dir(self) -> Path:
        return self.data_dir / "chain"

    @cached_property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"

    @cached_property
    def forecasts_dir(self) -> Path:
        """Forecasts cached for the pages, and the evaluation that chose their forecaster."""
        return self.data_dir / "forecasts"

    @cached_property
    def resolved_accounts_key_file(self) -> Path:
        return self.accounts_key_file or self.data_dir / "keys" / "accounts.key"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'bti.db'}"


def get_settings() -> Settings:
    """Settings read from the environment now (cheap; callers that need one copy keep it)."""
    return Settings()
