"""Requests to someone else's server (webhook receivers), bounded so that no receiver can reach
inside BTI's network, hold a worker, or fill its memory.

- **Where**: the URL's host is resolved and *every* address it resolves to must be public (not
  loopback, private, link-local — 169.254.169.254 is a cloud's metadata service —, shared,
  multicast, reserved or unspecified; an IPv4-mapped IPv6 address is judged as its IPv4),
  unless the operator allowed its network (``BTI_WEBHOOK_ALLOW_NETWORKS``). It is checked when
  a subscription is made and again at every delivery (a name's addresses can change), and the
  request goes to the address that was checked — never resolved a second time — so a name
  cannot answer public to the check and private to the connection (DNS rebinding).
- **How long**: one deadline for the whole request — connect, TLS, send, the status line and
  headers, the body — measured on a monotonic clock and applied to every socket operation, so a
  receiver that answers one byte every two seconds is cut off at the deadline, not kept.
- **How much**: at most `MAX_RESPONSE` bytes of the answer are read (only the status matters);
  the rest is never read into memory.
- **Redirects** are not followed: a 3xx is a failed delivery like any other non-2xx.

Hand-written over `socket` and `ssl` (standard library): `requests` and `urllib` apply their
timeouts per read, which is what a slow receiver defeats.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bti_core.errors import BTIError

MAX_RESPONSE = 64 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationError(BTIError, ValueError):
    """A URL BTI must not send to (not http(s), no host, or an address that is not public)."""


class DeliveryError(BTIError):
    """A request that did not get a 2xx answer in time (said why)."""


def networks(spec: str | Iterable[str]) -> tuple[Network, ...]:
    """The networks of a comma-separated CIDR list (``BTI_WEBHOOK_ALLOW_NETWORKS``)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for p in (x.strip() for x in parts):
        if not p:
            continue
        try:
            out.append(ipaddress.ip_network(p, strict=False))
        except ValueError as exc:
            raise DestinationError(f"{p!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from exc
    return tuple(out)


def _public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    path: str  # with its query
    address: str  # the checked address the request goes to


def destination(url: str, allowed: tuple[Network, ...] = ()) -> Destination:
    """Where ``url`` points, resolved now: refused (`DestinationError`, saying why) unless it is
    http(s) with a host whose every address is public or in an ``allowed`` network."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationError(f"the webhook must be an http:// or https:// URL; got {url!r}")
    if parts.username or parts.password:
        raise DestinationError("put no credentials in the webhook URL (use a secret path)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationError(f"the webhook URL's port is not a port: {url!r}") from exc
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationError(f"{host} does not resolve ({exc}); give a name that does") from exc
    addresses = list(dict.fromkeys(str(i[4][0]).split("%")[0] for i in infos))
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if not _public(ip) and not any(ip in n for n in allowed):
            raise DestinationError(
                f"{host} resolves to {a}, which is not a public address (loopback, private, "
                "link-local or reserved): webhooks go to the internet only"
            )
    if not addresses:
        raise DestinationError(f"{host} resolves to no address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Destination(parts.scheme, host, port, path, addresses[0])


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


def post_json(
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    *,
    deadline: float = 10.0,
    allowed: tuple[Network, ...] = (),
) -> int:
    """POST ``payload`` as JSON to ``url`` within ``deadline`` seconds in all (module
    docstring); the answer's status. `DestinationError` for a refused destination,
    `DeliveryError` for anything that did not finish in time or did not answer HTTP."""
    end = time.monotonic() + deadline
    dest = destination(url, allowed)

    def left() -> float:
        t = end - time.monotonic()
        if t <= 0:
            raise DeliveryError(f"no complete answer from {dest.host} within {deadline:g} s")
        return t

    body = json.dumps(payload, default=str).encode()
    head = [
        f"POST {dest.path} HTTP/1.1",
        f"Host: {dest.host}" + ("" if dest.port in (80, 443) else f":{dest.port}"),
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "User-Agent: BTI-webhooks",
        *(f"{k}: {v}" for k, v in headers.items() if "\r" not in v and "\n" not in v),
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    try:
        raw = socket.create_connection((dest.address, dest.port), timeout=left())
    except OSError as exc:
        raise DeliveryError(f"{dest.host}:{dest.port} refused the connection ({exc})") from exc
    sock: socket.socket = raw
    # the backstop of the deadline: however a TLS handshake or a read is split up, the socket is
    # shut at the deadline and every blocked call on it returns
    guard = threading.Timer(max(end - time.monotonic(), 0.0), _shut, (raw,))
    guard.daemon = True
    guard.start()
    try:
        if dest.scheme == "https":
            raw.settimeout(left())
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=dest.host)
        view = memoryview(request)
        while view:
            sock.settimeout(left())
            sent = sock.send(view)
            view = view[sent:]
        got = bytearray()
        while b"\r\n" not in got and len(got) < MAX_RESPONSE:
            sock.settimeout(left())
            chunk = sock.recv(min(4096, MAX_RESPONSE - len(got)))
            if not chunk:
                break
            got += chunk
    except TimeoutError as exc:
        raise DeliveryError(f"no complete answer from {dest.host} within {deadline:g} s") from exc
    except (OSError, ssl.SSLError) as exc:
        if time.monotonic() >= end:
            raise DeliveryError(
                f"no complete answer from {dest.host} within {deadline:g} s"
            ) from exc
        raise DeliveryError(f"{dest.host}: {exc}") from exc
    finally:
        guard.cancel()
        sock.close()
    if b"\r\n" not in got and time.monotonic() >= end:  # the guard shut it mid-line
        raise DeliveryError(f"no complete answer from {dest.host} within {deadline:g} s")
    line = bytes(got).split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise DeliveryError(f"{dest.host} did not answer HTTP (it said {line[:60]!r})")
    return int(parts[1])
