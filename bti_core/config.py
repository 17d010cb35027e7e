"""One settings object for the whole engine (pydantic-settings, environment prefix ``BTI_``).

``BTI_DATA_DIR``      where the warehouse and local state live (default ``./data``)
``BTI_DATABASE_URL``  SQLAlchemy URL; default SQLite file ``<data_dir>/bti.db``
``BTI_RPC_URL``       an Ethereum JSON-RPC node; default: the local anvil node BTI starts
``BTI_POOL_CAPACITY`` cover the insurance pool can carry, in USDT (default 1,000,000)
``BTI_MACRO_FILE``    a CSV ``date,signal`` of macro regime signals for the risk index
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTI_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Warehouse and local state")
    database_url: str | None = Field(default=None, description="SQLAlchemy database URL")
    rpc_url: str | None = Field(default=None, description="JSON-RPC node; None: local anvil")
    wick_tolerance: float = Field(
        default=0.02,
        gt=0,
        lt=1,
        description="A last-price low (high) further than this fraction beyond the mark price's "
        "low (high) of the same bar is flagged as a wick the mark price does not confirm",
    )

    pool_capacity: Decimal = Field(
        default=Decimal("1000000"), gt=0, description="Cover the pool can carry, in USDT"
    )
    macro_file: Path | None = Field(
        default=None, description="CSV date,signal (−1 stress … +1 calm) for the risk index"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @cached_property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'bti.db'}"


def get_settings() -> Settings:
    """Settings read from the environment now (cheap; callers that need one copy keep it)."""
    return Settings()
