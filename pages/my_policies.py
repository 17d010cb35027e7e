"""My Policies: the trader's policies, their status and distance to liquidation, and each
policy's lifecycle log."""

from __future__ import annotations

import streamlit as st

from dashboard import resources

st.title("My policies")
trader = resources.current_trader()
svc = resources.insurance()
resources.wallet_panel(trader)
table = svc.policies(trader)
if table.empty:
    st.info("No policies yet. Buy cover on the Buy insurance page.")
    st.stop()

active = table[table["status"] == "active"]
m = st.columns(3)
m[0].metric("Active policies", len(active))
m[1].metric("Open cover", f"{active['coverage'].sum():,.2f} BTI")
m[2].metric(
    "Premiums paid", f"{table.loc[table['status'] != 'declined', 'premium'].sum():,.2f} BTI"
)

shown = table.assign(
    purchase_tx=[f"/chain_explorer?q={h}" if h else None for h in table["purchase_tx"]]
)
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_config={
        "distance_to_liquidation": st.column_config.ProgressColumn(
            "Distance to liquidation",
            format="percent",
            min_value=0.0,
            max_value=0.5,
            help="How far the mark price may move against the order before it is liquidated",
        ),
        "probability_at_purchase": st.column_config.NumberColumn(
            "P(liq.) at purchase", format="percent"
        ),
        "coverage": st.column_config.NumberColumn("Coverage (USDT)", format="%.2f"),
        "premium": st.column_config.NumberColumn("Premium (USDT)", format="%.2f"),
        "liquidation_price": st.column_config.NumberColumn("Liquidation price", format="%.2f"),
        "mark_price": st.column_config.NumberColumn("Mark price", format="%.2f"),
        "risk_index": st.column_config.NumberColumn("Risk index", format="%.0f"),
        "start": st.column_config.DatetimeColumn("Start (UTC)", format="YYYY-MM-DD HH:mm"),
        "end": st.column_config.DatetimeColumn("End (UTC)", format="YYYY-MM-DD HH:mm"),
        "chain_policy": st.column_config.NumberColumn("On-chain #", format="%d"),
        "purchase_tx": st.column_config.LinkColumn(
            "Purchase tx", display_text="explorer", help="The premium's payment on-chain"
        ),
    },
)

chosen = st.selectbox("Lifecycle of policy", table["policy"].tolist(), key="policy_log")
for ev in svc.events(int(chosen)):
    detail = ", ".join(
        f"{k}: {resources.explorer_link(v, v[:12] + '…')}"
        if k == "tx" and isinstance(v, str) and v
        else f"{k}: {v}"
        for k, v in ev.detail.items()
    )
    st.markdown(
        f"- **{ev.event}** · {ev.at:%Y-%m-%d %H:%M:%S} UTC {('· ' + detail) if detail else ''}"
    )
