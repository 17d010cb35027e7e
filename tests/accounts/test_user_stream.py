"""Linked accounts followed on their Binance user data stream (`accounts.user_stream`) against
the demo exchange's listen keys and websocket: a change on the exchange wakes the account's
read at once; forged, garbled and oversized messages change nothing and stop nothing; a lapsed
listen key is replaced."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core.accounts import user_stream
from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.service import AccountsService
from bti_core.accounts.user_stream import UserStreams
from bti_core.db.models import PositionChange


def until(what: Callable[[], object], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.fixture
def followed(
    engine: Engine,
    exchange: DemoExchange,
    accounts: AccountsService,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[UserStreams, str, int]]:
    """ada's account, linked and followed on its stream (its opening read taken)."""
    monkeypatch.setattr(user_stream, "MIN_GAP", 0.0)
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "long", "1", 60_000, 10)
    account = accounts.link("ada", "demo", *exchange.add_key(uid))
    streams = UserStreams(accounts, demo_ws_url=exchange.ws_url).start()
    try:
        assert streams.wait(10) and streams.take() == [account.id]  # read once, on opening
        # the exchange sends to the socket once its handler has it (a change before then is
        # the opening read's to see, as on Binance)
        until(lambda: served(exchange))
        yield streams, uid, account.id or 0
    finally:
        streams.stop()


def served(exchange: DemoExchange) -> bool:
    """Whether the exchange holds an open stream socket (a closed one's handler may linger)."""
    return any(not ws.closed for open_ in exchange.streams.values() for ws in open_)


def listen_key(exchange: DemoExchange) -> str:
    [key] = exchange.listen_keys
    return key


def test_a_change_on_the_exchange_wakes_the_accounts_read_at_once(
    followed: tuple[UserStreams, str, int],
    exchange: DemoExchange,
    accounts: AccountsService,
    engine: Engine,
) -> None:
    streams, uid, account_id = followed
    exchange.change(uid, "BTCUSDT", "long", size="0.4")
    assert streams.wait(5)
    assert streams.take() == [account_id]
    assert [c[2] for c in accounts.sync(account_id).changes] == ["reduced"]
    exchange.deleverage(uid, "BTCUSDT", "long", "0.4", 70_000)  # ADL: an order and an update
    until(lambda: streams.stats["woke"] >= 3)
    assert streams.take() == [account_id]  # once, however many events came
    with Session(engine) as s:
        changes = [c.change for c in s.exec(select(PositionChange)).all()]
    assert changes[-1] == "reduced"
    accounts.sync(account_id)
    assert accounts.positions("ada") == []


def test_forged_garbled_and_huge_messages_change_nothing_and_stop_nothing(
    followed: tuple[UserStreams, str, int],
    exchange: DemoExchange,
    accounts: AccountsService,
    engine: Engine,
) -> None:
    streams, uid, account_id = followed
    key = listen_key(exchange)
    exchange.push_raw(key, "not json {")
    exchange.push_raw(key, json.dumps([1, 2, 3]))
    exchange.push_raw(key, json.dumps({"e": "SOMETHING_ELSE"}))
    until(lambda: streams.stats["ignored"] >= 3)
    assert not streams.take()  # none of them wakes a read
    # a forged update saying the position is gone: a read is woken, and the exchange's own
    # answer (still 1 BTC long) is what is recorded — nothing
    forged = {
        "e": "ACCOUNT_UPDATE",
        "E": 1,
        "a": {"m": "ORDER", "P": [{"s": "BTCUSDT", "pa": "0"}]},
    }
    exchange.push_raw(key, json.dumps(forged))
    assert streams.wait(5) and streams.take() == [account_id]
    assert accounts.sync(account_id).changes == []
    [position] = accounts.positions("ada")
    assert str(position.size) == "1"
    # a message far over any event's size: the stream is dropped and opened again
    opened = streams.stats["opened"]
    exchange.push_raw(key, "x" * (user_stream.MAX_MESSAGE + 1))
    until(lambda: streams.stats["opened"] > opened)
    until(lambda: served(exchange))
    streams.take()
    exchange.change(uid, "BTCUSDT", "long", size="0.5")  # and it still follows the account
    assert streams.wait(5) and streams.take() == [account_id]
    with Session(engine) as s:  # the stream itself wrote nothing: only the linking's read
        assert [c.change for c in s.exec(select(PositionChange)).all()] == ["opened"]


def test_a_lapsed_listen_key_is_replaced_by_a_new_one(
    followed: tuple[UserStreams, str, int], exchange: DemoExchange
) -> None:
    streams, uid, account_id = followed
    old = listen_key(exchange)
    exchange.expire_listen_key(old)
    until(lambda: streams.stats["lapsed"] == 1 and streams.stats["opened"] == 2)
    until(lambda: served(exchange))
    new = listen_key(exchange)
    assert new != old
    streams.take()
    exchange.close(uid, "BTCUSDT", "long")
    assert streams.wait(5) and streams.take() == [account_id]


def test_a_bybit_account_is_followed_on_its_signed_private_stream(
    exchange: DemoExchange, accounts: AccountsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(user_stream, "MIN_GAP", 0.0)
    uid = exchange.add_account()
    exchange.open_position(uid, "ETHUSDT", "short", "2", 3_000, 10)
    key, secret = exchange.add_key(uid)
    account = accounts.link("ada", "demo-bybit", key, secret)
    streams = UserStreams(accounts, demo_ws_url=exchange.ws_url).start()
    try:
        assert streams.wait(10) and streams.take() == [account.id]  # authenticated, subscribed
        [(_, (owner, topics))] = exchange.bybit_streams.items()
        assert owner == uid and topics == {"position", "execution"}
        exchange.push_bybit_raw(uid, json.dumps({"topic": "greeting", "data": []}))
        until(lambda: streams.stats["ignored"] >= 1)
        assert not streams.take()
        exchange.deleverage(uid, "ETHUSDT", "short", "1", 2_000)  # an AdlTrade and a position
        assert streams.wait(5) and streams.take() == [account.id]
        assert [c[2] for c in accounts.sync(account.id or 0).changes] == ["reduced"]
        # a revoked key: the stream's auth is refused, and nothing else happens
        exchange.revoke_key(key)
        for ws in list(exchange.bybit_streams):
            exchange._send_to([ws], "", True)  # the exchange drops the stream
        until(lambda: streams.stats["refused"] >= 1)
        assert not exchange.bybit_streams
    finally:
        streams.stop()


def test_more_accounts_than_a_connection_pool_holds_each_get_their_stream(
    engine: Engine, exchange: DemoExchange, accounts: AccountsService
) -> None:
    """One socket per account, held open: aiohttp's default pool (100) once left the 101st
    account without its stream."""
    from tests.accounts.conftest import traders

    names = [f"t{i}" for i in range(101)]
    traders(engine, *names)
    for name in names:
        uid = exchange.add_account()
        exchange.open_position(uid, "BTCUSDT", "long", "0.1", 60_000, 10)
        accounts.link(name, "demo", *exchange.add_key(uid))
    streams = UserStreams(accounts, demo_ws_url=exchange.ws_url).start()
    try:
        until(lambda: streams.stats["opened"] == 101, timeout=30)
    finally:
        streams.stop()
