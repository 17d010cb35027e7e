"""My policies: change a cover — extend, raise, cancel — priced first, made on confirmation;
renew one (the Buy page with the same order and cover), or consent to renew it automatically
when it ends."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from bti_core.policies import InsuranceService
from bti_core.policies.changes import CHANGE_TTL, KINDS
from bti_core.policies.renewals import MAX_TIMES, consent_text
from dashboard import resources, text
from dashboard.buy_link import BuyLink

KIND_LABELS = {"extend": "Extend", "raise": "Raise the cover", "cancel": "Cancel"}
DURATIONS = (6, 24, 72, 168, 336, 720)  # the Buy page's


def renew_link(svc: InsuranceService, trader: str, policy_id: int) -> str | None:
    """The Buy page with this policy's order and cover in its form (None: not renewable)."""
    try:
        order, cover = svc.changes.renewal(user_id=trader, policy_id=policy_id)
    except BTIError:
        return None
    hours = min(DURATIONS, key=lambda d: abs(d - cover.duration_hours))
    link = BuyLink(
        symbol=order.symbol,
        side=str(order.side),
        order_type="limit",
        margin_mode=str(order.margin_mode),
        qty=float(order.quantity),
        price=float(order.entry_price),
        leverage=int(order.leverage),
        coverage=float(cover.coverage),
        duration=hours,
        share=int(cover.share * 100),
        deductible=float(cover.deductible),
    )
    return "/buy_insurance?" + urlencode(link.to_params())


def change_panel(svc: InsuranceService, trader: str, row: dict) -> None:
    """For the chosen policy: renew it, and while it is active change it."""
    pid = int(row["policy"])
    link = renew_link(svc, trader, pid)
    active = row["status"] == "active" and row["end"] > datetime.now(UTC)
    if link is not None and not pd.isna(row.get("linked_position")):
        link = None  # linked cover is bought on the position itself
    if not active:
        if link is not None:
            st.link_button(
                "Renew: the same cover at today's price", link, icon=":material/autorenew:"
            )
        return
    if link is not None:
        renewal_panel(svc, trader, pid, float(row["premium"]))
    with st.expander(f"Change policy #{pid}: extend, raise or cancel"):
        c = st.columns([2, 2, 1])
        kind = c[0].segmented_control(
            "Change", KINDS, default="extend", format_func=KIND_LABELS.get, key=f"chg_kind_{pid}"
        )
        hours = coverage = None
        if kind == "extend":
            hours = c[1].number_input(
                "Hours to add", min_value=1, max_value=720, value=24, key=f"chg_hours_{pid}"
            )
        elif kind == "raise":
            coverage = c[1].number_input(
                "New cover (USDT)",
                min_value=float(row["coverage"]) + 0.01,
                max_value=1_000_000_000.0,
                value=float(row["coverage"]) * 1.5,
                key=f"chg_cover_{pid}",
            )
        if c[2].button("Price it", key=f"chg_price_{pid}", type="secondary"):
            try:
                view = svc.price_change(
                    user_id=trader,
                    policy_id=pid,
                    kind=kind or "extend",
                    hours=hours,
                    coverage=None if coverage is None else f"{coverage:.2f}",
                )
            except BTIError as exc:
                st.error(str(exc))
            else:
                st.session_state[f"chg_priced_{pid}"] = view.change.id
                st.session_state[f"chg_view_{pid}"] = view
        view = st.session_state.get(f"chg_view_{pid}")
        if view is None:
            st.caption(
                "A change is priced at today's quote for the changed cover over the time it has "
                "left, with a credit for the premium the cover has not used yet (pro rata by "
                "time, the issuing fee kept). Cancelling refunds that credit."
            )
            if link is not None:
                st.link_button("Renew: the same cover at today's price", link)
            return
        ch = view.change
        m = st.columns(4)
        m[0].metric("New premium", text.bti(ch.new_premium))
        m[1].metric("Credit (unused premium)", text.bti(ch.credit))
        m[2].metric("You pay", text.bti(ch.charge))
        m[3].metric("You get back", text.bti(ch.refund))
        st.caption(
            (
                "Cancels the cover now."
                if ch.kind == "cancel"
                else f"Cover {float(ch.coverage):,.2f} USDT (pays up to {float(ch.payout):,.2f}) "
                f"until {ch.end_at:%Y-%m-%d %H:%M} UTC."
            )
            + f" This price holds for {int(CHANGE_TTL.total_seconds() // 60)} minutes."
        )
        for f in view.failed:
            st.error(f.reason)
        if st.button(
            f"Confirm: {KIND_LABELS[ch.kind].lower()}",
            type="primary",
            disabled=not view.allowed,
            key=f"chg_confirm_{pid}",
        ):
            try:
                svc.confirm_change(user_id=trader, change_id=ch.id)
            except BTIError as exc:
                st.error(str(exc))
            else:
                st.session_state.pop(f"chg_view_{pid}", None)
                done = {
                    "extend": "Cover extended",
                    "raise": "Cover raised",
                    "cancel": f"Cover cancelled; {text.bti(ch.refund)} refunded",
                }[ch.kind]
                resources.flash(f"Policy #{pid}: {done}.")


def renewal_panel(svc: InsuranceService, trader: str, pid: int, premium: float) -> None:
    """Consent to renew the cover automatically when it ends, or stop a standing consent."""
    r = svc.renewals.of(trader, pid)
    standing = r is not None and r.state == "standing"
    title = "Renew automatically" + (": on" if standing else "")
    with st.expander(title, icon=":material/autorenew:"):
        said = consent_text(r)
        st.caption(
            (said + " " if said else "")
            + "When this cover ends, the same cover is bought again at that moment's quote from "
            "your wallet, if its premium is at most what you agree to here and underwriting "
            "would sell it; otherwise nothing is bought and the reason is logged on the policy."
        )
        c = st.columns([2, 1, 1])
        most = c[0].number_input(
            "At most (BTI) each time",
            min_value=0.01,
            max_value=1_000_000.0,
            value=float(r.max_premium) if standing and r else round(max(premium, 0.01) * 1.5, 2),
            key=f"rn_max_{pid}",
        )
        times = c[1].number_input(
            "Times",
            min_value=1,
            max_value=MAX_TIMES,
            value=int(r.times_left) if standing and r else 1,
            key=f"rn_times_{pid}",
        )
        if c[2].button("Update" if standing else "Agree", key=f"rn_go_{pid}", type="primary"):
            try:
                svc.renewals.consent(
                    user_id=trader, policy_id=pid, max_premium=f"{most:.2f}", times=times
                )
            except BTIError as exc:
                st.error(str(exc))
            else:
                resources.flash(f"Policy #{pid} renews automatically: {times}×, ≤ {most:,.2f} BTI.")
        if standing and st.button("Stop automatic renewal", key=f"rn_stop_{pid}"):
            try:
                svc.renewals.withdraw(user_id=trader, policy_id=pid)
            except BTIError as exc:
                st.error(str(exc))
            else:
                resources.flash(f"Policy #{pid}: automatic renewal stopped.")
