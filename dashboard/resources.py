"""Cached resources shared by every page and session: settings, warehouse, database engine.

The one module of the dashboard that caches; pages import from here and never open
connections themselves.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import Engine

from bti_core.config import Settings, get_settings
from bti_core.db.engine import make_engine, migrate
from bti_core.market.warehouse import Warehouse


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def warehouse() -> Warehouse:
    return Warehouse(settings().warehouse_dir)


@st.cache_resource(show_spinner="Opening the database…")
def engine() -> Engine:
    eng = make_engine(settings().resolved_database_url)
    migrate(eng)
    return eng
