"""The demo exchange (Binance USDⓈ-M's protocol on 127.0.0.1) and an accounts service over it."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.service import AccountsService
from bti_core.accounts.vault import Vault
from bti_core.auth import hash_password
from bti_core.db.models import AppUser


@pytest.fixture
def exchange() -> Iterator[DemoExchange]:
    with DemoExchange().running() as ex:
        yield ex


def allow_demo(what: str) -> None:
    """The local chain's answer to `Services.require_demo`: a demo may run."""


@functools.cache
def _hash() -> str:
    """One bcrypt hash for the fixture's users (a quarter second each otherwise; nobody signs
    in with them here)."""
    return hash_password("long-enough")


def traders(engine: Engine, *names: str) -> None:
    with Session(engine) as s:
        s.add_all(
            AppUser(
                username=n,
                name=n.title(),
                email=f"{n}@bti.local",
                role="trader",
                password_hash=_hash(),
            )
            for n in names
        )
        s.commit()


@pytest.fixture
def accounts(engine: Engine, exchange: DemoExchange, tmp_path: Path) -> AccountsService:
    traders(engine, "ada", "bob")
    return AccountsService(
        engine,
        Vault(tmp_path / "keys" / "accounts.key"),
        demo_url=exchange.url,
        require_demo=allow_demo,
    )
