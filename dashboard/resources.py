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
