"""Chain Explorer: the pool's books, latest blocks, and any block, transaction, address or
policy by search (links from the other pages land here with ``?q=``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from bti_core.chain.explorer import readable_args
from bti_core.errors import ChainError
from dashboard import resources, views
from dashboard.text import compact

st.title("Chain explorer")
ex = resources.explorer()
link = resources.explorer_link
EXPLORER = "/chain_explorer?q="
# a link column that shows the hash's first characters: ``0x3492f9fb13…``
HASH_LINK = {"display_text": r"q=(0x[0-9a-fA-F]{10})"}


def _table(frame: pd.DataFrame, **kw: Any) -> None:
    """A table across the page, without the frame's index."""
    st.dataframe(frame, hide_index=True, width="stretch", **kw, placeholder="–")


def short(h: str | None, n: int = 10) -> str:
    return "—" if not h else f"{h[:n]}…{h[-4:]}"


def copyable(value: str) -> None:
    """The full value in a code box, whose button copies it."""
    st.code(value, language=None)


def bti(x: object) -> str:
    v = float(str(x))
    return f"{v / 1e6:,.2f}M" if abs(v) >= 1e6 else f"{v:,.2f}"


def when(t: object) -> str:
    return "" if t is None else f"{pd.Timestamp(t):%Y-%m-%d %H:%M:%S} UTC"


# --- the pool -----------------------------------------------------------------------------------
pool = ex.pool()
m = st.columns(6)
# six figures side by side: compact amounts (1.02M), the unit in the label, the exact one in
# each help
m[0].metric(
    "Reserves (BTI)",
    compact(pool.reserves),
    help=f"{bti(pool.reserves)}: deposits + premiums − claims − withdrawals",
)
m[1].metric(
    "Cover locked (BTI)",
    compact(pool.locked),
    help=f"{bti(pool.locked)}: backs active policies; not withdrawable",
)
m[2].metric("Utilisation", f"{pool.utilisation:.2%}", help="Cover locked / reserves")
m[3].metric("Premiums in (BTI)", compact(pool.premiums_in), help=bti(pool.premiums_in))
m[4].metric("Claims paid (BTI)", compact(pool.claims_paid), help=bti(pool.claims_paid))
m[5].metric("Policies", f"{pool.policies:,}")
if pool.paused:
    st.warning("The pool is paused: purchases, payouts and capital movements wait.")
d = ex.c.deployment
st.caption(
    f"Chain {d.chain_id} · pool {link(d.pool, short(d.pool))} · token "
    f"{link(d.token, short(d.token))} · policy NFT {link(d.policy, short(d.policy))}"
)
history = ex.pool_history()
business = history[history["kind"].isin(["premium", "claim"])]
if not business.empty:
    flows = business.pivot_table(index="time", columns="kind", values="bti", aggfunc="sum")
    flows = flows.reindex(columns=["premium", "claim"]).fillna(0).astype(float).cumsum()
    flows = flows.rename(columns={"premium": "premiums in", "claim": "claims paid"})
    fig = px.line(
        flows.reset_index().melt(id_vars="time", var_name="flow", value_name="BTI"),
        x="time",
        y="BTI",
        color="flow",
        title="Premiums in and claims paid, cumulative",
        line_shape="hv",
        markers=True,
    )
    fig.update_layout(
        height=260,
        margin={"t": 40, "b": 10},
        xaxis={"title": "time (UTC)"},
        yaxis={"title": "BTI", "tickformat": ",.0f", "rangemode": "tozero"},
        legend={"title": ""},
    )
    st.plotly_chart(fig, width="stretch")


# --- search -------------------------------------------------------------------------------------
def events_table(events: list, times: dict) -> None:
    _table(
        pd.DataFrame(
            [
                {
                    "time": times.get(e.block),
                    "block": e.block,
                    "event": f"{e.contract}.{e.name}",
                    "details": readable_args(e, ex.label),
                    "tx": EXPLORER + e.tx_hash,
                }
                for e in events
            ],
            columns=["time", "block", "event", "details", "tx"],
        ),
        column_config={
            "time": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "block": st.column_config.NumberColumn("Block", format="%d"),
            "details": st.column_config.TextColumn("Details", width="large"),
            "tx": st.column_config.LinkColumn("Transaction", **HASH_LINK),
        },
    )


def show_tx(h: str) -> None:
    tx = ex.transaction(h)
    st.subheader(f"Transaction {short(tx.hash, 18)}")
    copyable(tx.hash)
    icon = {
        "success": ":green[:material/check_circle:]",
        "reverted": ":red[:material/cancel:]",
        "pending": ":orange[:material/schedule:]",
    }[tx.status]
    if tx.gas_used is not None:
        st.markdown(
            f"{icon} **{tx.status}** in block {link(tx.block, f'{tx.block:,}')} · "
            f"{when(tx.time)} · gas used {tx.gas_used:,}"
        )
    else:
        st.markdown(f"{icon} **{tx.status}**")
    sender = ex.label(tx.sender)
    st.markdown(
        f"From {link(tx.sender, short(tx.sender))} {f'({sender})' if sender else ''} → "
        f"{link(tx.to, short(tx.to)) if tx.to else 'contract creation'} "
        f"{f'({tx.contract})' if tx.contract else ''}"
    )
    if tx.function:
        st.markdown(f"Call: `{tx.function}`")
        with st.expander("Arguments"):
            st.json(tx.arguments)
    if tx.events:
        st.markdown("**Events**")
        _table(
            pd.DataFrame(
                [
                    {
                        "#": e.log_index,
                        "contract": e.contract,
                        "event": e.name,
                        "details": readable_args(e, ex.label),
                    }
                    for e in tx.events
                ]
            ),
            column_config={
                "#": st.column_config.NumberColumn("#", width="small"),
                "contract": st.column_config.TextColumn("Contract", width="small"),
                "event": st.column_config.TextColumn("Event", width="small"),
                "details": st.column_config.TextColumn("Details", width="large"),
            },
        )
    for raw in tx.raw_logs:
        with st.expander(f"Unknown log from {raw.get('address')}"):
            st.json({k: str(v) for k, v in raw.items()})


def show_address(a: str) -> None:
    v = ex.address(a)
    st.subheader(f"Address {v.address}" + (f" · {v.label}" if v.label else ""))
    copyable(v.address)
    c = st.columns(4)
    c[0].metric("BTI", f"{v.bti:,.2f}")
    c[1].metric("Gas coin", f"{v.eth:,.4f}")
    c[2].metric("Pool shares", f"{v.pool_shares:,.2f}")
    c[3].metric("Transactions sent", f"{v.nonce:,}")
    transfers = ex.transfers(v)
    tabs = st.tabs(
        [
            f"Token transfers ({len(transfers)})",
            f"Policy tokens ({len(v.policies)})",
            f"All events ({len(v.events[:200])})",
        ]
    )
    with tabs[0]:
        if transfers.empty:
            st.caption("No BTI transfers to or from this address.")
        else:
            _table(
                transfers.assign(tx=EXPLORER + transfers["tx"]),
                column_config={
                    "time": st.column_config.DatetimeColumn(
                        "Time (UTC)", format="YYYY-MM-DD HH:mm:ss"
                    ),
                    "block": st.column_config.NumberColumn("Block", format="%d"),
                    "direction": "In / out",
                    "counterparty": "Counterparty",
                    "bti": st.column_config.NumberColumn("Amount (BTI)", format="accounting"),
                    "tx": st.column_config.LinkColumn("Transaction", **HASH_LINK),
                },
            )
    with tabs[1]:
        if not v.policies:
            st.caption("This address holds no policy token.")
        for p in v.policies:
            pol = ex.c.policy(p)
            st.markdown(
                f"- {link(f'policy {p}', f'Policy #{p}')} · {pol.status.name.lower()} · covers "
                f"{pol.coverage:,.2f} BTI until "
                f"{pd.Timestamp(pol.expiry, unit='s'):%Y-%m-%d %H:%M} UTC"
            )
    with tabs[2]:
        shown = v.events[:200]
        events_table(shown, ex.block_times(e.block for e in shown))


def show_policy(pid: int) -> None:
    v = ex.policy(pid)
    p = v.policy
    st.subheader(f"Policy #{p.policy_id} · {p.status.name.lower()}")
    c = st.columns(4)
    c[0].metric("Coverage", f"{p.coverage:,.2f} BTI")
    c[1].metric("Premium", f"{p.premium:,.2f} BTI")
    c[2].metric("Paid out", f"{p.paid:,.2f} BTI")
    ends = pd.Timestamp(p.expiry, unit="s")
    # day and time fit a quarter of the page; the year is one hover away
    c[3].metric("Expiry (UTC)", f"{ends:%d %b %H:%M}", help=f"{ends:%Y-%m-%d %H:%M:%S} UTC")
    st.markdown(
        f"Holder (token owner): {link(p.owner, short(p.owner))} · bought by "
        f"{link(p.buyer, short(p.buyer))}"
    )
    st.markdown("Terms hash")
    copyable(str(p.terms_hash))
    events_table(v.events, ex.block_times(e.block for e in v.events))


def show_block(n: int) -> None:
    header, txs = ex.block(n)
    st.subheader(f"Block {header['block']:,}")
    st.caption(
        f"{when(header['time'])} · {header['transactions']:,} transactions · "
        f"gas used {header['gas_used']:,} of {header['gas_limit']:,}"
    )
    copyable(header["hash"])
    if not txs.empty:
        _table(
            txs.assign(
                hash=EXPLORER + txs["hash"],
                to=[
                    f"{short(t)} ({lbl})" if lbl else short(t)
                    for t, lbl in zip(txs["to"], txs["to_label"], strict=True)
                ],
                **{"from": [short(f) for f in txs["from"]]},
            ).drop(columns=["to_label"]),
            column_config={
                "hash": st.column_config.LinkColumn("Transaction", **HASH_LINK),
                "from": "From",
                "to": "To",
                "function": "Call",
            },
        )


@st.fragment
def search() -> None:
    """The search box and its result. A search reruns only this: the pool's books above and
    the latest blocks below stay as drawn. The URL follows the search (a link to the result)."""
    query = st.text_input(
        "Search",
        value=st.query_params.get("q", ""),
        placeholder="block number, transaction hash, address, or policy 3",
        key="explorer_q",
    ).strip()
    if query != st.query_params.get("q", ""):
        st.query_params.from_dict({"q": query} if query else {})
    if not query:
        return
    try:
        kind, value = ex.search(query)
        if kind == "tx":
            show_tx(str(value))
        elif kind == "address":
            show_address(str(value))
        elif kind == "policy":
            show_policy(int(value))
        else:
            show_block(int(value))
    except (ValueError, ChainError) as exc:
        views.refusal("Nothing found for this search.", str(exc))


search()

# --- latest blocks ------------------------------------------------------------------------------
st.subheader("Latest blocks")
blocks = ex.latest_blocks(50)
blocks = blocks.assign(block_link=EXPLORER + blocks["block"].astype(str))
_table(
    blocks,
    column_order=["block_link", "time", "transactions", "gas_used", "hash"],
    column_config={
        "block_link": st.column_config.LinkColumn("Block", display_text=r"q=(\d+)"),
        "time": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "transactions": st.column_config.NumberColumn("Transactions", format="%d"),
        "gas_used": st.column_config.NumberColumn("Gas used", format="localized"),
        "hash": st.column_config.TextColumn("Hash"),
    },
)
