"""Plotly figures for the Risk Queries page (pure: frames in, figure out)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.charts import ACCENT, DOWN, MARK, UP

_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "height": 330}


def exposure_figure(by: pd.DataFrame, key: str, title: str) -> go.Figure:
    """Open cover, expected and realised loss per value of ``key`` (the first 25 values: the
    table beside the chart has them all)."""
    by = by.head(25)
    fig = go.Figure()
    x = by[key].astype(str)
    fig.add_bar(x=x, y=by["open_cover"], name="Open cover", marker_color=ACCENT)
    fig.add_bar(x=x, y=by["expected_loss"], name="Expected loss", marker_color=MARK)
    fig.add_bar(x=x, y=by["realised_loss"], name="Realised loss", marker_color=DOWN)
    fig.update_layout(title=title, barmode="group", yaxis_title="BTI", **_LAYOUT)
    return fig


def risk_index_figure(hist: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=hist["band"], y=hist["policies"], marker_color=ACCENT))
    fig.update_layout(
        title="Risk index at purchase", xaxis_title="risk index", yaxis_title="policies", **_LAYOUT
    )
    return fig


def loss_ratio_figure(lr: pd.DataFrame) -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=lr["period"], y=lr["premiums"], name="Premiums", marker_color=ACCENT)
    fig.add_bar(x=lr["period"], y=lr["realised_loss"], name="Claims paid", marker_color=DOWN)
    fig.add_scatter(
        x=lr["period"],
        y=lr["cumulative_loss_ratio"],
        name="Cumulative loss ratio",
        mode="lines+markers",
        line={"color": MARK},
        secondary_y=True,
    )
    fig.update_yaxes(title_text="BTI", secondary_y=False)
    fig.update_yaxes(title_text="loss ratio", tickformat=".0%", secondary_y=True)
    fig.update_layout(title="Loss ratio by month of purchase", barmode="group", **_LAYOUT)
    return fig


def liquidation_map_figure(
    m: pd.DataFrame, mark: float, symbol: str, stress_price: float | None
) -> go.Figure:
    """Cover claimed if the mark price went to each level: longs below the mark, shorts above
    (cumulative from the mark outwards), the mark and the stress level marked."""
    fig = go.Figure()
    fig.add_scatter(
        x=m["price"], y=m["long"], name="Longs claimed", fill="tozeroy", line={"color": DOWN}
    )
    fig.add_scatter(
        x=m["price"], y=m["short"], name="Shorts claimed", fill="tozeroy", line={"color": UP}
    )
    fig.add_vline(
        x=mark, line_dash="dash", line_color="#6b7280", annotation_text=f"mark {mark:,.2f}"
    )
    if stress_price is not None:
        fig.add_vline(
            x=stress_price, line_color=MARK, annotation_text="stress", annotation_position="bottom"
        )
    fig.update_layout(
        title=f"{symbol}: payout claimed if the mark price went to…",
        xaxis_title="mark price",
        yaxis_title="BTI claimed",
        **{**_LAYOUT, "height": 380},
    )
    return fig


def surface_figure(surface: pd.DataFrame) -> go.Figure:
    """Heatmaps of P(liquidation) by leverage × horizon, one per source that has values."""
    sources = [s for s in ("engine", "ml", "gbm") if surface[s].notna().any()]
    names = {"engine": "Monte Carlo engine", "ml": "Learned model", "gbm": "GBM baseline"}
    fig = make_subplots(rows=1, cols=len(sources), subplot_titles=[names[s] for s in sources])
    levs = sorted(surface["leverage"].unique())
    hors = sorted(surface["horizon"].unique())
    for i, s in enumerate(sources, start=1):
        z = surface.pivot(index="leverage", columns="horizon", values=s).reindex(
            index=levs, columns=hors
        )
        fig.add_trace(
            go.Heatmap(
                z=z.to_numpy(dtype=float),
                x=[f"{h} h" for h in hors],
                y=[f"{lv:g}×" for lv in levs],
                zmin=0,
                zmax=1,
                colorscale="Reds",
                showscale=i == len(sources),
                texttemplate="%{z:.0%}",
                hovertemplate="%{y} for %{x}: %{z:.2%}<extra></extra>",
            ),
            row=1,
            col=i,
        )
    fig.update_layout(title="P(liquidation) by leverage × horizon", **{**_LAYOUT, "height": 380})
    return fig


def reliability_figure(cells: pd.DataFrame) -> go.Figure:
    """Realised against predicted per cell, on log axes, with the diagonal."""
    fig = go.Figure()
    for side, colour in (("long", DOWN), ("short", UP)):
        c = cells[cells["side"] == side]
        fig.add_scatter(
            x=c["predicted"],
            y=c["realised"],
            mode="markers",
            name=side,
            marker={"color": colour, "size": 6 + 14 * c["calibrated"].astype(float)},
            text=[
                f"{lv:g}× {h} h · n={n}"
                for lv, h, n in zip(c["leverage"], c["horizon"], c["n"], strict=True)
            ],
            hovertemplate="%{text}<br>predicted %{x:.3%}<br>realised %{y:.3%}<extra></extra>",
        )
    pos = cells[(cells["predicted"] > 0) & (cells["realised"] > 0)]
    if len(pos):
        lo = float(min(pos["predicted"].min(), pos["realised"].min()))
        hi = float(max(pos["predicted"].max(), pos["realised"].max()))
        fig.add_scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            name="perfect",
            line={"dash": "dot", "color": "#6b7280"},
        )
    fig.update_xaxes(type="log", title="predicted", tickformat=".1%")
    fig.update_yaxes(type="log", title="realised", tickformat=".1%")
    fig.update_layout(title="Realised against predicted, per cell (large: calibrated)", **_LAYOUT)
    return fig


def claims_figure(by_state: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=by_state["state"], y=by_state["claims"], marker_color=ACCENT))
    fig.update_layout(title="Claims by state", yaxis_title="claims", **_LAYOUT)
    return fig


def context_figure(ctx: pd.DataFrame, symbol: str) -> go.Figure | None:
    """Basis, funding, open interest and the long/short ratio, one panel each where the data
    exist (None when none do)."""
    panels = [
        (c, title, fmt)
        for c, title, fmt in (
            ("basis", "Basis (mark ÷ last − 1)", ".3%"),
            ("funding_rate", "Funding (per 8 h)", ".3%"),
            ("open_interest_value", "Open interest (USDT)", "~s"),
            ("long_short_ratio", "Long/short accounts", ".2f"),
        )
        if c in ctx and ctx[c].notna().any()
    ]
    if not panels:
        return None
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[p[1] for p in panels],
    )
    colours = [ACCENT, MARK, UP, DOWN]
    for i, (c, _title, fmt) in enumerate(panels, start=1):
        fig.add_scatter(
            x=ctx["ts"],
            y=ctx[c],
            mode="lines",
            line={"color": colours[i - 1]},
            showlegend=False,
            row=i,
            col=1,
        )
        fig.update_yaxes(tickformat=fmt, row=i, col=1)
    if any(p[0] == "long_short_ratio" for p in panels):
        row = [p[0] for p in panels].index("long_short_ratio") + 1
        fig.add_hline(y=1.0, line_dash="dot", line_color="#6b7280", row=row, col=1)
    fig.update_layout(
        title=f"{symbol}: market context",
        height=140 + 150 * len(panels),
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def share_price_figure(history: pd.DataFrame) -> go.Figure:
    """The pool's share price after each event (a step line), premiums, claims opened (their
    reserve), reserves released and claims paid marked."""
    fig = go.Figure()
    fig.add_scatter(
        x=history["time"],
        y=history["price"],
        name="Share price",
        mode="lines",
        line={"color": ACCENT, "shape": "hv"},
    )
    marks = (
        ("premium", UP, "circle", "Premium"),
        ("reserve", DOWN, "circle-open", "Claim opened (reserved)"),
        ("release", UP, "circle-open", "Reserve released"),
        ("claim", DOWN, "circle", "Claim paid"),
    )
    for kind, color, symbol, name in marks:
        pts = history[history["kind"] == kind]
        if len(pts):
            fig.add_scatter(
                x=pts["time"],
                y=pts["price"],
                name=name,
                mode="markers",
                marker={"color": color, "size": 7, "symbol": symbol},
                customdata=pts["amount"],
                hovertemplate="%{customdata:,.2f} BTI<extra>" + name + "</extra>",
            )
    fig.update_layout(
        title="Share price (BTI per share)", yaxis_tickformat=".6f", hovermode="x", **_LAYOUT
    )
    return fig


def scenario_path_figure(
    shape: pd.DataFrame, timeline: pd.DataFrame, title: str, capacity: float | None
) -> go.Figure:
    """A crash scenario minute by minute: each symbol's move (left axis) and the cover claimed
    so far (right axis), with the crash cap's line where it is known."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for sym in shape.columns:
        fig.add_scatter(x=shape.index, y=shape[sym], name=sym, mode="lines", line={"width": 1.5})
    fig.add_scatter(
        x=timeline["minute"],
        y=timeline["payout"],
        name="Claimed (BTI)",
        mode="lines",
        fill="tozeroy",
        line={"color": DOWN, "shape": "hv"},
        secondary_y=True,
    )
    if capacity is not None:
        fig.add_hline(
            y=capacity,
            line_dash="dot",
            line_color=MARK,
            annotation_text="crash cap",
            secondary_y=True,
        )
    fig.update_yaxes(title_text="move from now", tickformat=".0%", secondary_y=False)
    fig.update_yaxes(title_text="BTI claimed", rangemode="tozero", secondary_y=True)
    fig.update_xaxes(title_text="minutes")
    fig.update_layout(title=title, hovermode="x unified", **_LAYOUT)
    return fig
