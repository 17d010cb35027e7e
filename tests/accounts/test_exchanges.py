"""ccxt, unchanged, against the demo exchange speaking Binance USDⓈ-M's REST protocol: signed
requests, the exchange's error codes, exact figures, and forced orders over many pages."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from bti_core.accounts import demo_exchange
from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.exchanges import connect
from bti_core.errors import AccountError, ExchangeDownError, ExchangeError, ExchangeKeyError
from bti_core.risk.liquidation import brackets_for, liquidation_price
from tests.accounts.conftest import DAY, T0, forced_history


def reader(ex: DemoExchange, uid: str, **rights: bool) -> Any:
    key, secret = ex.add_key(uid, **rights)
    return connect("demo", key, secret, demo_url=ex.url)


def test_positions_are_read_exactly_with_the_exchanges_liquidation_price(
    exchange: DemoExchange,
) -> None:
    uid = exchange.add_account(10_000)
    exchange.open_position(uid, "BTCUSDT", "long", "0.123", "50000.1", 20)
    exchange.open_position(uid, "ETHUSDT", "short", "2", "3000", 10, mode="cross")
    r = reader(exchange, uid)
    assert r.key_rights().beyond_reading == [] and r.account_uid() == uid
    long, short = sorted(r.positions(), key=lambda p: p.symbol)
    assert (long.symbol, long.side, long.size, long.entry_price) == (
        "BTCUSDT",
        "long",
        Decimal("0.123"),
        Decimal("50000.1"),
    )
    assert long.leverage == 20 and long.margin_mode == "isolated"
    assert long.margin == Decimal("0.123") * Decimal("50000.1") / 20  # exact, not a float
    expected = liquidation_price(50000.1, 0.123, 1, float(long.margin), brackets_for("BTCUSDT"))
    assert long.liquidation_price == pytest.approx(Decimal(str(round(float(expected[()]), 2))))
    assert (short.side, short.margin_mode, short.leverage) == ("short", "cross", 10)
    assert short.margin == Decimal(600) and short.adl_quantile == 2
    assert r.balance().wallet == Decimal(10_000)


def test_every_signed_request_is_checked_as_binance_checks_it(exchange: DemoExchange) -> None:
    uid = exchange.add_account()
    key, secret = exchange.add_key(uid)
    with pytest.raises(ExchangeKeyError, match="refused the key"):  # -1022, wrong signature
        connect("demo", key, "f" * 64, demo_url=exchange.url).positions()
    with pytest.raises(ExchangeKeyError, match="-2015"):  # unknown key
        connect("demo", "a" * 64, secret, demo_url=exchange.url).positions()
    good = connect("demo", key, secret, demo_url=exchange.url)
    assert good.positions() == []
    exchange.clock_skew_ms = -70_000  # the server is 70 s behind: requests from the future
    with pytest.raises(ExchangeDownError, match="-1021"):
        good.positions()
    exchange.clock_skew_ms = 0
    exchange.revoke_key(key)
    with pytest.raises(ExchangeKeyError, match="-2015"):
        good.positions()
    # unsigned, or signed without a timestamp: refused before anything is read
    for query in ("", "signature=00", "recvWindow=1&signature=00"):
        req = urllib.request.Request(
            f"{exchange.url}/fapi/v3/positionRisk?{query}", headers={"X-MBX-APIKEY": "a" * 64}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert json.loads(err.value.read())["code"] in (-2015, -1022)


def test_a_rate_limit_answers_429_with_retry_after_and_reads_as_try_later(
    exchange: DemoExchange,
) -> None:
    exchange.weight_limit = 25  # positions weigh 1 + 5 + 5 per read
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "long", 1, 50_000, 10)
    r = reader(exchange, uid)
    r.positions()
    r.positions()
    with pytest.raises(ExchangeDownError, match="429"):
        r.positions()
    exchange.down = True
    with pytest.raises(ExchangeDownError):
        r.positions()


def test_a_garbled_answer_is_refused_with_the_field_named(
    exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "long", 1, 50_000, 10)
    honest = demo_exchange._position_risk
    r = reader(exchange, uid)
    for field, junk, says in [
        ("positionAmt", "NaN", "out of range"),
        ("entryPrice", "1e40", "out of range"),
        ("markPrice", "-5", "above 0"),
        ("updateTime", "soon", "not an integer"),
        ("liquidationPrice", None, "not a number"),
    ]:

        def forged(*args: Any, field: str = field, junk: Any = junk) -> Any:
            return [{**row, field: junk} for row in honest(*args)]

        monkeypatch.setitem(demo_exchange._SIGNED, "/fapi/v3/positionRisk", forged)
        with pytest.raises(ExchangeError, match=f"{field}.*{says}|{says}.*{field}"):
            r.positions()
    monkeypatch.setitem(demo_exchange._SIGNED, "/fapi/v3/positionRisk", lambda *a: {"a": 1})
    with pytest.raises(ExchangeError, match="not a list"):
        r.positions()


def test_forced_orders_come_whole_across_full_pages_and_weeks(exchange: DemoExchange) -> None:
    uid = forced_history(exchange, "long")
    r = reader(exchange, uid)
    r.client.rateLimit = 1  # ccxt spaces calls by weight (forceOrders: 20 × 50 ms); not tested here
    liquidations = r.forced_orders("BTCUSDT", "liquidation", T0, T0 + 20 * DAY)
    assert len(liquidations) == 230 == len({o.order_id for o in liquidations})
    assert [o.time_ms for o in liquidations] == sorted(o.time_ms for o in liquidations)
    assert all(o.side == "long" and o.kind == "liquidation" for o in liquidations)
    [adl] = r.forced_orders("BTCUSDT", "adl", T0, T0 + 20 * DAY)
    assert (adl.quantity, adl.price, adl.time_ms) == (Decimal("0.5"), Decimal(55_000), T0 + DAY)
    assert r.forced_orders("ETHUSDT", "liquidation", T0, T0 + DAY) == []
    assert r.positions()[0].size == Decimal("1.5")


def test_the_demo_exchange_needs_its_address_and_no_user_chooses_one() -> None:
    with pytest.raises(AccountError, match="not running"):
        connect("demo", "a" * 64, "b" * 64)
    with pytest.raises(AccountError, match="BTI links binanceusdm, bybit, demo, demo-bybit"):
        connect("http://evil.example", "a" * 64, "b" * 64)
