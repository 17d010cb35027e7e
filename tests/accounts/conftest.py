"""The demo exchange (Binance USDⓈ-M's protocol on 127.0.0.1) and an accounts service over it."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.service import AccountsService
from bti_core.accounts.vault import Vault
from bti_core.auth import hash_password
from bti_core.db.models import AppUser, ExchangeAccount, ExchangePosition, Policy
from bti_core.orders import Cover
from tests.worlds import NOW, World


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


CRASH_AT = NOW + timedelta(hours=4)  # inside the replayed crash (`worlds.crash`: from NOW + 3 h)


@pytest.fixture
def linked(
    world: World, exchange: DemoExchange, engine: Engine, tmp_path: Path
) -> tuple[AccountsService, str, ExchangeAccount, ExchangePosition]:
    """ada's exchange account, linked, holding 0.1 BTCUSDT long at 20× opened at the mark; the
    claims service reads the exchange through the same accounts service."""
    traders(engine, "ada")
    accounts = AccountsService(
        engine, Vault(tmp_path / "keys" / "a.key"), demo_url=exchange.url, require_demo=allow_demo
    )
    uid = exchange.add_account(10_000)
    spot = Decimal(str(round(world.ins.risk.spot("BTCUSDT"), 2)))
    exchange.open_position(uid, "BTCUSDT", "long", "0.1", spot, 20)
    account = accounts.link("ada", "demo", *exchange.add_key(uid))
    [position] = accounts.positions("ada")
    world.claims.accounts = accounts
    world.chain.faucet(world.ins.wallet_of("ada").address, Decimal(1000))
    return accounts, uid, account, position


def buy_on(world: World, position_id: int, coverage: str = "100") -> Policy:
    q = world.ins.quote_position(
        user_id="ada", position_id=position_id, cover=Cover(coverage=coverage, duration_hours=48)
    )
    return world.ins.buy(user_id="ada", quote_id=q.record.id)


def liquidate_on_the_exchange(exchange: DemoExchange, price: float = 1.0) -> None:
    exchange.set_mark("BTCUSDT", price, at_ms=int(CRASH_AT.timestamp() * 1000))
