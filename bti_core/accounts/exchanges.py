"""One adapter per exchange behind one interface, `AccountReader`: what a read-only key may do,
the account's identity, its open positions, its balance and the orders the exchange placed
itself to close a position (liquidation, auto-deleveraging).

Each adapter talks to its exchange through ccxt, unchanged (signing, rate limiting, error codes
are ccxt's); it calls the exchange's documented endpoints and reads their raw strings into
`Decimal`, never ccxt's floats: `binance` (Binance USDⓈ-M) and `bybit` (Bybit's USDT
perpetuals). The demo exchange speaks both protocols on 127.0.0.1 (`demo_exchange`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bti_core.accounts.binance import BinanceUsdm
from bti_core.accounts.bybit import BybitLinear
from bti_core.accounts.types import Balance, CloseKind, ForcedOrder, KeyRights, Position
from bti_core.errors import AccountError


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
    books: str  # whose account ids these are: one exchange, however many protocols reach it
    demo: bool = False


VENUES: dict[str, Venue] = {
    "binanceusdm": Venue("Binance USDⓈ-M", "binanceusdm", "binance"),
    "bybit": Venue("Bybit USDT perpetuals", "bybit", "bybit"),
    "demo": Venue("BTI demo exchange (Binance protocol)", "binanceusdm", "demo", demo=True),
    "demo-bybit": Venue("BTI demo exchange (Bybit protocol)", "bybit", "demo", demo=True),
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


ADAPTERS: dict[str, Callable[[Any, str, str], AccountReader]] = {
    "binanceusdm": BinanceUsdm,
    "bybit": BybitLinear,
}


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
