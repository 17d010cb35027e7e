"""Market page: candles with the mark price, indicators, funding, volume, realised volatility
and the last cleaning reports of the chosen symbol."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bti_core.errors import NoDataError
from bti_core.indicators import INDICATORS
from bti_core.market.service import market_view
from dashboard import resources
from dashboard.charts import market_figure

RANGES = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365, "All": None}
TIMEFRAMES = ["1h", "4h", "1d"]

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
stored = wh.timeframes(symbol)
finest = stored[0] if stored else "1h"
choices = [tf for tf in TIMEFRAMES if pd.Timedelta(tf) >= pd.Timedelta(finest)] or [finest]
timeframe = c2.selectbox("Timeframe", choices, key="market_timeframe")
span = c3.selectbox("Range", list(RANGES), index=1, key="market_range")
chosen = c4.multiselect(
    "Indicators",
    list(INDICATORS),
    default=["sma20", "bollinger", "rsi"],
    format_func=lambda n: INDICATORS[n].label,
    key="market_indicators",
)

last_ts = wh.latest("ohlcv", symbol, stored[0]).ts if stored else None
days = RANGES[span]
start = last_ts - pd.Timedelta(days=days) if (days and last_ts is not None) else None
try:
    view = market_view(
        wh, symbol, timeframe, start=start, indicators=chosen, engine=resources.engine()
    )
except NoDataError as exc:
    st.warning(str(exc))
    st.stop()

s = view.stats


def _money(x: float | None) -> str:
    if x is None:
        return "–"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:,.2f} {unit}"
    return f"{x:,.0f}"


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
)
m[2].metric("24 h volume (USDT)", _money(s.quote_volume_24h))
m[3].metric(
    "Funding (8 h)",
    f"{s.funding_rate:+.4%}" if s.funding_rate is not None else "–",
    f"{s.funding_annualised:+.1%} a year" if s.funding_annualised is not None else None,
    delta_color="off",
)
m[4].metric(
    "Realised vol 30 d",
    f"{s.realised_vol_30d:.0%}" if s.realised_vol_30d is not None else "–",
    help="Annualised, from squared hourly log returns (zero-mean estimator)",
)
st.caption(
    f"Last bar {s.as_of:%Y-%m-%d %H:%M} UTC · {len(view.bars):,} bars at {view.timeframe}. "
    "Red crosses mark last-price wicks the mark price did not confirm: liquidations trigger on "
    "the mark price."
)

st.plotly_chart(market_figure(view.bars, view.funding, chosen, view.symbol), width="stretch")

with st.expander("Cleaning reports", expanded=False):
    if not view.reports:
        st.caption("No imports recorded for this symbol.")
    for when, source, report in view.reports:
        st.markdown(
            f"**{report.kind} {report.timeframe}** · {when:%Y-%m-%d %H:%M} UTC · `{source}`"
        )
        st.text("\n".join(report.lines()))
