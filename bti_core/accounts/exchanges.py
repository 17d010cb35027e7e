"""One adapter per exchange behind one interface, `AccountReader`: what a read-only key may do,
the account's identity, its open positions, its balance and the orders the exchange placed
itself to close a position (liquidation, auto-deleveraging).

Each adapter talks to its exchange through ccxt, unchanged (signing, rate limiting, error codes
are ccxt's); it calls the exchange's documented endpoints and reads their raw strings into
`Decimal`, never ccxt's floats. The demo exchange is Binance's protocol on 127.0.0.1: the same
adapter, pointed at `demo_exchange`'s server.

Binance USDⓈ-M (https://developers.binance.com/docs/derivatives/usds-margined-futures):
``GET /sapi/v1/account/apiRestrictions`` (the key's rights), ``GET /api/v3/account`` (the
account's ``uid``), ``GET /fapi/v3/positionRisk`` with ``GET /fapi/v1/symbolConfig`` (leverage
and margin type, which v3 no longer reports per position), ``GET /fapi/v1/adlQuantile``,
``GET /fapi/v3/balance`` and ``GET /fapi/v1/forceOrders`` (``autoCloseType`` LIQUIDATION or
ADL; at most 100 a page, a window of at most 7 days).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
from bti_core.errors import AccountError, ExchangeDownError, ExchangeError, ExchangeKeyError
from bti_core.market.schema import canonical_symbol

_INTERNAL = re.compile(r'"code":\s*-1001\b')
WEEK_MS = 7 * 24 * 3600 * 1000
PAGE = 100


class AccountReader(Protocol):
    """What BTI reads of one linked account."""

    def key_rights(self) -> KeyRights: ...
    def account_uid(self) -> str: ...
    def positions(self) -> list[Position]: ...
    def balance(self) -> Balance: ...
    def forced_orders(
        self, symbol: str, kind: CloseKind, start_ms: int, end_ms: int
    ) -> list[ForcedOrder]: ...


@dataclass(frozen=True)
class Venue:
    """An exchange BTI can link: its label on the pages, ccxt's id, and whether it is the
    local demo exchange (linkable only on the local chain)."""

    label: str
    ccxt_id: str
    demo: bool = False


VENUES: dict[str, Venue] = {
    "binanceusdm": Venue("Binance USDⓈ-M", "binanceusdm"),
    "demo": Venue("BTI demo exchange (Binance protocol, 127.0.0.1)", "binanceusdm", demo=True),
}


def venue(exchange: str) -> Venue:
    try:
        return VENUES[exchange]
    except KeyError:
        raise AccountError(
            f"unknown exchange {exchange!r}: BTI links {', '.join(sorted(VENUES))}"
        ) from None


def _point_at(urls: dict[str, Any], base: str) -> dict[str, Any]:
    """ccxt's API URLs with their scheme and host replaced by ``base`` (paths kept)."""
    out: dict[str, Any] = {}
    for name, url in urls.items():
        out[name] = (
            _point_at(url, base)
            if isinstance(url, dict)
            else re.sub(r"^https?://[^/]+", base.rstrip("/"), url)
        )
    return out


def ccxt_client(exchange: str, api_key: str, secret: str, *, base_url: str | None = None) -> Any:
    """ccxt's client for ``exchange`` with the key; ``base_url`` sends every call to another
    host speaking the same protocol (the demo exchange)."""
    import ccxt

    v = venue(exchange)
    client = getattr(ccxt, v.ccxt_id)(
        {
            "apiKey": api_key,
            "secret": secret,
            # ccxt spaces a client's calls by their weight; the demo exchange, on this machine,
            # enforces its limits itself (429 with Retry-After), as the real one does too
            "enableRateLimit": not v.demo,
            "timeout": 10_000,
            # currencies come from a spot endpoint BTI has no use for
            "options": {"fetchCurrencies": False},
        }
    )
    if base_url is not None:
        client.urls["api"] = _point_at(client.urls["api"], base_url)
    return client


def _call(what: str, fn: Callable[[], Any]) -> Any:
    """One exchange call, its failure in BTI's words: the key refused, the exchange away, or an
    answer BTI cannot use."""
    import ccxt

    try:
        return fn()
    except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended) as e:
        raise ExchangeKeyError(
            f"the exchange refused the key while reading {what}: {e}. Check that the key is "
            "still enabled, its secret is right and its IP whitelist allows BTI"
        ) from None
    except (ccxt.NetworkError, ccxt.InvalidNonce) as e:
        # rate limits (DDoSProtection) and timestamps out of the window are retried later
        raise ExchangeDownError(f"the exchange did not answer {what}: {e}") from None
    except ccxt.BaseError as e:
        if _INTERNAL.search(str(e)):  # Binance -1001 "Internal error … try again"
            raise ExchangeDownError(f"the exchange did not answer {what}: {e}") from None
        raise ExchangeError(f"the exchange refused {what}: {e}") from None


def _rows(answer: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(r, dict) for r in answer):
        raise ExchangeError(f"the exchange's {what} is not a list of records")
    return answer


def _record(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ExchangeError(f"the exchange's {what} is not a record")
    return answer


class BinanceUsdm:
    """`AccountReader` over Binance USDⓈ-M futures (or the demo exchange, its protocol)."""

    def __init__(self, client: Any, api_key: str = "", secret: str = "") -> None:
        self.client = client
        self._key, self._secret = api_key, secret

    def __repr__(self) -> str:  # never the key
        return f"BinanceUsdm(key …{self._key[-4:]})"

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """One call with this account's credentials: the client may be shared by the thread's
        readers (`shared_client`), so they are set before each call, in the thread that
        makes it."""
        self.client.apiKey, self.client.secret = self._key, self._secret
        # ccxt reads a -2015 after any earlier success of the client as a temporary ban; for
        # BTI it is this key refused (revoked, or its IP list changed), whatever came before
        self.client.options["hasAlreadyAuthenticatedSuccessfully"] = False
        return _call(what, fn)

    def key_rights(self) -> KeyRights:
        r = _record(
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
        r = _record(self._call("the account", self.client.privateGetAccount), "account")
        uid = r.get("uid")
        if not isinstance(uid, int | str) or not re.fullmatch(r"[0-9]{1,20}", str(uid)):
            raise ExchangeError(f"the exchange's account has no usable uid: {uid!r}")
        return str(uid)

    def positions(self) -> list[Position]:
        risk = _rows(
            self._call("the positions", self.client.fapiPrivateV3GetPositionRisk), "positions"
        )
        held = [r for r in risk if decimal_field(r, "positionAmt") != 0]
        if not held:
            return []
        config = {
            str(c.get("symbol")): c
            for c in _rows(
                self._call("the symbols' leverage", self.client.fapiPrivateGetSymbolConfig),
                "symbol configuration",
            )
        }
        adl = {
            str(a.get("symbol")): a.get("adlQuantile", {})
            for a in _rows(
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
        rows = _rows(self._call("the balance", self.client.fapiPrivateV3GetBalance), "balance")
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
        rows = _rows(
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


ADAPTERS: dict[str, Callable[[Any, str, str], AccountReader]] = {"binanceusdm": BinanceUsdm}


def connect(
    exchange: str, api_key: str, secret: str, *, demo_url: str | None = None
) -> AccountReader:
    """The reader for one account. The demo exchange is reached at ``demo_url`` only; a real
    exchange only at its own address (a user never chooses where BTI sends a key)."""
    v = venue(exchange)
    if v.demo and demo_url is None:
        raise AccountError("the demo exchange is not running here (BTI_DEMO_EXCHANGE_URL)")
    client = shared_client(exchange, base_url=demo_url if v.demo else None)
    return ADAPTERS[v.ccxt_id](client, api_key, secret)


_local = threading.local()


def shared_client(exchange: str, *, base_url: str | None = None) -> Any:
    """This thread's ccxt client for ``exchange`` (made once a thread: a client costs a few
    milliseconds to build and keeps its connections open). Readers set their own key on it
    before each call, so one thread's readers take turns on it and never share a key."""
    clients: dict[tuple[str, str | None], Any] = _local.__dict__.setdefault("clients", {})
    client = clients.get((exchange, base_url))
    if client is None:
        client = clients[(exchange, base_url)] = ccxt_client(exchange, "", "", base_url=base_url)
    return client
