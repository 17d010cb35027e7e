"""Chain Explorer under AppTest, on the session's anvil node with a real purchase."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
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
    assert metrics["Reserves (BTI)"] == "1M"  # the seed capital, compact in a row of six
    help_ = next(m.help for m in at.metric if m.label == "Reserves (BTI)")
    assert help_.startswith("1.00M:")  # the exact figure one hover away
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
    # amounts in BTI with separators, the expiry as a date; never raw 18-decimal integers
    bought = events.loc[events["event"] == "PolicyPurchased", "details"].iloc[0]
    assert re.search(r"premium \d[\d,]*\.\d\d BTI", bought) and " UTC" in bought, bought
    assert not re.search(r"\d{12,}", " ".join(events["details"])), events["details"].tolist()
    assert [c.value for c in at.code] == [tx]  # the hash, with a copy button
    assert any("gas used " in md.value and re.search(r"\d,\d{3}", md.value) for md in at.markdown)
    assert {m.label: m.value for m in at.metric}["Policies"] == "1"
    assert len(at.get("plotly_chart")) == 1  # the pool's flows

    at.text_input(key="explorer_q").set_value("policy 1").run()
    assert at.subheader[0].value == "Policy #1 · active"
    assert dict(at.query_params) == {"q": "policy 1"}  # a link to this result

    wallet = CustodialWallets.at(filled / "wallet.secret").of("trader").address
    at.text_input(key="explorer_q").set_value(wallet).run()
    assert at.subheader[0].value == f"Address {wallet}"
    assert any("Policy #1" in m.value for m in at.markdown)  # the policy token it holds
    assert [t.label for t in at.tabs][:2] == ["Token transfers (2)", "Policy tokens (1)"]
    transfers = at.dataframe[0].value  # the faucet in, the premium out
    assert set(transfers["direction"]) == {"in", "out"}
    assert transfers["bti"].sum() == pytest.approx(
        float({m.label: m.value for m in at.metric}["BTI"].replace(",", ""))
    )
    assert transfers["time"].notna().all()

    at.text_input(key="explorer_q").set_value("1").run()
    assert at.subheader[0].value == "Block 1"


def test_bad_searches_say_what_is_allowed(filled: Path) -> None:
    at = _explorer("hello")
    assert "Nothing found" in at.error[0].value and "enter a block number" in at.code[0].value
    at.text_input(key="explorer_q").set_value("999999").run()
    assert "no block 999999: the chain's head is block" in at.code[0].value
    at.text_input(key="explorer_q").set_value("policy 42").run()
    assert "no policy 42 on-chain" in at.code[0].value
    at.text_input(key="explorer_q").set_value("0x" + "ab" * 32).run()
    assert "no transaction 0xabab" in at.code[0].value


def test_a_link_cannot_put_markdown_into_the_error_box(filled: Path) -> None:
    """`?q=` is the user's (or a link's) text: it is shown verbatim as code, so a crafted link
    cannot draw its own links or images under the page's name."""
    crafted = "![pay here](http://127.0.0.1:9/x.png) [claim now](http://127.0.0.1:9/)"
    at = _explorer(crafted)
    assert not at.exception
    assert crafted in at.code[0].value  # verbatim, as code
    shown = " ".join(e.value for e in at.error) + " ".join(m.value for m in at.markdown)
    assert "](http" not in shown  # no markdown element carries the link


def test_the_app_redeploys_nothing_on_restart(filled: Path) -> None:
    """A second connect finds the recorded deployment (same addresses, balances kept)."""
    first = connect(get_settings())
    x = CustodialWallets.at(filled / "wallet.secret").of("x").address
    first.faucet(x, Decimal(5))
    again = connect(get_settings())
    assert again.deployment == first.deployment
    assert again.balance(x) == Decimal(5)
