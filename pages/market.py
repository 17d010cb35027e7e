"""Market page: candles with the mark price, indicators, funding, volume, realised volatility,
the price and volatility forecasts the worker cached, and the last cleaning reports of the
chosen symbol."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bti_core.errors import NoDataError
from bti_core.indicators import INDICATORS
from bti_core.market.schema import timeframe_delta
from bti_core.market.service import last_reports
from dashboard import resources, views
from dashboard.charts import market_figure

RANGES = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365, "All": None, "Custom…": -1}
TIMEFRAMES = ["1m", "5m", "15m", "1h", "4h", "1d"]
# the chart is about 1,400 px wide: more candles than pixels merge into a band, and each one
# costs the browser time to draw (a year of hourly candles took seconds; `benchmarks/pages.py`)
MAX_BARS = 1_500

st.title("Market")
wh = resources.warehouse()
symbols = wh.symbols()
if not symbols:
    st.info(
        "No market data yet. Run `make run` (it generates demo markets) or import data with "
        "`bti ingest PATH` / `bti demo`."
    )
    st.stop()

c1, c2, c3, c4 = st.columns([1.2, 1, 1, 3])
symbol = c1.selectbox(
    "Symbol",
    symbols,
    index=symbols.index("BTCUSDT") if "BTCUSDT" in symbols else 0,
    key="market_symbol",
)


def _money(x: float | None) -> str:
    if x is None:
        return "–"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:,.2f} {unit}"
    return f"{x:,.0f}"


@st.fragment
def chart(symbol: str, controls: list) -> pd.Timestamp | None:  # type: ignore[type-arg]
    """The bars of ``symbol`` as the controls ask, their figures, the chart and the market
    context over the same range; returns the last bar's time. A timeframe, range or indicator
    changed reruns only this (the forecasts and reports below depend on the symbol alone)."""
    c2, c3, c4 = controls
    stored = wh.timeframes(symbol)
    finest = timeframe_delta(stored[0])
    # the series with the longest history sets the range (a replay adds minutes beside the hours)
    datasets = [d for d in (wh.dataset("ohlcv", symbol, tf) for tf in stored) if d and d.first]
    base = min(datasets, key=lambda d: d.first) if datasets else None
    choices = [tf for tf in TIMEFRAMES if timeframe_delta(tf) >= finest]
    timeframe = c2.selectbox(
        "Timeframe",
        choices,
        index=choices.index("1h") if "1h" in choices else 0,
        key="market_timeframe",
    )
    span = c3.selectbox("Range", list(RANGES), index=1, key="market_range")
    chosen = c4.multiselect(
        "Indicators",
        list(INDICATORS),
        default=["sma20", "bollinger", "rsi"],
        format_func=lambda n: INDICATORS[n].label,
        key="market_indicators",
    )
    if base is None or base.first is None or base.last is None:
        st.warning(f"{symbol} has no bars stored yet; import some with `bti ingest`.")
        return None
    first, last = base.first, base.last
    resources.replay_notice(symbol)
    end = None
    if RANGES[span] == -1:
        picked = st.date_input(
            "From – to (UTC)",
            value=(max(first, last - pd.Timedelta(days=30)).date(), last.date()),
            min_value=first.date(),
            max_value=last.date(),
            key="market_dates",
        )
        if not isinstance(picked, tuple) or len(picked) != 2:
            st.info("Pick the last day of the range too.")
            return None
        start = pd.Timestamp(picked[0], tz="UTC")
        end = pd.Timestamp(picked[1], tz="UTC") + pd.Timedelta(days=1)
    else:
        days = RANGES[span]
        start = last - pd.Timedelta(days=days) if days else first

    bars_asked = ((end or last) - start) / timeframe_delta(timeframe)
    if bars_asked > MAX_BARS:
        coarser = next(
            (tf for tf in choices if ((end or last) - start) / timeframe_delta(tf) <= MAX_BARS),
            choices[-1],
        )
        st.info(
            f"{span} of {timeframe} bars would be {bars_asked:,.0f} candles, more than the chart "
            f"can show apart; showing {coarser} bars instead (at most {MAX_BARS:,}). Pick a "
            f"shorter range to see {timeframe} bars."
        )
        timeframe = coarser
    try:
        view = resources.market_view_of(symbol, timeframe, start=start, end=end, indicators=chosen)
    except NoDataError as exc:
        st.warning(str(exc))
        return None

    s = view.stats
    m = st.columns(5)
    m[0].metric(
        "Last price",
        f"{s.last:,.2f}",
        f"{s.change_24h:+.2%} 24 h" if s.change_24h is not None else None,
    )
    m[1].metric(
        "Mark price",
        f"{s.mark:,.2f}" if s.mark is not None else "–",
        f"basis {s.last / s.mark - 1:+.3%}" if s.mark else None,
        delta_color="off",
        delta_arrow="off",  # a spread between two prices, not a change
        help="Basis: the last traded price against the mark price",
    )
    m[2].metric("24 h volume (USDT)", _money(s.quote_volume_24h))
    m[3].metric(
        "Funding (8 h)",
        f"{s.funding_rate:+.4%}" if s.funding_rate is not None else "–",
        f"{s.funding_annualised:+.1%} a year" if s.funding_annualised is not None else None,
        delta_color="off",
        delta_arrow="off",  # the same rate a year, not a change
    )
    m[4].metric(
        "Realised vol 30 d",
        f"{s.realised_vol_30d:.0%}" if s.realised_vol_30d is not None else "–",
        help="Annualised, from squared hourly log returns (zero-mean estimator)",
    )
    st.caption(
        f"Last bar {s.as_of:%Y-%m-%d %H:%M} UTC · {len(view.bars):,} bars at {view.timeframe}. "
        "Red crosses mark last-price wicks the mark price did not confirm: liquidations trigger "
        "on the mark price."
    )
    st.plotly_chart(market_figure(view.bars, view.funding, chosen, view.symbol), width="stretch")

    # drawn when opened (a chart fewer on every first draw: the browser's drawing is most of a
    # page's time); opening it reruns only this fragment
    context = st.expander(
        "Market context: basis, funding, open interest, long/short",
        key="market_context",
        on_change="rerun",
    )
    if context.open:
        with context:
            views.market_context(symbol, view.bars["ts"].iloc[0], view.bars["ts"].iloc[-1])
    return s.as_of


as_of = chart(symbol, [c2, c3, c4])
if as_of is None:
    st.stop()

st.subheader("Forecasts")
views.forecasts(symbol, as_of)

with st.expander("Cleaning reports", expanded=False):
    reports = last_reports(resources.engine(), symbol)
    if not reports:
        st.caption("No imports recorded for this symbol.")
    for when, source, report in reports:
        st.markdown(
            f"**{report.kind} {report.timeframe}** · {when:%Y-%m-%d %H:%M} UTC · `{source}`"
        )
        st.text("\n".join(report.lines()))
