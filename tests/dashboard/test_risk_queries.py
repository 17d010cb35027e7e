"""Risk Queries under AppTest, over a book bought through the real service path on the
session's anvil node: the filters and the URL, the trader's own view, the views' numbers
against the read model, and the report tab's sentences."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bti_core.analytics.book import load_book
from bti_core.analytics.filters import BookFilter
from bti_core.analytics.views import totals
from bti_core.config import get_settings
from bti_core.orders import Cover, Order
from bti_core.services import build_services
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]
# (trader, symbol, side, leverage, coverage)
BOOK = [
    ("trader", "BTCUSDT", "long", "10", "100"),
    ("trader", "BTCUSDT", "short", "20", "80"),
    ("trader", "ETHUSDT", "long", "5", "60"),
    ("tina", "BTCUSDT", "long", "50", "40"),
    ("tina", "ETHUSDT", "short", "3", "120"),
]


@pytest.fixture
def booked(recent: Path) -> Path:
    svc = build_services(get_settings())
    try:
        for trader, symbol, side, lev, cov in BOOK:
            svc.chain.faucet(svc.insurance.wallet_of(trader).address, Decimal(2000))
            spot = Decimal(str(round(svc.risk.spot(symbol), 2)))
            qty = Decimal("0.05") if symbol == "BTCUSDT" else Decimal("1")
            q = svc.insurance.quote(
                user_id=trader,
                order=Order(symbol, side, qty, spot, Decimal(lev)),
                cover=Cover(coverage=cov, duration_hours=48),
            )
            assert q.insurable, [c.message for c in q.failed]
            svc.insurance.buy(user_id=trader, quote_id=q.record.id)
    finally:
        svc.close()
    return recent


def page(user: str = "underwriter", password: str = "underwriter-demo", **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "risk_queries.py"), default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    return sign_in(at, user, password)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def expected(**params: str) -> tuple[int, str]:
    svc = build_services(get_settings())
    try:
        book = load_book(svc.db, svc.warehouse)
    finally:
        svc.close()
    import pandas as pd

    from dashboard.text import compact

    t = totals(BookFilter.from_params(params).apply(book, pd.Timestamp.now("UTC")))
    return t.policies, compact(t.open_cover)


def test_the_underwriter_sees_the_book_and_each_filter_narrows_it(booked: Path) -> None:
    at = page()
    assert not at.exception and not at.error
    assert metric(at, "Policies") == "5"
    assert metric(at, "Open cover (BTI)") == expected()[1]
    # side: the pills change the numbers and the URL, and only what they should
    at.pills(key="rq_sides").set_value(["short"]).run()
    n, cover = expected(side="short")
    assert (metric(at, "Policies"), metric(at, "Open cover (BTI)")) == (str(n), cover) and n == 2
    assert dict(at.query_params) == {"side": "short"}  # a link to this view
    at.multiselect(key="rq_symbols").set_value(["ETHUSDT"]).run()
    assert metric(at, "Policies") == "1"
    at.pills(key="rq_sides").set_value([]).run()
    assert metric(at, "Policies") == "2"  # both ETH policies
    at.multiselect(key="rq_traders").set_value(["tina"]).run()
    assert metric(at, "Policies") == "1"
    # the report tab (only the open tab runs) says the same
    at.session_state["rq_tab"] = "Report"
    at.run()
    report = "\n".join(m.value for m in at.markdown)
    assert "1 policy from 1 trader" in report and "trader tina" in report


def test_a_link_reproduces_the_view_and_a_bad_one_says_what_is_allowed(booked: Path) -> None:
    at = page(lev="≤5×", side="long")
    assert metric(at, "Policies") == "1"  # the ETH 5× long
    assert at.pills(key="rq_lev").value == ["≤5×"]
    bad = page(side="sideways")
    assert "not understood" in bad.error[0].value
    assert "side: 'sideways' is not allowed; choose from long, short" in bad.code[0].value
    assert metric(bad, "Policies") == "5"  # the whole book instead, nothing lost


def test_a_crafted_or_far_link_is_refused_as_text_without_crashing(booked: Path) -> None:
    crafted = "![x](http://127.0.0.1:9/x.png)"
    at = page(side=crafted)
    assert not at.exception and crafted in at.code[0].value  # verbatim, as code
    assert all("](http" not in e.value for e in [*at.error, *at.markdown])
    for far in ("9999-12-31", "1900-01-01", "3000-01-01"):
        at = page(range="custom", **{"from": far})
        assert not at.exception, far  # the date picker used to raise on a far date
        assert "outside the dates a book can hold" in at.code[0].value
        assert metric(at, "Policies") == "5"
    ok = page(range="custom", **{"from": "2020-01-01", "to": "2099-12-31"})
    assert not ok.exception and not ok.error and metric(ok, "Policies") == "5"


def test_a_trader_sees_only_their_own_policies(booked: Path) -> None:
    at = page("trader", "trader-demo", trader="tina")  # a link naming someone else's book
    assert metric(at, "Policies") == "3"
    assert not [w for w in at.multiselect if w.key == "rq_traders"]  # no trader filter
    at.session_state["rq_tab"] = "Report"
    at.run()
    report = "\n".join(m.value for m in at.markdown)
    assert "3 policies from 1 trader" in report and "tina" not in report


def test_every_tab_draws_its_view(booked: Path) -> None:
    import pandas as pd

    from bti_core.analytics.views import stress

    at = page()
    assert len(at.get("plotly_chart")) == 3  # the Book tab: exposure, risk index, loss ratio
    seen = {}
    labels = [t.label for t in at.tabs]
    assert labels[0] == "Book" and {"Liquidation map", "Claims", "Report"} <= set(labels)
    for tab in labels[1:]:
        at.session_state["rq_tab"] = tab
        at.run()
        assert not at.exception, (tab, at.exception)
        assert not at.error, (tab, [e.value for e in at.error])
        seen[tab] = at
        if tab == "Liquidation map":
            # the stress result is the read model's on the same book, mark and pool
            svc = build_services(get_settings())
            try:
                book = load_book(svc.db, svc.warehouse)
                sym = at.selectbox(key="rq_map_symbol").value
                pool = svc.chain.pool_stats()
                s = stress(
                    book,
                    sym,
                    -0.2,
                    svc.risk.spot(sym),
                    now=pd.Timestamp.now("UTC"),
                    reserves=float(pool.reserves),
                    locked=float(pool.locked),
                )
            finally:
                svc.close()
            assert metric(at, "Claims") == f"{s.claims:,}"
            assert metric(at, "Payout") == f"{s.payout:,.2f} BTI"
            at.slider(key="rq_stress").set_value(-50).run()
            assert int(metric(at, "Claims")) >= s.claims  # a deeper fall claims no fewer
            after = next(m for m in at.metric if m.label == "Pool reserves after")
            assert after.proto.delta.startswith("-")  # the payout taken from the reserves
            assert after.proto.color == after.proto.RED, after.proto  # drawn red, not green
            # the whole book against underwriting's caps (the filter does not narrow it)
            caps = next(d.value for d in at.dataframe if "cap" in d.value.columns)
            used = dict(zip(caps["what"], caps["open cover (USDT)"], strict=True))
            assert used["BTCUSDT"] == 220 and used["ETHUSDT"] == 180
            assert used["longs at 5–10×"] == 100 and used["shorts at ≤5×"] == 120
            assert used["longs at 20–50×"] == 40  # 50× is the band's top, inclusive
            # a 30 % fall claims every long here; a 30 % rise the 20× short, not the 3× one
            # (liquidated about 33 % up)
            assert used["a 30% fall of every symbol (claims longs)"] == 200
            assert used["a 30% rise of every symbol (claims shorts)"] == 80
            assert caps["cap (USDT)"].iloc[0] == 400_000  # 40 % of the 1,000,000 capacity
            # the crash scenarios: the cap's own ±30 % hour claims what the cap counts
            for key, payout in (("hour-30%", "200.00 BTI"), ("hour+30%", "80.00 BTI")):
                at.segmented_control(key="rq_scenario").set_value(key).run()
                assert metric(at, "Scenario payout") == payout, key
            at.segmented_control(key="rq_scenario").set_value("oct-10-2025").run()
            october = next(d.value for d in at.dataframe if "trough" in d.value.columns)
            moves = dict(zip(october["symbol"], october["move"], strict=True))
            assert moves == {"BTCUSDT": -0.15, "ETHUSDT": -0.21}
            # BTC's 10× long (liquidated about 9–10 % down) is claimed; ETH's 5× is not
            assert int(metric(at, "Scenario claims")) == int(october["claims"].sum()) >= 2
        if tab in ("Probability surface", "Reliability", "Market context"):
            assert at.get("plotly_chart"), tab
        if tab == "Reliability":
            assert "calibrated" in at.caption[-1].value  # the shipped dev-data backtest
        if tab == "Report":
            assert any("Largest open exposures" in m.value for m in at.markdown)
