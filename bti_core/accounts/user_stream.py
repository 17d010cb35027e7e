"""Following linked accounts on their exchange's user data stream as well as on the clock
(Binance USDⓈ-M: https://developers.binance.com/docs/derivatives/usds-margined-futures/
user-data-streams — a listen key per account from ``POST /fapi/v1/listenKey``, kept alive by a
``PUT`` every half hour, and a websocket at ``wss://fstream.binance.com/ws/<listenKey>`` that
sends ``ACCOUNT_UPDATE`` and ``ORDER_TRADE_UPDATE`` when a position or an order changes).

**A message on the stream is a hint, never a fact.** It wakes the account's REST read
(`AccountsService.sync`: signed, the exchange's own answer for that key), which records what
changed; nothing on the stream is written anywhere. So a forged, late, huge or garbled message
costs at most one read of that account per `MIN_GAP` seconds and changes nothing by itself, and
the clock's reads go on regardless (a stream that dropped silently is not taken to say that
nothing happened). A stream that closes, a key that lapses (``listenKeyExpired``) or an exchange
that does not answer is opened again with a new key, after a backoff of up to `MAX_BACKOFF`.

Bybit (https://bybit-exchange.github.io/docs/v5/ws/connect): ``wss://stream.bybit.com/v5/private``,
an ``auth`` op signed with the account's key (HMAC-SHA256 of ``GET/realtime`` + its expiry), a
``subscribe`` to ``position`` and ``execution``, and a ``ping`` every 20 seconds; a message on
either topic wakes the read, as Binance's events do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from typing import Any

from sqlmodel import select

from bti_core.accounts.binance import BinanceUsdm
from bti_core.accounts.bybit import BybitLinear
from bti_core.accounts.exchanges import venue
from bti_core.accounts.service import AccountsService
from bti_core.db.engine import session_scope
from bti_core.db.models import ExchangeAccount
from bti_core.db.statuses import AccountStatus
from bti_core.errors import BTIError, ExchangeKeyError

log = logging.getLogger(__name__)

BINANCE_WS = "wss://fstream.binance.com"
BYBIT_WS = "wss://stream.bybit.com"
BYBIT_PING = 20.0  # seconds: Bybit drops a private stream that says nothing for longer
BYBIT_TOPICS = ("position", "execution")
MIN_GAP = 2.0  # seconds: an account's stream wakes its read at most this often
KEEP_ALIVE = 30 * 60.0  # seconds between a listen key's PUTs (it lapses after an hour)
MAX_MESSAGE = 64 * 1024  # bytes: Binance's events are a few hundred; more is not an event
MAX_BACKOFF = 60.0
LOOK_EVERY = 15.0  # seconds between looks for accounts linked or removed
WAKE_EVENTS = frozenset({"ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE"})


class UserStreams:
    """The user data streams of the linked accounts whose exchange has one, in a thread of
    their own (an asyncio loop, one task per account). `wait` returns when an account was
    woken; `take` gives the accounts to read now."""

    def __init__(self, accounts: AccountsService, *, demo_ws_url: str | None = None) -> None:
        self.accounts = accounts
        self.demo_ws_url = demo_ws_url
        self.stats: Counter[str] = Counter()  # messages, woke, ignored, opened, closed…
        self._woken: dict[int, float] = {}  # account → when it was woken (not yet taken)
        self._last: dict[int, float] = {}  # account → when its wake was last taken
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}

    # the worker's side

    def take(self) -> list[int]:
        """The accounts woken since the last call, each at most once per `MIN_GAP` seconds
        (one woken again sooner stays for the next call)."""
        now = time.monotonic()
        with self._lock:
            ready = [a for a in self._woken if now - self._last.get(a, -MIN_GAP) >= MIN_GAP]
            for a in ready:
                del self._woken[a]
                self._last[a] = now
            if not self._woken:
                self._event.clear()
        return ready

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an account to be woken; whether one was."""
        return self._event.wait(timeout)

    def _wake(self, account_id: int, why: str) -> None:
        self.stats["woke"] += 1
        log.debug("account %s woken by its stream: %s", account_id, why)
        with self._lock:
            self._woken.setdefault(account_id, time.monotonic())
            self._event.set()

    # the streams

    def start(self) -> UserStreams:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bti-user-streams", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._supervise(), self._loop)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def cancel() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # their sockets closed

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if not loop.is_running():
            loop.close()
        self._loop = None

    def base_url(self, exchange: str) -> str | None:
        """Where ``exchange``'s user data streams are, None for one BTI does not follow."""
        v = venue(exchange)
        real = {"binanceusdm": BINANCE_WS, "bybit": BYBIT_WS}.get(v.ccxt_id)
        if real is None:
            return None
        return self.demo_ws_url if v.demo else real

    def streamed(self) -> list[int]:
        """The linked accounts whose exchange has a stream BTI follows."""
        with session_scope(self.accounts.db) as s:
            rows = s.exec(
                select(ExchangeAccount.id, ExchangeAccount.exchange).where(
                    ExchangeAccount.status == AccountStatus.LINKED.value
                )
            ).all()
        return [i for i, ex in rows if i is not None and self.base_url(ex) is not None]

    async def _supervise(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        # one socket per account, held open: aiohttp's default pool of 100 connections would
        # leave the 101st account without its stream
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                try:
                    wanted = set(await asyncio.to_thread(self.streamed))
                except Exception as e:  # the database away: look again later
                    log.warning("user streams: cannot list the accounts: %s", e)
                    wanted = set(self._tasks)
                for gone in set(self._tasks) - wanted:
                    self._tasks.pop(gone).cancel()
                for new in wanted - set(self._tasks):
                    self._tasks[new] = asyncio.create_task(self._follow(session, new))
                await asyncio.sleep(LOOK_EVERY)

    async def _follow(self, session: Any, account_id: int) -> None:
        """One account's stream, opened again whenever it ends."""
        backoff = 1.0
        while True:
            try:
                await self._stream(session, account_id)
                backoff = 1.0  # it ran and ended (closed, lapsed): open it again soon
            except asyncio.CancelledError:
                raise
            except ExchangeKeyError as e:  # the key refused: the clock's reads record that
                self.stats["refused"] += 1
                log.info("account %s: no user stream: %s", account_id, e)
                backoff = MAX_BACKOFF
            except Exception as e:  # an exchange away, a broken socket: again, later
                self.stats["failed"] += 1
                log.info("account %s: user stream failed: %s", account_id, e)
                backoff = min(MAX_BACKOFF, backoff * 2)
            await asyncio.sleep(backoff)

    def _binance(self, account_id: int) -> BinanceUsdm:
        reader = self.accounts.reader(account_id)
        if not isinstance(reader, BinanceUsdm):
            raise BTIError(f"account #{account_id} is not on a Binance protocol exchange")
        return reader

    async def _stream(self, session: Any, account_id: int) -> None:
        import aiohttp

        with session_scope(self.accounts.db) as s:
            row = s.get(ExchangeAccount, account_id)
            base = None if row is None else self.base_url(row.exchange)
        if base is None:
            raise BTIError(f"account #{account_id} has no user stream")
        reader = await asyncio.to_thread(self.accounts.reader, account_id)
        helpers: list[asyncio.Task[None]] = []
        if isinstance(reader, BybitLinear):
            url = f"{base.rstrip('/')}/v5/private"
        else:
            key = await asyncio.to_thread(lambda: self._binance(account_id).listen_key())
            url = f"{base.rstrip('/')}/ws/{key}"
            helpers.append(asyncio.create_task(self._keep_alive(account_id)))
        try:
            async with session.ws_connect(url, max_msg_size=MAX_MESSAGE, heartbeat=60) as ws:
                if isinstance(reader, BybitLinear):
                    await self._bybit_hello(ws, reader)
                    helpers.append(asyncio.create_task(self._bybit_ping(ws)))
                self.stats["opened"] += 1
                # whatever happened while no stream was open is read now
                self._wake(account_id, "stream opened")
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        if self._message(account_id, msg.data):
                            break  # the key lapsed: a new one
                    elif msg.type is aiohttp.WSMsgType.ERROR:  # e.g. a message over the limit
                        self.stats["errors"] += 1
                        break
                    else:
                        self.stats["ignored"] += 1
                self.stats["closed"] += 1
        finally:
            for t in helpers:
                t.cancel()

    async def _bybit_hello(self, ws: Any, reader: BybitLinear) -> None:
        """Bybit's ``auth`` (refused: the key is) then ``subscribe``, each answered in turn."""
        expires = int(time.time() * 1000) + 10_000
        for op, args in (("auth", reader.ws_auth(expires)), ("subscribe", list(BYBIT_TOPICS))):
            await ws.send_json({"op": op, "args": args})
            answer = await ws.receive_json(timeout=10)
            if not (isinstance(answer, dict) and answer.get("success") is True):
                why = answer.get("ret_msg") if isinstance(answer, dict) else answer
                raise ExchangeKeyError(f"the exchange refused the stream's {op}: {why!r}")

    async def _bybit_ping(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(BYBIT_PING)
            await ws.send_json({"op": "ping"})

    def _message(self, account_id: int, text: str) -> bool:
        """Read one message; whether the stream must be opened again (its key lapsed)."""
        self.stats["messages"] += 1
        try:
            event = json.loads(text)
        except ValueError:
            self.stats["ignored"] += 1
            return False
        if not isinstance(event, dict):
            self.stats["ignored"] += 1
            return False
        kind, topic = event.get("e"), event.get("topic")
        if kind == "listenKeyExpired":
            self.stats["lapsed"] += 1
            return True
        if kind in WAKE_EVENTS or topic in BYBIT_TOPICS:
            self._wake(account_id, str(kind or topic))
        else:
            self.stats["ignored"] += 1  # answers to ping, and anything else
        return False

    async def _keep_alive(self, account_id: int) -> None:
        while True:
            await asyncio.sleep(KEEP_ALIVE)
            try:
                await asyncio.to_thread(lambda: self._binance(account_id).keep_alive())
            except BTIError as e:  # the stream's own end (listenKeyExpired) follows
                log.info("account %s: keeping its stream alive failed: %s", account_id, e)
