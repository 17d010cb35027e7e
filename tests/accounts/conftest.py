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


T0 = 1_700_000_000_000  # 2023-11-14: the forced-order histories' start
DAY = 24 * 3600 * 1000


def forced_history(exchange: DemoExchange, side: str) -> str:
    """An account the exchange liquidated 230 times on ``side`` (more than two full pages
    within one week, and some a fortnight on) and auto-deleveraged once (0.5 of a long at
    55,000, a day in); returns its uid."""
    uid = exchange.add_account(10**9)
    through = 40_000 if side == "long" else 60_000
    for i in range(230):
        at = T0 + i * 60_000 if i < 220 else T0 + 14 * DAY + i
        exchange.open_position(uid, "BTCUSDT", side, 1, 50_000, 20)  # type: ignore[arg-type]
        exchange.set_mark("BTCUSDT", 50_000, at_ms=at)
        exchange.set_mark("BTCUSDT", through, at_ms=at)
    exchange.open_position(uid, "BTCUSDT", "long", 2, 50_000, 20)
    exchange.deleverage(uid, "BTCUSDT", "long", "0.5", 55_000, at_ms=T0 + DAY)
    return uid
