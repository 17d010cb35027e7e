"""The Buy page offers the trader's linked positions (AppTest): picking one fills the order with
the exchange's numbers, the quote insures the exchange's liquidation price, and the purchase
is cover on that position; My Policies shows the position's changes in the policy's log."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.auth import ensure_demo_users
from bti_core.cli.common import open_services
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]


def test_a_linked_position_is_quoted_and_bought_from_the_buy_page(
    filled: Path, exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", exchange.url)
    svc = open_services()
    ensure_demo_users(svc.db)
    uid = exchange.add_account()
    spot = round(svc.risk.spot("ETHUSDT"), 2)
    exchange.open_position(uid, "ETHUSDT", "short", "2", spot, 10)
    account = svc.accounts.link("trader", "demo", *exchange.add_key(uid))
    [position] = svc.accounts.positions("trader")
    svc.chain.faucet(svc.insurance.wallet_of("trader").address, 1000)

    at = sign_in(AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120))
    assert at.radio(key="buy_what").value == "a position on my exchange account"
    label = at.selectbox(key="buy_position").options[0]
    assert f"#{position.id} · ETHUSDT short 2" in label
    assert label.endswith("BTI demo exchange (Binance protocol)")  # a demo says so
    shown = " ".join(m.value for m in at.markdown)
    assert "short 2 ETHUSDT" in shown and f"{position.liquidation_price:,.2f}" in shown
    at.button(key="buy_quote").click().run()
    assert not at.exception, at.exception
    assert "your exchange position" in at.subheader[-1].value
    lp = next(m for m in at.metric if m.label == "Liquidation price")
    assert lp.value == f"{float(position.liquidation_price or 0):,.2f}"
    at.button(key="buy_go").click().run()
    assert not at.exception, at.exception
    assert "is active until" in at.success[0].value
    [policy] = svc.insurance.policies("trader").to_dict("records")
    assert policy["linked_position"] == position.id

    exchange.change(uid, "ETHUSDT", "short", size="1")
    svc.accounts.sync(account.id)
    mine = sign_in(AppTest.from_file(str(ROOT / "pages" / "my_policies.py"), default_timeout=120))
    assert not mine.exception, mine.exception
    log = " ".join(md.value for md in mine.markdown)
    assert "The exchange reports the position was reduced: size 2 → 1" in log
    policies = mine.dataframe[1].value  # after the exchange accounts
    assert "short 10× · exchange #" in policies["position"].iloc[0]
    # and the described order stays one click away
    at.radio(key="buy_what").set_value("an order I describe").run()
    assert not at.exception and at.selectbox(key="buy_symbol")
    svc.close()


def test_adl_cover_is_quoted_and_bought_on_a_linked_position_from_the_buy_page(
    filled: Path, exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", exchange.url)
    svc = open_services()
    ensure_demo_users(svc.db)
    uid = exchange.add_account()
    spot = round(svc.risk.spot("BTCUSDT"), 2)
    exchange.open_position(uid, "BTCUSDT", "long", "0.1", spot, 10)
    svc.accounts.link("trader", "demo", *exchange.add_key(uid))
    [position] = svc.accounts.positions("trader")
    svc.chain.faucet(svc.insurance.wallet_of("trader").address, 1000)

    at = sign_in(AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120))
    at.radio(key="buy_peril").set_value("auto-deleveraging (ADL)").run()
    assert not at.exception, at.exception
    cap = round(float(position.margin) * 0.25, 2)
    [coverage] = [n for n in at.number_input if n.label == "Coverage (USDT)"]
    assert coverage.value == pytest.approx(cap)  # a quarter of the margin at most
    assert "Share of the lost margin paid" not in [s.label for s in at.slider]
    at.button(key="buy_quote").click().run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    assert "P(auto-deleveraging)" in shown and "Liquidation price" not in shown
    assert shown["ADL queue"] == "2 of 4"
    assert shown["Pays if deleveraged (BTI)"] == f"{cap:,.2f}"
    at.button(key="buy_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [policy] = svc.insurance.policies("trader").to_dict("records")
    assert policy["linked_position"] == position.id and policy["peril"] == "adl"
    mine = sign_in(AppTest.from_file(str(ROOT / "pages" / "my_policies.py"), default_timeout=120))
    assert not mine.exception, mine.exception
    assert mine.dataframe[1].value["position"].iloc[0].endswith("· ADL cover")
    svc.close()


def test_my_policies_links_lists_and_removes_exchange_accounts(
    filled: Path, exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", exchange.url)
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "long", "0.01", 60_000, 10)
    at = sign_in(AppTest.from_file(str(ROOT / "pages" / "my_policies.py"), default_timeout=120))
    assert not at.exception, at.exception
    trading = exchange.add_key(uid, enableFutures=True)
    at.selectbox(key="link_exchange").set_value("demo")
    at.text_input(key="link_key").input(trading[0])
    at.text_input(key="link_secret").input(trading[1])
    submit = next(b for b in at.button if b.label == "Link the account")
    submit.click().run()
    assert not at.exception, at.exception
    assert "can also trade" in at.error[0].value
    key, secret = exchange.add_key(uid)
    at.selectbox(key="link_exchange").set_value("demo")
    at.text_input(key="link_key").input(key)
    at.text_input(key="link_secret").input(secret)
    at.text_input(key="link_label").input("main")
    next(b for b in at.button if b.label == "Link the account").click().run()
    assert not at.exception, at.exception
    assert "is linked" in at.success[0].value
    table = at.dataframe[0].value
    assert table["label"].iloc[0] == "main" and table["open positions"].iloc[0] == 1
    assert table["key"].iloc[0] == f"…{key[-4:]}"
    # no secret anywhere on the page: not in its text, its table or its (cleared) inputs
    shown = " ".join(
        [*(m.value for m in at.markdown), *(t.value for t in at.text_input), table.to_string()]
    )
    assert key not in shown and secret not in shown
    at.button(key="remove_account_go").click().run()
    assert not at.exception and "key and secret are wiped" in at.success[0].value
