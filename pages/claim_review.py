"""Claim review (underwriters): the queue, a claim's evidence, audit checks, scores and the
trader's history; approve, deny or adjust with a written reason."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from dashboard import resources
from dashboard.charts import claim_evidence_figure

st.title("Claim review")
resources.show_flash()
user = resources.signed_in_user()
if not user.is_underwriter:
    st.error("Only underwriters can open the claim review. Your claims are on My policies.")
    st.stop()
svc = resources.claims()
link = resources.explorer_link

top = st.columns([1, 1, 1, 1.3])
if top[3].button("Scan the market now", key="scan", help="Find liquidations, audit, decide, pay"):
    with st.spinner("Scanning mark prices against every active policy…"):
        st.toast(f"Claims: {svc.run()}")
everything = svc.queue()
waiting = (
    everything[everything["state"].isin(["referred", "appealed"])]
    if len(everything)
    else everything
)
now = pd.Timestamp.now(tz="UTC")
overdue = int((pd.to_datetime(waiting["due"], utc=True) < now).sum()) if len(waiting) else 0
top[0].metric("Awaiting review", len(waiting))
top[1].metric("Overdue", overdue)
top[2].metric("Paid", int((everything["state"] == "paid").sum()) if len(everything) else 0)

states = [
    "referred",
    "appealed",
    "opened",
    "approved",
    "adjusted",
    "paying",
    "failed",
    "paid",
    "denied",
]
f1, f2 = st.columns([2, 1])
chosen_states = f1.multiselect("States", states, default=["referred", "appealed"], key="f_states")
symbols = sorted(everything["symbol"].unique()) if len(everything) else []
symbol = f2.selectbox("Symbol", ["all", *symbols], key="f_symbol")
queue = svc.queue(chosen_states or None, None if symbol == "all" else symbol)
if queue.empty:
    st.info("No claims match. Claims open by themselves when a mark price reaches an insured "
            "liquidation price; `bti crash` replays one for a demo.")  # fmt: skip
    st.stop()
st.dataframe(
    queue,
    hide_index=True,
    width="stretch",
    column_config={
        "due": st.column_config.DatetimeColumn("Due (UTC)", format="YYYY-MM-DD HH:mm"),
        "opened": st.column_config.DatetimeColumn("Opened (UTC)", format="YYYY-MM-DD HH:mm"),
        "amount": st.column_config.NumberColumn("Claimed (BTI)", format="%.2f"),
        "approved": st.column_config.NumberColumn("Approved (BTI)", format="%.2f"),
    },
)

cid = int(st.selectbox("Claim", queue["claim"].tolist(), key="claim_pick"))
claim = svc.get(cid)
policy = svc.policy_of(claim)
st.subheader(f"Claim #{claim.id} · {claim.state} · policy #{policy.id} ({policy.user_id})")
m = st.columns(5)
m[0].metric("Claimed (BTI)", f"{claim.amount_claimed:,.2f}")
m[1].metric("Liquidation price", f"{float(claim.liquidation_price):,.2f}")
m[2].metric("Mark at trigger", f"{float(claim.trigger_price):,.2f}")
m[3].metric("P(liq.) at purchase", f"{policy.probability:.1%}")
m[4].metric("Risk index at purchase", f"{policy.risk_index:.0f}")
st.caption(
    f"{policy.side} {float(policy.leverage):g}× {policy.symbol}, {claim.source.replace('_', ' ')}; "
    f"event {claim.trigger_at:%Y-%m-%d %H:%M} UTC; window {policy.start_at:%Y-%m-%d %H:%M} – "
    f"{policy.end_at:%Y-%m-%d %H:%M} UTC"
)
st.plotly_chart(
    claim_evidence_figure(
        claim.evidence.get("bars", []),
        float(claim.liquidation_price),
        policy.side,
        policy.start_at,
        policy.end_at,
        claim.trigger_at,
    ),
    width="stretch",
)

left, right = st.columns([1.4, 1])
with left:
    st.markdown("**Automatic audit**")
    icons = {"pass": "✔ pass", "fail": "✘ fail", "unsure": "? unsure"}
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "check": c["name"],
                    "outcome": icons.get(c["outcome"], c["outcome"]),
                    "reason": c["reason"],
                }
                for c in claim.checks
            ],
            columns=["check", "outcome", "reason"],
        ),
        hide_index=True,
        width="stretch",
    )
    if claim.evidence.get("record"):
        with st.expander("The trader's exchange record"):
            st.json(claim.evidence["record"])
with right:
    st.markdown("**Trader's history**")
    history = [c for c in svc.claims_of(claim.user_id) if c.id != claim.id]
    st.markdown(
        f"- other claims: {len(history)} "
        f"({sum(c.state == 'paid' for c in history)} paid, "
        f"{sum(c.state == 'denied' for c in history)} denied)\n"
        f"- this policy: premium {policy.premium:,.2f} BTI, payout terms {policy.payout:,.2f} BTI"
    )
    if claim.decision_reason:
        st.markdown(f"**Decision** by {claim.decided_by}: {claim.decision_reason}")
    if claim.payout_tx:
        tx_link = link(claim.payout_tx, claim.payout_tx[:12] + "…")
        st.markdown(f"**Paid** {claim.amount_approved:,.2f} BTI · {tx_link}")

if claim.state in ("referred", "appealed"):
    with st.form("decision", clear_on_submit=False):
        st.markdown("**Your decision**")
        decision = st.radio(
            "Decision", ["approve", "deny", "adjust"], horizontal=True, key="decision"
        )
        amount = st.number_input(
            "Adjusted amount (BTI, for adjust)",
            min_value=0.0,
            max_value=float(claim.amount_claimed),
            value=float(claim.amount_claimed) / 2,
            key="adjust_amount",
        )
        reason = st.text_area("Reason (required, kept in the audit log)", key="reason")
        if st.form_submit_button("Submit decision", type="primary"):
            try:
                done = svc.decide(
                    cid,
                    user,
                    decision,
                    reason,
                    Decimal(str(round(amount, 2))) if decision == "adjust" else None,
                )
            except BTIError as exc:
                st.error(str(exc))
            else:
                paid = f" Payout transaction {link(done.payout_tx)}." if done.payout_tx else ""
                resources.flash(f"Claim #{cid} is {done.state}.{paid}")

with st.expander("Audit log of this claim (hash-chained)"):
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "at": e.at,
                    "actor": e.actor,
                    "event": e.event,
                    "from": e.from_state,
                    "to": e.to_state,
                    "hash": e.hash[:16] + "…",
                }
                for e in svc.log_of(cid)
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    if st.button("Verify the whole log", key="verify"):
        verdict = svc.verify_log()
        (st.success if verdict.ok else st.error)(str(verdict))
