"""Buy Insurance: describe the order and the cover, read the quote, buy the policy."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from bti_core.risk.liquidation import brackets_for
from dashboard import resources
from dashboard.charts import risk_factors_figure

DURATIONS = {"6 hours": 6, "1 day": 24, "3 days": 72, "7 days": 168, "14 days": 336, "30 days": 720}

st.title("Buy insurance")
trader = resources.current_trader()
svc = resources.insurance()
resources.wallet_panel(trader)
symbols = svc.allowed_symbols()
if not symbols:
    st.info("No market data yet: run `make run` or `bti demo` first.")
    st.stop()

if "bought" in st.session_state:
    pid, end_at, tx = st.session_state.pop("bought")
    st.success(
        f"Policy #{pid} is active until {end_at:%Y-%m-%d %H:%M} UTC. Premium paid in "
        f"transaction {resources.explorer_link(tx, tx[:12] + '…')}."
    )

left, right = st.columns([1, 1.4], gap="large")
with left:
    st.subheader("Your order")
    symbol = st.selectbox(
        "Symbol",
        symbols,
        index=symbols.index("BTCUSDT") if "BTCUSDT" in symbols else 0,
        key="buy_symbol",
    )
    try:
        with st.spinner(f"Fitting {symbol}'s volatility model and simulating paths…"):
            spot = resources.risk_engine().symbol_risk(symbol).spot
    except BTIError as exc:
        st.error(str(exc))
        st.stop()
    c1, c2 = st.columns(2)
    side = c1.radio("Side", ["long", "short"], horizontal=True, key="buy_side")
    order_type = c2.radio("Order type", ["market", "limit"], horizontal=True, key="buy_type")
    c1, c2 = st.columns(2)
    margin_mode = c1.radio("Margin mode", ["isolated", "cross"], horizontal=True, key="buy_mode")
    qty = c2.number_input(
        "Quantity (base asset)", min_value=0.0, value=0.1, step=0.01, format="%.4f", key="buy_qty"
    )
    if order_type == "market":
        entry = st.number_input(
            "Entry price (mark, USDT)",
            value=float(round(spot, 2)),
            disabled=True,
            key="buy_entry_m",
        )
    else:
        entry = st.number_input(
            "Limit price (USDT)", min_value=0.0, value=float(round(spot, 2)), key="buy_entry_l"
        )
    notional = qty * entry
    bracket_lev = int(brackets_for(symbol).max_leverage_for(notional)) if notional > 0 else 125
    platform_lev = int(resources.services().limits.max_leverage)
    max_lev = min(bracket_lev, platform_lev)
    if max_lev < 2:  # a 1× order cannot be liquidated, and a slider needs two ends
        st.error(
            f"A notional of {qty * entry:,.2f} USDT is in {symbol}'s largest bracket, which "
            f"allows {bracket_lev}× at most: such an order cannot be liquidated, so there is "
            "nothing to insure. Lower the quantity."
        )
        st.stop()
    leverage = st.slider(
        "Leverage",
        2,
        max_lev,
        min(20, max_lev),
        key="buy_lev",
        help=f"{symbol} allows up to {bracket_lev}× at this notional; BTI insures up to "
        f"{platform_lev}×",
    )
    wallet = None
    if margin_mode == "cross":
        wallet = st.number_input(
            "Wallet balance (USDT)",
            min_value=0.0,
            value=round(qty * entry / leverage * 2, 2),
            key="buy_wallet",
        )
    margin = qty * entry / leverage if leverage else 0.0
    st.caption(f"Notional {qty * entry:,.2f} USDT · margin {margin:,.2f} USDT")

    st.subheader("Your cover")
    coverage = st.number_input(
        "Coverage (USDT)",
        min_value=0.0,
        value=round(margin, 2),
        key="buy_cov",
        help="At most the order's margin",
    )
    duration = st.select_slider("Duration", list(DURATIONS), value="3 days", key="buy_dur")
    c1, c2 = st.columns(2)
    share = c1.slider(
        "Share of the lost margin paid", 10, 100, 100, step=5, format="%d%%", key="buy_share"
    )
    deductible = c2.number_input("Deductible (USDT)", min_value=0.0, value=0.0, key="buy_ded")
    ask = st.button("Get quote", type="primary", key="buy_quote")

if ask:
    from bti_core.orders import Cover, Order

    try:
        order = Order(
            symbol,
            side,
            Decimal(str(qty)),
            Decimal(str(entry)),
            Decimal(leverage),
            margin_mode=margin_mode,
            order_type=order_type,
            wallet_balance=Decimal(str(wallet)) if wallet is not None else None,
        )
        cover = Cover(
            coverage=Decimal(str(coverage)),
            duration_hours=DURATIONS[duration],
            share=Decimal(share) / 100,
            deductible=Decimal(str(deductible)),
        )
        st.session_state["quote"] = svc.quote(user_id=trader, order=order, cover=cover)
    except (BTIError, ValueError) as exc:
        st.session_state.pop("quote", None)
        left.error(str(exc))

quote = st.session_state.get("quote")
with right:
    if quote is None or quote.record.user_id != trader:
        st.info("Describe the order and the cover, then ask for a quote.")
        st.stop()
    r = quote.record
    st.subheader(f"Quote for a {quote.order.side} {quote.order.leverage}× {r.symbol} order")
    spot_q = float(r.spot)
    lp = float(r.liquidation_price)
    p = quote.premium
    m = st.columns(3)
    m[0].metric(
        "Liquidation price",
        f"{lp:,.2f}" if lp < 1e4 else f"{lp:,.0f}",
        f"{(lp / spot_q - 1):+.2%} from mark",
        delta_color="off",
    )
    m[1].metric(
        "P(liquidation)",
        f"{r.probability:.2%}",
        f"± {r.probability_se:.2%} (MC)",
        delta_color="off",
        delta_arrow="off",  # an error bar, not a change
        help=(
            "Monte Carlo on the mark price under GJR-GARCH fitted on 180 days, with bootstrapped "
            "residuals (the first day's from days that began as calm or as volatile as now) and, "
            "after the first day, the half-year trend shrunk by how sure the data are of it"
        ),
    )
    m[2].metric(
        "Baseline (GBM)",
        f"{r.baseline_probability:.2%}",
        help="Closed-form first passage with the 30-day realised volatility",
    )
    st.caption(quote.model)
    m = st.columns(3)
    m[0].metric("Risk index", f"{r.risk_index:.0f} / 100")
    m[1].metric("Premium (USDT)", f"{p.total:,.2f}")
    m[2].metric("Pays if liquidated (USDT)", f"{p.payout:,.2f}")
    st.caption(f"Pool utilisation after this policy: {p.utilisation:.1%}")
    st.plotly_chart(risk_factors_figure(quote.risk.frame(), quote.risk.value), width="stretch")
    with st.expander("How the premium is made"):
        st.table(
            pd.DataFrame(
                {
                    "part": [
                        "probability charged (upper 1σ bound)",
                        "expected loss = payout × p⁺",
                        "utilisation and risk loading",
                        "policy fee",
                        "premium",
                    ],
                    "value": [
                        f"{p.probability_charged:.4%}",
                        f"{p.expected_loss:,.2f} USDT",
                        f"{p.loading:,.2f} USDT",
                        f"{p.fee:,.2f} USDT",
                        f"{p.total:,.2f} USDT",
                    ],
                }
            )
        )
    for c in quote.checks:
        if not c.passed:
            st.error(c.reason, icon="⛔")
    st.caption(f"Quote {r.id[:8]} · valid until {r.expires_at:%H:%M:%S} UTC")
    if st.button(
        f"Buy cover for {p.total:,.2f} BTI",
        type="primary",
        disabled=not quote.insurable,
        key="buy_go",
        help="Pays the premium in BTI (1 BTI = 1 USDT of cover) through the pool contract",
    ):
        try:
            with st.spinner("Paying the premium on-chain…"):
                policy = svc.buy(user_id=trader, quote_id=r.id)
            st.session_state.pop("quote", None)
            st.session_state["bought"] = (policy.id, policy.end_at, policy.tx_hash)
            st.rerun()
        except BTIError as exc:
            st.error(str(exc))
