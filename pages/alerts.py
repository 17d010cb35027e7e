"""Alerts: the real-time pipeline's alerts as a live feed (refreshed every few seconds), with
acknowledgement. A trader sees the alerts on their policies; an underwriter every alert,
the global ones (volatility spikes) included."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bti_core.stream.store import AlertError, acknowledge, alerts_for
from dashboard import resources

KINDS = {
    "liquidation": "Liquidation",
    "near_liquidation": "Near liquidation",
    "risk_index": "Risk index",
    "volatility_spike": "Volatility spike",
}
REFRESH = "3s"

st.title("Alerts")
user = resources.signed_in_user()
st.caption(
    "Raised by the worker's streaming engine as mark prices arrive: a policy within 5 % and 2 % "
    "of its liquidation price, its liquidation (its claim opens at that tick), a risk index "
    "above 70, an hourly move beyond 4 σ. "
    + ("You see every alert." if user.is_underwriter else "You see the alerts on your policies.")
)
c = st.columns([3, 2])
kinds = c[0].pills(
    "Kind", list(KINDS), format_func=KINDS.get, selection_mode="multi", key="alert_kinds"
)
open_only = c[1].toggle("Unacknowledged only", key="alert_open_only")


@st.fragment(run_every=REFRESH)
def feed() -> None:
    rows = alerts_for(resources.engine(), user, unacknowledged=open_only, limit=500)
    if kinds:
        rows = [a for a in rows if a.kind in kinds]
    if not rows:
        st.info("No alerts yet." if not kinds and not open_only else "No alerts match.")
        return
    frame = pd.DataFrame(
        [
            {
                "alert": a.id,
                "at": a.at,
                "kind": KINDS.get(a.kind, a.kind),
                "symbol": a.symbol,
                "policy": a.policy_id,
                "message": a.message,
                "seen": a.acknowledged_at is not None,
            }
            for a in rows
        ]
    )
    m = st.columns(3)
    m[0].metric("Alerts", f"{len(rows):,}")
    m[1].metric("Unacknowledged", f"{int((~frame['seen']).sum()):,}")
    m[2].metric("Liquidations", f"{int((frame['kind'] == 'Liquidation').sum()):,}")
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "alert": st.column_config.NumberColumn("#", format="%d", width="small"),
            "at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "policy": st.column_config.NumberColumn("Policy", format="#%d", width="small"),
            "seen": st.column_config.CheckboxColumn("Seen", width="small"),
        },
    )
    unseen = frame.loc[~frame["seen"], "alert"].tolist()
    if unseen:
        pick = st.multiselect("Acknowledge", unseen, key="alert_ack_pick", placeholder="alerts…")
        if st.button("Mark as seen", key="alert_ack", disabled=not pick):
            try:
                for aid in pick:
                    acknowledge(resources.engine(), int(aid), user)
            except AlertError as exc:
                st.error(str(exc))
            else:
                st.rerun()


feed()
