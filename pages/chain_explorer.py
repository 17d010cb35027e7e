"""Chain Explorer: the pool's books, latest blocks, and any block, transaction, address or
policy by search (links from the other pages land here with ``?q=``)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from bti_core.errors import ChainError
from dashboard import resources

st.title("Chain explorer")
ex = resources.explorer()
link = resources.explorer_link


def short(h: str | None, n: int = 10) -> str:
    return "—" if not h else f"{h[:n]}…{h[-4:]}"


# --- the pool -----------------------------------------------------------------------------------
def bti(x: object) -> str:
    v = float(str(x))
    return f"{v / 1e6:,.2f}M" if abs(v) >= 1e6 else f"{v:,.2f}"


pool = ex.pool()
m = st.columns(6)
m[0].metric("Reserves (BTI)", bti(pool.reserves), help="Deposits + premiums − claims − withdrawals")
m[1].metric("Cover locked (BTI)", bti(pool.locked), help="Backs active policies; not withdrawable")
m[2].metric("Utilisation", f"{pool.utilisation:.2%}", help="Cover locked / reserves")
m[3].metric("Premiums in (BTI)", bti(pool.premiums_in))
m[4].metric("Claims paid (BTI)", bti(pool.claims_paid))
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
    flows = business.pivot_table(index="block", columns="kind", values="bti", aggfunc="sum")
    flows = flows.reindex(columns=["premium", "claim"]).fillna(0).astype(float).cumsum()
    flows = flows.rename(columns={"premium": "premiums in", "claim": "claims paid"})
    fig = px.line(
        flows.reset_index().melt(id_vars="block", var_name="flow", value_name="BTI"),
        x="block",
        y="BTI",
        color="flow",
        title="Premiums in and claims paid, cumulative",
        line_shape="hv",
        markers=True,
    )
    fig.update_layout(height=260, margin={"t": 40, "b": 10})
    st.plotly_chart(fig, width="stretch")

# --- search -------------------------------------------------------------------------------------
initial = st.query_params.get("q", "")
query = st.text_input(
    "Search",
    value=initial,
    placeholder="block number, transaction hash, address, or policy 3",
    key="explorer_q",
).strip()


def show_tx(h: str) -> None:
    tx = ex.transaction(h)
    st.subheader(f"Transaction {short(tx.hash, 18)}")
    icon = {
        "success": ":green[:material/check_circle:]",
        "reverted": ":red[:material/cancel:]",
        "pending": ":orange[:material/schedule:]",
    }[tx.status]
    st.markdown(
        f"{icon} **{tx.status}** in block {link(tx.block)} "
        f"{'· ' + f'{tx.time:%Y-%m-%d %H:%M:%S} UTC' if tx.time else ''} · gas {tx.gas_used:,}"
        if tx.gas_used is not None
        else f"{icon} **{tx.status}**"
    )
    st.markdown(
        f"From {link(tx.sender)} {('(' + ex.label(tx.sender) + ')') if ex.label(tx.sender) else ''}"
        f" → {link(tx.to) if tx.to else 'contract creation'} "
        f"{('(' + tx.contract + ')') if tx.contract else ''}"
    )
    if tx.function:
        st.markdown(f"Call: `{tx.function}`")
        with st.expander("Arguments"):
            st.json(tx.arguments)
    if tx.events:
        st.markdown("**Events**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "#": e.log_index,
                        "contract": e.contract,
                        "event": e.name,
                        "arguments": ", ".join(f"{k}={v}" for k, v in e.args.items()),
                    }
                    for e in tx.events
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    for raw in tx.raw_logs:
        with st.expander(f"Unknown log from {raw.get('address')}"):
            st.json({k: str(v) for k, v in raw.items()})


def show_address(a: str) -> None:
    v = ex.address(a)
    st.subheader(f"Address {v.address}" + (f" · {v.label}" if v.label else ""))
    c = st.columns(4)
    c[0].metric("BTI", f"{v.bti:,.2f}")
    c[1].metric("Gas coin", f"{v.eth:,.4f}")
    c[2].metric("Pool shares", f"{v.pool_shares:,.2f}")
    c[3].metric("Transactions sent", v.nonce)
    if v.policies:
        st.markdown("Policies held: " + ", ".join(link(f"policy {p}", f"#{p}") for p in v.policies))
    if v.events:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "block": e.block,
                        "event": f"{e.contract}.{e.name}",
                        "tx": e.tx_hash,
                        "arguments": ", ".join(f"{k}={val}" for k, val in e.args.items()),
                    }
                    for e in v.events[:200]
                ]
            ),
            hide_index=True,
            width="stretch",
        )


def show_policy(pid: int) -> None:
    v = ex.policy(pid)
    p = v.policy
    st.subheader(f"Policy #{p.policy_id} · {p.status.name.lower()}")
    c = st.columns(4)
    c[0].metric("Coverage", f"{p.coverage:,.2f} BTI")
    c[1].metric("Premium", f"{p.premium:,.2f} BTI")
    c[2].metric("Paid out", f"{p.paid:,.2f} BTI")
    c[3].metric("Expiry (UTC)", pd.Timestamp(p.expiry, unit="s").strftime("%Y-%m-%d %H:%M"))
    st.markdown(f"Holder (token owner): {link(p.owner)} · bought by {link(p.buyer)}")
    st.markdown(f"Terms hash `{p.terms_hash}`")
    for e in v.events:
        st.markdown(f"- block {link(e.block)} · **{e.name}** · {link(e.tx_hash, short(e.tx_hash))}")


def show_block(n: int) -> None:
    header, txs = ex.block(n)
    st.subheader(f"Block {header['block']}")
    st.caption(
        f"{header['time']:%Y-%m-%d %H:%M:%S} UTC · {header['transactions']} transactions · "
        f"gas {header['gas_used']:,} · hash {short(header['hash'], 18)}"
    )
    if not txs.empty:
        txs = txs.assign(link=[f"/chain_explorer?q={h}" for h in txs["hash"]])
        st.dataframe(
            txs,
            hide_index=True,
            width="stretch",
            column_config={"link": st.column_config.LinkColumn("Open", display_text="view")},
        )


if query:
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
        st.error(str(exc))

# --- latest blocks ------------------------------------------------------------------------------
st.subheader("Latest blocks")
blocks = ex.latest_blocks(50)
blocks = blocks.assign(link=[f"/chain_explorer?q={b}" for b in blocks["block"]])
st.dataframe(
    blocks,
    hide_index=True,
    width="stretch",
    column_config={
        "time": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "link": st.column_config.LinkColumn("Open", display_text="view"),
    },
)
