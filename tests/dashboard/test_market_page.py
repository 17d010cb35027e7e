"""The Market page under Streamlit's AppTest, on demo data in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_market_page_shows_symbol_figures_and_chart(filled: Path, demo: dict) -> None:
    at = _app()
    assert at.title[0].value == "Market"
    assert at.selectbox(key="market_symbol").value == "BTCUSDT"
    metrics = {m.label: m.value for m in at.metric}
    last_close = demo["BTCUSDT"].ohlcv["close"].iloc[-1]
    assert metrics["Last price"] == f"{last_close:,.2f}"
    assert metrics["Funding (8 h)"].endswith("%")
    assert len(at.get("plotly_chart")) == 1  # the market; its context is drawn when opened
    at.session_state["market_context"] = True
    at.run()
    assert len(at.get("plotly_chart")) == 2  # and its context (basis, funding)
    captions = "\n".join(c.value for c in at.caption)
    assert "No open interest or long/short ratio stored" in captions  # none imported here
    reports = "\n".join(t.value for t in at.text)
    assert "2 exchange listing placeholders, removed" in reports


def test_symbol_timeframe_and_range_switch(filled: Path, demo: dict) -> None:
    at = _app()
    at.selectbox(key="market_symbol").select("ETHUSDT").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Last price"] == f"{demo['ETHUSDT'].ohlcv['close'].iloc[-1]:,.2f}"
    reports = "\n".join(t.value for t in at.text)
    assert "ETHUSDT ohlcv 1h" in reports and "not filled" in reports
    at.selectbox(key="market_timeframe").select("1d").run()
    at.selectbox(key="market_range").select("All").run()
    at.multiselect(key="market_indicators").set_value(["macd", "atr", "obv"]).run()
    assert not at.exception


def test_empty_warehouse_says_what_to_do(data_dir: Path) -> None:
    at = _app()
    assert "No market data yet" in at.info[0].value


def test_custom_range_and_candle_cap(filled: Path, demo: dict) -> None:
    at = _app()
    at.selectbox(key="market_range").select("Custom…").run()
    assert not at.exception
    at.date_input(key="market_dates").set_value(
        (demo["BTCUSDT"].ohlcv["ts"].iloc[100].date(), demo["BTCUSDT"].ohlcv["ts"].iloc[200].date())
    ).run()
    assert not at.exception
    assert "bars at 1h" in at.caption[0].value
    at.selectbox(key="market_range").select("All").run()
    at.selectbox(key="market_timeframe").select("1h").run()
    assert not at.exception


def test_an_interrupted_first_import_is_not_offered(filled: Path) -> None:
    """Before, a writer killed during a new symbol's first file left a temp Parquet file that
    listed the symbol, and choosing it raised IndexError; an empty dataset did the same."""
    import pandas as pd

    wh = filled / "warehouse"
    half = wh / "ohlcv" / "DOGEUSDT"
    half.mkdir(parents=True)
    (half / ".tmp-999999-1-1h.parquet").write_bytes(b"PAR1 half a file")
    empty = wh / "ohlcv" / "XRPUSDT"
    empty.mkdir(parents=True)
    frame = pd.DataFrame({"ts": pd.Series([], dtype="datetime64[us, UTC]"), "open": []})
    frame.to_parquet(empty / "1h.parquet")
    at = _app()
    assert at.selectbox(key="market_symbol").options == ["BTCUSDT", "ETHUSDT"]


def test_forecasts_show_what_the_worker_cached(filled: Path) -> None:
    from bti_core.market.warehouse import Warehouse
    from bti_core.risk.forecast_store import refresh_due

    at = _app()
    captions = " ".join(c.value for c in at.caption)
    assert "No forecast for BTCUSDT yet" in captions and "bti forecast BTCUSDT" in captions
    seen: dict = {}
    wh = Warehouse(filled / "warehouse")
    assert refresh_due(wh, filled / "forecasts", seen) == 2  # BTC and ETH, price and vol
    assert refresh_due(wh, filled / "forecasts", seen) == 0  # the same hour: nothing to fit
    # an evaluation that picks another forecaster is followed at once, not an hour later
    (filled / "forecasts" / "skill.json").write_text('{"best": {"vol": "garch"}}')
    assert refresh_due(wh, filled / "forecasts", seen) == 2
    assert list((filled / "forecasts").glob("BTCUSDT_vol_garch_*.json"))
    (filled / "forecasts" / "skill.json").unlink()
    assert refresh_due(wh, filled / "forecasts", seen) == 2  # back to the shipped choice
    at = _app()
    assert len(at.get("plotly_chart")) == 3  # the market and the two forecast fans
    captions = " ".join(c.value for c in at.caption)
    # no evaluation here: the development data's, shipped, chose them and says how they scored
    # in a trader's words (what the forecaster reads, how often its bands held); the scores
    # and the command that makes them one click away
    assert "read from today's price spread by its recent swings (a random walk). " in captions
    assert "read from the swings of the last day, week and month together (HAR). " in captions
    assert "Tested on past data 24 h ahead, the outcome fell inside the darker band" in captions
    scoring = [e for e in at.expander if e.label == "How it was scored"]
    assert len(scoring) == 2
    inside = [c.value for e in scoring for c in e.caption]
    scored = " ".join(inside)
    plain = " ".join(c.value for c in at.caption if c.value not in inside)  # the expanders' too
    assert "CRPS" not in plain and "bti forecast" not in plain
    assert "In the development data's evaluation (226 origins" in scored
    assert "its 80 % interval held the outcome" in scored and "CRPS" in scored


def test_chart_legends_sit_under_the_plot_clear_of_titles_and_dates(
    filled: Path, demo: dict
) -> None:
    """Legends were drawn over the chart's title (above the plot) or over the dates (at
    y = −0.15 with a 10 px bottom margin)."""
    import json

    at = _app()  # three indicators by default: the legend wraps
    at.session_state["market_context"] = True  # its chart too
    at.run()
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert charts
    for spec in charts:
        layout = spec["layout"]
        legend = layout.get("legend", {})
        if layout.get("showlegend") is False or not legend:
            continue
        plot = layout["height"] - layout["margin"]["t"] - layout["margin"]["b"]
        assert legend["yanchor"] == "top" and legend["y"] * plot <= -40, legend  # below dates
        assert layout["margin"]["b"] >= 60, layout["margin"]  # with room for it


def test_bar_colours_are_one_colour_a_trace(filled: Path, demo: dict) -> None:
    """Volume and funding bars coloured up/down by an array of numbers on a colour scale made
    plotly.js log a warning with a stack trace for every bar (0.45 s of the Market's draw):
    each trace now has one colour, green for the bars that closed at or above their open."""
    import json

    from dashboard.charts import DOWN, UP

    at = _app()
    at.session_state["market_context"] = True
    at.run()
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert specs[0]["layout"]["barmode"] == "overlay"  # not side by side at half width
    traces = [t for spec in specs for t in spec["data"]]
    for t in traces:
        colour = t.get("marker", {}).get("color")
        assert colour is None or isinstance(colour, str), (t.get("name"), type(colour))
    candles = next(t for t in traces if t["type"] == "candlestick")
    volume = {t["marker"]["color"]: t for t in traces if t.get("name") == "volume (USDT)"}
    assert set(volume) == {UP, DOWN}
    assert [volume[UP]["showlegend"], volume[DOWN]["showlegend"]] == [True, False]  # one entry
    up_times = set(volume[UP]["x"])
    down_times = set(volume[DOWN]["x"])
    assert not up_times & down_times
    assert len(up_times) + len(down_times) == len(candles["x"])
    rising = {
        x
        for x, o, c in zip(
            candles["x"], _values(candles["open"]), _values(candles["close"]), strict=True
        )
        if c >= o
    }
    assert up_times == rising


def _values(field: object) -> list[float]:
    """A plotly JSON array: a list, or numpy's typed array as {dtype, bdata} (base64)."""
    import base64

    import numpy as np

    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"]).tolist()
    return list(field)  # type: ignore[call-overload]


def test_a_new_bar_is_shown_on_the_next_run(filled: Path, demo: dict) -> None:
    """The Market's view is kept between runs while the stored files are the same; a bar
    written by another process (an import, the live feed, a replay) is on the next run, a
    corrected bar too (the same times: only the files' versions tell)."""
    import pandas as pd

    from bti_core.market.warehouse import Warehouse

    at = _app()
    before = {m.label: m.value for m in at.metric}["Last price"]
    wh = Warehouse(filled / "warehouse")
    last = wh.latest("ohlcv", "BTCUSDT", "1h").to_frame().T.infer_objects()
    last[["open", "high", "low", "close"]] = [[1234.5, 1240.0, 1230.0, 1234.5]]
    wh.write("ohlcv", "BTCUSDT", "1h", last)  # the last bar corrected
    at.run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Last price"] == "1,234.50" != before

    new = last.copy()
    new["ts"] = new["ts"] + pd.Timedelta(hours=1)
    new[["open", "high", "low", "close"]] = [[1234.5, 1250.0, 1230.0, 1245.5]]
    wh.write("ohlcv", "BTCUSDT", "1h", new)  # a new bar
    at.run()
    assert {m.label: m.value for m in at.metric}["Last price"] == "1,245.50"
