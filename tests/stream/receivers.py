"""Hostile webhook receivers on 127.0.0.1, each a real TCP server in a thread: one that answers
a byte every two seconds, one that answers a 1 GiB body, one that redirects to the metadata
service. Used by the webhook tests and by `benchmarks/faults.py`."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class Hostile:
    """Accepts connections and answers each by ``serve``; counts requests and bytes sent, and
    knows how many connections are open now."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.requests = 0
        self.sent = 0
        self.open = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with self.lock:
            self.requests += 1
            self.open += 1
        try:
            conn.settimeout(5)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                got += chunk
            self.serve(conn)
        except OSError:
            pass  # the client hung up: what these receivers expect
        finally:
            with self.lock:
                self.open -= 1
            conn.close()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.sent += len(data)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


class Slow(Hostile):
    """Answers one byte every ``every`` seconds, for ever (a 200 status line, eventually)."""

    def __init__(self, every: float = 2.0) -> None:
        super().__init__()
        self.every = every

    def serve(self, conn: socket.socket) -> None:
        for b in b"HTTP/1.1 200 OK\r\n" * 1000:
            if self.done.is_set():
                return
            self.send(conn, bytes([b]))
            time.sleep(self.every)


class Huge(Hostile):
    """Answers 200 with a 1 GiB body, as fast as the client reads it."""

    SIZE = 1 << 30

    def serve(self, conn: socket.socket) -> None:
        self.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {self.SIZE}\r\n\r\n".encode())
        block = b"\0" * (1 << 20)
        for _ in range(self.SIZE // len(block)):
            if self.done.is_set():
                return
            self.send(conn, block)


class Redirect(Hostile):
    """Answers 302 to the cloud metadata service."""

    def serve(self, conn: socket.socket) -> None:
        self.send(
            conn,
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
            b"Content-Length: 0\r\n\r\n",
        )
