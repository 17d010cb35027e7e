"""Risk Queries: the insured book under one filter kept in the URL — exposure, the liquidation
map with a stress slider, the probability surface, reliability, forecasts, claims — and the
report of the selection as text, CSV, HTML and PDF. An underwriter sees the whole book, a
trader only their own."""

from __future__ import annotations

import contextlib

import pandas as pd
import streamlit as st

from bti_core.analytics import book as bk
from bti_core.analytics import filters as bf
from bti_core.analytics import views as bv
from bti_core.analytics.report import EXPORT_COLUMNS, build_report, forecast_note
from bti_core.analytics.surface import probability_surface, reliability, stored_backtests
from bti_core.errors import BTIError
from bti_core.risk import forecast_store
from dashboard import resources, risk_charts, text, views

GROUPS = {
    "symbol": "symbol",
    "side": "side",
    "leverage_bucket": "leverage",
    "duration_bucket": "cover duration",
    "order_type": "order type",
    "margin_mode": "margin",
    "trend": "trend at purchase",
    "vol_regime": "volatility at purchase",
    "trader": "trader",
}
SHOWN_ROWS = 1_000
MONEY_COLUMNS = {
    "open_cover": st.column_config.NumberColumn("open cover", format="accounting"),
    "premiums": st.column_config.NumberColumn("premiums", format="accounting"),
    "expected_loss": st.column_config.NumberColumn("expected loss", format="accounting"),
    "realised_loss": st.column_config.NumberColumn("realised loss", format="accounting"),
    "loss_ratio": st.column_config.NumberColumn("loss ratio", format="percent"),
    "claimed": st.column_config.NumberColumn("claimed", format="accounting"),
    "paid": st.column_config.NumberColumn("paid", format="accounting"),
}  # more rows than a person scrolls; they would only slow every rerun

st.title("Risk queries")
user = resources.signed_in_user()
uw = user.is_underwriter
full = resources.book()
now = pd.Timestamp.now("UTC")

# ------------------------------------------------------------------ the filter, from the URL
url = {k: st.query_params[k] for k in st.query_params}
try:
    flt = bf.BookFilter.from_params(url)
except bf.FilterError as exc:
    views.refusal("The link's filter was not understood; showing the whole book.", str(exc))
    flt = bf.BookFilter()

KEYS = {  # widget key -> (filter field, choices)
    "rq_symbols": ("symbols", sorted(set(full["symbol"]) | set(resources.warehouse().symbols()))),
    "rq_sides": ("sides", list(bk.SIDES)),
    "rq_types": ("order_types", list(bk.ORDER_TYPES)),
    "rq_margin": ("margin_modes", list(bk.MARGIN_MODES)),
    "rq_lev": ("leverage", [b[0] for b in bk.LEVERAGE_BUCKETS]),
    "rq_dur": ("duration", [b[0] for b in bk.DURATION_BUCKETS]),
    "rq_trend": ("trends", list(bk.TRENDS)),
    "rq_vol": ("vol_regimes", list(bk.VOL_REGIMES)),
    "rq_status": ("statuses", list(bk.STATUSES)),
    "rq_traders": ("traders", sorted(set(full["trader"]))),
}
if st.session_state.get("_rq_seeded") != flt.to_params():  # a new link: the widgets follow it
    st.session_state["rq_range"] = flt.range
    st.session_state["rq_from"] = None if flt.start is None else flt.start.date()
    st.session_state["rq_to"] = None if flt.end is None else flt.end.date()
    for key, (name, choices) in KEYS.items():
        st.session_state[key] = [v for v in getattr(flt, name) if v in choices]

with st.container(border=True):
    top = st.columns([2, 3, 3])
    rng = top[0].selectbox(
        "Bought in",
        list(bk.RANGES),
        key="rq_range",
        format_func=lambda r: {
            "7d": "the last 7 days",
            "30d": "the last 30 days",
            "90d": "the last 90 days",
            "1y": "the last year",
            "all": "all time",
            "custom": "a custom range…",
        }[r],
    )
    start = end = None
    if rng == "custom":
        span = {"min_value": bf.EARLIEST.date(), "max_value": bf.LATEST.date(), "value": None}
        start = top[0].date_input("From", key="rq_from", **span)
        end = top[0].date_input("To", key="rq_to", **span)
    top[1].multiselect("Symbol", KEYS["rq_symbols"][1], key="rq_symbols", placeholder="all")
    top[2].multiselect("Status", KEYS["rq_status"][1], key="rq_status", placeholder="all")
    if uw:
        top[2].multiselect("Trader", KEYS["rq_traders"][1], key="rq_traders", placeholder="all")
    row = st.columns(4)
    row[0].pills("Side", KEYS["rq_sides"][1], key="rq_sides", selection_mode="multi")
    row[1].pills("Order", KEYS["rq_types"][1], key="rq_types", selection_mode="multi")
    row[2].pills("Margin", KEYS["rq_margin"][1], key="rq_margin", selection_mode="multi")
    row[3].pills("Trend at purchase", KEYS["rq_trend"][1], key="rq_trend", selection_mode="multi")
    row = st.columns([3, 3, 2])
    row[0].pills("Leverage", KEYS["rq_lev"][1], key="rq_lev", selection_mode="multi")
    row[1].pills("Cover duration", KEYS["rq_dur"][1], key="rq_dur", selection_mode="multi")
    row[2].pills("Volatility at purchase", KEYS["rq_vol"][1], key="rq_vol", selection_mode="multi")

chosen = {name: tuple(st.session_state.get(key) or ()) for key, (name, _) in KEYS.items()}
if not uw:
    chosen["traders"] = ()
flt = bf.BookFilter(
    range=rng,
    start=None if start is None else pd.Timestamp(start, tz="UTC"),
    end=None if end is None else pd.Timestamp(end, tz="UTC"),
    **chosen,
)
params = flt.to_params()
if url != params:
    st.query_params.from_dict(params)  # the URL reproduces this view
st.session_state["_rq_seeded"] = params
mine = flt.for_user(user.username, uw)
sel = mine.apply(full, now)
v = bv.book_views(sel)
t = v.totals

scope = "the whole book" if uw else "your policies"


def _symbol_row(
    symbols: list[str], widths: list[int], key: str, empty: str
) -> tuple[list, str] | None:
    """A tab's row of controls, its first a symbol picker; None (and ``empty`` said) when
    there is no symbol to pick."""
    if not symbols:
        st.caption(empty)
        return None
    c = st.columns(widths)
    return c, c[0].selectbox("Symbol", symbols, key=key)


m = st.columns(6)
m[0].metric("Policies", f"{t.policies:,}", help=f"In {scope}, under the filter")
# six figures side by side: compact amounts (14.4k), the unit in the label, the exact one in
# each help
m[1].metric(
    "Open cover (BTI)",
    text.compact(t.open_cover),
    help=f"{text.bti(t.open_cover)}: payout of the pending and active ones",
)
m[2].metric("Premiums (BTI)", text.compact(t.premiums), help=text.bti(t.premiums))
m[3].metric(
    "Expected loss (BTI)",
    text.compact(t.expected_loss),
    help=f"{text.bti(t.expected_loss)}: Σ P(liquidation) × payout",
)
m[4].metric(
    "Realised loss (BTI)",
    text.compact(t.realised_loss),
    help=f"{text.bti(t.realised_loss)}: claims paid",
)
m[5].metric("Loss ratio", "–" if t.loss_ratio is None else f"{t.loss_ratio:.1%}")
if full.empty:
    st.info("No policies yet: buy cover on the Buy insurance page (or run `bti demo-book`).")

# lazy: only the open tab runs and is sent (one view's charts per filter change, not eleven)
tabs = st.tabs(
    [
        "Book",
        "Liquidation map",
        "Probability surface",
        "Reliability",
        "Forecasts",
        "Market context",
        "Claims",
        "Report",
    ],
    key="rq_tab",
    on_change="rerun",
)

if tabs[0].open:
    with tabs[0]:
        group = st.segmented_control(
            "Group by", list(GROUPS), default="symbol", key="rq_group", format_func=GROUPS.get
        )
        key = group or "symbol"
        ready = {"symbol": v.by_symbol, "side": v.by_side, "leverage_bucket": v.by_leverage}
        by = ready[key] if key in ready else bv.exposure(sel, key)
        left, right = st.columns([3, 2])
        left.plotly_chart(
            risk_charts.exposure_figure(by, key, f"By {GROUPS[key]}"), width="stretch"
        )
        right.dataframe(by, hide_index=True, column_config=MONEY_COLUMNS)
        left, right = st.columns(2)
        left.plotly_chart(risk_charts.risk_index_figure(v.risk_index), width="stretch")
        lr = v.loss_ratio
        if len(lr):
            right.plotly_chart(risk_charts.loss_ratio_figure(lr), width="stretch")
        else:
            right.caption("No premiums in the selection: no loss ratio to draw.")

if tabs[1].open:
    with tabs[1]:
        # the symbols with open cover first, largest first (the map of an empty side is flat)
        by_cover = v.by_symbol
        symbols = list(by_cover["symbol"]) if len(by_cover) else KEYS["rq_symbols"][1]
        picked = _symbol_row(symbols, [2, 3, 2], "rq_map_symbol", "No symbols.")
        if picked is not None:
            c, sym = picked
            move = c[1].slider(
                "Stress: mark price move within 24 h",
                min_value=-50,
                max_value=50,
                value=-20,
                step=1,
                format="%d%%",
                key="rq_stress",
            )
            try:
                mark = resources.risk_engine().spot(sym)
            except BTIError as exc:
                st.warning(str(exc))
            else:
                pool = None
                with contextlib.suppress(BTIError):
                    pool = resources.services().chain.pool_stats()
                s = bv.stress(
                    sel,
                    sym,
                    move / 100,
                    mark,
                    now=now,
                    reserves=None if pool is None else float(pool.reserves),
                    locked=None if pool is None else float(pool.locked),
                )
                lmap = bv.liquidation_map(sel, sym, mark)
                left, right = st.columns([3, 2])
                if lmap["claimed"].any():
                    left.plotly_chart(
                        risk_charts.liquidation_map_figure(lmap, mark, sym, s.price),
                        width="stretch",
                    )
                else:
                    left.info(f"No open {sym} policy in the selection: nothing would be claimed.")
                with right:
                    st.markdown(
                        f"**{sym} {move:+d} % within 24 h** → mark {s.price:,.2f}".replace("-", "−")
                    )
                    st.metric("Claims", f"{s.claims:,}", help=f"from {s.traders} traders")
                    st.metric("Payout", text.bti(s.payout))
                    if s.reserves_after is not None:
                        st.metric(
                            "Pool reserves after",
                            text.bti(s.reserves_after),
                            delta=text.bti(-s.payout) if s.payout else None,
                            delta_color="normal",  # reserves falling: red, not green
                        )
                        st.metric("Free reserves after", text.bti(s.free_after))
                        st.caption(
                            "Cover is fully collateralised: paying a claim takes its payout "
                            "from the reserves and releases the same locked cover, so free "
                            "reserves stay."
                        )
                    else:
                        st.caption("The pool's reserves are unknown: the chain did not answer.")
                st.caption(
                    f"Open {sym} policies only: longs below the mark (claimed at or above the "
                    "level), shorts above. The chart and the numbers follow the filter."
                )
        views.concentration_caps()
        views.scenario_stress()

if tabs[2].open:
    with tabs[2]:
        syms = KEYS["rq_symbols"][1]
        picked = _symbol_row(syms, [2, 2, 4], "rq_surface_symbol", "No market data.")
        if picked is not None:
            c, sym = picked
            side = c[1].segmented_control(
                "Side", ["long", "short"], default="long", key="rq_surface_side"
            )
            try:
                sr = resources.risk_engine().symbol_risk(sym)
            except BTIError as exc:
                st.warning(str(exc))
            else:
                learned = resources.services().learned
                surf = probability_surface(
                    sr, 1 if side != "short" else -1, model=None if learned is None else learned.row
                )
                st.plotly_chart(risk_charts.surface_figure(surf), width="stretch")
                st.caption(
                    f"An isolated {side or 'long'} opened at the mark price ({sr.spot:,.2f}, "
                    f"{sr.as_of:%Y-%m-%d %H:%M} UTC). "
                    + (
                        "No learned model is registered (`bti train`)."
                        if learned is None
                        else f"Learned model: {learned.id}."
                    )
                )
                with st.expander("The numbers"):
                    st.dataframe(surf, hide_index=True, placeholder="–")

if tabs[3].open:
    with tabs[3]:
        runs = stored_backtests(resources.settings().data_dir / "backtests")
        if not runs:
            st.caption("No backtest stored yet: run `bti backtest --data DIR`.")
        else:
            c = st.columns([4, 2, 2])
            run = c[0].selectbox("Backtest", runs, format_func=lambda r: r.label, key="rq_bt")
            all_cells = reliability(run)
            hs = c[1].multiselect(
                "Horizon (h)", sorted(all_cells["horizon"].unique()), key="rq_bt_h"
            )
            ls = c[2].multiselect("Leverage", sorted(all_cells["leverage"].unique()), key="rq_bt_l")
            cells = reliability(run, sides=flt.sides, horizons=tuple(hs), leverages=tuple(ls))
            left, right = st.columns([3, 2])
            left.plotly_chart(risk_charts.reliability_figure(cells), width="stretch")
            right.dataframe(
                cells[
                    [
                        "side",
                        "leverage",
                        "horizon",
                        "n",
                        "realised",
                        "predicted",
                        "ratio",
                        "calibrated",
                    ]
                ],
                hide_index=True,
            )
            st.caption(
                f"{run.label}. A cell is calibrated when realised ÷ predicted is within "
                "0.8–1.25 (cells realised under 0.3 % are not counted). Side follows the "
                "filter above."
            )

if tabs[4].open:
    with tabs[4]:
        syms = KEYS["rq_symbols"][1]
        if syms:
            sym = st.selectbox("Symbol", syms, key="rq_fc_symbol")
            try:
                # the last bar's time, not a risk fit: a page renders no model
                views.forecasts(sym, forecast_store.last_bar_time(resources.warehouse(), sym))
            except (BTIError, ValueError) as exc:
                st.warning(str(exc))

if tabs[5].open:
    with tabs[5]:
        syms = KEYS["rq_symbols"][1]
        if syms:
            sym = st.selectbox("Symbol", syms, key="rq_ctx_symbol")
            lo, hi = flt.window(now)
            hi = now if hi is None else hi
            lo = hi - pd.Timedelta(days=30) if lo is None else lo
            views.market_context(sym, lo, hi)
            st.caption("Over the filter's time range (the last 30 days when it has none).")

if tabs[6].open:
    with tabs[6]:
        cs = v.claims
        if cs.by_state.empty:
            st.caption("No claims in the selection.")
        else:
            left, right = st.columns([3, 2])
            left.plotly_chart(risk_charts.claims_figure(cs.by_state), width="stretch")
            with right:
                st.dataframe(
                    cs.by_state, hide_index=True, column_config=MONEY_COLUMNS, placeholder="–"
                )
                a, b = st.columns(2)
                a.metric("Decided automatically", f"{cs.automatic:,}")
                b.metric("Referred", f"{cs.referred:,}")
                med = cs.median_hours_to_decision
                a.metric("Median time to decision", "–" if med is None else f"{med:.1f} h")
                b.metric("Paid / premiums", f"{cs.paid / cs.premiums:.1%}" if cs.premiums else "–")

if tabs[7].open:
    with tabs[7]:
        note = forecast_note(
            resources.settings().forecasts_dir, [str(x) for x in v.by_symbol["symbol"].head(3)]
        )
        report = build_report(
            sel, mine, now=now, title="BTI risk report", views=v, forecast_note=note
        )
        st.markdown("\n\n".join(report.sentences()))
        # built when clicked (a 100,000-row CSV takes a second and a half; a rerun should not)
        d = st.columns(4)
        for col, label, build, name, mime in (
            (d[0], "Text", report.text, "bti-risk-report.txt", "text/plain"),
            (d[1], "CSV", report.csv, "bti-risk-report.csv", "text/csv"),
            (d[2], "HTML", report.html, "bti-risk-report.html", "text/html"),
            (d[3], "PDF", report.pdf, "bti-risk-report.pdf", "application/pdf"),
        ):
            col.download_button(label, build, name, mime, on_click="ignore", key=f"rq_dl_{label}")
        shown = report.selection.head(SHOWN_ROWS)[list(EXPORT_COLUMNS)]
        st.dataframe(shown, hide_index=True, height=300, placeholder="–")
        if len(report.selection) > SHOWN_ROWS:
            st.caption(
                f"The first {SHOWN_ROWS:,} of {len(report.selection):,} policies; the CSV has all."
            )
