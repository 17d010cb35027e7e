"""The demo exchange: Binance USDⓈ-M's REST protocol on 127.0.0.1, for the demo trader's account
and for the tests, so that ccxt runs unchanged against it.

It answers what BTI reads of an account and checks what Binance checks
(https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info):

- a signed request carries ``X-MBX-APIKEY`` and ends in ``signature``, the HMAC-SHA256 of the
  query before it under the key's secret (-2015 an unknown or revoked key, -1022 a wrong
  signature);
- ``timestamp`` within ``recvWindow`` (default 5,000 ms, at most 60,000) of the server's clock
  and not more than 1,000 ms ahead of it (-1021);
- request weight per key per minute; over the limit, HTTP 429 with ``Retry-After`` (-1003);
- forced orders at most 100 a page (``limit``), in a window of at most 7 days;
- user data streams: ``POST``/``PUT``/``DELETE /fapi/v1/listenKey`` with the API key alone
  (the same key while one is open, valid an hour from its last ``PUT``; -1125 an unknown one),
  and a websocket at ``ws_url``/``ws/<listenKey>`` sending the account's ``ACCOUNT_UPDATE``
  and ``ORDER_TRADE_UPDATE`` events, and ``listenKeyExpired`` when its key lapses; and Bybit's
  private stream at ``ws_url``/``v5/private`` (an ``auth`` op signed as Bybit signs it, then
  ``subscribe`` to ``position`` and ``execution``; ``ping`` answered).

Its accounts, positions and what its liquidation engine does to them are `demo_books`'.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bti_core.accounts import demo_bybit
from bti_core.accounts.demo_books import ApiError, DemoAccount, DemoBooks, DemoKey

_WEIGHTS = {"forceOrders": 20, "symbolConfig": 5, "adlQuantile": 5, "account": 5}
LISTEN_KEY_MS = 60 * 60 * 1000  # a listen key lapses an hour after it was last kept alive


class DemoExchange(DemoBooks):
    """The demo exchange's books behind Binance USDⓈ-M's REST protocol, served on 127.0.0.1."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _ws: Any = None  # the websocket server (aiohttp's runner) and its loop
    _ws_loop: asyncio.AbstractEventLoop | None = None
    _ws_port = 0
    _ws_thread: threading.Thread

    # user data streams

    @property
    def listen_keys(self) -> dict[str, tuple[str, str, int]]:
        """listen key → (account uid, API key, expiry in ms)."""
        return self.__dict__.setdefault("_listen_keys", {})

    @property
    def streams(self) -> dict[str, set[Any]]:
        """listen key → its open websockets."""
        return self.__dict__.setdefault("_streams", {})

    def _listen_key(self, method: str, headers: Any) -> Any:
        api_key = headers.get("X-MBX-APIKEY", "")
        key = self.keys.get(api_key)
        if key is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        self._weigh(key, 1)
        now = self.now_ms()
        mine = [k for k, (_, ak, t) in self.listen_keys.items() if ak == api_key and t > now]
        if method == "POST":
            lk = mine[0] if mine else secrets.token_hex(32)
            self.listen_keys[lk] = (key.uid, api_key, now + LISTEN_KEY_MS)
            return {"listenKey": lk}
        if not mine:
            raise ApiError(400, -1125, "This listenKey does not exist.")
        if method == "PUT":
            self.listen_keys[mine[0]] = (key.uid, api_key, now + LISTEN_KEY_MS)
            return {"listenKey": mine[0]}
        self.listen_keys.pop(mine[0], None)  # DELETE
        return {}

    def expire_listen_key(self, listen_key: str) -> None:
        """Let a listen key lapse now: its streams get ``listenKeyExpired`` and are closed."""
        with self._lock:
            self.listen_keys.pop(listen_key, None)
        at = self.now_ms()
        self._send(listen_key, {"e": "listenKeyExpired", "E": at, "listenKey": listen_key}, True)

    def push_raw(self, listen_key: str, message: str | bytes) -> None:
        """Send anything on a stream (the tests' forged, garbled and huge messages)."""
        self._send(listen_key, message, False)

    @property
    def bybit_streams(self) -> dict[Any, tuple[str, set[str]]]:
        """Bybit private streams: websocket → (account uid, topics subscribed)."""
        return self.__dict__.setdefault("_bybit_streams", {})

    def _event(self, uid: str, event: dict[str, Any]) -> None:
        now = self.now_ms()
        for lk, (owner, _, until) in list(self.listen_keys.items()):
            if owner == uid and until > now:
                self._send(lk, event, False)
        bybit = _bybit_event(event)
        if bybit is not None:
            to = [
                ws for ws, (o, t) in list(self.bybit_streams.items()) if o == uid and bybit[0] in t
            ]
            self._send_to(to, bybit[1], False)

    def _send(self, listen_key: str, message: Any, close: bool) -> None:
        self._send_to(list(self.streams.get(listen_key, ())), message, close)

    def _send_to(self, targets: list[Any], message: Any, close: bool) -> None:
        loop = self._ws_loop
        if loop is None or not targets:
            return
        text = message if isinstance(message, str | bytes) else json.dumps(message)

        async def send() -> None:
            for ws in targets:
                try:
                    await (ws.send_bytes(text) if isinstance(text, bytes) else ws.send_str(text))
                    if close:
                        await ws.close()
                except (ConnectionError, RuntimeError):
                    pass  # gone: its handler forgets it

        asyncio.run_coroutine_threadsafe(send(), loop)

    def push_bybit_raw(self, uid: str, message: str | bytes) -> None:
        """Send anything on ``uid``'s Bybit private streams (the tests' forged messages)."""
        self._send_to(
            [ws for ws, (o, _) in list(self.bybit_streams.items()) if o == uid], message, False
        )

    def _bybit_auth(self, args: list[Any]) -> str | None:
        """The account a Bybit ``auth`` op signs for, None when it does not: the key known,
        ``expires`` still ahead, the signature HMAC-SHA256 of ``GET/realtime`` + expires."""
        if len(args) != 3:
            return None
        key = self.keys.get(str(args[0]))
        try:
            expires = int(args[1])
        except (TypeError, ValueError):
            return None
        if key is None or expires <= self.now_ms():
            return None
        payload = f"GET/realtime{expires}".encode()
        expected = hmac.new(key.secret.encode(), payload, hashlib.sha256).hexdigest()
        return key.uid if hmac.compare_digest(str(args[2]), expected) else None

    @property
    def ws_url(self) -> str:
        """Where its user data streams are (Binance's ``wss://fstream.binance.com``)."""
        assert self._ws_loop is not None, "start() the demo exchange first"
        return f"ws://127.0.0.1:{self._ws_port}"

    def _start_ws(self, port: int) -> None:
        from aiohttp import web

        exchange = self

        async def stream(request: web.Request) -> web.StreamResponse:
            lk = request.match_info["key"]
            with exchange._lock:
                known = lk in exchange.listen_keys
            ws = web.WebSocketResponse(heartbeat=30)
            await ws.prepare(request)
            if not known:  # Binance closes a stream of a key it does not know
                await ws.close(code=1008, message=b"invalid listen key")
                return ws
            exchange.streams.setdefault(lk, set()).add(ws)
            try:
                async for _ in ws:  # a user stream only sends; what a client says is dropped
                    pass
            finally:
                exchange.streams.get(lk, set()).discard(ws)
            return ws

        async def bybit(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(heartbeat=30)
            await ws.prepare(request)
            uid: str | None = None
            try:
                async for msg in ws:
                    try:
                        m = json.loads(msg.data)
                        op, args = m.get("op"), m.get("args") or []
                    except (ValueError, TypeError, AttributeError):
                        continue  # Bybit ignores what it cannot read
                    if op == "ping":
                        await ws.send_json({"success": True, "ret_msg": "pong", "op": "ping"})
                    elif op == "auth":
                        uid = exchange._bybit_auth(args)
                        await ws.send_json(
                            {
                                "success": uid is not None,
                                "ret_msg": "" if uid else "Params Error",
                                "op": "auth",
                                "conn_id": "demo",
                            }
                        )
                    elif op == "subscribe":
                        if uid is None:
                            await ws.send_json(
                                {"success": False, "ret_msg": "Request not authorized", "op": op}
                            )
                            continue
                        topics = exchange.bybit_streams.get(ws, (uid, set()))[1]
                        topics |= {str(a) for a in args}
                        exchange.bybit_streams[ws] = (uid, topics)
                        await ws.send_json({"success": True, "ret_msg": "", "op": op})
            finally:
                exchange.bybit_streams.pop(ws, None)
            return ws

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/ws/{key}", stream)
            app.router.add_get("/v5/private", bybit)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            self._ws = runner
            self._ws_port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        loop = asyncio.new_event_loop()
        self._ws_thread = threading.Thread(
            target=loop.run_forever, name="demo-exchange-ws", daemon=True
        )
        self._ws_thread.start()
        asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        self._ws_loop = loop

    def _stop_ws(self) -> None:
        loop, runner = self._ws_loop, self._ws
        if loop is None:
            return

        async def down() -> None:
            for ws in [w for open_ in self.streams.values() for w in open_]:
                await ws.close()
            if runner is not None:
                await runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(down(), loop).result(10)
        finally:
            self._ws_loop, self._ws = None, None
            loop.call_soon_threadsafe(loop.stop)
            self._ws_thread.join(10)
            if not loop.is_running():
                loop.close()

    # the REST protocol

    def _authorise(self, query: str, headers: Any, path: str) -> DemoKey:
        key = self.keys.get(headers.get("X-MBX-APIKEY", ""))
        if key is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        body, sep, signature = query.rpartition("&signature=")
        expected = hmac.new(key.secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(signature, expected):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(body))
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise ApiError(
                400, -1102, "Mandatory parameter 'timestamp' was not sent or is malformed."
            ) from None
        if not 0 < window <= 60_000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now = self.now_ms()
        if stamp > now + 1000 or now - stamp > window:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        self._weigh(key, _WEIGHTS.get(path.rsplit("/", 1)[-1], 1))
        return key

    def _weigh(self, key: DemoKey, weight: int) -> None:
        now = self.clock()
        while key.weights and key.weights[0][0] <= now - 60:
            key.weights.popleft()
        used = sum(w for _, w in key.weights)
        if used + weight > self.weight_limit:
            retry = max(1, int(60 - (now - key.weights[0][0])) + 1)
            raise ApiError(
                429,
                -1003,
                f"Too much request weight used; current limit is "
                f"{self.weight_limit} request weight per 1 MINUTE.",
                retry_after=retry,
            )
        key.weights.append((now, weight))

    def answer(self, method: str, target: str, headers: Any) -> Any:
        if self.down:
            raise ApiError(503, -1001, "Internal error; unable to process your request.")
        parts = urlsplit(target)
        path, query = parts.path, parts.query
        with self._lock:
            self.requests.append(path)
            if path == "/fapi/v1/listenKey" and method in ("POST", "PUT", "DELETE"):
                return self._listen_key(method, headers)
            if method != "GET":
                raise ApiError(405, -1000, f"{method} is not served here")
            if path == "/fapi/v1/time":
                return {"serverTime": self.now_ms()}
            if path == "/fapi/v1/ping":
                return {}
            if path.startswith("/v5/"):  # Bybit's protocol over the same books
                key = demo_bybit.authorise(self, query, headers)
                self._weigh(key, 1)
                return demo_bybit.answer(self, key, path, dict(parse_qsl(query)))
            handler = _SIGNED.get(path)
            if handler is None:
                raise ApiError(404, -1000, f"no endpoint {path}")
            key = self._authorise(query, headers, path)
            params = dict(parse_qsl(query.rpartition("&signature=")[0]))
            return handler(self, key, self.accounts[key.uid], params)

    # serving

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the demo exchange first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self, port: int = 0, ws_port: int = 0) -> DemoExchange:
        exchange = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if 0 < length <= 65_536:  # a body (a form) is read, so the next request parses
                    self.rfile.read(length)
                status, extra, payload = 200, {}, None
                try:
                    payload = exchange.answer(method, self.path, self.headers)
                except ApiError as e:
                    status, payload = e.status, e.body or {"code": e.code, "msg": e.msg}
                    if e.retry_after is not None:
                        extra["Retry-After"] = str(e.retry_after)
                except Exception as e:  # the server answers; it does not die
                    status, payload = 500, {"code": -1000, "msg": f"internal error: {e}"}
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keys are in the requests: not logged
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-exchange", daemon=True
        )
        self._thread.start()
        self._start_ws(ws_port)
        return self

    def stop(self) -> None:
        self._stop_ws()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextmanager
    def running(self) -> Iterator[DemoExchange]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _bybit_event(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A Binance user stream event as Bybit's private stream sends it: (topic, message)."""
    at = event.get("E", 0)
    if event.get("e") == "ACCOUNT_UPDATE":
        data = [
            {
                "category": "linear",
                "symbol": p["s"],
                "side": "Buy" if Decimal(p["pa"]) > 0 else "Sell" if Decimal(p["pa"]) < 0 else "",
                "size": str(abs(Decimal(p["pa"]))),
                "positionIdx": 0,
                "updatedTime": str(at),
            }
            for p in event["a"]["P"]
        ]
        return "position", {"topic": "position", "id": "demo", "creationTime": at, "data": data}
    if event.get("e") == "ORDER_TRADE_UPDATE":
        o = event["o"]
        adl = str(o["c"]).startswith("adl_autoclose")
        data = [
            {
                "category": "linear",
                "symbol": o["s"],
                "execType": "AdlTrade" if adl else "BustTrade",
                "execQty": o["q"],
                "execPrice": o["ap"],
                "side": "Sell" if o["S"] == "SELL" else "Buy",
                "execTime": str(at),
            }
        ]
        return "execution", {"topic": "execution", "id": "demo", "creationTime": at, "data": data}
    return None


# the signed endpoints, each in the exchange's documented format


def _restrictions(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    names = (
        "enableReading",
        "enableFutures",
        "enableSpotAndMarginTrading",
        "enableMargin",
        "enableVanillaOptions",
        "enableWithdrawals",
        "enableInternalTransfer",
        "permitsUniversalTransfer",
        "enablePortfolioMarginTrading",
    )
    return {
        "ipRestrict": False,
        "createTime": 1_700_000_000_000,
        **{n: key.rights.get(n, False) for n in names},
    }


def _account(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    return {
        "uid": int(acct.uid),
        "accountType": "SPOT",
        "canTrade": False,
        "canWithdraw": False,
        "canDeposit": True,
        "balances": [],
        "permissions": ["SPOT"],
    }


def _position_risk(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    out = []
    for p in acct.positions.values():
        if "symbol" in q and q["symbol"] != p.symbol:
            continue
        sign = 1 if p.side == "long" else -1
        notional = sign * p.size * p.mark
        isolated = p.mode == "isolated"
        upnl = sign * p.size * (p.mark - p.entry)
        out.append(
            {
                "symbol": p.symbol,
                "positionSide": "BOTH",
                "positionAmt": str(sign * p.size),
                "entryPrice": str(p.entry),
                "breakEvenPrice": str(p.entry),
                "markPrice": str(p.mark),
                "unRealizedProfit": str(upnl),
                "liquidationPrice": str(ex.liquidation_price(acct, p)),
                "isolatedMargin": str(p.margin + upnl if isolated else 0),
                "notional": str(notional),
                "marginAsset": "USDT",
                "isolatedWallet": str(p.margin if isolated else 0),
                "initialMargin": str(abs(notional) / p.leverage),
                "maintMargin": str(abs(notional) * Decimal("0.004")),
                "positionInitialMargin": str(abs(notional) / p.leverage),
                "openOrderInitialMargin": "0",
                "adl": p.adl_quantile,
                "bidNotional": "0",
                "askNotional": "0",
                "updateTime": p.updated_ms,
            }
        )
    return out


def _symbol_config(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    return [
        {
            "symbol": p.symbol,
            "marginType": "ISOLATED" if p.mode == "isolated" else "CROSSED",
            "isAutoAddMargin": False,
            "leverage": p.leverage,
            "maxNotionalValue": "1000000",
        }
        for p in acct.positions.values()
    ]


def _adl_quantile(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    return [
        {
            "symbol": p.symbol,
            "adlQuantile": {
                "LONG": p.adl_quantile,
                "SHORT": p.adl_quantile,
                "BOTH": p.adl_quantile,
            },
        }
        for p in acct.positions.values()
    ]


def _balance(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    locked = sum((p.margin for p in acct.positions.values() if p.mode == "isolated"), Decimal(0))
    return [
        {
            "accountAlias": "demo",
            "asset": "USDT",
            "balance": str(acct.wallet),
            "crossWalletBalance": str(acct.wallet - locked),
            "crossUnPnl": "0",
            "availableBalance": str(acct.wallet - locked),
            "maxWithdrawAmount": str(acct.wallet - locked),
            "marginAvailable": True,
            "updateTime": ex.now_ms(),
        }
    ]


def _force_orders(ex: DemoExchange, key: DemoKey, acct: DemoAccount, q: dict[str, str]) -> Any:
    try:
        limit = int(q.get("limit", 50))
        end = int(q.get("endTime", ex.now_ms()))
        start = int(q.get("startTime", end - 7 * 24 * 3600 * 1000))
    except ValueError:
        raise ApiError(400, -1100, "Illegal characters found in a parameter.") from None
    if not 1 <= limit <= 100:
        raise ApiError(400, -1130, "Invalid data sent for a parameter: limit (1…100).")
    if end - start > 7 * 24 * 3600 * 1000 or start > end:
        raise ApiError(400, -1127, "More than 7 days between startTime and endTime.")
    kind = {"LIQUIDATION": "liquidation", "ADL": "adl"}.get(q.get("autoCloseType", ""))
    rows = [
        {k: v for k, v in o.items() if not k.startswith("_")}
        for o in acct.forced
        if start <= o["updateTime"] <= end
        and ("symbol" not in q or o["symbol"] == q["symbol"])
        and (kind is None or o["_kind"] == kind)
    ]
    return sorted(rows, key=lambda o: -o["updateTime"])[:limit]  # newest first


_SIGNED: dict[str, Callable[[DemoExchange, DemoKey, DemoAccount, dict[str, str]], Any]] = {
    "/sapi/v1/account/apiRestrictions": _restrictions,
    "/api/v3/account": _account,
    "/fapi/v3/positionRisk": _position_risk,
    "/fapi/v1/symbolConfig": _symbol_config,
    "/fapi/v1/adlQuantile": _adl_quantile,
    "/fapi/v3/balance": _balance,
    "/fapi/v1/forceOrders": _force_orders,
}
