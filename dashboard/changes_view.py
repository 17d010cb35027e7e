"""My policies: change a cover — extend, raise, cancel — priced first, made on confirmation;
and renew one (the Buy page with the same order and cover)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from bti_core.policies import InsuranceService
from bti_core.policies.changes import CHANGE_TTL, KINDS
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
