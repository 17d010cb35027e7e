"""ccxt's ``bybit`` client, unchanged, against the demo exchange speaking Bybit's v5 protocol:
signed headers checked as Bybit checks them, its error codes, exact figures, executions paged
by cursor — behind the same `AccountReader` as Binance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.exchanges import connect
from bti_core.accounts.service import AccountsService
from bti_core.errors import AccountError, ExchangeDownError, ExchangeKeyError
from tests.accounts.conftest import DAY, T0, forced_history


def reader(ex: DemoExchange, uid: str, **rights: bool) -> Any:
    key, secret = ex.add_key(uid, **rights)
    return connect("demo-bybit", key, secret, demo_url=ex.url)


def test_positions_rights_and_balance_read_exactly(exchange: DemoExchange) -> None:
    uid = exchange.add_account(10_000)
    exchange.open_position(uid, "BTCUSDT", "long", "0.123", "50000.1", 20)
    exchange.open_position(uid, "ETHUSDT", "short", "2", "3000", 10, mode="cross")
    r = reader(exchange, uid)
    assert r.key_rights().beyond_reading == [] and r.account_uid() == uid
    long, short = sorted(r.positions(), key=lambda p: p.symbol)
    assert (long.symbol, long.side, long.size, long.entry_price, long.leverage) == (
        "BTCUSDT",
        "long",
        Decimal("0.123"),
        Decimal("50000.1"),
        20,
    )
    assert (
        long.margin_mode == "isolated" and long.margin == Decimal("0.123") * Decimal("50000.1") / 20
    )
    book = exchange.accounts[uid]
    assert long.liquidation_price == exchange.liquidation_price(
        book, book.positions[("BTCUSDT", "long")]
    )
    assert (short.side, short.margin_mode, short.margin, short.adl_quantile) == (
        "short",
        "cross",
        Decimal(600),
        2,
    )
    assert r.balance().wallet == Decimal(10_000)
    assert any(p.startswith("/v5/position/list") for p in exchange.requests)
    for rights, power in (
        ({"enableFutures": True}, "trade"),
        ({"enableWithdrawals": True}, "withdraw"),
        ({"permitsUniversalTransfer": True}, "transfer funds"),
    ):
        assert reader(exchange, uid, **rights).key_rights().beyond_reading == [power]


def test_signed_headers_are_checked_as_bybit_checks_them(exchange: DemoExchange) -> None:
    uid = exchange.add_account()
    key, secret = exchange.add_key(uid)
    with pytest.raises(ExchangeKeyError, match="10004"):  # a wrong signature
        connect("demo-bybit", key, "f" * 64, demo_url=exchange.url).positions()
    with pytest.raises(ExchangeKeyError, match="10003"):  # an unknown key
        connect("demo-bybit", "a" * 64, secret, demo_url=exchange.url).positions()
    good = connect("demo-bybit", key, secret, demo_url=exchange.url)
    assert good.positions() == []
    exchange.clock_skew_ms = -70_000
    with pytest.raises(ExchangeDownError, match="10002"):  # from the future: try again later
        good.positions()


def test_liquidations_and_adl_come_whole_page_by_page(exchange: DemoExchange) -> None:
    uid = forced_history(exchange, "short")
    r = reader(exchange, uid)
    found = r.forced_orders("BTCUSDT", "liquidation", T0, T0 + 20 * DAY)
    assert len(found) == 230 == len({o.order_id for o in found})
    assert all(o.side == "short" and o.kind == "liquidation" for o in found)
    assert [o.time_ms for o in found] == sorted(o.time_ms for o in found)
    [adl] = r.forced_orders("BTCUSDT", "adl", T0, T0 + 20 * DAY)
    assert (adl.side, adl.quantity, adl.price) == ("long", Decimal("0.5"), Decimal(55_000))


def test_one_demo_account_is_linked_once_whichever_protocol_reaches_it(
    accounts: AccountsService, exchange: DemoExchange
) -> None:
    uid = exchange.add_account()
    exchange.open_position(uid, "ETHUSDT", "long", 1, 3_000, 5)
    linked = accounts.link("ada", "demo-bybit", *exchange.add_key(uid))
    assert linked.venue == "BTI demo exchange (Bybit protocol)"
    [position] = accounts.positions("ada")
    assert (position.symbol, position.leverage) == ("ETHUSDT", 5)
    with pytest.raises(AccountError, match="linked to another BTI user"):
        accounts.link("bob", "demo", *exchange.add_key(uid))
    trading = exchange.add_key(exchange.add_account(), enableFutures=True)
    with pytest.raises(AccountError, match="can also trade"):
        accounts.link("bob", "demo-bybit", *trading)
