"""Cached resources shared by every page and session: warehouse, database engine, chain.

The one module of the dashboard that caches; pages import from here and never open
connections themselves. Resources are keyed by where they point, so a change of
``BTI_DATA_DIR`` or ``BTI_DATABASE_URL`` gets its own.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from bti_core import sessions
from bti_core.auth import AuthError, TooManyAttemptsError, User, authenticate, ensure_demo_users
from bti_core.chain.client import ChainClient
from bti_core.chain.explorer import Explorer
from bti_core.claims.service import ClaimsService
from bti_core.config import Settings, get_settings
from bti_core.errors import BTIError, ChainError
from bti_core.market.service import MarketView, market_view
from bti_core.market.warehouse import Warehouse
from bti_core.policies import InsuranceService
from bti_core.risk.engine import RiskEngine
from bti_core.services import Services, build_services
from bti_core.timeutil import to_utc


def settings() -> Settings:
    """The settings the environment (and a ``.env`` file) give now; built again only when
    they change (pydantic reads and validates every field: 10 % of a page's run, once per
    resource asked for)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("BTI_")))
    try:
        dotenv = os.stat(".env").st_mtime_ns
    except OSError:
        dotenv = None
    return _settings(env, dotenv)


@functools.lru_cache(maxsize=8)
def _settings(env: tuple[tuple[str, str], ...], dotenv: int | None) -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def _services(key: str, _settings: Settings) -> Services:
    # one Services per distinct settings, built by the same `build_services` as the CLI and
    # the worker (``_settings`` is not hashed: ``key`` stands for it)
    return build_services(_settings)


def _key(s: Settings) -> str:
    secrets = "".join(k.get_secret_value() for k in (s.admin_key, s.claims_key, s.quoter_key))
    return s.model_dump_json() + hashlib.sha256(secrets.encode()).hexdigest()


def services() -> Services:
    """The engine's services for the current settings (cached per process)."""
    s = settings()
    return _services(_key(s), s)


def warehouse() -> Warehouse:
    return services().warehouse


def engine() -> Engine:
    with st.spinner("Opening the database…"):
        return services().db


def risk_engine() -> RiskEngine:
    return services().risk


def chain() -> ChainClient:
    """The chain client (the local anvil node is started on first use, its state under
    ``data/chain``; ``BTI_RPC_URL`` points elsewhere)."""
    try:
        with st.spinner("Connecting to the chain…"):
            return services().chain
    except ChainError as exc:
        st.error(f"The chain is not available: {exc}")
        st.stop()
        raise  # unreachable: st.stop() raises


def explorer() -> Explorer:
    return Explorer(chain())


def insurance() -> InsuranceService:
    """The insurance service (the worker, `bti worker`, settles what a restart interrupted)."""
    chain()  # a clear message on the page when the chain is down
    return services().insurance


def linked_positions(trader: str) -> list[Any]:
    """The trader's open positions on linked exchange accounts, as the worker last read them
    (a database read: a page never calls an exchange)."""
    return services().accounts.positions(trader)


def explorer_link(query: object, text: str | None = None) -> str:
    """Markdown link to the Chain Explorer searching ``query`` (a tx hash, block number,
    address or ``policy N``)."""
    return f"[{text or query}](/chain_explorer?q={quote(str(query))})"


def demo_chain() -> bool:
    """Whether this dashboard runs on the local development chain, the only place for demos
    (accounts, faucet, crash replay): elsewhere they would move real money."""
    return services().is_demo_chain


def wallet_panel(trader: str) -> None:
    """Sidebar: the trader's demo wallet, its BTI balance and the faucet (local chain only);
    elsewhere their own browser wallet (`browser_wallet`), connected here."""
    if not demo_chain():
        from dashboard import browser_wallet

        st.sidebar.info(
            "This chain is not the local development chain: BTI holds no wallet of yours "
            "here, and there is no faucet. Your own wallet pays the premium."
        )
        account = browser_wallet.connected(services().chain_id)
        st.session_state["_wallet_account"] = account
        if account is not None:
            st.sidebar.caption(f"Wallet `{account[:8]}…{account[-6:]}` (yours)")
            st.sidebar.metric("BTI balance", f"{chain().balance(account):,.2f}")
        return
    svc_chain = chain()
    try:
        wallet = insurance().wallet_of(trader).address
    except BTIError as exc:
        st.sidebar.info(str(exc))
        return
    bal = svc_chain.balance(wallet)
    st.sidebar.caption(f"Wallet `{wallet[:8]}…{wallet[-6:]}` (demo, custodial)")
    st.sidebar.metric("BTI balance", f"{bal:,.2f}")
    if st.sidebar.button("Get 1,000 BTI (demo faucet)", key="faucet"):
        try:
            svc_chain.faucet(wallet, Decimal(1000))
        except BTIError as exc:
            st.sidebar.error(str(exc))
            return
        flash("1,000 BTI sent to your wallet.")


@st.cache_resource(show_spinner=False)
def _demo_users(db_url: str) -> bool:
    """The demo accounts, made once per process, and only on the local development chain."""
    if not demo_chain():
        return False
    ensure_demo_users(engine())
    return True


def _navigate(script: str) -> None:
    """Run ``script`` (a navigation of the browser) in the page."""
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True)


def _to_server(route: str, query: str = "") -> None:
    """Send the browser to one of the server's routes (`dashboard.server`), which sets or
    clears the HttpOnly session cookie and sends it back to this page."""
    _navigate(
        "const next = window.location.pathname + window.location.search;"
        f"window.location.replace('/bti/{route}?{query}next=' + encodeURIComponent(next));"
    )


def _sign_in_form() -> None:
    """The sign-in form; stops the page until someone signs in."""
    demo = _demo_users(settings().resolved_database_url)
    with st.form("sign_in"):
        st.markdown("**Sign in**")
        name = st.text_input("Username", key="sign_in_user", max_chars=80)
        secret = st.text_input("Password", type="password", key="sign_in_password", max_chars=200)
        go = st.form_submit_button("Sign in", type="primary")
    if go:
        try:
            user = authenticate(
                engine(),
                name,
                secret,
                client=st.context.ip_address or "local",
                demo_allowed=demo,
            )
        except TooManyAttemptsError as exc:
            st.error(f"Sign-in refused: {exc}.")
        except AuthError as exc:
            st.error("Wrong username or password." if "wrong password" in str(exc) else str(exc))
        else:
            hours = settings().session_hours
            token = sessions.open_session(engine(), user.username, hours)
            st.session_state.update(_user=user, _token=token)
            st.session_state.pop("_signed_out", None)
            st.session_state["_ticket"] = sessions.open_ticket(engine(), token)
            st.rerun()
    if demo:
        st.caption(
            "Demo accounts: **trader** / `trader-demo` and **underwriter** / `underwriter-demo`."
        )
    if st.session_state.pop("_clear_cookie", False):
        _to_server("signout")
    st.stop()


def signed_in_user() -> User:
    """The signed-in user, checked against the database on every rerun: this tab's session,
    else the one the browser's session cookie names (a reload, a new tab, a typed URL). A
    session signed out elsewhere or expired signs the tab out at once; then the sign-in form
    is shown and the page stops."""
    user: User | None = None
    token = st.session_state.get("_token")
    if token is None and not st.session_state.get("_signed_out"):
        token = st.context.cookies.get(sessions.COOKIE)
    if token is not None:
        user = sessions.resume(engine(), token)
    if user is not None and user.demo and not demo_chain():
        user = None  # a demo account's published password signs nobody in off the dev chain
    if user is None:
        for k in ("_user", "_token", "_ticket"):
            st.session_state.pop(k, None)
        _sign_in_form()
    assert user is not None
    st.session_state.update(_user=user, _token=token)
    ticket = st.session_state.pop("_ticket", None)
    if ticket is not None:  # signed in by the form in this tab: the cookie, from the server
        _to_server("session", f"ticket={quote(ticket)}&")
    st.sidebar.markdown(f"Signed in as **{user.name}** · {user.role}")
    if st.sidebar.button("Sign out", key="bti_sign_out"):
        sessions.close_session(engine(), token)
        for k in ("_user", "_token", "_ticket"):
            st.session_state.pop(k, None)
        st.session_state.update(_signed_out=True, _clear_cookie=True)
        st.rerun()
    return user


def peek_user() -> User | None:
    """Who is signed in, if anyone, without asking anyone to sign in (for the navigation and
    the public pages: the pages themselves check with `signed_in_user`)."""
    token = st.session_state.get("_token")
    if token is None and not st.session_state.get("_signed_out"):
        token = st.context.cookies.get(sessions.COOKIE)
    if token is None:
        return None
    user = sessions.resume(engine(), token)
    return None if user is None or (user.demo and not demo_chain()) else user


def current_trader() -> str:
    """The signed-in user's name, whose policies and wallet the insurance pages show."""
    return signed_in_user().username


def claims() -> ClaimsService:
    chain()
    return services().claims


@st.cache_resource(show_spinner=False)
def _warm_up(warehouse_dir: str, _svc: Services) -> str:
    """Fit and simulate every symbol once in the background when the app starts, so the first
    quote is a lookup rather than a 2-second fit inside the page. The thread works on the
    services of the moment it started (reading the settings later could open another data
    folder's database mid-migration)."""

    def fit_all() -> None:
        try:
            engine = _svc.risk
        except Exception:  # best effort: the page fits what it needs when it is asked
            logging.getLogger("bti.risk").exception("warm-up could not open the risk engine")
            return
        for symbol in _svc.warehouse.symbols():
            try:
                engine.symbol_risk(symbol)
            except Exception:  # a symbol without enough data is quoted later, in the page
                logging.getLogger("bti.risk").exception("warm-up of %s failed", symbol)

    threading.Thread(target=fit_all, name="bti-risk-warm-up", daemon=True).start()
    return "started"


def start_background_work() -> None:
    """At app start: the risk warm-up (claims are the worker's, `bti worker`)."""
    _warm_up(str(settings().warehouse_dir), services())


def flash(message: str) -> None:
    """Confirm an action after the rerun that draws everything it changed afresh (a message
    drawn before `st.rerun` vanishes with it): `show_flash` shows it on the next run."""
    st.session_state["_flash"] = message
    st.rerun()


def show_flash() -> None:
    """The confirmation `flash` left: a toast, seen wherever the page is scrolled, and the same
    words at the top of the page — in a slot drawn on every run, so the page below keeps its
    place when the message goes (a message that came and went shifted every element after it,
    and the next rerun showed the old and the new side by side until it finished)."""
    slot = st.empty()
    message = st.session_state.pop("_flash", None)
    if message:
        st.toast(message, icon=":material/check_circle:")
        slot.success(message)


def replay_notice(symbol: str) -> None:
    """Say where ``symbol``'s market is a replay (`bti crash`), not market data."""
    from bti_core.market.replay import replayed_spans

    spans = replayed_spans(engine(), symbol)
    if spans:
        first, last = spans[-1]
        more = f" ({len(spans)} replays in all)" if len(spans) > 1 else ""
        st.warning(
            f"{symbol} from {first:%Y-%m-%d %H:%M} to {last:%H:%M} UTC is a replayed crash "
            f"(`bti crash`), not market data{more}.",
            icon=":material/replay:",
        )


def countdown(expires_at: datetime, label: str) -> None:
    """``label · valid for m:ss``, counted down in the browser (no reruns), then "expired"."""
    end = to_utc(expires_at)
    ms = int(end.timestamp() * 1000)
    tag = hashlib.sha256(f"{label}{ms}".encode()).hexdigest()[:10]
    st.html(
        f"""<div style="font-size:0.85rem;opacity:0.75" data-testid="bti-countdown">
        {label} · valid until {end:%H:%M:%S} UTC ·
        <span id="cd-{tag}">…</span></div>
        <script>
        (() => {{
          const el = document.getElementById("cd-{tag}");
          const end = {ms};
          const tick = () => {{
            if (!el || !el.isConnected) return;
            const left = Math.round((end - Date.now()) / 1000);
            if (left <= 0) {{ el.textContent = "expired: ask for a new quote"; return; }}
            el.textContent = "valid for " + Math.floor(left / 60) + ":" +
              String(left % 60).padStart(2, "0");
            setTimeout(tick, 1000);
          }};
          tick();
        }})();
        </script>""",
        unsafe_allow_javascript=True,
    )


@st.cache_resource(show_spinner=False)
def _chart_bundle() -> str | None:
    """The file name of Streamlit's Plotly chunk (hashed per release), if there is one."""
    from pathlib import Path

    static = Path(st.__file__).parent / "static" / "static" / "js"
    found = sorted(static.glob("PlotlyChart.*.js"))
    return found[0].name if found else None


def preload_charts() -> None:
    """Load the 4.7 MB Plotly chunk while the browser is idle, once per tab, so the first
    chart a page draws (a quote's) does not wait for it. The import is of the very URL
    Streamlit imports lazily, so the module is then already evaluated."""
    name = _chart_bundle()
    if name is None:
        return
    st.sidebar.html(
        "<script>(() => { if (window.__btiCharts) return; window.__btiCharts = true;"
        f" const go = () => import(new URL('static/js/{name}', document.baseURI).href)"
        ".catch(() => {});"
        " (window.requestIdleCallback || setTimeout)(go, { timeout: 3000 }); })();</script>",
        unsafe_allow_javascript=True,
    )


@st.cache_data(show_spinner=False, max_entries=32)
def _market_view(
    root: str,
    stamp: tuple[tuple[str, int, int, int], ...],
    symbol: str,
    timeframe: str,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
    indicators: tuple[str, ...],
) -> MarketView:
    return market_view(warehouse(), symbol, timeframe, start=start, end=end, indicators=indicators)


def market_view_of(
    symbol: str,
    timeframe: str,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    indicators: Sequence[str] = (),
) -> MarketView:
    """`market_view`, kept while the symbol's stored files are the same (`Warehouse.stamp`):
    a page drawn again, or by another session, reads no bars (0.1 s of the Market's run)."""
    wh = warehouse()
    stamp = wh.stamp(symbol)
    return _market_view(str(wh.root), stamp, symbol, timeframe, start, end, tuple(indicators))


@st.cache_data(show_spinner=False, max_entries=32)
def _recent_closes(
    root: str, stamp: tuple[tuple[str, int, int, int], ...], symbol: str, days: int
) -> pd.Series:
    from bti_core.risk import forecast_store

    return forecast_store.warehouse_closes(warehouse(), symbol, window_days=days)


def recent_closes(symbol: str, days: int) -> pd.Series:
    """`forecast_store.warehouse_closes`, kept while the symbol's stored files are the same."""
    wh = warehouse()
    return _recent_closes(str(wh.root), wh.stamp(symbol), symbol, days)


@st.cache_resource(show_spinner=False, max_entries=2)
def _book(db_url: str, version: tuple[object, ...]) -> pd.DataFrame:
    from bti_core.analytics.book import load_book

    return load_book(engine(), warehouse())


def book() -> pd.DataFrame:
    """The whole insured book (`bti_core.analytics.book.load_book`), read again only when a
    policy or claim changed. Shared by every session: never modify it, filter it."""
    from bti_core.analytics.book import book_version

    with st.spinner("Reading the book…"):
        return _book(settings().resolved_database_url, book_version(engine()))
