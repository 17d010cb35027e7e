"""The trader's exchange accounts on My Policies: the linked ones and their state, a form to
link one with a read-only key (checked with the exchange on submit), and removal. The page never
reads the exchange otherwise: the worker follows the accounts on its clock."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bti_core.accounts.exchanges import VENUES
from bti_core.errors import BTIError
from dashboard import resources


def exchange_accounts_panel(username: str) -> None:
    svc = resources.services()
    accounts = svc.accounts.accounts(username)
    positions = svc.accounts.positions(username)
    title = f"Exchange accounts ({len(accounts)} linked)" if accounts else "Exchange accounts"
    with st.expander(title, expanded=not accounts):
        if accounts:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "account": a.id,
                            "exchange": a.venue,
                            "label": a.label,
                            "key": f"…{a.key_hint}",
                            "status": a.status,
                            "open positions": sum(p.account_id == a.id for p in positions),
                            "read (UTC)": a.synced_at,
                            "last error": a.last_error or "",
                        }
                        for a in accounts
                    ]
                ),
                hide_index=True,
                width="stretch",
                column_config={
                    "account": st.column_config.NumberColumn("Account", format="#%d"),
                    "read (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                },
                placeholder="–",
            )
        demo = resources.demo_chain() and svc.settings.demo_exchange_url is not None
        venues = [k for k, v in VENUES.items() if demo or not v.demo]
        with st.form("link_account", clear_on_submit=True):
            st.markdown(
                "**Link an account** with a **read-only** API key: BTI reads your positions "
                "and the exchange's liquidation record, and refuses a key that can trade, "
                "withdraw or transfer. The key is stored encrypted and never shown again."
            )
            c1, c2 = st.columns(2)
            exchange = c1.selectbox(
                "Exchange", venues, format_func=lambda k: VENUES[k].label, key="link_exchange"
            )
            label = c2.text_input("Label (optional)", max_chars=40, key="link_label")
            api_key = st.text_input("API key", type="password", key="link_key")
            secret = st.text_input("API secret", type="password", key="link_secret")
            if st.form_submit_button("Link the account"):
                try:
                    with st.spinner("Asking the exchange what the key may do…"):
                        linked = svc.accounts.link(
                            username, str(exchange), api_key, secret, label=label
                        )
                except BTIError as exc:
                    st.error(str(exc))
                else:
                    for k in ("link_key", "link_secret"):  # not kept in the session either
                        st.session_state.pop(k, None)
                    resources.flash(
                        f"Account #{linked.id} ({linked.venue}) is linked; its positions are on "
                        "the Buy page."
                    )
        if accounts:
            c1, c2 = st.columns([3, 1])
            which = c1.selectbox(
                "Remove an account",
                [a.id for a in accounts],
                format_func=lambda i: next(
                    f"#{a.id} {a.venue} · {a.label}" for a in accounts if a.id == i
                ),
                key="remove_account",
            )
            if c2.button("Remove", key="remove_account_go"):
                try:
                    svc.accounts.remove(username, int(which or 0))
                except BTIError as exc:
                    st.error(str(exc))
                else:
                    resources.flash(f"Account #{which} is removed; its key and secret are wiped.")
