"""BTI dashboard pages: served by `streamlit run dashboard/server.py` (`make run`), which adds the
session routes a page cannot serve (`dashboard.server`)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

PAGES = ROOT / "pages"
STARTED = time.perf_counter()
WALL = time.time()

st.set_page_config(page_title="BTI · liquidation insurance", page_icon="🛡️", layout="wide")

from dashboard import resources  # noqa: E402 — after the path fix above

user = resources.peek_user() if st.runtime.exists() else None
reviewer = user is not None and user.is_underwriter
my_policies = st.Page(PAGES / "my_policies.py", title="My policies", icon=":material/list_alt:")
navigation = st.navigation(
    {
        "Markets": [
            st.Page(
                PAGES / "market.py",
                title="Market",
                icon=":material/candlestick_chart:",
                default=True,
            ),
        ],
        "Insurance": [
            st.Page(PAGES / "buy_insurance.py", title="Buy insurance", icon=":material/shield:"),
            my_policies,
            st.Page(
                PAGES / "capital.py",
                title="Capital",
                icon=":material/savings:",
                url_path="capital",
            ),
        ],
        "Analytics": [
            st.Page(
                PAGES / "risk_queries.py",
                title="Risk queries",
                icon=":material/query_stats:",
                url_path="risk_queries",
            ),
            st.Page(
                PAGES / "alerts.py",
                title="Alerts",
                icon=":material/notifications:",
                url_path="alerts",
            ),
        ],
        # listed for underwriters; for anyone else it is hidden, and the page itself refuses
        # anyone but an underwriter (a link to it still asks them to sign in)
        "Underwriting": [
            st.Page(
                PAGES / "claim_review.py",
                title="Claim review",
                icon=":material/gavel:",
                url_path="claim_review",
                visibility="visible" if reviewer else "hidden",
            )
        ],
        "Chain": [
            st.Page(
                PAGES / "chain_explorer.py",
                title="Chain explorer",
                icon=":material/account_tree:",
                url_path="chain_explorer",
            ),
        ],
    }
)
st.sidebar.caption("BTI insures leveraged perpetual orders against liquidation.")
if user is None:  # the public pages (Market) offer it too; the others ask when opened
    st.sidebar.page_link(my_policies, label="Sign in", icon=":material/login:")

if st.runtime.exists():  # a real server (not a bare import, e.g. a spawned child process)
    resources.start_background_work()
    resources.preload_charts()
try:
    navigation.run()
finally:  # benchmarks/pages.py: how much of a page's time is the server's
    if times := os.environ.get("BTI_PAGE_TIMES"):
        took = time.perf_counter() - STARTED
        with open(times, "a") as f:
            f.write(f"{time.time():.3f}\t{navigation.title}\t{took:.4f}\t{WALL:.3f}\n")
