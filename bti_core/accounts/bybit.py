"""Bybit's USDT perpetuals (https://bybit-exchange.github.io/docs/v5/intro)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from bti_core.accounts import calls
from bti_core.accounts.calls import PAGE, WEEK_MS, Reader
from bti_core.accounts.types import (
    Balance,
    CloseKind,
    ForcedOrder,
    KeyRights,
    MarginMode,
    Position,
    Side,
    decimal_field,
    int_field,
)
from bti_core.errors import ExchangeError
from bti_core.market.schema import canonical_symbol


class BybitLinear(Reader):
    """`AccountReader` over Bybit's USDT perpetuals (v5 API; or the demo exchange speaking it):
    ``GET /v5/user/query-api`` (the key's rights and the account's ``userID``),
    ``/v5/position/list?category=linear``, ``/v5/account/wallet-balance`` and
    ``/v5/execution/list`` (``execType`` BustTrade: a liquidation; AdlTrade: an
    auto-deleveraging; paged by ``cursor``, at most 100 a page, 7 days a window).
    """

    def ws_auth(self, expires_ms: int) -> list[str]:
        """The private stream's ``auth`` arguments: the key, when the request expires and the
        HMAC-SHA256 of ``GET/realtime`` + that time under the secret (Bybit's "Authentication"
        for websockets)."""
        payload = f"GET/realtime{expires_ms}".encode()
        signature = hmac.new(self._secret.encode(), payload, hashlib.sha256).hexdigest()
        return [self._key, str(expires_ms), signature]

    def _result(self, what: str, fn: Callable[[], Any]) -> dict[str, Any]:
        answer = calls.record(self._call(what, fn), what)
        result = answer.get("result")
        if str(answer.get("retCode")) != "0" or not isinstance(result, dict):
            raise ExchangeError(f"the exchange refused {what}: {answer.get('retMsg')!r}")
        return result

    def _key_info(self) -> dict[str, Any]:
        return self._result("the key's rights", self.client.privateGetV5UserQueryApi)

    def key_rights(self) -> KeyRights:
        r = self._key_info()
        perms = r.get("permissions") if isinstance(r.get("permissions"), dict) else {}
        assert isinstance(perms, dict)

        def granted(*groups: str) -> set[str]:
            return {str(p) for g in groups for p in (perms.get(g) or [])}

        wallet = granted("Wallet")
        return KeyRights(
            read=True,  # every key reads
            # a key not marked read-only that names no other power is taken as able to trade
            trade=bool(granted("ContractTrade", "Spot", "Options", "Derivatives", "CopyTrading"))
            or (str(r.get("readOnly")) != "1" and not wallet),
            withdraw="Withdraw" in wallet,
            transfer=bool(wallet & {"AccountTransfer", "SubMemberTransfer"}),
        )

    def account_uid(self) -> str:
        uid = self._key_info().get("userID")
        if not isinstance(uid, int | str) or not re.fullmatch(r"[0-9]{1,20}", str(uid)):
            raise ExchangeError(f"the exchange's account has no usable userID: {uid!r}")
        return str(uid)

    def positions(self) -> list[Position]:
        result = self._result(
            "the positions",
            lambda: self.client.privateGetV5PositionList(
                {"category": "linear", "settleCoin": "USDT", "limit": 200}
            ),
        )
        rows = calls.rows(result.get("list"), "positions")
        return [self._bybit_position(r) for r in rows if decimal_field(r, "size") != 0]

    @staticmethod
    def _bybit_position(r: dict[str, Any]) -> Position:
        symbol = canonical_symbol(str(r.get("symbol", "")))
        if r.get("side") not in ("Buy", "Sell"):
            raise ExchangeError(f"the exchange's 'side' of {symbol} is not Buy or Sell")
        side: Side = "long" if r["side"] == "Buy" else "short"
        mode: MarginMode = "isolated" if str(r.get("tradeMode")) == "1" else "cross"
        leverage = decimal_field(r, "leverage", positive=True)
        liq = str(r.get("liqPrice") or "0")
        rank = r.get("adlRankIndicator")
        return Position(
            symbol=symbol,
            side=side,
            size=decimal_field(r, "size", positive=True),
            entry_price=decimal_field(r, "avgPrice", positive=True),
            mark_price=decimal_field(r, "markPrice", positive=True),
            leverage=int_field({"l": int(leverage)}, "l", low=1, high=200),
            margin_mode=mode,
            margin=decimal_field(r, "positionBalance" if mode == "isolated" else "positionIM"),
            liquidation_price=(
                None if decimal_field({"l": liq}, "l") <= 0 else decimal_field({"l": liq}, "l")
            ),
            # Bybit ranks 1 (last in the queue) … 5, 0 when empty: Binance's 0 … 4
            adl_quantile=None
            if rank is None
            else max(0, int_field(r, "adlRankIndicator", high=5) - 1),
            updated_ms=int_field(r, "updatedTime"),
        )

    def balance(self) -> Balance:
        result = self._result(
            "the balance",
            lambda: self.client.privateGetV5AccountWalletBalance({"accountType": "UNIFIED"}),
        )
        for account in calls.rows(result.get("list"), "balance"):
            for coin in calls.rows(account.get("coin"), "balance"):
                if coin.get("coin") == "USDT":
                    return Balance(
                        "USDT",
                        decimal_field(coin, "walletBalance"),
                        decimal_field(coin, "availableToWithdraw"),
                    )
        return Balance("USDT", Decimal(0), Decimal(0))

    def forced_orders(
        self, symbol: str, kind: CloseKind, start_ms: int, end_ms: int
    ) -> list[ForcedOrder]:
        """Every execution the exchange forced on ``symbol`` in [start, end], oldest first,
        page by page (``nextPageCursor``), a week at a time."""
        found: dict[str, ForcedOrder] = {}
        sym = canonical_symbol(symbol)
        for lo in range(start_ms, end_ms + 1, WEEK_MS):
            hi, cursor = min(lo + WEEK_MS - 1, end_ms), ""
            for _ in range(10_000):  # a bound: an exchange that pages forever is refused
                params = {
                    "category": "linear",
                    "symbol": sym,
                    "execType": "AdlTrade" if kind == "adl" else "BustTrade",
                    "startTime": lo,
                    "endTime": hi,
                    "limit": PAGE,
                    **({"cursor": cursor} if cursor else {}),
                }
                result = self._result(
                    "the forced orders", partial(self.client.privateGetV5ExecutionList, params)
                )
                for r in calls.rows(result.get("list"), "forced orders"):
                    at = int_field(r, "execTime")
                    if str(r.get("symbol")) != sym or not lo <= at <= hi:
                        continue
                    # the execution closing a long sells; a short's buys
                    side: Side = "long" if r.get("side") == "Sell" else "short"
                    order = ForcedOrder(
                        order_id=str(r.get("execId") or r.get("orderId")),
                        symbol=sym,
                        side=side,
                        kind=kind,
                        quantity=decimal_field(r, "execQty", positive=True),
                        price=decimal_field(r, "execPrice", positive=True),
                        time_ms=at,
                    )
                    found[order.order_id] = order
                cursor = str(result.get("nextPageCursor") or "")
                if not cursor:
                    break
            else:
                raise ExchangeError("the exchange's forced orders never ended (over 10,000 pages)")
        return sorted(found.values(), key=lambda o: (o.time_ms, o.order_id))
