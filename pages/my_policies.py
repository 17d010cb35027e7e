"""My Policies: the trader's policies, their status and distance to liquidation, and each
policy's lifecycle log."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from dashboard import resources

st.title("My policies")
resources.show_flash()
user = resources.signed_in_user()
trader = user.username
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

# --- claims -----------------------------------------------------------------------------------
st.subheader("My claims")
claims_svc = resources.claims()
mine = claims_svc.claims_of(trader)
if mine:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "claim": c.id,
                    "policy": c.policy_id,
                    "state": c.state,
                    "claimed": float(c.amount_claimed),
                    "paid": float(c.amount_approved or 0) if c.state == "paid" else 0.0,
                    "decision": c.decision_reason,
                    "payout_tx": f"/chain_explorer?q={c.payout_tx}" if c.payout_tx else None,
                }
                for c in mine
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "payout_tx": st.column_config.LinkColumn("Payout tx", display_text="explorer"),
            "claimed": st.column_config.NumberColumn("Claimed (BTI)", format="%.2f"),
            "paid": st.column_config.NumberColumn("Paid (BTI)", format="%.2f"),
        },
    )
    appealable = [c for c in mine if c.state == "denied" and not c.appealed]
    if appealable:
        with st.form("appeal"):
            st.markdown("**Appeal a denial** (once per claim; an underwriter reviews it)")
            which = st.selectbox("Claim", [c.id for c in appealable], key="appeal_claim")
            why = st.text_area("Why the decision is wrong", key="appeal_reason")
            if st.form_submit_button("Appeal"):
                try:
                    claims_svc.appeal(int(which or 0), user, why)
                except BTIError as exc:
                    st.error(str(exc))
                else:
                    resources.flash(f"Claim #{which} is appealed; an underwriter will review it.")
else:
    st.caption(
        "No claims. A claim opens by itself when the mark price reaches a policy's "
        "liquidation price inside its window."
    )

claimable = table[table["status"].isin(["active", "expired"])]["policy"].tolist()
if claimable:
    with (
        st.expander("File a claim with your exchange's liquidation record"),
        st.form("file_claim"),
    ):
        pol = st.selectbox("Policy", claimable, key="file_policy")
        upload = st.file_uploader(
            "Liquidation record (.csv with a header row, or .json)",
            type=["csv", "json"],
            key="file_record",
            help="Fields: symbol, side, quantity, price, time (ISO 8601, UTC)",
        )
        if st.form_submit_button("File the claim"):
            if upload is None:
                st.error("Choose the record file first.")
            else:
                try:
                    cid = claims_svc.file_claim(user, int(pol), upload.getvalue(), upload.name)
                    done = claims_svc.process(cid)
                except BTIError as exc:
                    st.error(str(exc))
                else:
                    resources.flash(f"Claim #{cid} filed: {done.state}.")
