"""Cached resources shared by every page and session: warehouse and database engine.

The one module of the dashboard that caches; pages import from here and never open
connections themselves. Resources are keyed by where they point, so a change of
``BTI_DATA_DIR`` or ``BTI_DATABASE_URL`` gets its own.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import Engine

from bti_core.config import Settings, get_settings
from bti_core.db.engine import make_engine, migrate
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


def insurance() -> InsuranceService:
    """The insurance service (cheap to build: it holds the cached engine and database)."""
    s = settings()
    macro = load_macro_signals(s.macro_file) if s.macro_file else None
    limits = Limits(pool_capacity=s.pool_capacity)
    return InsuranceService(engine(), risk_engine(), limits=limits, macro=macro)


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
