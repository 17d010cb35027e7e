"""Chain Explorer under AppTest, on the session's anvil node with a real purchase."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from streamlit.testing.v1 import AppTest

from bti_core.chain.runtime import connect
from bti_core.chain.wallets import CustodialWallets
from bti_core.config import get_settings
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]


def _explorer(query: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "chain_explorer.py"), default_timeout=60)
    if query is not None:
        at.query_params["q"] = query
    at.run()
    assert not at.exception, at.exception
    return at


def _buy_through_the_buy_page() -> str:
    at = sign_in(AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120))
    at.button(key="faucet").click().run()
    at.button(key="buy_quote").click().run()
    at.button(key="buy_go").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    success = at.success[0].value
    return success[success.index("?q=") + 3 : success.index(")", success.index("?q="))]


def test_pool_books_latest_blocks_and_searches(filled: Path) -> None:
    at = _explorer()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Reserves (BTI)"] == "1.00M"  # the seed capital
    assert metrics["Utilisation"] == "0.00%"
    assert metrics["Policies"] == "0"
    blocks = at.dataframe[-1].value
    assert len(blocks) >= 5 and blocks["block"].is_monotonic_decreasing

    tx = _buy_through_the_buy_page()
    at = _explorer(tx)  # as the Buy page's link lands here
    assert at.subheader[0].value.startswith("Transaction 0x")
    assert any("buyPolicy" in m.value for m in at.markdown)
    events = at.dataframe[0].value
    assert "PolicyPurchased" in set(events["event"])
    assert {m.label: m.value for m in at.metric}["Policies"] == "1"
    assert len(at.get("plotly_chart")) == 1  # the pool's flows

    at.text_input(key="explorer_q").set_value("policy 1").run()
    assert at.subheader[0].value == "Policy #1 · active"

    wallet = CustodialWallets.at(filled / "wallet.secret").of("trader").address
    at.text_input(key="explorer_q").set_value(wallet).run()
    assert at.subheader[0].value == f"Address {wallet}"
    assert any("#1" in m.value for m in at.markdown)  # the policy token it holds

    at.text_input(key="explorer_q").set_value("1").run()
    assert at.subheader[0].value == "Block 1"


def test_bad_searches_say_what_is_allowed(filled: Path) -> None:
    at = _explorer("hello")
    assert "enter a block number" in at.error[0].value
    at.text_input(key="explorer_q").set_value("999999").run()
    assert "no block 999999: the chain's head is block" in at.error[0].value
    at.text_input(key="explorer_q").set_value("policy 42").run()
    assert "no policy 42 on-chain" in at.error[0].value
    at.text_input(key="explorer_q").set_value("0x" + "ab" * 32).run()
    assert "no transaction 0xabab" in at.error[0].value


def test_the_app_redeploys_nothing_on_restart(filled: Path) -> None:
    """A second connect finds the recorded deployment (same addresses, balances kept)."""
    first = connect(get_settings())
    x = CustodialWallets.at(filled / "wallet.secret").of("x").address
    first.faucet(x, Decimal(5))
    again = connect(get_settings())
    assert again.deployment == first.deployment
    assert again.balance(x) == Decimal(5)
