"""A Binance USDT-M websocket on 127.0.0.1 that speaks the ``markPrice`` stream, for the live
feed's tests (ccxt.pro connects to it unchanged)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

from aiohttp import WSMsgType, web


class BinanceWs:
    """Binance USDT-M's market streams on 127.0.0.1: a ``SUBSCRIBE`` is answered with
    ``{"result": null, "id": …}`` and what `push` is given is sent to every subscriber."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.params: list[str] = []
        self.subscribed = threading.Event()
        self.clients: set[web.WebSocketResponse] = set()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            if m.get("method") == "SUBSCRIBE":
                await ws.send_json({"result": None, "id": m["id"]})
                self.params += m["params"]
                self.clients.add(ws)
                self.subscribed.set()
        self.clients.discard(ws)
        return ws

    def push(self, messages: list[dict[str, Any]], gap: float = 0.01) -> None:
        async def send() -> None:
            for m in messages:
                for ws in list(self.clients):
                    await ws.send_str(json.dumps(m))
                await asyncio.sleep(gap)

        asyncio.run_coroutine_threadsafe(send(), self.loop).result(60)

    def close(self) -> None:
        async def stop() -> None:
            for ws in list(self.clients):
                await ws.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
