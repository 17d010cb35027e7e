"""Alerts: the real-time pipeline's alerts as a live feed (refreshed every few seconds), with
acknowledgement; webhook subscriptions; and, for underwriters, a crash replayed through the
stream for demos. A trader sees the alerts on their policies; an underwriter every alert, the
global ones (volatility spikes) included."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from bti_core.market.schema import Kind
from bti_core.stream.demo import SPEEDS, replay_crash
from bti_core.stream.store import LABELS, AlertError, acknowledge, alerts_for
from bti_core.stream.webhooks import subscribe, subscriptions_of, unsubscribe
from dashboard import resources

KINDS = LABELS
REFRESH = "3s"

st.title("Alerts")
user = resources.signed_in_user()
resources.show_flash()
st.caption(
    "Raised by the worker's streaming engine as mark prices arrive: a policy within 5 % and 2 % "
    "of its liquidation price, its liquidation (its claim opens at that tick), a risk index "
    "above 70; and for a market, an hourly move beyond 4 σ, a funding settlement of 0.1 % or "
    "more either way, an hourly close outside the forecast's 95 % band; and the pool's cover "
    "reaching 75 % of its capacity. "
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
        rows = [r for r in rows if r.alert.kind in kinds]
    if not rows:
        st.info("No alerts yet." if not kinds and not open_only else "No alerts match.")
        return
    frame = pd.DataFrame(
        [
            {
                "alert": r.alert.id,
                "at": r.alert.at,
                "kind": KINDS.get(r.alert.kind, r.alert.kind),
                "symbol": r.alert.symbol,
                "policy": r.alert.policy_id,
                "message": r.alert.message,
                "seen": r.seen,  # by this reader: another's mark leaves it unseen here
            }
            for r in rows
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
        placeholder="–",
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


st.subheader("Webhooks")
st.caption(
    "Alerts POSTed as JSON to your URL as they are raised (header X-BTI-Alert-Key: dedupe on "
    "it; a failing receiver is retried with backoff, then given up)."
)
subs = subscriptions_of(resources.engine(), user)
if subs:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "#": x.id,
                    "url": x.webhook_url,
                    "alerts": "every alert" if x.scope == "all" else "my policies",
                    "kinds": ", ".join(KINDS.get(k, k) for k in x.kinds) or "any",
                    "symbols": ", ".join(x.symbols) or "any",
                }
                for x in subs
            ]
        ),
        hide_index=True,
        placeholder="–",
    )
with st.form("webhook_new", clear_on_submit=False):
    url = st.text_input("Webhook URL", placeholder="https://example.com/bti-alerts")
    f = st.columns(2)
    sub_kinds = f[0].multiselect("Kinds (none: any)", list(KINDS), format_func=KINDS.get)
    sub_syms = f[1].text_input("Symbols (comma-separated; empty: any)", placeholder="BTCUSDT")
    every = (
        st.toggle("Every alert (not only on my policies)", key="webhook_all")
        if user.is_underwriter
        else False
    )
    if st.form_submit_button("Subscribe"):
        try:
            made = subscribe(
                resources.engine(),
                user,
                webhook_url=url,
                kinds=sub_kinds,
                symbols=sub_syms.split(","),
                scope="all" if every else "mine",
                allowed=resources.services().webhook_networks,
            )
        except BTIError as exc:
            st.error(str(exc))
        else:
            resources.flash(f"Subscription #{made.id} saved: new alerts go to {made.webhook_url}")
if subs:
    r = st.columns([2, 1])
    gone = r[0].selectbox("Remove", [x.id for x in subs], format_func=lambda i: f"#{i}")
    if r[1].button("Remove subscription", key="webhook_remove"):
        try:
            unsubscribe(resources.engine(), user, int(gone))
        except BTIError as exc:
            st.error(str(exc))
        else:
            resources.flash(f"Subscription #{gone} removed.")

if user.is_underwriter and not resources.demo_chain():
    st.subheader("Replay a crash")
    st.info(
        "Crash replays are a demo of the local development chain: on this chain they would "
        "write a market that pays real claims, so they are not offered."
    )
elif user.is_underwriter:
    st.subheader("Replay a crash")
    st.caption(
        "For demos: a fall written as one-minute mark bars ending now, replayed tick by tick "
        "through the streaming engine — alerts raised, claims opened, audited, decided and "
        "paid at the ticks that cross."
    )
    symbols = resources.warehouse().symbols(Kind.MARK)
    with st.form("demo_replay"):
        d = st.columns(4)
        symbols = symbols or ["BTCUSDT"]
        first = symbols.index("BTCUSDT") if "BTCUSDT" in symbols else 0
        sym = d[0].selectbox("Symbol", symbols, index=first)
        drop = d[1].number_input("Fall (%)", min_value=1, max_value=90, value=30, step=1)
        minutes = d[2].number_input("Over (minutes)", min_value=1, max_value=600, value=30)
        speed = d[3].selectbox("Speed", SPEEDS, index=3, format_func=lambda x: f"×{x:,}")
        go = st.form_submit_button("Replay", type="primary")
    if go:
        bar = st.progress(0.0, text="Replaying…")

        def show(done: int, total: int, r: object) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=f"{done:,} of {total:,} ticks")

        try:
            res = replay_crash(
                resources.services(),
                str(sym),
                drop=drop / 100,
                minutes=int(minutes),
                speed=int(speed),
                progress=show,
            )
        except BTIError as exc:
            bar.empty()
            st.error(str(exc))
        else:
            bar.progress(1.0, text="Done")
            move = f"{res.move:+.1%}".replace("-", "−")
            st.success(
                f"{res.symbol} {move} over {res.start:%H:%M}–{res.end:%H:%M} UTC: {res.ticks:,} "
                f"ticks, {res.alerts:,} new alerts, {len(res.claims)} "
                + ("claim" if len(res.claims) == 1 else "claims")
                + " opened"
            )
