"""Buy Insurance: describe the order and the cover, read the quote, buy the policy.

A quote is drawn only beside the inputs it was made from: any change to the form clears it.
The form and the quote on screen are kept in the page's URL (`dashboard.buy_link`): a reload
shows them again while the quote can still be bought.
The form offers only what underwriting accepts (leverage up to the symbol's bracket and BTI's
cap, coverage up to the margin) and says why where it stops.
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from bti_core.db.models import ExchangePosition
from bti_core.db.statuses import Peril
from bti_core.errors import BTIError
from bti_core.orders import MAX_AMOUNT, Cover, Order, default_quantity
from bti_core.policies import Permit
from bti_core.policies.quoting import QuoteView
from bti_core.risk.adl import CAP_SHARE, FLOOR, P_FUND_EMPTY
from bti_core.risk.liquidation import brackets_for
from dashboard import resources, text
from dashboard.buy_link import MARGIN_MODES, ORDER_TYPES, SIDES, BuyLink
from dashboard.charts import premium_curve_figure, risk_factors_figure

DURATIONS = {"6 hours": 6, "1 day": 24, "3 days": 72, "7 days": 168, "14 days": 336, "30 days": 720}
WHAT_IF_LEVERAGES = (2, 3, 5, 10, 15, 20, 25, 35, 50, 75, 100, 125)

st.title("Buy insurance")
trader = resources.current_trader()
resources.show_flash()
svc = resources.insurance()
resources.wallet_panel(trader)
symbols = svc.allowed_symbols()
if not symbols:
    st.info("No market data yet: run `make run` or `bti demo` first.")
    st.stop()

if "_buy_link" not in st.session_state:  # this session's first run: the form follows its URL
    st.session_state["_buy_link"], st.session_state["_buy_link_problems"] = BuyLink.from_params(
        {k: st.query_params[k] for k in st.query_params},
        symbols=symbols,
        durations=list(DURATIONS.values()),
    )
link: BuyLink = st.session_state["_buy_link"]
if st.session_state["_buy_link_problems"]:
    st.warning(
        "Parts of this page's link were not understood and the form shows its defaults "
        "there: " + "; ".join(st.session_state["_buy_link_problems"]) + "."
    )

if "bought" in st.session_state:
    pid, end_at, tx = st.session_state.pop("bought")
    st.success(
        f"Policy #{pid} is active until {end_at:%Y-%m-%d %H:%M} UTC. Premium paid in "
        f"transaction {resources.explorer_link(tx, tx[:12] + '…')}."
    )


def _buy_from_own_wallet(trader: str, quote: QuoteView) -> None:
    """Off the local chain: the permit of the premium signed in the trader's browser wallet
    (`dashboard.browser_wallet`), then the purchase relayed by BTI."""
    from dashboard import browser_wallet

    account = st.session_state.get("_wallet_account")
    if account is None:
        st.info("Connect your wallet in the sidebar to buy this cover from your own address.")
        return
    if not quote.insurable:
        return
    r = quote.record
    try:
        request = svc.permit_request(user_id=trader, quote_id=r.id, wallet=account)
    except BTIError as exc:
        st.error(str(exc))
        return
    # uint256 values as decimal strings: a JavaScript number holds only 53 bits
    request["message"] = {
        k: str(v) if isinstance(v, int) else v for k, v in request["message"].items()
    }
    chain_id = resources.services().chain_id
    signed = browser_wallet.sign_and_buy(
        chain_id, account, r.id, request, f"{quote.premium.total:,.2f}"
    )
    if signed is None:
        return
    try:
        with st.spinner("Relaying your signed purchase on-chain…"):
            policy = svc.buy(
                user_id=trader,
                quote_id=r.id,
                wallet=account,
                permit=Permit(str(signed["signature"]), int(signed["deadline"])),
            )
    except BTIError as exc:
        st.error(str(exc))
        return
    st.session_state.pop("quote", None)
    st.session_state["bought"] = (policy.id, policy.end_at, policy.tx_hash)
    st.rerun()


def _position_label(p: ExchangePosition, venue: str) -> str:
    """A linked position as the picker shows it, with the exchange it is on (the demo exchange
    says so)."""
    return (
        f"#{p.id} · {p.symbol} {p.side} {p.size:f} at {p.entry_price:,f} · {p.leverage}× "
        f"{p.margin_mode} · {venue}"
    )


def _keep(key: str, value: float, lo: float, hi: float) -> None:
    """Put a widget's value in session state before the widget is drawn, within [lo, hi] (a
    widget keyed in session state is drawn without ``value=``: one source of truth)."""
    current = st.session_state.get(key, value)
    st.session_state[key] = min(max(current, lo), hi)


def _index(choices: tuple[str, ...] | list[str], chosen: str | None) -> int:
    """Where a link's choice is among a widget's (the first when it names none)."""
    return choices.index(chosen) if chosen in choices else 0


def _order_and_cover() -> tuple[Order | None, Cover]:
    """The form as an order (``None`` for a linked position: the exchange's) and a cover;
    `BTIError`/`ValueError` with the reason when a value cannot be insured. The order first:
    its reason (a zero quantity) explains the cover's (a zero margin)."""
    order = None
    if linked is None:
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
    return order, cover


def _matches(view: QuoteView) -> bool:
    """Whether a stored quote was made from the form as it stands (a link's quote is shown
    again only beside its own order and cover)."""
    try:
        order, cover = _order_and_cover()
    except (BTIError, ValueError):
        return False
    if view.cover != cover or view.peril is not peril:
        return False
    if linked is not None:
        return view.position is not None and view.position.position_id == linked.id
    return view.position is None and view.order == order


left, right = st.columns([1, 1.4], gap="large")
with left:
    positions = resources.linked_positions(trader)
    venue_of = {a.id: a.venue for a in resources.services().accounts.accounts(trader)}
    linked = None
    peril = Peril.LIQUIDATION
    if positions:
        what = st.radio(
            "Insure",
            ["a position on my exchange account", "an order I describe"],
            horizontal=True,
            index=1 if link.position is None and link.symbol is not None else 0,
            key="buy_what",
            help="A linked position is insured as the exchange holds it, and a claim on it is "
            "confirmed by the exchange's own liquidation record",
        )
        if what.startswith("a position"):
            linked = st.selectbox(
                "Linked position",
                positions,
                format_func=lambda p: _position_label(p, venue_of.get(p.account_id, "")),
                index=next((i for i, p in enumerate(positions) if p.id == link.position), 0),
                key="buy_position",
            )
    if linked is not None:
        st.subheader("Your position")
        symbol = linked.symbol
        try:
            with st.spinner(f"Fitting {symbol}'s volatility model and simulating paths…"):
                sr = resources.risk_engine().symbol_risk(symbol)
        except BTIError as exc:
            st.error(str(exc))
            st.stop()
        resources.replay_notice(symbol)
        side, order_type, margin_mode = linked.side, "market", linked.margin_mode
        qty, entry, leverage = float(linked.size), float(linked.entry_price), int(linked.leverage)
        wallet = None
        notional = qty * entry
        max_lev = min(
            int(brackets_for(symbol).max_leverage_for(notional)),
            int(resources.services().limits.max_leverage),
        )
        margin = round(notional / leverage, 2)
        exchange_lp = linked.liquidation_price
        st.markdown(
            f"**{side} {qty:g} {symbol}** at {entry:,.2f} · {leverage}× {margin_mode} · "
            f"margin {margin:,.2f} USDT · the exchange liquidates it at "
            f"**{'—' if exchange_lp is None else f'{exchange_lp:,.2f}'}**"
        )
        st.caption(
            f"As the exchange reported it at {linked.seen_at:%H:%M:%S} UTC (the worker reads "
            "linked accounts every minute)."
        )
        against = st.radio(
            "Against",
            ["liquidation", "auto-deleveraging (ADL)"],
            horizontal=True,
            index=1 if link.peril == "adl" else 0,
            key="buy_peril",
            help="ADL: when the other side goes bankrupt faster than the exchange's insurance "
            "fund can absorb, the exchange closes profitable positions against it. ADL cover "
            "pays its amount when the exchange's record shows this position deleveraged, at "
            f"most {CAP_SHARE:.0%} of its margin",
        )
        peril = Peril.ADL if against.startswith("auto") else Peril.LIQUIDATION
    else:
        st.subheader("Your order")
        symbol = st.selectbox(
            "Symbol",
            symbols,
            index=_index(symbols, link.symbol if link.symbol else "BTCUSDT"),
            key="buy_symbol",
        )
        try:
            with st.spinner(f"Fitting {symbol}'s volatility model and simulating paths…"):
                sr = resources.risk_engine().symbol_risk(symbol)
        except BTIError as exc:
            st.error(str(exc))
            st.stop()
        spot = round(sr.spot, 2)
        resources.replay_notice(symbol)
        c1, c2 = st.columns(2)
        side = c1.radio(
            "Side", SIDES, horizontal=True, index=_index(SIDES, link.side), key="buy_side"
        )
        order_type = c2.radio(
            "Order type",
            ORDER_TYPES,
            horizontal=True,
            index=_index(ORDER_TYPES, link.order_type),
            key="buy_type",
        )
        c1, c2 = st.columns(2)
        margin_mode = c1.radio(
            "Margin mode",
            MARGIN_MODES,
            horizontal=True,
            index=_index(MARGIN_MODES, link.margin_mode),
            key="buy_mode",
        )
        linked_symbol = link.symbol == symbol  # the link's sizes are for its own symbol
        # one size per symbol, about 5,000 USDT of it (0.1 BTC, 50 SOL): a size fit for one
        # symbol is too small to insure on another
        size = default_quantity(spot)
        qty = c2.number_input(
            "Quantity (base asset)",
            min_value=0.0,
            value=link.qty if linked_symbol and link.qty is not None else size,
            step=max(size / 10, 0.0001),
            format="%.4f",
            key=f"buy_qty_{symbol}",
        )
        if order_type == "market":
            # not a widget: a widget would keep the last symbol's (or the last bar's) price
            entry = spot
            st.markdown(f"Entry: **{entry:,.2f} USDT**, {symbol}'s mark price now (a market order)")
        else:
            # one limit price per symbol: switching symbol starts from that symbol's mark
            entry = st.number_input(
                "Limit price (USDT)",
                min_value=0.0,
                value=link.price if linked_symbol and link.price is not None else spot,
                key=f"buy_entry_l_{symbol}",
            )
        notional = qty * entry
        bracket_lev = int(brackets_for(symbol).max_leverage_for(notional)) if notional > 0 else 125
        platform_lev = int(resources.services().limits.max_leverage)
        max_lev = min(bracket_lev, platform_lev)
        if max_lev < 2:  # a 1× order cannot be liquidated, and a slider needs two ends
            st.error(
                f"A notional of {notional:,.2f} USDT is in {symbol}'s largest bracket, which "
                f"allows {bracket_lev}× at most: such an order cannot be liquidated, so there is "
                "nothing to insure. Lower the quantity."
            )
            st.stop()
        why_cap = (
            f"BTI insures up to {platform_lev}× ({symbol} allows {bracket_lev}× at this notional)"
            if platform_lev < bracket_lev
            else f"{symbol} allows up to {bracket_lev}× at this notional"
        )
        if max_lev == 2:  # a slider needs two different ends
            leverage = 2
            st.markdown(f"Leverage: **2×**, the only one to insure here: {why_cap}.")
        else:
            _keep("buy_lev", link.leverage or 20, 2, max_lev)
            leverage = st.slider("Leverage", 2, max_lev, key="buy_lev", help=why_cap)
            st.caption(f"Leverage 2–{max_lev}×: {why_cap}.")
        wallet = None
        if margin_mode == "cross":
            wallet = st.number_input(
                "Wallet balance (USDT)",
                min_value=0.0,
                value=link.wallet
                if linked_symbol and link.wallet is not None
                else round(notional / leverage * 2, 2),
                key="buy_wallet",
                help="Cross margin: the whole balance backs the order, so it is liquidated later",
            )
        margin = round(notional / leverage, 2)
        st.caption(f"Notional {notional:,.2f} USDT · margin {margin:,.2f} USDT")

    adl_cover = linked is not None and peril is Peril.ADL
    if adl_cover:  # ADL cover is capped at a share of the margin (`risk.adl.CAP_SHARE`)
        margin = round(margin * float(CAP_SHARE), 2)
    st.subheader("Your cover")
    # the coverage follows the margin while it is the margin (the default); a smaller amount
    # the trader typed stays, and shrinks with the margin when it no longer fits. One widget
    # per margin (its key names the margin), drawn with its default: a widget whose value is
    # set only through session state shows 0.00 in the browser on its first draw.
    before = st.session_state.get("_buy_cov_key")
    if before is None and link.coverage is not None:  # its first draw: the link's amount
        typed, follows = link.coverage, False
    else:
        typed = st.session_state.get(before) if before else None
        prev = st.session_state.get("_buy_margin")
        follows = typed is None or prev is None or abs(typed - prev) < 0.005
    cov_key = f"buy_cov_{margin:.2f}"
    most = min(margin, float(MAX_AMOUNT))  # a cover is at most 10⁹ USDT, whatever the margin
    coverage = st.number_input(
        "Coverage (USDT)",
        min_value=0.0,
        max_value=most,
        value=most if follows else min(typed, most),
        key=cov_key,
        help=f"At most {CAP_SHARE:.0%} of the position's margin; paid in full when the whole "
        "position is deleveraged, in proportion when part of it is"
        if adl_cover
        else "At most the order's margin: a liquidation loses the margin, and the cover pays "
        "a share of that loss",
    )
    st.session_state["_buy_cov_key"], st.session_state["_buy_margin"] = cov_key, margin
    hours = {h: label for label, h in DURATIONS.items()}
    duration = st.select_slider(
        "Duration", list(DURATIONS), value=hours.get(link.duration or 72, "3 days"), key="buy_dur"
    )
    if adl_cover:  # it pays its amount: no share, no deductible
        share, deductible = 100, 0.0
    else:
        c1, c2 = st.columns(2)
        share = c1.slider(
            "Share of the lost margin paid",
            10,
            100,
            link.share or 100,
            step=5,
            format="%d%%",
            key="buy_share",
        )
        deductible = c2.number_input(
            "Deductible (USDT)", min_value=0.0, value=link.deductible or 0.0, key="buy_ded"
        )
    ask = st.button("Get quote", type="primary", key="buy_quote")

# what the quote on screen was made from: any difference and it is not shown
inputs = (
    trader,
    None if linked is None else linked.id,
    adl_cover,
    symbol,
    side,
    order_type,
    margin_mode,
    qty,
    entry,
    leverage,
    wallet,
    coverage,
    duration,
    share,
    deductible,
)
if link.quote is not None and not st.session_state.get("_buy_link_quoted"):
    # a reload (or a link) with a quote: shown again while it can be bought, beside its form
    st.session_state["_buy_link_quoted"] = True
    try:
        restored = svc.restore_quote(user_id=trader, quote_id=link.quote)
        if _matches(restored):
            st.session_state["quote"] = (inputs, restored)
        elif linked is None and order_type == "market" and restored.order.symbol == symbol:
            left.info(
                f"The link's quote {link.quote[:8]} priced this market order at the mark of "
                f"{restored.order.entry_price:,.2f}; the mark is now {entry:,.2f}: ask for a "
                "new quote."
            )
        else:
            left.info(
                f"The link's quote {link.quote[:8]} was made for another order or cover: ask "
                "for a new one."
            )
    except BTIError as exc:
        left.info(f"The link's quote is not shown: {exc}.")
if ask:
    st.session_state["_buy_link_problems"] = []  # the form is the trader's own now
    try:
        order, cover = _order_and_cover()
        if order is not None:
            view = svc.quote(user_id=trader, order=order, cover=cover)
        else:
            assert linked is not None
            view = svc.quote_position(
                user_id=trader,
                position_id=linked.id or 0,
                cover=cover,
                peril=Peril.ADL if adl_cover else Peril.LIQUIDATION,
            )
        st.session_state["quote"] = (inputs, view)
    except (BTIError, ValueError) as exc:
        st.session_state.pop("quote", None)
        left.error(str(exc))

made_from, quote = st.session_state.get("quote", (None, None))
shown = BuyLink(
    symbol=None if linked is not None else symbol,
    side=None if linked is not None else side,
    order_type=None if linked is not None else order_type,
    margin_mode=None if linked is not None else margin_mode,
    qty=None if linked is not None else qty,
    price=entry if linked is None and order_type == "limit" else None,
    leverage=None if linked is not None else leverage,
    wallet=wallet,
    coverage=coverage,
    duration=DURATIONS[duration],
    share=None if adl_cover else share,
    deductible=None if adl_cover else deductible,
    position=None if linked is None else linked.id,
    peril=None if linked is None else peril.value,
    quote=quote.record.id if quote is not None and made_from == inputs else None,
).to_params()
if {k: st.query_params[k] for k in st.query_params} != shown:
    st.query_params.from_dict(shown)  # a reload or a shared link shows this form again
with right:
    if quote is not None and made_from != inputs:
        st.session_state.pop("quote", None)
        st.info("The form changed since the last quote: ask for a new one.")
        st.stop()
    if quote is None:
        st.info("Describe the order and the cover, then ask for a quote.")
        st.stop()
    r = quote.record
    what = "your exchange position" if quote.position is not None else "order"
    st.subheader(f"Quote for a {quote.order.side} {quote.order.leverage}× {r.symbol} {what}")
    spot_q = float(r.spot)
    lp = float(r.liquidation_price)
    p = quote.premium
    m = st.columns(3)
    if quote.peril is Peril.ADL:
        adl = r.inputs["adl"]
        level = float(adl["crash_level"])
        q = adl["quantile"]
        m[0].metric(
            "Crash level",
            f"{level:,.2f}" if level < 1e4 else f"{level:,.0f}",
            f"{(level / spot_q - 1):+.2%} from mark",
            delta_color="off",
            delta_arrow="off",
            help="The move in your favour that bankrupts the other side faster than the "
            "exchange's insurance fund absorbs it",
        )
        m[1].metric(
            "P(auto-deleveraging)",
            f"{r.probability:.2%}",
            "the floor" if adl["floored"] else None,
            delta_color="off",
            delta_arrow="off",
            help=f"{P_FUND_EMPTY:.0%} × P(the mark reaches the crash level) "
            f"{adl['crash_probability']:.2%} × the queue's reach {adl['reach']:.0%}, at least "
            f"{FLOOR:.1%} (the crash no model sees)",
        )
        m[2].metric(
            "ADL queue",
            "not given" if q is None else f"{q} of 4",
            f"reaches it {adl['reach']:.0%} of the time",
            delta_color="off",
            delta_arrow="off",
            help="The exchange's ADL quantile (4: deleveraged first), read at the quote; a "
            "favourable move raises it, so the price assumes the worse",
        )
    else:
        m[0].metric(
            "Liquidation price",
            f"{lp:,.2f}" if lp < 1e4 else f"{lp:,.0f}",
            f"{(lp / spot_q - 1):+.2%} from mark",
            delta_color="off",
            delta_arrow="off",  # a distance, not a change
        )
        m[1].metric(
            "P(liquidation)",
            f"{r.probability:.2%}",
            f"± {r.probability_se:.2%} (MC)",
            delta_color="off",
            delta_arrow="off",  # an error bar, not a change
            help=(
                "Monte Carlo on the mark price under GJR-GARCH fitted on 180 days, with "
                "bootstrapped residuals (the first day's from days that began as calm or as "
                "volatile as now) and, after the first day, the half-year trend shrunk by how "
                "sure the data are of it"
            ),
        )
        m[2].metric(
            "Baseline (GBM)",
            f"{r.baseline_probability:.2%}",
            help="Closed-form first passage with the 30-day realised volatility",
        )
    if quote.peril is Peril.LIQUIDATION:
        st.caption(text.why_probability(r.probability, r.baseline_probability))
    with st.expander("How the probability is computed"):
        st.caption(quote.model)
    if r.ml_probability is not None:
        st.metric(
            "Learned model",
            f"{r.ml_probability:.2%}",
            help="A model trained by `bti train` on the engine's probability and market features",
        )
    if quote.learned:
        st.caption(f"Learned model: {quote.learned}")
    m = st.columns(3)
    m[0].metric("Risk index", f"{r.risk_index:.0f} / 100")
    m[1].metric("Premium (BTI)", f"{p.total:,.2f}", help="1 BTI = 1 USDT of cover")
    pays = "Pays if deleveraged (BTI)" if quote.peril is Peril.ADL else "Pays if liquidated (BTI)"
    m[2].metric(pays, f"{p.payout:,.2f}")
    st.caption(f"Pool utilisation after this policy: {p.utilisation:.1%}")
    for w in quote.warnings:
        st.warning(w)
    for c in quote.checks:
        if not c.passed:
            st.error(c.reason, icon="⛔")
    resources.countdown(r.expires_at, f"Quote {r.id[:8]}")
    if not resources.demo_chain():  # the trader's own wallet signs; BTI relays the purchase
        _buy_from_own_wallet(trader, quote)
    elif st.button(
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
    tabs = st.tabs(["Risk factors", "What if", "How the premium is made"])
    with tabs[0]:
        st.plotly_chart(risk_factors_figure(quote.risk.frame(), quote.risk.value), width="stretch")
    with tabs[1]:
        if quote.peril is Peril.ADL:
            st.caption(
                "ADL cover's price does not depend on the leverage you hold but on the crash "
                "in your favour and your place in the exchange's queue: see the figures above."
            )
        else:
            levs = [lv for lv in WHAT_IF_LEVERAGES if lv <= max_lev]
            levs = sorted({*levs, leverage})
            curve = svc.premium_curve(quote, levs, list(DURATIONS.values()))
            st.plotly_chart(
                premium_curve_figure(curve, float(leverage), DURATIONS[duration]), width="stretch"
            )
            st.caption(
                "The same order and the same share of its margin covered, at other leverages "
                "and durations: a higher leverage brings the liquidation price closer (a higher "
                "probability) while the margin, and so the payout, shrinks."
            )
    with tabs[2]:
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
                        f"{p.expected_loss:,.2f} BTI",
                        f"{p.loading:,.2f} BTI",
                        f"{p.fee:,.2f} BTI",
                        f"{p.total:,.2f} BTI",
                    ],
                }
            )
        )
