"""The backtest's reliability diagram (pure: cells in, figure out), for `bti backtest --plot`.

Each cell (side × leverage × horizon) is a point at (mean predicted probability, realised rate)
on log axes: a calibrated model's points sit on the diagonal, inside the shaded band
realised/predicted ∈ [0.8, 1.25]. The judged probability's points (the engine's, or with
`--prob` a learned model's or a blend) carry the 90 % month-block interval of
their ratio as a vertical
bar; the GBM baseline's are drawn hollow beside them, so the fat-tail
fix (baseline under the band at low leverage) and the high-leverage one (above it) show at a
glance. Cells realised under the counting floor are drawn faint.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from bti_core.risk.backtest import CALIBRATED

_SIDE_COLOUR = {"long": "#16a34a", "short": "#dc2626"}
_BASELINE = "#64748b"


def calibration_figure(cells: pd.DataFrame, title: str = "", prob: str = "engine") -> go.Figure:
    """Reliability diagram of a backtest's cells (`BacktestResult.cells`), the probability
    ``prob`` judged (`BacktestResult.prob`: the engine's, a learned model's or a blend)."""
    if cells.empty:
        raise ValueError("no cells to draw: the backtest priced no positions")
    c = cells.assign(
        label=[
            f"{s} {lev}× {h} h"
            for s, lev, h in zip(cells["side"], cells["leverage"], cells["horizon"], strict=True)
        ],
    )
    floor = 1e-4  # log axes: a cell with no liquidations is drawn at the floor
    pred = pd.concat([c[f"{prob}_mean"], c["baseline_mean"]]).clip(lower=floor)
    real = c["realised"].clip(lower=floor)
    lo = float(min(pred.min(), real.min())) / 1.5
    hi = min(1.0, float(max(pred.max(), real.max())) * 1.5)
    x = np.geomspace(lo, hi, 50)
    fig = go.Figure()
    fig.add_trace(  # the band, as a closed polygon between 0.8·x and 1.25·x
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([x * CALIBRATED[1], (x * CALIBRATED[0])[::-1]]),
            fill="toself",
            fillcolor="rgba(37, 99, 235, 0.10)",
            line={"width": 0},
            name=f"calibrated (×{CALIBRATED[0]}–{CALIBRATED[1]})",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=x,
            mode="lines",
            line={"color": "#2563eb", "dash": "dot", "width": 1},
            name="realised = predicted",
            hoverinfo="skip",
        )
    )
    for side, g in c.groupby("side"):
        colour = _SIDE_COLOUR.get(str(side), "#7c3aed")
        ep = g[f"{prob}_mean"].clip(lower=floor)
        y = g["realised"].clip(lower=floor)
        fig.add_trace(
            go.Scatter(
                x=g["baseline_mean"].clip(lower=floor),
                y=y,
                mode="markers",
                marker={
                    "symbol": "circle-open",
                    "size": 9,
                    "color": _BASELINE,
                    "opacity": [1.0 if k else 0.35 for k in g["counted"]],
                },
                name=f"{side}: GBM baseline",
                customdata=np.column_stack([g["label"], g["baseline_ratio"]]),
                hovertemplate=(
                    "%{customdata[0]} baseline<br>predicted %{x:.3%}, realised %{y:.3%}"
                    "<br>realised/predicted %{customdata[1]:.2f}<extra></extra>"
                ),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=ep,
                y=y,
                mode="markers+text",
                marker={
                    "size": 10,
                    "color": colour,
                    "opacity": [1.0 if k else 0.35 for k in g["counted"]],
                },
                # labelled where the points stand apart; the crowd near 100 % has hover text
                text=[
                    f"{lev}×{h}" if p < 0.15 else ""
                    for lev, h, p in zip(g["leverage"], g["horizon"], ep, strict=True)
                ],
                # longs above left, shorts below right: the two sides' cells often coincide
                textposition="top left" if side == "long" else "bottom right",
                textfont={"size": 10, "color": colour},
                error_y={  # the ratio's interval, as realised rates at the judged prediction
                    "type": "data",
                    "symmetric": False,
                    "array": (g["ratio_hi"] * g[f"{prob}_mean"] - g["realised"]).clip(lower=0),
                    "arrayminus": (g["realised"] - g["ratio_lo"] * g[f"{prob}_mean"]).clip(lower=0),
                    "color": colour,
                    "thickness": 1,
                },
                name=f"{side}: {prob}",
                customdata=np.column_stack(
                    [g["label"], g["ratio"], g["ratio_lo"], g["ratio_hi"], g["counted"]]
                ),
                hovertemplate=(
                    "%{customdata[0]} " + prob + "<br>predicted %{x:.3%}, realised %{y:.3%}"
                    "<br>realised/predicted %{customdata[1]:.2f} "
                    "(90 %: %{customdata[2]:.2f}–%{customdata[3]:.2f})"
                    "<br>counted: %{customdata[4]}<extra></extra>"
                ),
            )
        )
    ticks = [m * 10.0**e for e in range(-4, 1) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    axis = {
        "type": "log",
        "range": [np.log10(lo), np.log10(hi)],
        "tickvals": ticks,
        "tickformat": ".2~%",
    }
    fig.update_layout(
        title={
            # the verdict line's parts (engine | baseline | cells) one to a line
            "text": (title or "Backtest: realised against predicted, per cell").replace(
                " | ", "<br>"
            ),
            "x": 0,
            "font": {"size": 13},
        },
        xaxis={**axis, "title": "mean predicted probability of liquidation"},
        yaxis={**axis, "title": "realised liquidation rate"},
        height=760,
        width=780,
        legend={"orientation": "h", "y": -0.12},
        margin={"l": 60, "r": 20, "t": 90, "b": 60},
    )
    return fig
