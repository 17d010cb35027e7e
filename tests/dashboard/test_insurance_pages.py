"""Buy Insurance and My Policies under AppTest: quote, explanation, purchase, listing."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]


def _page(name: str, user: str = "trader", password: str = "trader-demo") -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=120)
    return sign_in(at, user, password)


def test_pages_ask_for_sign_in_and_refuse_a_wrong_password(filled: Path) -> None:
    at = AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert "Demo accounts" in at.caption[0].value
    assert not at.metric  # nothing of the page before sign-in
    sign_in(at, "trader", "wrong-password")
    assert "Wrong username or password" in at.error[0].value


def test_quote_then_buy_then_listed(filled: Path) -> None:
    at = _page("buy_insurance.py")
    assert "Describe the order" in at.info[0].value
    at.button(key="buy_quote").click().run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert {"Liquidation price", "P(liquidation)", "Risk index", "Premium (USDT)"} <= set(labels)
    assert len(at.get("plotly_chart")) == 1  # the factor breakdown
    p_liq = next(m for m in at.metric if m.label == "P(liquidation)")
    assert p_liq.proto.delta.startswith("± ") and p_liq.proto.direction == p_liq.proto.NONE
    model = next(c.value for c in at.caption if c.value.startswith("Model: GJR-GARCH-t"))
    assert "a year" in model and "trend" in model
    assert not at.error
    # an empty wallet: a clear error, nothing bought
    at.button(key="buy_go").click().run()
    assert not at.exception
    assert "holds 0.00 BTI" in at.error[0].value and "faucet" in at.error[0].value
    assert {m.label: m.value for m in at.metric}["BTI balance"] == "0.00"
    at.button(key="faucet").click().run()
    assert {m.label: m.value for m in at.metric}["BTI balance"] == "1,000.00"
    at.button(key="buy_quote").click().run()
    at.button(key="buy_go").click().run()
    assert not at.exception, at.exception
    assert not at.error
    assert "is active until" in at.success[0].value
    assert "/chain_explorer?q=0x" in at.success[0].value  # the premium's transaction
    balance = float(str({m.label: m.value for m in at.metric}["BTI balance"]).replace(",", ""))
    assert balance < 1000

    mine = _page("my_policies.py")
    assert {m.label: m.value for m in mine.metric}["Active policies"] == "1"
    assert len(mine.dataframe) == 1
    assert mine.dataframe[0].value["purchase_tx"].iloc[0].startswith("/chain_explorer?q=0x")
    assert any("premium_collected" in md.value for md in mine.markdown)


def test_bad_cover_shows_the_reason_and_buys_nothing(filled: Path) -> None:
    at = _page("buy_insurance.py")
    at.number_input(key="buy_cov").set_value(10_000_000.0).run()
    at.button(key="buy_quote").click().run()
    assert not at.exception
    reasons = " ".join(e.value for e in at.error)
    assert "exceeds the order's margin" in reasons
    assert at.button(key="buy_go").disabled
    mine = _page("my_policies.py")
    assert "No policies yet" in mine.info[0].value


def test_zero_quantity_is_refused(filled: Path) -> None:
    at = _page("buy_insurance.py")
    at.number_input(key="buy_qty").set_value(0.0).run()
    at.button(key="buy_quote").click().run()
    assert not at.exception
    assert "quantity must be positive" in at.error[0].value


def test_an_order_too_large_for_leverage_is_refused_not_a_traceback(filled: Path) -> None:
    """Before, about 9,000 BTC made the leverage slider's min equal its max and the page
    raised StreamlitAPIException."""
    at = _page("buy_insurance.py")
    at.number_input(key="buy_qty").set_value(20_000.0).run()
    assert not at.exception, at.exception
    assert "largest bracket" in at.error[0].value and "Lower the quantity" in at.error[0].value
    at.number_input(key="buy_qty").set_value(0.1).run()
    assert not at.exception and at.slider(key="buy_lev").max == 100  # BTI's own cap, not 125
