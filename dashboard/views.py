"""Sections more than one page draws (one place each)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from bti_core.errors import BTIError
from bti_core.risk import forecast_store
from dashboard import resources, text
from dashboard.charts import forecast_figure


def refusal(lead: str, detail: str) -> None:
    """An error whose detail may hold what a link or a user typed: the lead is ours, the detail
    is shown verbatim as code, never as markdown (a crafted URL could otherwise put its own links
    and images into the page's error box)."""
    st.error(lead, icon=":material/error:")
    st.code(detail, language=None, wrap_lines=True)


def forecasts(symbol: str, last_bar: pd.Timestamp) -> None:
    """The cached price and volatility forecasts of ``symbol`` with their bands and the
    forecaster's measured skill (the worker fits them; a page never does)."""
    forecasts_dir = resources.settings().forecasts_dir
    price_fc = forecast_store.cached(forecasts_dir, symbol, "price")
    vol_fc = forecast_store.cached(forecasts_dir, symbol, "vol")
    if price_fc is None and vol_fc is None:
        st.caption(
            f"No forecast for {symbol} yet: the worker fits one each hour (`bti worker`, started "
            f"by `make run`), or run `bti forecast {symbol}`."
        )
        return
    recent = resources.recent_closes(symbol, days=14)
    left, right = st.columns(2)
    for col, fc, series, title, y_title, percent in (
        (left, price_fc, recent.iloc[-24 * 7 :], "Mark price, next 7 days", "USDT", False),
        (
            right,
            vol_fc,
            forecast_store.realised_vol_series(recent).iloc[-24 * 7 :],
            "Realised volatility to each horizon (annualised)",
            "volatility",
            True,
        ),
    ):
        if fc is None:
            col.caption("Not forecast yet.")
            continue
        col.plotly_chart(
            forecast_figure(
                series,
                fc.frame(),
                title=title,
                y_title=y_title,
                percent=percent,
                anchored=fc.target == "price",
            ),
            width="stretch",
        )
        stale = (last_bar - fc.origin) / pd.Timedelta(hours=1)
        col.caption(
            f"From {fc.origin:%Y-%m-%d %H:%M} UTC"
            + (f" ({stale:.0f} h before the last bar)" if stale >= 2 else "")
            + f", read from {text.forecaster(fc.forecaster)}. "
            + forecast_store.skill_plain(forecasts_dir, fc.target, fc.forecaster)
        )
        with col.expander("How it was scored"):  # the forecaster's scores, for who wants them
            st.caption(forecast_store.skill_note(forecasts_dir, fc.target, fc.forecaster))


def market_context(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> None:
    """Basis, funding, open interest and the long/short ratio of ``symbol`` (where stored)."""
    from bti_core.analytics.context import market_context as read
    from dashboard.risk_charts import context_figure

    ctx = read(resources.warehouse(), symbol, start, end)
    fig = context_figure(ctx, symbol)
    if fig is None:
        st.caption(f"No market context stored for {symbol}.")
        return
    st.plotly_chart(fig, width="stretch")
    last = ctx.dropna(subset=["mark"]).iloc[-1] if ctx["mark"].notna().any() else None
    missing = [
        name
        for col, name in (
            ("open_interest_value", "open interest"),
            ("long_short_ratio", "long/short ratio"),
        )
        if ctx[col].isna().all()
    ]
    parts = []
    if last is not None:
        parts.append(f"Latest ({last['ts']:%Y-%m-%d %H:%M} UTC): basis {last['basis']:+.3%}")
        if pd.notna(last["funding_rate"]):
            parts.append(f"funding {last['funding_rate']:+.4%} per 8 h")
        if pd.notna(last["open_interest_value"]):
            parts.append(f"open interest {last['open_interest_value'] / 1e6:,.1f} M USDT")
        if pd.notna(last["long_short_ratio"]):
            parts.append(f"{last['long_account']:.0%} of accounts long")
    note = " · ".join(parts)
    if missing:
        note += (
            f". No {' or '.join(missing)} stored: `bti ingest --exchange binanceusdm "
            f"--symbol {symbol} --since …  --kind open_interest` (Binance keeps 30 days)."
        )
    st.caption(note)


def concentration_caps() -> None:
    """The whole open book against underwriting's concentration caps (`caps_in_use`): what a
    quote or a purchase would be refused by, and how much each cap has left."""
    from bti_core.underwriting import caps_in_use

    st.subheader("The book against underwriting's caps")
    try:
        svc = resources.services()
        uses = caps_in_use(svc.insurance.concentration_now(), svc.limits)
    except BTIError as exc:
        st.warning(str(exc))
        return
    limits = svc.limits
    kinds = {"symbol": "one symbol", "band": "one side × leverage band", "crash": "one move"}
    st.dataframe(
        pd.DataFrame(
            {
                "cap": [kinds[u.kind] for u in uses],
                "what": [u.what for u in uses],
                "open cover (USDT)": [float(u.used) for u in uses],
                "cap (USDT)": [float(u.limit) for u in uses],
                "left (USDT)": [float(u.left) for u in uses],
                "used": [min(1.0, u.share) for u in uses],
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "open cover (USDT)": st.column_config.NumberColumn(format="accounting"),
            "cap (USDT)": st.column_config.NumberColumn(format="accounting"),
            "left (USDT)": st.column_config.NumberColumn(format="accounting"),
            "used": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
        },
    )
    st.caption(
        f"Every open policy, whatever the filter. Of the pool's {limits.pool_capacity:,.0f} USDT "
        f"capacity: one symbol at most {limits.max_symbol_share:.0%}, one side in one leverage "
        f"band {limits.max_band_share:.0%} (one move liquidates them together), and what a "
        f"{limits.crash_move:.0%} market-wide move within the hour would claim "
        f"{limits.max_crash_share:.0%} (crypto fell 15–70 % within 40 minutes on 10 October "
        "2025). A quote over a cap is refused with the cap and what it has left; a purchase "
        "checks again."
    )


def scenario_results() -> list[Any]:
    """Every stress scenario (`analytics.scenarios.scenarios`) on the whole open book at
    today's marks; ``[]`` (with a warning shown) when the book or the marks cannot be read."""
    from bti_core.analytics.scenarios import marks_of, run_scenario, scenarios

    try:
        svc = resources.services()
        book = resources.book()
        marks = marks_of(book, resources.risk_engine().spot)
    except BTIError as exc:
        st.warning(str(exc))
        return []
    now = pd.Timestamp.now("UTC")
    return [
        run_scenario(book, sc, marks, now=now) for sc in scenarios(float(svc.limits.crash_move))
    ]


def scenario_stress() -> None:
    """The open book through a crash path minute by minute — 10 October 2025 (stylised) or the
    crash cap's ±30 % hour — against the crash cap."""
    from dashboard import risk_charts

    st.subheader("Crash scenarios on the open book")
    results = scenario_results()
    if not results:
        return
    names = {r.scenario.key: r for r in results}
    key = st.segmented_control(
        "Scenario",
        list(names),
        default=results[0].scenario.key,
        format_func=lambda k: names[k].scenario.name,
        key="rq_scenario",
    )
    r = names[key or results[0].scenario.key]
    sc = r.scenario
    limits = resources.services().limits
    cap = float(limits.pool_capacity * limits.max_crash_share)
    syms = list(r.by_symbol["symbol"]) or ["BTCUSDT", "ETHUSDT"]
    shape = pd.DataFrame({s: sc.move_of(s) * sc.shape() for s in syms})
    left, right = st.columns([3, 2])
    left.plotly_chart(
        risk_charts.scenario_path_figure(shape, r.timeline, sc.name, cap), width="stretch"
    )
    with right:
        st.markdown(f"**{sc.name}**: {sc.description}.")
        c = st.columns(2)
        c[0].metric("Scenario claims", f"{r.claims:,}")
        c[1].metric("Scenario payout", text.bti(r.payout))
        st.progress(
            min(1.0, r.payout / cap) if cap > 0 else 0.0,
            text=f"{r.payout / cap:.0%} of the crash cap ({text.bti(cap)})" if cap > 0 else "",
        )
        st.dataframe(
            r.by_symbol,
            hide_index=True,
            column_config={
                "move": st.column_config.NumberColumn(format="percent"),
                "mark": st.column_config.NumberColumn(format="%.4g"),
                "trough": st.column_config.NumberColumn(format="%.4g"),
                "payout": st.column_config.NumberColumn(format="accounting"),
            },
        )
    st.caption(
        "Every open policy, whatever the filter, at today's marks. A policy is claimed at the "
        "first minute the path reaches its liquidation price; a symbol without a mark counts "
        "its cover whole. The October path is stylised from public reports of the event, not "
        "exchange data."
    )
