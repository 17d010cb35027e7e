"""My Policies: the trader's policies, their status and distance to liquidation, and each
policy's lifecycle log."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from bti_core.policies.lifecycle import FILING_PERIOD
from dashboard import resources, text
from dashboard.accounts_view import exchange_accounts_panel
from dashboard.changes_view import change_panel

st.title("My policies")
resources.show_flash()
user = resources.signed_in_user()
trader = user.username
svc = resources.insurance()
resources.wallet_panel(trader)
exchange_accounts_panel(trader)
table = svc.policies(trader)
if table.empty:
    st.info("No policies yet. Buy cover on the Buy insurance page.")
    st.stop()

active = table[table["status"] == "active"]
m = st.columns(4)
m[0].metric("Active policies", len(active))
m[1].metric("Open cover", text.bti(active["coverage"].sum()))
m[2].metric("Premiums paid", text.bti(table.loc[table["status"] != "declined", "premium"].sum()))
m[3].metric(
    "Nearest to liquidation",
    f"{active['distance_to_liquidation'].min():.1%}" if len(active) else "–",
    help="The smallest distance from the mark price to an active policy's liquidation price",
    delta_arrow="off",
)

shown = table.assign(
    position=[
        f"{s} {lev:g}×"
        + ("" if pd.isna(linked) else f" · exchange #{int(linked)}")
        + (" · ADL cover" if peril == "adl" else "")
        for s, lev, linked, peril in zip(
            table["side"], table["leverage"], table["linked_position"], table["peril"], strict=True
        )
    ],
    purchase_tx=[f"/chain_explorer?q={h}" if h else None for h in table["purchase_tx"]],
)
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    # what matters first, so nothing needs a sideways scroll; the rest is below the table
    column_order=[
        "policy",
        "symbol",
        "position",
        "status",
        "coverage",
        "premium",
        "end",
        "probability_at_purchase",
        "distance_to_liquidation",
        "chain_policy",
        "purchase_tx",
    ],
    column_config={
        "policy": st.column_config.NumberColumn("Policy", format="#%d", width="small"),
        "symbol": st.column_config.TextColumn("Symbol", width="small"),
        "position": st.column_config.TextColumn("Position", width="small"),
        "status": st.column_config.TextColumn("Status", width="small"),
        "distance_to_liquidation": st.column_config.ProgressColumn(
            "To liquidation",
            format="percent",
            min_value=0.0,
            max_value=0.5,
            help="How far the mark price may move against the order before it is liquidated "
            "(open policies only)",
        ),
        "probability_at_purchase": st.column_config.NumberColumn(
            "P(liquidation)", format="percent", help="At purchase, over the cover window"
        ),
        "coverage": st.column_config.NumberColumn("Cover (BTI)", format="accounting"),
        "premium": st.column_config.NumberColumn("Premium (BTI)", format="accounting"),
        "end": st.column_config.DatetimeColumn("Ends (UTC)", format="YYYY-MM-DD HH:mm"),
        "chain_policy": st.column_config.NumberColumn("On-chain", format="#%d", width="small"),
        "purchase_tx": st.column_config.LinkColumn(
            "Transaction", display_text="view", help="The premium's payment on-chain"
        ),
    },
    placeholder="–",
)

chosen = st.selectbox(
    "Policy", table["policy"].tolist(), format_func=lambda p: f"#{p}", key="policy_log"
)
row = table[table["policy"] == chosen].iloc[0]
st.caption(
    f"{row['side']} {row['leverage']:g}× {row['symbol']} · liquidation price "
    f"{row['liquidation_price']:,.2f} · mark now {row['mark_price']:,.2f} · risk index "
    f"{row['risk_index']:.0f} / 100 · cover {row['start']:%Y-%m-%d %H:%M} – "
    f"{row['end']:%Y-%m-%d %H:%M} UTC"
)
st.markdown(
    "\n".join(
        "- " + text.policy_event(ev.event, ev.detail, ev.at, resources.explorer_link)
        for ev in svc.events(int(chosen))
    )
)
change_panel(svc, trader, row.to_dict())

# --- claims -----------------------------------------------------------------------------------
st.subheader("My claims")
claims_svc = resources.claims()
mine = claims_svc.claims_of(trader)


def _why(c: Any) -> str | None:
    """The decision, or why the claim still waits (the trader sees the underwriter's queue's
    reasons and when it is due, not a blank)."""
    if c.decision_reason:
        return str(c.decision_reason)
    if c.state in ("referred", "appealed"):
        reasons = "; ".join(claims_svc.why(c.id)) or "an underwriter decides it"
        by = f" (by {c.due_at:%Y-%m-%d %H:%M} UTC)" if c.due_at else ""
        return f"Waiting for an underwriter{by}: {reasons}"
    if c.state == "opened":
        return "Being audited: a linked position's claim waits for the exchange's record"
    return None


if mine:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "claim": c.id,
                    "policy": c.policy_id,
                    "state": c.state,
                    "claimed": float(c.amount_claimed),
                    "paid": float(c.amount_approved or 0) if c.state == "paid" else None,
                    # a referred claim says when an underwriter decides it at the latest
                    "due": c.due_at if c.state in ("referred", "appealed") else None,
                    "decision": _why(c),
                    "payout_tx": f"/chain_explorer?q={c.payout_tx}" if c.payout_tx else None,
                }
                for c in mine
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "claim": st.column_config.NumberColumn("Claim", format="#%d", width="small"),
            "policy": st.column_config.NumberColumn("Policy", format="#%d", width="small"),
            "state": "State",
            "due": st.column_config.DatetimeColumn("Decision due (UTC)", format="YYYY-MM-DD HH:mm"),
            "decision": st.column_config.TextColumn("Decision", width="large"),
            "payout_tx": st.column_config.LinkColumn("Payout", display_text="view"),
            "claimed": st.column_config.NumberColumn("Claimed (BTI)", format="accounting"),
            "paid": st.column_config.NumberColumn("Paid (BTI)", format="accounting"),
        },
        placeholder="–",
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

# an ended cover takes a claim for FILING_PERIOD after its end (its cover stays locked so long)
filing_ends = table["end"] + FILING_PERIOD
late = (table["status"] == "expired") & (filing_ends > pd.Timestamp.now("UTC"))
claimable = table[(table["status"] == "active") | late]["policy"].tolist()
if claimable:
    with (
        st.expander("File a claim with your exchange's liquidation record"),
        st.form("file_claim"),
    ):
        hours = f"{FILING_PERIOD.total_seconds() / 3600:g}"
        open_late = [
            f"#{pid} until {end:%Y-%m-%d %H:%M} UTC"
            for pid, end in zip(table.loc[late, "policy"], filing_ends[late], strict=True)
        ]
        st.caption(
            "A liquidation inside a cover's window is claimed by itself when the mark price "
            "reaches the liquidation price. If the exchange liquidated you and no claim opened, "
            f"file its record here — also after the cover ended, within {hours} hours of its end"
            + (f" ({', '.join(open_late)})." if open_late else ".")
        )
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
