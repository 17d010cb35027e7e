"""Cached resources shared by every page and session: warehouse, database engine, chain.

The one module of the dashboard that caches; pages import from here and never open
connections themselves. Resources are keyed by where they point, so a change of
``BTI_DATA_DIR`` or ``BTI_DATABASE_URL`` gets its own.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import streamlit as st
from sqlalchemy.engine import Engine

from bti_core.auth import User, credentials, ensure_demo_users, get_user
from bti_core.chain.client import ChainClient, demo_wallet
from bti_core.chain.explorer import Explorer
from bti_core.chain.runtime import connect
from bti_core.claims.service import ClaimsService
from bti_core.config import Settings, get_settings
from bti_core.db.engine import make_engine, migrate
from bti_core.errors import ChainError
from bti_core.market.warehouse import Warehouse
from bti_core.policies import InsuranceService
from bti_core.risk.engine import RiskEngine
from bti_core.risk.index import load_macro_signals
from bti_core.underwriting import Limits


def settings() -> Settings:
    return get_settings()  # reads the environment: cheap


@st.cache_resource(show_spinner=False)
def _warehouse(root: str) -> Warehouse:
    return Warehouse(root)


@st.cache_resource(show_spinner="Opening the database…")
def _engine(url: str) -> Engine:
    eng = make_engine(url)
    migrate(eng)
    return eng


def warehouse() -> Warehouse:
    return _warehouse(str(settings().warehouse_dir))


def engine() -> Engine:
    return _engine(settings().resolved_database_url)


@st.cache_resource(show_spinner=False)
def _risk_engine(root: str) -> RiskEngine:
    return RiskEngine(_warehouse(root))


def risk_engine() -> RiskEngine:
    return _risk_engine(str(settings().warehouse_dir))


@st.cache_resource(show_spinner="Starting the local chain and deploying BTI's contracts…")
def _chain(rpc_url: str | None, chain_dir: str, port: int) -> ChainClient:
    return connect(settings())


def chain() -> ChainClient:
    """The chain client (the local anvil node is started on first use, its state under
    ``data/chain``; ``BTI_RPC_URL`` points elsewhere)."""
    s = settings()
    try:
        return _chain(s.rpc_url, str(s.chain_dir), s.chain_port)
    except ChainError as exc:
        st.error(f"The chain is not available: {exc}")
        st.stop()
        raise  # unreachable: st.stop() raises


def explorer() -> Explorer:
    return Explorer(chain())


@st.cache_resource(show_spinner="Settling purchases interrupted by a restart…")
def _reconciled(db_url: str, rpc_url: str | None, chain_dir: str) -> str:
    """Reconcile database and chain once per process (and database/chain pair): purchases
    and claim payments a restart interrupted."""
    return f"policies: {_service().reconcile()}; claims: {claims().reconcile()}"


def _service() -> InsuranceService:
    s = settings()
    macro = load_macro_signals(s.macro_file) if s.macro_file else None
    limits = Limits(pool_capacity=s.pool_capacity)
    return InsuranceService(engine(), risk_engine(), limits=limits, macro=macro, chain=chain())


def insurance() -> InsuranceService:
    """The insurance service (cheap to build: it holds the cached engine, database and chain);
    the first call of a process reconciles purchases a restart interrupted."""
    s = settings()
    _reconciled(s.resolved_database_url, s.rpc_url, str(s.chain_dir))
    return _service()


def explorer_link(query: object, text: str | None = None) -> str:
    """Markdown link to the Chain Explorer searching ``query`` (a tx hash, block number,
    address or ``policy N``)."""
    return f"[{text or query}](/chain_explorer?q={quote(str(query))})"


def wallet_panel(trader: str) -> None:
    """Sidebar: the trader's demo wallet, its BTI balance and the faucet."""
    svc_chain = chain()
    wallet = demo_wallet(trader).address
    bal = svc_chain.balance(wallet)
    st.sidebar.caption(f"Wallet `{wallet[:8]}…{wallet[-6:]}` (demo, custodial)")
    st.sidebar.metric("BTI balance", f"{bal:,.2f}")
    if st.sidebar.button("Get 1,000 BTI (demo faucet)", key="faucet"):
        svc_chain.faucet(wallet, Decimal(1000))
        st.sidebar.success("1,000 BTI sent to your wallet.")
        st.rerun()


@st.cache_resource(show_spinner=False)
def _demo_users(db_url: str) -> bool:
    ensure_demo_users(engine())
    return True


def _authenticator() -> Any:
    # imported on first sign-in only: its import is slow and pages that need no sign-in skip it
    import streamlit_authenticator as stauth

    if "authenticator" not in st.session_state:
        st.session_state["authenticator"] = stauth.Authenticate(
            credentials(engine()),
            cookie_name="bti_session",
            cookie_key=settings().session_key(),
            cookie_expiry_days=1,
            auto_hash=False,  # the database holds bcrypt hashes, never passwords
        )
    return st.session_state["authenticator"]


def signed_in_user() -> User:
    """The signed-in user; shows the sign-in form and stops the page until there is one."""
    _demo_users(settings().resolved_database_url)
    auth = _authenticator()
    if not st.session_state.get("authentication_status"):
        auth.login(location="main", key="login")
        if st.session_state.get("authentication_status"):
            st.rerun()  # draw the page without the sign-in form
        if st.session_state.get("authentication_status") is False:
            st.error("Wrong username or password.")
        if not st.session_state.get("authentication_status"):
            st.caption(
                "Demo accounts: **trader** / `trader-demo` and **underwriter** / "
                "`underwriter-demo`."
            )
            st.stop()
    user = get_user(engine(), str(st.session_state.get("username")))
    if user is None:  # signed in with an account that has since gone
        st.session_state["authentication_status"] = None
        st.rerun()
    assert user is not None
    st.sidebar.markdown(f"Signed in as **{user.name}** · {user.role}")
    # not "logout": streamlit-authenticator keeps its own flag under that session key
    auth.logout("Sign out", location="sidebar", key="bti_sign_out")
    return user


def current_trader() -> str:
    """The signed-in user's name, whose policies and wallet the insurance pages show."""
    return signed_in_user().username


def claims() -> ClaimsService:
    s = settings()
    return ClaimsService(
        engine(),
        warehouse(),
        chain(),
        auto_limit=s.claims_auto_limit,
        review_hours=s.claims_review_hours,
        risk=risk_engine(),
    )


@st.cache_resource(show_spinner=False)
def _claims_watcher(db_url: str, warehouse_dir: str, rpc_url: str | None, every: float) -> str:
    """One background thread per process: scan the market for liquidations, decide and pay,
    every ``every`` seconds (claims open by themselves while the dashboard runs)."""
    svc = claims()

    def loop() -> None:
        while True:
            time.sleep(every)
            try:
                svc.run()
            except Exception:
                logging.getLogger("bti.claims").exception("claims scan failed")

    threading.Thread(target=loop, name="bti-claims-watcher", daemon=True).start()
    return f"every {every:g} s"


@st.cache_resource(show_spinner=False)
def _warm_up(warehouse_dir: str) -> str:
    """Fit and simulate every symbol once in the background when the app starts, so the first
    quote is a lookup rather than a 2-second fit inside the page."""

    def fit_all() -> None:
        engine = risk_engine()
        for symbol in warehouse().symbols():
            try:
                engine.symbol_risk(symbol)
            except Exception:  # a symbol without enough data is quoted later, in the page
                logging.getLogger("bti.risk").exception("warm-up of %s failed", symbol)

    threading.Thread(target=fit_all, name="bti-risk-warm-up", daemon=True).start()
    return "started"


def start_background_work() -> None:
    """At app start: the risk warm-up and the claims watcher."""
    _warm_up(str(settings().warehouse_dir))
    start_claims_watcher()


def start_claims_watcher() -> None:
    s = settings()
    if s.claims_watch_seconds > 0:
        _claims_watcher(
            s.resolved_database_url, str(s.warehouse_dir), s.rpc_url, s.claims_watch_seconds
        )


def flash(message: str) -> None:
    """Show ``message`` as a success at the top of the page after a rerun (so everything the
    action changed is drawn fresh)."""
    st.session_state["_flash"] = message
    st.rerun()


def show_flash() -> None:
    message = st.session_state.pop("_flash", None)
    if message:
        st.success(message)
