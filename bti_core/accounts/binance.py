"""Binance USDⓈ-M futures (https://developers.binance.com/docs/derivatives/usds-margined-futures):
``GET /sapi/v1/account/apiRestrictions`` (the key's rights), ``GET /api/v3/account`` (the
account's ``uid``), ``GET /fapi/v3/positionRisk`` with ``GET /fapi/v1/symbolConfig`` (leverage
and margin type, which v3 no longer reports per position), ``GET /fapi/v1/adlQuantile``,
``GET /fapi/v3/balance`` and ``GET /fapi/v1/forceOrders`` (``autoCloseType`` LIQUIDATION or
ADL; at most 100 a page, a window of at most 7 days)."""

from __future__ import annotations

import re
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


class BinanceUsdm(Reader):
    """`AccountReader` over Binance USDⓈ-M futures (or the demo exchange, its protocol)."""

    def listen_key(self) -> str:
        """The account's user data stream key (``POST /fapi/v1/listenKey``, the API key alone:
        a read-only key may open it); the same key while one is open, its hour extended."""
        r = calls.record(
            self._call("a user data stream", self.client.fapiPrivatePostListenKey), "listen key"
        )
        key = r.get("listenKey")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9]{8,128}", key):
            raise ExchangeError(f"the exchange's listen key is not one: {str(key)[:80]!r}")
        return key

    def keep_alive(self) -> None:
        """Extend the open user data stream by an hour (``PUT /fapi/v1/listenKey``)."""
        self._call("a user data stream", self.client.fapiPrivatePutListenKey)

    def key_rights(self) -> KeyRights:
        r = calls.record(
            self._call("the key's rights", self.client.sapiGetAccountApiRestrictions), "key rights"
        )

        def on(*names: str) -> bool:
            return any(r.get(n) is True for n in names)

        return KeyRights(
            read=on("enableReading"),
            trade=on(
                "enableFutures",
                "enableSpotAndMarginTrading",
                "enableMargin",
                "enableVanillaOptions",
                "enablePortfolioMarginTrading",
            ),
            withdraw=on("enableWithdrawals"),
            transfer=on("enableInternalTransfer", "permitsUniversalTransfer"),
        )

    def account_uid(self) -> str:
        r = calls.record(self._call("the account", self.client.privateGetAccount), "account")
        uid = r.get("uid")
        if not isinstance(uid, int | str) or not re.fullmatch(r"[0-9]{1,20}", str(uid)):
            raise ExchangeError(f"the exchange's account has no usable uid: {uid!r}")
        return str(uid)

    def positions(self) -> list[Position]:
        risk = calls.rows(
            self._call("the positions", self.client.fapiPrivateV3GetPositionRisk), "positions"
        )
        held = [r for r in risk if decimal_field(r, "positionAmt") != 0]
        if not held:
            return []
        config = {
            str(c.get("symbol")): c
            for c in calls.rows(
                self._call("the symbols' leverage", self.client.fapiPrivateGetSymbolConfig),
                "symbol configuration",
            )
        }
        adl = {
            str(a.get("symbol")): a.get("adlQuantile", {})
            for a in calls.rows(
                self._call("the ADL quantiles", self.client.fapiPrivateGetAdlQuantile),
                "ADL quantiles",
            )
        }
        return [self._position(r, config, adl) for r in held]

    @staticmethod
    def _position(
        r: dict[str, Any], config: dict[str, dict[str, Any]], adl: dict[str, Any]
    ) -> Position:
        symbol = canonical_symbol(str(r.get("symbol", "")))
        amount = decimal_field(r, "positionAmt")
        if amount == 0:
            raise ExchangeError(f"the exchange's 'positionAmt' of {symbol} is 0: no position")
        hedge_side = str(r.get("positionSide", "BOTH")).upper()
        long = hedge_side == "LONG" or (hedge_side == "BOTH" and amount > 0)
        side: Side = "long" if long else "short"
        cfg = config.get(symbol)
        if cfg is None:
            raise ExchangeError(f"the exchange gave no leverage for {symbol}")
        leverage = int_field(cfg, "leverage", low=1, high=200)
        mode: MarginMode = (
            "isolated" if str(cfg.get("marginType", "")).upper() == "ISOLATED" else "cross"
        )
        margin = decimal_field(
            r, "isolatedWallet" if mode == "isolated" else "positionInitialMargin"
        )
        liq = decimal_field(r, "liquidationPrice")
        # one-way mode reads "BOTH"; hedge mode its side's (Binance's adlQuantile docs)
        found = adl.get(symbol)
        quantiles: dict[str, Any] = found if isinstance(found, dict) else {}
        q = quantiles.get(hedge_side if hedge_side in ("LONG", "SHORT") else "BOTH")
        return Position(
            symbol=symbol,
            side=side,
            size=abs(amount),
            entry_price=decimal_field(r, "entryPrice", positive=True),
            mark_price=decimal_field(r, "markPrice", positive=True),
            leverage=leverage,
            margin_mode=mode,
            margin=margin,
            liquidation_price=liq if liq > 0 else None,  # 0: the account cannot be liquidated
            adl_quantile=int_field({"q": q}, "q", high=4) if q is not None else None,
            updated_ms=int_field(r, "updateTime"),
        )

    def balance(self) -> Balance:
        rows = calls.rows(self._call("the balance", self.client.fapiPrivateV3GetBalance), "balance")
        for r in rows:
            if r.get("asset") == "USDT":
                return Balance(
                    "USDT", decimal_field(r, "balance"), decimal_field(r, "availableBalance")
                )
        return Balance("USDT", decimal_field({"b": 0}, "b"), decimal_field({"b": 0}, "b"))

    def forced_orders(
        self, symbol: str, kind: CloseKind, start_ms: int, end_ms: int
    ) -> list[ForcedOrder]:
        """Every order the exchange forced on ``symbol`` in [start, end], oldest first. A full
        page is split in halves until each half fits (the endpoint's order within a page is
        not documented, so paging by the last time seen could skip records)."""
        found: dict[str, ForcedOrder] = {}
        spans = [(s, min(s + WEEK_MS - 1, end_ms)) for s in range(start_ms, end_ms + 1, WEEK_MS)]
        while spans:
            lo, hi = spans.pop()
            page = self._forced_page(symbol, kind, lo, hi)
            if len(page) >= PAGE and hi > lo:
                mid = (lo + hi) // 2
                spans += [(lo, mid), (mid + 1, hi)]
                continue
            found.update({o.order_id: o for o in page})
        return sorted(found.values(), key=lambda o: (o.time_ms, o.order_id))

    def _forced_page(self, symbol: str, kind: CloseKind, lo: int, hi: int) -> list[ForcedOrder]:
        params = {
            "symbol": canonical_symbol(symbol),
            "autoCloseType": "ADL" if kind == "adl" else "LIQUIDATION",
            "startTime": lo,
            "endTime": hi,
            "limit": PAGE,
        }
        rows = calls.rows(
            self._call("the forced orders", lambda: self.client.fapiPrivateGetForceOrders(params)),
            "forced orders",
        )
        out = []
        for r in rows:
            if r.get("status") != "FILLED" or str(r.get("symbol")) != params["symbol"]:
                continue
            at = int_field(r, "updateTime")
            if not lo <= at <= hi:
                continue  # outside what was asked: not evidence for this window
            closing = str(r.get("side", "")).upper()
            hedge_side = str(r.get("positionSide", "BOTH")).upper()
            # hedge mode names the position's side; one-way mode: a SELL closes a long
            side: Side = (
                "long"
                if hedge_side == "LONG" or (hedge_side != "SHORT" and closing == "SELL")
                else "short"
            )
            out.append(
                ForcedOrder(
                    order_id=str(int_field(r, "orderId")),
                    symbol=params["symbol"],
                    side=side,
                    kind=kind,
                    quantity=decimal_field(r, "executedQty", positive=True),
                    price=decimal_field(r, "avgPrice", positive=True),
                    time_ms=at,
                )
            )
        return out
