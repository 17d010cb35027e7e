"""What an exchange answers about a linked account, fuzzed: a position row and a forced-order row
in Binance USDⓈ-M's format with none, one or two fields spoilt, missing or from another symbol.

Property: the adapter either raises an `ExchangeError` (a `BTIError`) naming the field, or
returns a record whose figures are valid: a known symbol and side, size and prices positive and
finite, leverage 1…200, an ADL quantile 0…4; a forced order only inside the window asked for.
One forged answer never becomes a number that moves money, and never another exception."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bti_core.accounts.binance import BinanceUsdm
from bti_core.accounts.bybit import BybitLinear
from bti_core.accounts.types import LARGEST
from bti_core.errors import BTIError, ExchangeError
from tests.fuzz.conftest import ANY_VALUE, cases, tally

junk = st.one_of(ANY_VALUE, st.sampled_from(["-inf", "1e16", "0x10", "NaN"]))
price = st.decimals(Decimal("0.01"), Decimal(10**6), places=2).map(str)
POSITION = {
    "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    "positionSide": st.sampled_from(["BOTH", "LONG", "SHORT"]),
    "positionAmt": st.decimals(Decimal("-50"), Decimal(50), places=3).map(str),
    "entryPrice": price,
    "markPrice": price,
    "liquidationPrice": st.one_of(st.just("0"), price),
    "isolatedWallet": price,
    "positionInitialMargin": price,
    "updateTime": st.integers(1_500_000_000_000, 1_900_000_000_000),
}
CONFIG = {
    "leverage": st.integers(1, 125),
    "marginType": st.sampled_from(["ISOLATED", "CROSSED"]),
}
ORDER = {
    "orderId": st.integers(1, 10**12),
    "symbol": st.just("BTCUSDT"),
    "status": st.just("FILLED"),
    "side": st.sampled_from(["SELL", "BUY"]),
    "positionSide": st.sampled_from(["BOTH", "LONG", "SHORT"]),
    "executedQty": st.decimals(Decimal("0.001"), Decimal(50), places=3).map(str),
    "avgPrice": price,
    "updateTime": st.integers(1_700_000_000_000, 1_700_000_100_000),
}
ORDER_BAD = {**{k: junk for k in ORDER}, "symbol": st.sampled_from(["ETHUSDT", "", "BTC"])}


def spoil(draw: st.DrawFn, valid: dict[str, Any], bad: dict[str, Any] | None = None) -> dict:
    spoilt = draw(st.sets(st.sampled_from(sorted(valid)), max_size=2))
    row: dict[str, Any] = {}
    for k, strategy in valid.items():
        if k in spoilt and draw(st.integers(0, 3)) == 0:
            continue  # missing
        row[k] = draw((bad or {}).get(k, junk) if k in spoilt else strategy)
    return row


@cases(600)
@given(data=st.data())
def test_a_position_row(data: st.DataObject) -> None:
    row = spoil(data.draw, POSITION)
    cfg = {"symbol": "BTCUSDT", **spoil(data.draw, CONFIG)}
    quantile = data.draw(st.one_of(st.integers(0, 4), junk))
    adl = {"BTCUSDT": {"BOTH": quantile, "LONG": quantile, "SHORT": quantile}}
    try:
        p = BinanceUsdm._position(row, {"BTCUSDT": cfg, "ETHUSDT": cfg}, adl)
    except BTIError as e:
        assert isinstance(e, ExchangeError) or "symbol" in str(e), e
        tally("exchange position row", "refused")
        return
    tally("exchange position row", "accepted")
    assert p.symbol in ("BTCUSDT", "ETHUSDT") and p.side in ("long", "short")
    assert 0 < p.size <= LARGEST and 0 < p.entry_price <= LARGEST and p.mark_price > 0
    assert 1 <= p.leverage <= 200 and p.margin_mode in ("isolated", "cross")
    assert p.margin.is_finite() and (p.adl_quantile is None or 0 <= p.adl_quantile <= 4)
    assert p.liquidation_price is None or p.liquidation_price > 0


class _Answers:
    """Hands the adapter one page, as ccxt would after the exchange answered."""

    def __init__(self, page: list[dict[str, Any]]) -> None:
        self.page = page
        self.options: dict[str, Any] = {}

    def fapiPrivateGetForceOrders(self, params: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: N802
        return self.page


@cases(400)
@given(data=st.data())
def test_a_forced_order_page(data: st.DataObject) -> None:
    rows = [spoil(data.draw, ORDER, ORDER_BAD) for _ in range(data.draw(st.integers(0, 4)))]
    lo, hi = 1_700_000_000_000, 1_700_000_050_000
    try:
        orders = BinanceUsdm(_Answers(rows))._forced_page("BTCUSDT", "liquidation", lo, hi)
    except BTIError as e:
        assert isinstance(e, ExchangeError), e
        tally("exchange forced orders", "refused")
        return
    tally("exchange forced orders", "accepted")
    for o in orders:
        assert o.symbol == "BTCUSDT" and lo <= o.time_ms <= hi and o.kind == "liquidation"
        assert 0 < o.quantity <= LARGEST and 0 < o.price <= LARGEST and o.side in ("long", "short")


BYBIT_POSITION = {
    "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    "side": st.sampled_from(["Buy", "Sell"]),
    "size": st.decimals(Decimal("0.001"), Decimal(50), places=3).map(str),
    "avgPrice": price,
    "markPrice": price,
    "liqPrice": st.one_of(st.just(""), price),
    "leverage": st.integers(1, 100).map(str),
    "tradeMode": st.sampled_from([0, 1]),
    "positionBalance": price,
    "positionIM": price,
    "adlRankIndicator": st.integers(0, 5),
    "updatedTime": st.integers(1_500_000_000_000, 1_900_000_000_000).map(str),
}


@cases(400)
@given(data=st.data())
def test_a_bybit_position_row(data: st.DataObject) -> None:
    row = spoil(data.draw, BYBIT_POSITION)
    try:
        p = BybitLinear._bybit_position(row)
    except BTIError as e:
        assert isinstance(e, ExchangeError) or "symbol" in str(e), e
        tally("exchange position row (Bybit)", "refused")
        return
    tally("exchange position row (Bybit)", "accepted")
    assert p.symbol in ("BTCUSDT", "ETHUSDT") and p.side in ("long", "short")
    assert 0 < p.size <= LARGEST and 0 < p.entry_price <= LARGEST and p.mark_price > 0
    assert 1 <= p.leverage <= 200 and p.margin.is_finite()
    assert p.adl_quantile is None or 0 <= p.adl_quantile <= 4
    assert p.liquidation_price is None or p.liquidation_price > 0
