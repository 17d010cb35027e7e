"""The Risk Queries read model on a hand-computed book: filters, views, the liquidation map,
the stress result, and the report's formats agreeing with each other."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from bti_core.analytics.book import COLUMNS
from bti_core.analytics.filters import BookFilter, FilterError
from bti_core.analytics.report import build_report, pdf_safe
from bti_core.analytics.views import (
    claims_summary,
    exposure,
    liquidation_map,
    loss_ratio_over_time,
    risk_index_distribution,
    stress,
    totals,
)

NOW = pd.Timestamp("2024-06-30 12:00", tz="UTC")


def policy(i: int, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "policy": i,
        "trader": "alice",
        "symbol": "BTCUSDT",
        "side": "long",
        "order_type": "market",
        "margin_mode": "isolated",
        "leverage": 10.0,
        "leverage_bucket": "5–10×",
        "duration_hours": 24.0,
        "duration_bucket": "≤1 day",
        "entry_price": 100.0,
        "liquidation_price": 90.0,
        "coverage": 100.0,
        "payout": 100.0,
        "premium": 10.0,
        "probability": 0.05,
        "risk_index": 40.0,
        "status": "active",
        "start": NOW - pd.Timedelta(hours=2),
        "end": NOW + pd.Timedelta(hours=22),
        "trend": "sideways",
        "vol_regime": "normal",
        "claim": pd.NA,
        "claim_state": None,
        "claim_opened": pd.NaT,
        "decided": pd.NaT,
        "referred": False,
        "hours_to_decision": np.nan,
        "amount_paid": 0.0,
    }
    row.update(kw)
    row["expected_loss"] = float(row["probability"]) * float(row["payout"])  # type: ignore[arg-type]
    row["realised_loss"] = row["amount_paid"]
    return row


@pytest.fixture
def book() -> pd.DataFrame:
    """Mark 100. Five open BTC policies (three longs, two shorts), one paid claim, one ETH."""
    rows = [
        policy(1, liquidation_price=90.0, payout=100.0),
        policy(2, liquidation_price=80.0, payout=200.0, leverage=5.0, leverage_bucket="≤5×"),
        policy(
            3,
            liquidation_price=95.0,
            payout=50.0,
            leverage=20.0,
            leverage_bucket="10–20×",
            trader="bob",
        ),
        policy(4, side="short", liquidation_price=110.0, payout=300.0, trend="up"),
        policy(
            5,
            side="short",
            liquidation_price=125.0,
            payout=400.0,
            vol_regime="high",
            order_type="limit",
        ),
        policy(
            6,
            status="paid",
            liquidation_price=97.0,
            payout=80.0,
            premium=8.0,
            claim=1,
            claim_state="paid",
            claim_opened=NOW - pd.Timedelta(days=40),
            decided=NOW - pd.Timedelta(days=40) + pd.Timedelta(minutes=30),
            hours_to_decision=0.5,
            amount_paid=80.0,
            start=NOW - pd.Timedelta(days=41),
            end=NOW - pd.Timedelta(days=38),
        ),
        policy(
            7,
            symbol="ETHUSDT",
            liquidation_price=1800.0,
            entry_price=2000.0,
            payout=60.0,
            trader="bob",
            margin_mode="cross",
            duration_hours=100.0,
            duration_bucket="3–7 days",
        ),
        policy(8, status="declined", premium=12.0, payout=70.0),
    ]
    f = pd.DataFrame(rows)
    f["claim"] = f["claim"].astype("Int64")
    return f[COLUMNS]


def test_liquidation_map_against_the_hand_computed_book(book: pd.DataFrame) -> None:
    m = liquidation_map(book, "BTCUSDT", 100.0, span=0.3, levels=7)  # 70, 80, …, 130
    assert m["price"].round(6).tolist() == [70, 80, 90, 100, 110, 120, 130]
    # longs open on BTC: LP 90 (100), 80 (200), 95 (50); the paid and declined ones are out
    assert m["long"].tolist() == [350, 350, 150, 0, 0, 0, 0]
    # shorts: LP 110 (300), 125 (400)
    assert m["short"].tolist() == [0, 0, 0, 0, 300, 300, 700]
    assert m["policies"].tolist() == [3, 3, 2, 0, 1, 1, 2]
    assert (m["claimed"] == m["long"] + m["short"]).all()


def test_stress_claims_payout_and_reserves(book: pd.DataFrame) -> None:
    s = stress(book, "BTCUSDT", -0.2, 100.0, now=NOW, reserves=10_000.0, locked=1_300.0)
    assert (s.claims, s.payout, s.traders) == (3, 350.0, 2)  # LPs 90, 80, 95 all ≥ 80
    assert s.reserves_after == 9_650.0 and s.locked_after == 950.0
    assert s.free_after == 8_700.0  # paying releases the same cover: free is unchanged
    small = stress(book, "BTCUSDT", -0.07, 100.0, now=NOW)  # 93: only LP 95
    assert (small.claims, small.payout, small.reserves_after) == (1, 50.0, None)
    up = stress(book, "BTCUSDT", 0.2, 100.0, now=NOW)  # 120: the short at 110 only
    assert (up.claims, up.payout) == (1, 300.0)
    # a policy whose window closed is not claimed
    later = stress(book, "BTCUSDT", -0.2, 100.0, now=NOW + pd.Timedelta(days=2))
    assert later.claims == 0


def test_totals_and_exposure(book: pd.DataFrame) -> None:
    t = totals(book)
    assert t.policies == 8 and t.open_policies == 6 and t.traders == 2
    assert t.open_cover == 100 + 200 + 50 + 300 + 400 + 60
    assert t.premiums == 10 * 6 + 8  # the declined purchase collected nothing
    assert t.realised_loss == 80 and t.loss_ratio == pytest.approx(80 / 68)
    by = exposure(book, "symbol").set_index("symbol")
    assert by.loc["BTCUSDT", "open_cover"] == 1050 and by.loc["ETHUSDT", "open_cover"] == 60
    assert by.loc["BTCUSDT", "expected_loss"] == pytest.approx(
        0.05 * (100 + 200 + 50 + 300 + 400 + 80)
    )
    lev = exposure(book, "leverage_bucket")
    assert lev["leverage_bucket"].tolist() == ["≤5×", "5–10×", "10–20×"]  # in bucket order
    hist = risk_index_distribution(book)
    assert hist["policies"].sum() == 8 and hist.loc[4, "policies"] == 8  # all at 40


def test_claims_summary_and_loss_ratio_over_time(book: pd.DataFrame) -> None:
    c = claims_summary(book)
    assert c.by_state.to_dict("records") == [
        {"state": "paid", "claims": 1, "claimed": 80.0, "paid": 80.0}
    ]
    assert (c.automatic, c.referred, c.undecided) == (1, 0, 0)
    assert c.median_hours_to_decision == 0.5
    lr = loss_ratio_over_time(book)
    may = lr[lr["period"] == pd.Timestamp("2024-05-01")].iloc[0]
    assert may["premiums"] == 8 and may["loss_ratio"] == 10.0 / 1 * 1.0  # 80 / 8
    assert lr["cumulative_loss_ratio"].iloc[-1] == pytest.approx(80 / 68)


@pytest.mark.parametrize(
    ("params", "kept"),
    [
        ({}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"symbol": "ethusdt"}, [7]),
        ({"side": "short"}, [4, 5]),
        ({"type": "limit"}, [5]),
        ({"margin": "cross"}, [7]),
        ({"lev": "≤5×,10–20×"}, [2, 3]),
        ({"dur": "3–7 days"}, [7]),
        ({"trend": "up"}, [4]),
        ({"vol": "high"}, [5]),
        ({"status": "paid,declined"}, [6, 8]),
        ({"trader": "bob"}, [3, 7]),
        ({"range": "30d"}, [1, 2, 3, 4, 5, 7, 8]),
        ({"range": "custom", "from": "2024-05-01", "to": "2024-05-31"}, [6]),
        ({"side": "long", "status": "active", "symbol": "BTCUSDT"}, [1, 2, 3]),
    ],
)
def test_each_filter_keeps_what_it_should(
    book: pd.DataFrame, params: dict, kept: list[int]
) -> None:
    f = BookFilter.from_params(params)
    assert f.apply(book, NOW)["policy"].tolist() == kept
    # the URL round trip gives the same filter
    assert BookFilter.from_params(f.to_params()) == f


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"side": "sideways"}, "side: 'sideways' is not allowed; choose from long, short"),
        ({"range": "2w"}, "range: '2w' is not allowed"),
        ({"from": "yesterday-ish"}, "from: 'yesterday-ish' is not a date"),
        ({"from": "2024-06-02", "to": "2024-06-01"}, "is after to"),
        ({"symbol": "BTC;DROP TABLE"}, "is not a symbol"),
        ({"lev": "7x"}, "lev: '7x' is not allowed; choose from ≤5×"),
    ],
)
def test_bad_filters_say_what_is_allowed(params: dict, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(")):
        BookFilter.from_params(params)


def test_a_trader_sees_only_their_own_book(book: pd.DataFrame) -> None:
    f = BookFilter.from_params({"trader": "alice"}).for_user("bob", underwriter=False)
    assert set(f.apply(book, NOW)["trader"]) == {"bob"}
    uw = BookFilter.from_params({}).for_user("una", underwriter=True)
    assert len(uw.apply(book, NOW)) == len(book)


def test_text_csv_html_and_pdf_give_the_same_numbers(book: pd.DataFrame) -> None:
    flt = BookFilter.from_params({"symbol": "BTCUSDT"})
    sel = flt.apply(book, NOW)
    rep = build_report(sel, flt, now=NOW)
    t = totals(sel)
    text = rep.text()
    assert f"{t.policies:,} policies" in text and f"{t.open_cover:,.2f} BTI of cover" in text
    assert "symbol BTCUSDT" in text
    csv = pd.read_csv(io.BytesIO(rep.csv()))
    assert csv["policy"].tolist() == sel["policy"].tolist()
    assert csv["payout"].sum() == pytest.approx(sel["payout"].sum())
    assert f"{t.premiums:,.2f} BTI" in rep.html()
    pdf = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(rep.pdf())).pages)
    flat = " ".join(pdf.split())
    for s in rep.sentences():
        words = " ".join(pdf_safe(s).split())
        assert words[:60] in flat, words
    assert f"{t.open_cover:,.2f}" in flat


def test_the_reports_tables_show_ratios_as_percentages_under_pale_headings(
    book: pd.DataFrame,
) -> None:
    """The PDF's headings were filled with the bar chart's saturated blue, and loss ratios
    read 0.35 where the pages say 35.0 %."""
    from bti_core.analytics.report import cell_text

    assert cell_text("loss_ratio", 0.35) == "35.0%"
    assert cell_text("loss_ratio", float("nan")) == "–"
    assert cell_text("premiums", 1234.5) == "1,234.50" and cell_text("policies", 1200) == "1,200"
    flt = BookFilter.from_params({})
    rep = build_report(flt.apply(book, NOW), flt, now=NOW)
    ratios = rep.by_symbol["loss_ratio"].dropna()
    assert len(ratios)
    html = rep.html()
    assert f"<td>{ratios.iloc[0]:.1%}</td>" in html
    reader = PdfReader(io.BytesIO(rep.pdf()))
    flat = " ".join(" ".join(p.extract_text() or "" for p in reader.pages).split())
    assert f"{ratios.iloc[0]:.1%}" in flat
    stream = b"".join(p.get_contents().get_data() for p in reader.pages)  # type: ignore[union-attr]
    fills = set(re.findall(rb"([0-9.]+ [0-9.]+ [0-9.]+) rg", stream))
    # the bars' blue (31, 119, 180) and the headings' pale (232, 238, 246), nothing else
    assert fills == {b"0.1216 0.4667 0.7059", b"0.9098 0.9333 0.9647"}, fills
