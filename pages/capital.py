"""Capital: the other side of the pool. A provider deposits BTI for pool shares, sees the share
price move with premiums and claims, its realised yield, the capital locked behind open cover
and free, what its share would lose in a crash, and withdraws through a request, a cooldown
and a window."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import streamlit as st

from bti_core.capital import MAX_AMOUNT, flows
from bti_core.display import duration_text
from bti_core.errors import BTIError
from dashboard import resources, risk_charts, text, views

st.title("Capital")
resources.show_flash()
user = resources.signed_in_user()
resources.wallet_panel(user.username)
st.caption(
    "Capital providers back the pool's cover with BTI and earn its premiums; a claim is their "
    "loss. A share's price is the pool's capital, less what its open claims are reserved at, "
    "over its shares: premiums raise it, a claim lowers it when it opens (a denied one gives "
    "it back), and deposits and withdrawals leave it where it is."
)
if not resources.demo_chain():
    st.info(
        "This chain is not the local development chain: BTI holds no wallet of yours here. "
        "Deposit and withdraw with your own wallet on the pool contract "
        f"(`{resources.chain().deployment.pool}`: ERC-4626 `deposit`, then "
        "`requestWithdrawal`, then `withdraw`); this page shows the pool."
    )
svc = resources.services()
try:
    cap = svc.capital
    wallet = svc.insurance.wallet_of(user.username).address if resources.demo_chain() else None
    report = cap.report(wallet or "0x" + "00" * 20)
except BTIError as exc:
    st.error(f"The pool cannot be read: {exc}")
    st.stop()
p, pool = report.position, report.pool


def _when(ts: int) -> str:
    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M:%S} UTC"


if wallet is not None:
    st.subheader("Your capital")
    m = st.columns(4)
    m[0].metric(
        "Value",
        text.bti(p.total_value),
        # a gain under a cent is the share price's rounding in whole wei: none to show
        delta=f"{report.gain:+,.2f} BTI" if abs(report.gain) >= Decimal("0.005") else None,
        help="Your shares (held and requested) at today's share price; the change is what "
        "they earned over what you put in, net of withdrawals",
    )
    m[1].metric("Share of the pool", f"{report.pool_share:.2%}")
    m[2].metric("Withdrawable now", text.bti(p.can_withdraw_now))
    m[3].metric("Net deposited", text.bti(report.net_deposited))

    state = p.request_state
    if state == "cooling down":
        st.info(
            f"Withdrawal request of {text.bti(p.requested_value)} cooling down until "
            f"{_when(p.ready_at)}, then takeable until {_when(p.expires_at)}. The requested "
            "shares still earn premiums and still bear the claims opened meanwhile.",
            icon=":material/hourglass_top:",
        )
    elif state == "ready":
        st.success(
            f"Withdrawal request of {text.bti(p.requested_value)} is ready until "
            f"{_when(p.expires_at)}: {text.bti(p.can_withdraw_now)} can go now (capital "
            "locked behind open cover waits until that cover ends).",
            icon=":material/check_circle:",
        )
    elif state == "lapsed":
        st.warning(
            f"Withdrawal request of {text.bti(p.requested_value)} lapsed at "
            f"{_when(p.expires_at)}: cancel it to have the shares back, or request again.",
            icon=":material/schedule:",
        )

    # keyed: the tab a person was on stays open after an action's rerun
    deposit_tab, request_tab = st.tabs(
        ["Deposit", "Withdraw"], key="capital_tab", on_change="rerun"
    )
    with deposit_tab, st.form("capital_deposit", border=False):
        amount = st.number_input(
            "Amount (BTI)",
            min_value=0.01,
            max_value=float(MAX_AMOUNT),
            value=1000.0,
            step=100.0,
            key="capital_deposit_amount",
        )
        if st.form_submit_button("Deposit", type="primary"):
            try:
                cap.deposit(user.username, f"{amount:.8f}")
            except BTIError as exc:
                st.error(f"Deposit refused: {exc}")
            else:
                resources.flash(f"{amount:,.2f} BTI deposited for pool shares.")
    with request_tab:
        st.caption(
            f"A withdrawal is asked for first: the shares wait in escrow for "
            f"{duration_text(p.cooldown)}, then may be taken within "
            f"{duration_text(p.window)}. The wait keeps capital from leaving ahead of a crash "
            "it sees coming (Drift's insurance fund waits about two weeks, Hyperliquid's HLP "
            "four days); claims come first: a claim still open when you withdraw is taken out "
            "of the price you withdraw at."
        )
        c = st.columns([2, 1, 1, 1])
        ask = c[0].number_input(
            "Amount to request (BTI; 0: all you hold)",
            min_value=0.0,
            max_value=float(MAX_AMOUNT),
            value=0.0,
            step=100.0,
            key="capital_request_amount",
        )
        if c[1].button("Request", disabled=p.shares <= 0, key="capital_request"):
            try:
                cap.request(user.username, None if ask == 0 else f"{ask:.8f}")
            except BTIError as exc:
                st.error(f"Request refused: {exc}")
            else:
                resources.flash("Withdrawal requested: the cooldown has started.")
        if c[2].button("Withdraw", disabled=state != "ready", key="capital_withdraw"):
            try:
                _, got = cap.withdraw(user.username)
            except BTIError as exc:
                st.error(f"Withdrawal refused: {exc}")
            else:
                resources.flash(f"{got:,.2f} BTI withdrawn to your wallet.")
        if c[3].button("Cancel request", disabled=state == "none", key="capital_cancel"):
            try:
                cap.cancel(user.username)
            except BTIError as exc:
                st.error(f"Cancel refused: {exc}")
            else:
                resources.flash("Request cancelled: the shares are yours again.")

st.subheader("The pool")
m = st.columns(5)
m[0].metric("Capital", text.bti(pool.reserves))
m[1].metric(
    "Locked behind open cover",
    text.bti(pool.locked),
    help=f"{pool.utilisation:.1%} of the capital: what open policies could claim",
)
m[2].metric(
    "Reserved for open claims",
    text.bti(pool.claims_reserved),
    help="What the claims still waiting (for an underwriter, or the exchange's record) would "
    "pay: out of the share price already, so nobody leaves ahead of them",
)
m[3].metric("Free to withdraw", text.bti(pool.free))
m[4].metric("Share price", f"{p.share_price:,.6f} BTI")

h = report.history
if not h:
    st.info("No capital in the pool yet.")
    st.stop()
frame = pd.DataFrame(
    {
        "time": [x.time for x in h],
        "kind": [x.kind for x in h],
        "amount": [float(x.amount) for x in h],
        "price": [float(x.price) for x in h],
    }
)
left, right = st.columns([3, 2])
left.plotly_chart(risk_charts.share_price_figure(frame), width="stretch")
with right:
    rows = []
    for y in report.yields:
        moved = flows(h, y.start)
        rows.append(
            {
                "window": f"{y.days} days",
                "return": y.ret,
                "a year": y.annualised(report.now),
                "premiums": float(moved.premiums),
                "claims paid": float(moved.claims),
                "from": y.start,
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "return": st.column_config.NumberColumn(format="percent"),
            "a year": st.column_config.NumberColumn(format="percent", help="simple, × 365 / days"),
            "premiums": st.column_config.NumberColumn(format="accounting"),
            "claims paid": st.column_config.NumberColumn(format="accounting"),
            "from": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )
    if any(not y.full_window for y in report.yields):
        st.caption(
            f"The pool started {h[0].time:%Y-%m-%d %H:%M} UTC: a longer window is measured "
            "from then, and its yearly figure from a short time is a poor guide."
        )
    total = flows(h)
    st.caption(
        f"Since the start: premiums {text.bti(total.premiums)}, claims paid "
        f"{text.bti(total.claims)}, capital in {text.bti(total.deposits)}, out "
        f"{text.bti(total.withdrawals)}."
    )

st.subheader("Stress: what a crash would take")
results = views.scenario_results()
if results:
    st.dataframe(
        pd.DataFrame(
            {
                "scenario": [r.scenario.name for r in results],
                "claims": [r.claims for r in results],
                "payout (BTI)": [r.payout for r in results],
                "of the pool": [
                    r.payout / float(pool.reserves) if pool.reserves > 0 else 0.0 for r in results
                ],
                "your share (BTI)": [report.stress_loss(r.payout) for r in results],
            }
        ),
        hide_index=True,
        column_config={
            "payout (BTI)": st.column_config.NumberColumn(format="accounting"),
            "of the pool": st.column_config.NumberColumn(format="percent"),
            "your share (BTI)": st.column_config.NumberColumn(format="accounting"),
        },
    )
    st.caption(
        "The open book's claims in each scenario at today's marks (the Risk queries page draws "
        "them minute by minute); your share is your part of the pool times the payout."
    )
