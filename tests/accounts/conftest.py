"""The demo exchange (Binance USDⓈ-M's protocol on 127.0.0.1) and an accounts service over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.service import AccountsService
from bti_core.accounts.vault import Vault
from bti_core.auth import add_user


@pytest.fixture
def exchange() -> Iterator[DemoExchange]:
    with DemoExchange().running() as ex:
        yield ex


def allow_demo(what: str) -> None:
    """The local chain's answer to `Services.require_demo`: a demo may run."""


@pytest.fixture
def accounts(engine: Engine, exchange: DemoExchange, tmp_path: Path) -> AccountsService:
    for name in ("ada", "bob"):
        add_user(engine, username=name, name=name.title(), role="trader", password="long-enough")
    return AccountsService(
        engine,
        Vault(tmp_path / "keys" / "accounts.key"),
        demo_url=exchange.url,
        require_demo=allow_demo,
    )
