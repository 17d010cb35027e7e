"""The dashboard's server: `streamlit run dashboard/server.py` (what `make run` starts).

Streamlit's own server (`st.App`, ASGI) serving `dashboard/app.py`, with two routes of BTI's
that only a server can answer, because they set the session cookie ``HttpOnly`` — out of
reach of any script in the page:

- ``GET /bti/session?ticket=…&next=/page`` trades the one-time ticket the sign-in form made
  (`bti_core.sessions.redeem_ticket`) for the session cookie, and sends the browser back to
  ``next`` (a path of this site only);
- ``GET /bti/signout?next=/page`` clears the cookie (the page revoked its session first).

The cookie is ``Secure`` when the request came over HTTPS (directly, or through a proxy that
says so in ``X-Forwarded-Proto``), ``SameSite=Strict`` and scoped to the whole site.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

from bti_core import sessions  # noqa: E402 — after the path fix above


def _next(request: Request) -> str:
    """Where to send the browser afterwards: a path of this site (never another host)."""
    raw = request.query_params.get("next", "/")
    parts = urlsplit(raw)
    if (
        not raw.startswith("/")
        or raw.startswith("//")
        or "\\" in raw
        or parts.scheme
        or parts.netloc
        or len(raw) > 2000
    ):
        return "/"
    return raw


def _secure(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip().lower() == "https"


@functools.cache
def _db(url: str) -> Engine:
    from bti_core.db.engine import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    return engine


def _engine() -> Engine:
    from bti_core.config import get_settings

    return _db(get_settings().resolved_database_url)


def session_route(request: Request) -> Response:
    cookie = sessions.redeem_ticket(_engine(), request.query_params.get("ticket"))
    reply = RedirectResponse(_next(request), status_code=303)
    reply.headers["Cache-Control"] = "no-store"
    if cookie is None:  # used, stale or forged: no cookie; the page asks to sign in again
        return reply
    reply.set_cookie(
        sessions.COOKIE,
        cookie.token,
        max_age=cookie.max_age(),
        path="/",
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )
    return reply


def signout_route(request: Request) -> Response:
    reply = RedirectResponse(_next(request), status_code=303)
    reply.headers["Cache-Control"] = "no-store"
    reply.delete_cookie(
        sessions.COOKIE, path="/", httponly=True, secure=_secure(request), samesite="strict"
    )
    return reply


ROUTES = [
    Route("/bti/session", session_route, methods=["GET"]),
    Route("/bti/signout", signout_route, methods=["GET"]),
]


@contextlib.asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    """At shutdown, the local chain node this process started is snapshotted and stopped:
    the ASGI server exits on SIGTERM without running ``atexit`` (measured), which lost the
    chain's newest state and left the node running."""
    yield None
    from bti_core.chain.runtime import stop_started_nodes

    stop_started_nodes()


app = st.App(str(Path(__file__).resolve().parent / "app.py"), routes=ROUTES, lifespan=lifespan)
