"""Claim review (underwriters): the queue, why each claim waits, its evidence, the audit in
words and the trader's history; approve, deny or adjust with a written reason, one claim or
several at once."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from bti_core.claims.checks import title
from bti_core.errors import BTIError
from dashboard import resources, text
from dashboard.charts import claim_evidence_figure

STATES = ["referred", "appealed", "opened", "approved", "adjusted", "paying", "failed", "paid"]
STATES.append("denied")
OUTCOME = {"pass": ":green[:material/check_circle:]", "fail": ":red[:material/cancel:]"}
OUTCOME_WORD = {"pass": "passed", "fail": "failed", "unsure": "unsure"}

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

f1, f2 = st.columns([2, 1])
chosen_states = f1.multiselect("States", STATES, default=["referred", "appealed"], key="f_states")
symbols = sorted(everything["symbol"].unique()) if len(everything) else []
symbol = f2.selectbox("Symbol", ["all", *symbols], key="f_symbol")
queue = svc.queue(chosen_states or None, None if symbol == "all" else symbol)
if queue.empty:
    st.info("No claims match. Claims open by themselves when a mark price reaches an insured "
            "liquidation price; `bti crash` replays one for a demo.")  # fmt: skip
    st.stop()
st.dataframe(
    queue.drop(columns="policy").assign(
        source=[text.claim_source(s, short=True) for s in queue["source"]]
    ),
    hide_index=True,
    width="stretch",
    column_config={
        "claim": st.column_config.NumberColumn("Claim", format="#%d"),
        "state": "State",
        "due": st.column_config.DatetimeColumn("Due (UTC)", format="YYYY-MM-DD HH:mm"),
        "opened": st.column_config.DatetimeColumn("Opened (UTC)", format="YYYY-MM-DD HH:mm"),
        "amount": st.column_config.NumberColumn("Claimed (BTI)", format="accounting"),
        "approved": st.column_config.NumberColumn("Approved (BTI)", format="accounting"),
        "symbol": "Symbol",
        "side": "Side",
        "leverage": st.column_config.NumberColumn("Leverage", format="%g×"),
        "trader": "Trader",
        "source": "Opened from",
    },
    placeholder="–",
)

open_ids = [int(c) for c in queue["claim"] if c in set(waiting["claim"])] if len(waiting) else []
if len(open_ids) > 1:
    with (
        st.expander(f"Decide several claims at once ({len(open_ids)} waiting in this view)"),
        st.form("bulk"),
    ):
        picked = st.multiselect("Claims", open_ids, format_func=lambda c: f"#{c}", key="bulk")
        verdict = st.radio("Decision", ["approve", "deny"], horizontal=True, key="bulk_dec")
        why_all = st.text_area("Reason for all of them (kept in each claim's log)", key="bulk_r")
        if st.form_submit_button("Decide the chosen claims", type="primary"):
            done, failed = [], []
            if not picked:
                st.error("Choose the claims to decide first.")
            with st.spinner(f"Deciding {len(picked)} claims…"):
                for c in picked:
                    try:
                        done.append(f"#{c} {svc.decide(c, user, verdict, why_all).state}")
                    except BTIError as exc:
                        failed.append(f"#{c}: {exc}")
            if failed:
                st.error("Not decided: " + "; ".join(failed))
            if done and not failed:
                resources.flash("Decided: " + ", ".join(done) + ".")
            elif done:
                st.success("Decided: " + ", ".join(done) + ".")

if st.session_state.pop("_decided", False):  # after a decision, the next claim is chosen
    st.session_state["claim_pick"] = None  # by the underwriter, not switched to silently
picked = st.selectbox(
    "Claim",
    queue["claim"].tolist(),
    format_func=lambda c: f"#{c}",
    key="claim_pick",
    placeholder="Pick the next claim to review",
)
if picked is None:
    st.info("Pick the next claim to review (the queue is soonest due first).")
    st.stop()
cid = int(picked)
claim = svc.get(cid)
policy = svc.policy_of(claim)
st.subheader(f"Claim #{claim.id} · {claim.state} · policy #{policy.id} ({policy.user_id})")

why = svc.why(cid)
if claim.state in ("referred", "appealed") and why:
    due = f" Due {claim.due_at:%Y-%m-%d %H:%M} UTC." if claim.due_at else ""
    st.warning(
        "**Why it waits for you:**\n" + "\n".join(f"- {r}" for r in why) + f"\n\n{due}",
        icon=":material/help:",
    )

checks = {c["name"]: c for c in claim.checks}
confirm = checks.get("mark_confirms", {}).get("evidence", {})
# the mark the audit judged: the check's figure, else the trigger bar's extreme
mark_then = confirm.get("mark_at_trigger")
if mark_then is None:
    mark_then = (
        float(claim.trigger_price)
        if claim.source == "market_scan"
        else claim.evidence.get("mark_at_trigger")
    )
m = st.columns(5)
m[0].metric("Claimed (BTI)", f"{claim.amount_claimed:,.2f}")
m[1].metric("Liquidation price", f"{float(claim.liquidation_price):,.2f}")
m[2].metric(
    "Mark at trigger",
    "–" if mark_then is None else f"{float(mark_then):,.2f}",
    help="The mark price's extreme in the bar of the event (liquidations trigger on the mark)",
)
m[3].metric("P(liq.) at purchase", f"{policy.probability:.1%}")
m[4].metric("Risk index at purchase", f"{policy.risk_index:.0f} / 100")
origin = text.claim_source(claim.source) + (
    f", which gives the price {float(claim.trigger_price):,.2f}"
    if claim.source in ("trader", "exchange_adl")
    else ""
)
st.caption(
    f"{policy.side} {float(policy.leverage):g}× {policy.symbol}; {origin}; event "
    f"{claim.trigger_at:%Y-%m-%d %H:%M} UTC; cover window {policy.start_at:%Y-%m-%d %H:%M} – "
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
    for c in claim.checks:
        icon = OUTCOME.get(c["outcome"], ":orange[:material/help:]")
        st.markdown(
            f"{icon} **{title(c['name'])}** ({OUTCOME_WORD.get(c['outcome'], c['outcome'])}): "
            f"{c['reason']}"
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
        f"- this policy: premium {policy.premium:,.2f} BTI, pays {policy.payout:,.2f} BTI if "
        "liquidated"
    )
    if claim.decision_reason:
        st.markdown(f"**Decision** by {claim.decided_by}: {claim.decision_reason}")
    if claim.payout_tx:
        tx_link = link(claim.payout_tx, claim.payout_tx[:12] + "…")
        st.markdown(f"**Paid** {claim.amount_approved:,.2f} BTI · {tx_link}")

if claim.state in ("referred", "appealed"):
    st.markdown("**Your decision**")
    decision = st.radio("Decision", ["approve", "deny", "adjust"], horizontal=True, key="decision")
    amount = None
    if decision == "adjust":  # the amount only when adjusting
        amount = st.number_input(
            "Adjusted amount (BTI)",
            min_value=0.01,
            max_value=float(claim.amount_claimed),
            value=round(float(claim.amount_claimed) / 2, 2),
            key=f"adjust_amount_{cid}",
            help=f"Up to the {claim.amount_claimed:,.2f} BTI claimed",
        )
    reason = st.text_area("Reason (required, kept in the audit log)", key=f"reason_{cid}")
    if st.button("Submit decision", type="primary", key="decide"):
        try:
            done = svc.decide(
                cid,
                user,
                decision,
                reason,
                Decimal(str(round(amount, 2))) if amount is not None else None,
            )
        except BTIError as exc:
            st.error(str(exc))
        else:
            paid = f" Payout transaction {link(done.payout_tx)}." if done.payout_tx else ""
            st.session_state["_decided"] = True
            resources.flash(f"Claim #{cid} is {done.state}.{paid}")

with st.expander("Audit log of this claim (hash-chained)"):
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "at": e.at,
                    "actor": e.actor,
                    "event": e.event.replace("_", " "),
                    "from": e.from_state,
                    "to": e.to_state,
                    "hash": e.hash[:16] + "…",
                }
                for e in svc.log_of(cid)
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "at": st.column_config.DatetimeColumn("At (UTC)", format="YYYY-MM-DD HH:mm:ss")
        },
        placeholder="–",
    )
    if st.button("Verify the whole log", key="verify"):
        verdict = svc.verify_log()
        (st.success if verdict.ok else st.error)(str(verdict))
