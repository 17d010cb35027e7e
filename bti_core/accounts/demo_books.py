"""The demo exchange's books: accounts, API keys, positions and marks, and what its own engines
do to them — a mark at or beyond a position's liquidation price (Binance's formula,
`bti_core.risk.liquidation`) closes the position and records the forced order, as the
exchange's liquidation engine does; auto-deleveraging closes part of a profitable one. A cross
position is backed by the whole wallet, which is Binance's formula for an account holding one
position. The REST protocol over these books is `demo_exchange`'s.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bti_core.accounts.types import CloseKind, MarginMode, Side
from bti_core.market.schema import canonical_symbol
from bti_core.risk.liquidation import brackets_for, liquidation_price

READ_ONLY = {"enableReading": True}
WEIGHT_LIMIT = 2_400  # Binance USDⓈ-M: request weight per minute per IP
# The demo exchange's insurance fund runs dry when its mark moves this far within an hour: the
# bankrupt side's losses are then taken from the other side's profitable positions, those in
# ADL quantile `ADL_QUANTILE` or higher first (a demo's stand-in for the fund's balance, which
# the demo does not keep)
FUND_MOVE = Decimal("0.15")
ADL_QUANTILE = 3
HOUR_MS = 3_600_000


class ApiError(Exception):
    """An exchange's refusal: the HTTP status, its code and message (``body``: the answer in
    the exchange's own format, where it is not Binance's ``{"code", "msg"}``)."""

    def __init__(
        self,
        status: int,
        code: int,
        msg: str,
        retry_after: int | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(msg)
        self.status, self.code, self.msg, self.retry_after = status, code, msg, retry_after
        self.body = body


@dataclass
class DemoPosition:
    symbol: str
    side: Side
    size: Decimal
    entry: Decimal
    leverage: int
    mode: MarginMode
    margin: Decimal  # an isolated position's wallet (a cross one's initial margin, for show)
    mark: Decimal
    updated_ms: int
    adl_quantile: int = 2
    opened_ms: int = 0  # a market bar that ended before it cannot liquidate it


@dataclass
class DemoAccount:
    uid: str
    wallet: Decimal
    positions: dict[tuple[str, Side], DemoPosition] = field(default_factory=dict)
    forced: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DemoKey:
    secret: str
    uid: str
    rights: dict[str, bool]
    weights: deque[tuple[float, int]] = field(default_factory=deque)


def _d(x: Decimal | float | int | str) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


class DemoBooks:
    """The exchange's state (accounts, keys, marks) and its own operations on it."""

    def __init__(
        self,
        *,
        weight_limit: int = WEIGHT_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts: dict[str, DemoAccount] = {}
        self.keys: dict[str, DemoKey] = {}
        self.marks: dict[str, Decimal] = {}
        self.weight_limit = weight_limit
        self.clock = clock
        self.clock_skew_ms = 0  # tests move the server's clock to exercise -1021
        self.down = False  # tests take the exchange away (every call: HTTP 503)
        self.requests: list[str] = []
        self._lock = threading.RLock()
        self._order_id = 1_000_000
        self._recent: dict[str, deque[tuple[int, Decimal, Decimal]]] = {}  # the last hour's bars

    # the exchange's own operations (what its matching and liquidation engines would do)

    def now_ms(self) -> int:
        return int(self.clock() * 1000) + self.clock_skew_ms

    def _event(self, uid: str, event: dict[str, Any]) -> None:
        """A user data stream event of ``uid``'s account (the demo exchange sends it to the
        account's open streams; the books alone keep none)."""

    def _updated(self, account: DemoAccount, symbol: str, side: Side, reason: str) -> None:
        """Binance's ``ACCOUNT_UPDATE`` for one position of ``account`` as it is now (size 0 when
        gone), ``reason`` its ``m`` (ORDER, ADJUSTMENT, ADL, LIQUIDATION…)."""
        p = account.positions.get((symbol, side))
        at = self.now_ms()
        size = Decimal(0) if p is None else (p.size if side == "long" else -p.size)
        self._event(
            account.uid,
            {
                "e": "ACCOUNT_UPDATE",
                "E": at,
                "T": at,
                "a": {
                    "m": reason,
                    "B": [{"a": "USDT", "wb": str(account.wallet), "cw": str(account.wallet)}],
                    "P": [
                        {
                            "s": symbol,
                            "pa": str(size),
                            "ep": "0" if p is None else str(p.entry),
                            "cr": "0",
                            "up": "0",
                            "mt": "isolated" if p is None else p.mode,
                            "iw": "0" if p is None or p.mode != "isolated" else str(p.margin),
                            "ps": "BOTH",
                        }
                    ],
                },
            },
        )

    def add_account(self, wallet: Decimal | float = 10_000, uid: str | None = None) -> str:
        with self._lock:
            uid = uid or str(100_000_000 + len(self.accounts) + 1)
            self.accounts[uid] = DemoAccount(uid, _d(wallet))
            return uid

    def add_key(self, uid: str, **rights: bool) -> tuple[str, str]:
        """A new API key on ``uid``'s account (read-only unless ``rights`` say more, in
        Binance's names: ``enableFutures=True``, ``enableWithdrawals=True``…)."""
        with self._lock:
            key, secret = secrets.token_hex(32), secrets.token_hex(32)
            self.keys[key] = DemoKey(secret, uid, {**READ_ONLY, **rights})
            return key, secret

    def revoke_key(self, key: str) -> None:
        with self._lock:
            self.keys.pop(key, None)

    def open_position(
        self,
        uid: str,
        symbol: str,
        side: Side,
        size: Decimal | float,
        entry: Decimal | float,
        leverage: int,
        *,
        mode: MarginMode = "isolated",
        at_ms: int | None = None,
    ) -> DemoPosition:
        with self._lock:
            sym = canonical_symbol(symbol)
            size, entry = _d(size), _d(entry)
            p = DemoPosition(
                sym,
                side,
                size,
                entry,
                leverage,
                mode,
                size * entry / leverage,
                entry,
                at_ms or self.now_ms(),
            )
            p.opened_ms = p.updated_ms
            self.accounts[uid].positions[(sym, side)] = p
            self.marks.setdefault(sym, entry)
            self._updated(self.accounts[uid], sym, side, "ORDER")
            return p

    def position(self, uid: str, symbol: str, side: Side) -> DemoPosition | None:
        return self.accounts[uid].positions.get((canonical_symbol(symbol), side))

    def liquidation_price(self, account: DemoAccount, p: DemoPosition) -> Decimal:
        backing = p.margin if p.mode == "isolated" else account.wallet
        lp = liquidation_price(
            float(p.entry),
            float(p.size),
            1 if p.side == "long" else -1,
            float(backing),
            brackets_for(p.symbol),
        )
        return Decimal(str(round(float(lp[()]), 2)))

    def set_mark(self, symbol: str, price: Decimal | float, at_ms: int | None = None) -> list[str]:
        """Move ``symbol``'s mark; liquidate what it reaches. Returns the uids liquidated."""
        with self._lock:
            sym, price, at = canonical_symbol(symbol), _d(price), at_ms or self.now_ms()
            self.marks[sym] = price
            hit = []
            for account in self.accounts.values():
                for p in [p for p in account.positions.values() if p.symbol == sym]:
                    p.mark = price
                    lp = self.liquidation_price(account, p)
                    if lp > 0 and (price <= lp if p.side == "long" else price >= lp):
                        # the stake is lost: the position's own margin, or a cross wallet
                        lost = p.margin if p.mode == "isolated" else account.wallet
                        account.wallet = max(Decimal(0), account.wallet - lost)
                        self._force(account, p, "liquidation", p.size, lp, at)
                        hit.append(account.uid)
            return hit

    def liquidate_part(
        self, uid: str, symbol: str, side: Side, quantity: Decimal | float, at_ms: int | None = None
    ) -> None:
        """Liquidate ``quantity`` of a position at its liquidation price and leave the rest
        open, as an exchange takes a large position down its margin tiers a part at a time:
        the part's share of the margin is lost."""
        with self._lock:
            account = self.accounts[uid]
            p = account.positions[(canonical_symbol(symbol), side)]
            qty = _d(quantity)
            if not 0 < qty < p.size:
                raise ValueError(f"a part is more than 0 and less than the {p.size} held")
            lost = p.margin * qty / p.size if p.mode == "isolated" else Decimal(0)
            account.wallet = max(Decimal(0), account.wallet - lost)
            self._force(
                account,
                p,
                "liquidation",
                qty,
                self.liquidation_price(account, p),
                at_ms or self.now_ms(),
            )

    def mark_bar(
        self,
        symbol: str,
        low: Decimal | float,
        high: Decimal | float,
        close: Decimal | float,
        end_ms: int,
    ) -> list[str]:
        """One mark-price bar ending at ``end_ms``: a long whose liquidation price the bar's low
        reached, or a short whose the high reached, is liquidated at its liquidation price at
        the bar's end (positions opened after the bar ended are left alone); then the mark is
        the close. Returns the uids liquidated."""
        with self._lock:
            sym, hit = canonical_symbol(symbol), []
            for account in self.accounts.values():
                for p in [p for p in account.positions.values() if p.symbol == sym]:
                    if p.opened_ms >= end_ms:
                        continue
                    lp = self.liquidation_price(account, p)
                    if lp > 0 and (_d(low) <= lp if p.side == "long" else _d(high) >= lp):
                        lost = p.margin if p.mode == "isolated" else account.wallet
                        account.wallet = max(Decimal(0), account.wallet - lost)
                        self._force(account, p, "liquidation", p.size, lp, end_ms)
                        hit.append(account.uid)
                    else:
                        p.mark = _d(close)
            self.marks[sym] = _d(close)
            hit += self._deleverage_on(sym, _d(low), _d(high), end_ms)
            return hit

    def _deleverage_on(self, sym: str, low: Decimal, high: Decimal, end_ms: int) -> list[str]:
        """Auto-deleverage after a bar that took the mark `FUND_MOVE` or more from the last
        hour's extreme: the winning side's profitable positions of quantile `ADL_QUANTILE` or
        higher, whole, at the bar's extreme (the bankrupt side's price). Returns their uids."""
        recent = self._recent.setdefault(sym, deque())
        recent.append((end_ms, low, high))
        while recent and recent[0][0] < end_ms - HOUR_MS:
            recent.popleft()
        top, bottom = max(h for _, _, h in recent), min(lo for _, lo, _ in recent)
        crash = top > 0 and (top - low) / top >= FUND_MOVE
        squeeze = bottom > 0 and (high - bottom) / bottom >= FUND_MOVE
        winners: Side | None = "short" if crash else "long" if squeeze else None
        if winners is None:
            return []
        price = low if crash else high
        hit = []
        for account in self.accounts.values():
            p = account.positions.get((sym, winners))
            if p is None or p.opened_ms >= end_ms or p.adl_quantile < ADL_QUANTILE:
                continue
            if (p.entry - price if winners == "short" else price - p.entry) <= 0:
                continue  # not in profit: ADL takes from the winners only
            self._force(account, p, "adl", p.size, price, end_ms)
            hit.append(account.uid)
        return hit

    # the books on disk (the demo exchange keeps its accounts across restarts)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "order_id": self._order_id,
                "marks": {k: str(v) for k, v in self.marks.items()},
                "keys": {
                    k: {"secret": v.secret, "uid": v.uid, "rights": v.rights}
                    for k, v in self.keys.items()
                },
                "accounts": {
                    uid: {
                        "wallet": str(a.wallet),
                        "forced": a.forced,
                        "positions": [
                            {
                                f: (str(v) if isinstance(v, Decimal) else v)
                                for f, v in vars(p).items()
                            }
                            for p in a.positions.values()
                        ],
                    }
                    for uid, a in self.accounts.items()
                },
            }

    def load_json(self, d: dict[str, Any]) -> None:
        with self._lock:
            self._order_id = int(d["order_id"])
            self.marks = {k: Decimal(v) for k, v in d["marks"].items()}
            self.keys = {
                k: DemoKey(v["secret"], v["uid"], dict(v["rights"])) for k, v in d["keys"].items()
            }
            self.accounts = {}
            for uid, a in d["accounts"].items():
                account = DemoAccount(uid, Decimal(a["wallet"]), forced=list(a["forced"]))
                for row in a["positions"]:
                    values: dict[str, Any] = {
                        k: Decimal(v) if k in ("size", "entry", "margin", "mark") else v
                        for k, v in row.items()
                    }
                    p = DemoPosition(**values)
                    account.positions[(p.symbol, p.side)] = p
                self.accounts[uid] = account

    def deleverage(
        self,
        uid: str,
        symbol: str,
        side: Side,
        size: Decimal | float,
        price: Decimal | float,
        at_ms: int | None = None,
    ) -> None:
        """Auto-deleverage ``size`` of a profitable position at ``price``."""
        with self._lock:
            account = self.accounts[uid]
            p = account.positions[(canonical_symbol(symbol), side)]
            self._force(account, p, "adl", min(_d(size), p.size), _d(price), at_ms or self.now_ms())

    def _force(
        self,
        account: DemoAccount,
        p: DemoPosition,
        kind: CloseKind,
        qty: Decimal,
        price: Decimal,
        at: int,
    ) -> None:
        self._order_id += 1
        account.forced.append(
            {
                "orderId": self._order_id,
                "symbol": p.symbol,
                "status": "FILLED",
                "clientOrderId": ("adl_autoclose" if kind == "adl" else "autoclose-")
                + str(self._order_id),
                "price": str(price),
                "avgPrice": str(price),
                "origQty": str(qty),
                "executedQty": str(qty),
                "cumQuote": str(qty * price),
                "timeInForce": "IOC",
                "type": "LIMIT",
                "reduceOnly": True,
                "closePosition": False,
                "side": "SELL" if p.side == "long" else "BUY",
                "positionSide": "BOTH",
                "stopPrice": "0",
                "workingType": "CONTRACT_PRICE",
                "origType": "LIMIT",
                "time": at,
                "updateTime": at,
                "_kind": kind,
            }
        )
        if qty >= p.size:
            del account.positions[(p.symbol, p.side)]
        else:
            p.margin -= p.margin * qty / p.size
            p.size -= qty
            p.updated_ms = at
        order = account.forced[-1]
        self._event(
            account.uid,
            {
                "e": "ORDER_TRADE_UPDATE",
                "E": at,
                "T": at,
                "o": {
                    "s": p.symbol,
                    "c": order["clientOrderId"],
                    "S": order["side"],
                    "o": "LIMIT",
                    "q": order["origQty"],
                    "ap": order["avgPrice"],
                    "X": "FILLED",
                    "i": order["orderId"],
                    "ps": "BOTH",
                },
            },
        )
        self._updated(account, p.symbol, p.side, "ADL" if kind == "adl" else "LIQUIDATION")

    def change(self, uid: str, symbol: str, side: Side, **values: Any) -> DemoPosition:
        """What the trader does on the exchange: ``size=``, ``margin=``, ``leverage=``."""
        with self._lock:
            p = self.accounts[uid].positions[(canonical_symbol(symbol), side)]
            if "size" in values and "margin" not in values:  # margin follows the size
                values["margin"] = p.margin * _d(values["size"]) / p.size
            for name, value in values.items():
                setattr(p, name, _d(value) if name in ("size", "margin") else value)
            p.updated_ms = self.now_ms()
            self._updated(self.accounts[uid], p.symbol, side, "ORDER")
            return p

    def close(self, uid: str, symbol: str, side: Side) -> None:
        with self._lock:
            sym = canonical_symbol(symbol)
            if self.accounts[uid].positions.pop((sym, side), None) is not None:
                self._updated(self.accounts[uid], sym, side, "ORDER")
