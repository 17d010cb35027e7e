"""Plotly figures for the dashboard (pure: data in, figure out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bti_core.indicators import INDICATORS
from bti_core.market.schema import BarFlag

UP, DOWN, MARK, ACCENT = "#16a34a", "#dc2626", "#f59e0b", "#2563eb"
_OVERLAY_COLOURS = ["#7c3aed", "#0891b2", "#db2777", "#65a30d"]


def legend_below(height: int, top: int = 40) -> dict[str, Any]:
    """Layout for a legend under the plot, clear of the title above and the x axis's dates
    below it (a legend at y = −0.15 over a 10 px margin was drawn on the dates, and one above
    the plot on the title): 45 px under the plot area, with the margin to hold it."""
    plot = max(height - top - 80, 100)
    return {
        "legend": {"orientation": "h", "yanchor": "top", "y": -45 / plot, "x": 0},
        "margin": {"l": 10, "r": 10, "t": top, "b": 80},
    }


def _markers(
    x: Any, y: Any, name: str, colour: str, symbol: str, size: int, **kw: Any
) -> go.Scatter:
    """Points without a line, one marker each."""
    marker = {"color": colour, "symbol": symbol, "size": size}
    return go.Scatter(x=x, y=y, name=name, mode="markers", marker=marker, **kw)


def _up_down_bars(x: pd.Series, y: pd.Series, up: pd.Series, name: str) -> list[go.Bar]:
    """Bars green where ``up`` and red elsewhere, as two traces of one colour each (one legend
    entry). A colour a bar costs twice: plotly.py validates a list of colour strings one at a
    time (1.5 s for a year of hourly bars), and plotly.js warns, with a stack trace, for every
    bar of a numeric colour array on a colour scale (0.45 s of a 1.3 s Market draw)."""
    up = up.to_numpy(dtype=bool)
    return [
        go.Bar(
            x=x[mask],
            y=y[mask],
            name=name,
            legendgroup=name,
            showlegend=colour == UP,
            marker_color=colour,
        )
        for mask, colour in ((up, UP), (~up, DOWN))
    ]


def market_figure(
    bars: pd.DataFrame, funding: pd.DataFrame, indicators: list[str], symbol: str
) -> go.Figure:
    """Candles with mark price and overlays; then volume, funding, realised volatility and one
    panel per lower indicator, sharing the time axis."""
    lower = []
    for name in indicators:
        panel = INDICATORS[name].panel
        if panel != "price" and panel not in lower:
            lower.append(panel)
    panels = ["Volume", "Funding (% per 8 h)", "Realised vol (30 d, ann.)", *lower]
    heights = [0.46] + [0.54 / len(panels)] * len(panels)
    fig = make_subplots(
        rows=1 + len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.025,
        row_heights=heights,
        subplot_titles=["", *panels],
    )
    x = bars["ts"]
    fig.add_trace(
        go.Candlestick(
            x=x,
            open=bars["open"],
            high=bars["high"],
            low=bars["low"],
            close=bars["close"],
            name="last",
            increasing_line_color=UP,
            decreasing_line_color=DOWN,
        ),
        row=1,
        col=1,
    )
    if bars["mark_close"].notna().any():
        fig.add_trace(
            go.Scatter(x=x, y=bars["mark_close"], name="mark", line={"color": MARK, "width": 1.2}),
            row=1,
            col=1,
        )
    wicks = bars[
        (bars["flags"] & int(BarFlag.WICK_LOW_UNCONFIRMED | BarFlag.WICK_HIGH_UNCONFIRMED)) > 0
    ]
    if len(wicks):
        fig.add_trace(
            _markers(wicks["ts"], wicks["low"], "wick not on mark", DOWN, "x", 8),
            row=1,
            col=1,
        )
    colour = iter(_OVERLAY_COLOURS * 3)
    for name in indicators:
        spec = INDICATORS[name]
        cols = spec.columns
        row = 1 if spec.panel == "price" else 2 + panels.index(spec.panel)
        for col in cols:
            if name == "macd" and col == "macd_hist":
                fig.add_trace(
                    go.Bar(x=x, y=bars[col], name="MACD hist", marker_color="#94a3b8"),
                    row=row,
                    col=1,
                )
                continue
            fig.add_trace(
                go.Scatter(x=x, y=bars[col], name=col, line={"width": 1, "color": next(colour)}),
                row=row,
                col=1,
            )
    for trace in _up_down_bars(
        x, bars["quote_volume"], bars["close"] >= bars["open"], "volume (USDT)"
    ):
        fig.add_trace(trace, row=2, col=1)
    if len(funding):
        f = funding["funding_rate"] * 100
        for trace in _up_down_bars(funding["ts"], f, f >= 0, "funding"):
            fig.add_trace(trace, row=3, col=1)
    fig.add_trace(
        go.Scatter(x=x, y=bars["realised_vol"], name="realised vol", line={"color": ACCENT}),
        row=4,
        col=1,
    )
    height = 420 + 150 * len(panels)
    fig.update_layout(
        height=height,
        title={
            "text": f"{symbol} · last price (candles) and mark price",
            "x": 0,
            "font": {"size": 15},
        },
        xaxis_rangeslider_visible=False,
        hovermode="x unified",
        bargap=0,
        barmode="overlay",  # up and down bars are two traces at different times: full width
        **legend_below(height, top=50),
    )
    fig.update_yaxes(tickformat=".0%", row=4, col=1)
    return fig


def risk_factors_figure(breakdown: pd.DataFrame, total: float) -> go.Figure:
    """Horizontal bars: each factor's points out of its weight, largest first."""
    b = breakdown.sort_values("points")
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=b["label"],
            x=b["weight"],
            orientation="h",
            marker_color="#e2e8f0",
            name="its weight",
            hoverinfo="skip",
        )
    )
    # one trace per band, so the legend says what each colour means
    band = pd.cut(b["score"], [-np.inf, 1 / 3, 2 / 3, np.inf], labels=False)
    for i, (name, colour) in enumerate(
        (("low: under ⅓ of its weight", UP), ("middling", MARK), ("high: over ⅔", DOWN))
    ):
        part = b[band == i]
        fig.add_trace(
            go.Bar(
                y=part["label"],
                x=part["points"],
                orientation="h",
                marker_color=colour,
                name=name,
                customdata=part["value"],
                hovertemplate="%{y}: %{x:.1f} points<br>%{customdata}<extra></extra>",
            )
        )
    height = 40 + 26 * len(b) + 80  # the legend's room under the plot
    fig.update_layout(
        barmode="overlay",
        height=height,
        title={
            "text": f"Risk index {total:.0f} / 100 — points by factor",
            "x": 0,
            "font": {"size": 14},
        },
        xaxis_title="points (grey: the factor's weight)",
        **legend_below(height, top=30),
    )
    fig.update_layout(legend_title_text="the factor scores")
    return fig


def claim_evidence_figure(
    bars: list[dict[str, object]],
    liquidation_price: float,
    side: str,
    start: object,
    end: object,
    trigger_at: object,
) -> go.Figure:
    """Mark price (range and close) and last price around a claim's event, the liquidation
    line, the policy window shaded and the trigger marked."""
    df = pd.DataFrame(bars)
    fig = go.Figure()
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
        extreme = "low" if side == "long" else "high"
        fig.add_trace(
            go.Scatter(
                x=pd.concat([df["ts"], df["ts"][::-1]]),
                y=pd.concat([df["high"], df["low"][::-1]]),
                fill="toself",
                fillcolor="rgba(245,158,11,0.18)",
                line={"width": 0},
                name="mark high–low",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(x=df["ts"], y=df["close"], name="mark close", line={"color": MARK})
        )
        fig.add_trace(_markers(df["ts"], df[extreme], f"mark {extreme}", MARK, "line-ew-open", 10))
        last_col = f"last_{extreme}"
        if last_col in df and df[last_col].notna().any():
            fig.add_trace(
                go.Scatter(
                    x=df["ts"],
                    y=df["last_close"],
                    name="last close",
                    line={"color": ACCENT, "dash": "dot"},
                )
            )
            fig.add_trace(_markers(df["ts"], df[last_col], f"last {extreme}", ACCENT, "x", 7))
    fig.add_hline(
        y=liquidation_price,
        line={"color": DOWN, "dash": "dash"},
        annotation_text=f"liquidation {liquidation_price:,.2f}",
    )
    fig.add_vrect(x0=start, x1=end, fillcolor="rgba(37,99,235,0.06)", line_width=0)
    fig.add_vline(x=pd.Timestamp(str(trigger_at)), line={"color": DOWN, "width": 1})
    if not df.empty:
        fig.update_xaxes(range=[df["ts"].min(), df["ts"].max()])
    fig.update_layout(
        height=380,
        title="Evidence: mark vs last price around the event (window shaded)",
        **legend_below(380, top=40),
    )
    return fig


def premium_curve_figure(curve: pd.DataFrame, leverage: float, hours: int) -> go.Figure:
    """What-if: the premium against leverage, one line per cover duration, the quoted order
    marked. Hover gives P(liquidation) and the payout behind each point."""
    fig = go.Figure()
    palette = ["#94a3b8", "#0891b2", ACCENT, "#7c3aed", "#db2777", DOWN]
    for i, (h, g) in enumerate(curve.groupby("hours")):
        label = f"{h // 24} d" if h % 24 == 0 else f"{h} h"
        fig.add_trace(
            go.Scatter(
                x=g["leverage"],
                y=g["premium"],
                name=label,
                mode="lines+markers",
                line={"color": palette[i % len(palette)], "width": 3 if h == hours else 1.5},
                customdata=np.column_stack(
                    [g["probability"], g["payout"], _share_of(g["premium"], g["payout"])]
                ),
                hovertemplate=(
                    "%{x:.0f}× for " + label + ": %{y:,.2f} BTI, %{customdata[2]:.1%} of the "
                    "cover<br>P(liq.) %{customdata[0]:.2%} · pays %{customdata[1]:,.2f}"
                    "<extra></extra>"
                ),
            )
        )
    here = curve[(curve["leverage"] == leverage) & (curve["hours"] == hours)]
    if len(here):
        fig.add_trace(
            _markers(
                here["leverage"], here["premium"], "this quote", MARK, "star", 13, hoverinfo="skip"
            )
        )
        share = _share_of(here["premium"], here["payout"])[0]
        if np.isfinite(share):
            fig.add_annotation(  # the rate beside the amount: what a trader compares
                x=np.log10(float(here["leverage"].iloc[0])),
                y=float(here["premium"].iloc[0]),
                text=f"{share:.1%} of the cover",
                showarrow=True,
                arrowhead=0,
                ax=0,
                ay=-28,
                font={"size": 12},
            )
    fig.update_layout(
        title="What if: premium by leverage and duration",
        height=300,
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        legend={"title": "cover"},
        xaxis={"title": "leverage (×)", "type": "log", "tickformat": ".0f"},
        yaxis={"title": "premium (BTI)", "tickformat": ",.2f"},
    )
    return fig


def _share_of(premium: pd.Series, payout: pd.Series) -> np.ndarray:
    """The premium as a share of the cover it buys (NaN where nothing is covered)."""
    p, c = premium.to_numpy(float), payout.to_numpy(float)
    return np.divide(p, c, out=np.full(len(p), np.nan), where=c > 0)


def forecast_figure(
    history: pd.Series,
    forecast: pd.DataFrame,
    *,
    title: str,
    y_title: str,
    percent: bool,
    anchored: bool = True,
) -> go.Figure:
    """The recent series and a forecast fan: the median, and the 80 % and 95 % intervals at each
    horizon (``Forecast.frame()``), drawn from the origin's value when ``anchored`` (a price is
    known at the origin; a volatility over the coming hours is not)."""
    fmt = ".1%" if percent else ",.2f"
    origin_t, origin_y = history.index[-1], float(history.iloc[-1])
    f = forecast.sort_values("ts")
    if anchored:
        x = [origin_t, *f["ts"]]
        start: list[float] = [origin_y]
    else:
        x, start = list(f["ts"]), []
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=history.index,
            y=history.to_numpy(),
            name="realised",
            line={"color": "#334155", "width": 1.5},
            hovertemplate="%{x|%m-%d %H:%M}: %{y:" + fmt + "}<extra></extra>",
        )
    )
    for lo, hi, colour, name in (
        ("lo95", "hi95", "rgba(37, 99, 235, 0.12)", "95 % interval"),
        ("lo80", "hi80", "rgba(37, 99, 235, 0.25)", "80 % interval"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[*x, *x[::-1]],
                y=[*start, *f[hi], *f[lo][::-1], *start],
                mode="lines",
                fill="toself",
                fillcolor=colour,
                line={"width": 0},
                name=name,
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[*start, *f["median"]],
            name="median",
            mode="lines+markers",
            line={"color": ACCENT, "dash": "dot"},
            customdata=[
                *([[0, origin_y, origin_y]] if anchored else []),
                *f[["horizon", "lo80", "hi80"]].to_numpy(),
            ],
            hovertemplate=(
                "+%{customdata[0]} h: %{y:" + fmt + "} (80 %: %{customdata[1]:" + fmt + "} – "
                "%{customdata[2]:" + fmt + "})<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        title=title,
        height=340,
        yaxis={"title": y_title, "tickformat": ".0%" if percent else ",.0f"},
        **legend_below(340),
    )
    return fig
