"""Cached resources shared by every page and session: warehouse, database engine, chain.

The one module of the dashboard that caches; pages import from here and never open
connections themselves. Resources are keyed by where they point, so a change of
``BTI_DATA_DIR`` or ``BTI_DATABASE_URL`` gets its own.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

import streamlit as st
from sqlalchemy.engine import Engine

from bti_core.chain.client import ChainClient, demo_wallet
from bti_core.chain.explorer import Explorer
from bti_core.chain.runtime import connect
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
    """Reconcile database and chain once per process (and database/chain pair)."""
    return str(_service().reconcile())


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


def current_trader() -> str:
    """The trader whose policies the pages show (sign-in replaces this with the signed-in user)."""
    name = st.sidebar.text_input(
        "Trader", value=st.session_state.get("trader", "demo-trader"), key="trader_input"
    ).strip()
    if not name:
        st.sidebar.error("Enter a trader name.")
        st.stop()
    st.session_state["trader"] = name
    return name
