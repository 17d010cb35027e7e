"""On a chain that is not the local one, the Buy page buys with the trader's own browser wallet:
chromium with an EIP-1193 provider injected into the page (as MetaMask would) and backed by the
node's accounts (a mnemonic of its own, not anvil's published one), which connects, signs the
premium's permit (`eth_signTypedData_v4`) and lets BTI relay the purchase."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account
from playwright.sync_api import Browser, expect

from bti_core.chain.node import AnvilNode, free_port, rpc_call
from bti_core.chain.runtime import connect
from bti_core.config import Settings
from dashboard.launch import start_server
from tests.browser.conftest import fresh_page

pytestmark = pytest.mark.browser

PUBLIC_CHAIN = 8453
MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"

# what a wallet extension puts in the page: EIP-1193's request(), answered by the node (which
# holds the accounts' keys: it signs typed data for them as a wallet would)
INJECTED = """
window.ethereum = {
  isBtiTestWallet: true,
  async request({ method, params }) {
    const asked = method === "eth_requestAccounts" ? "eth_accounts" : method;
    const reply = await fetch(%r, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: asked, params: params || [] }),
    });
    const body = await reply.json();
    if (body.error) throw body.error;
    return body.result;
  },
};
"""


@pytest.fixture(scope="module")
def public_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    node = AnvilNode(
        tmp_path_factory.mktemp("pub"), port=free_port(), chain_id=PUBLIC_CHAIN, mnemonic=MNEMONIC
    )
    node.start()
    yield node
    node.stop(snapshot=False)


def test_a_trader_buys_cover_from_an_injected_wallet_off_the_local_chain(
    public_node: AnvilNode,
    browser: Browser,
    data_dir: Path,
    demo_now: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bti_core.auth import add_user
    from bti_core.services import build_services

    monkeypatch.setenv("BTI_RPC_URL", public_node.url)
    for name in ("admin", "claims", "quoter"):  # the operator's own keys, with gas
        acct = Account.create()
        rpc_call(public_node.url, "anvil_setBalance", [acct.address, hex(10**20)])
        monkeypatch.setenv(f"BTI_{name.upper()}_KEY", acct.key.hex())
    chain = connect(Settings(), deploy=True, seed_capital=Decimal(100_000))
    svc = build_services(Settings())
    for symbol in ("BTCUSDT", "ETHUSDT"):
        demo_now[symbol].ingest(svc.ingestor)
    add_user(svc.db, username="zoe", name="Zoe", role="trader", password="zoe-secret-42")
    [wallet] = rpc_call(public_node.url, "eth_accounts", [])[:1]
    chain._mint(wallet, Decimal(500))
    svc.close()

    log = (data_dir / "streamlit.log").open("w")
    proc, url = start_server(free_port(), os.environ, log=log)
    try:
        with fresh_page(browser, viewport={"width": 1500, "height": 1300}) as page:
            page.add_init_script(INJECTED % public_node.url)
            page.goto(f"{url}/buy_insurance")
            page.get_by_role("textbox", name="Username").fill("zoe")
            page.get_by_role("textbox", name="Password").fill("zoe-secret-42")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Signed in as Zoe")).to_be_visible()
            expect(page.get_by_text("Your own wallet pays the premium")).to_be_visible()
            page.get_by_role("button", name="Connect wallet").click()
            short = f"{wallet[:8]}…{wallet[-6:]}"
            expect(page.get_by_text(f"Wallet {short} (yours)")).to_be_visible()
            page.get_by_role("button", name="Get quote").click()
            buy = page.get_by_role("button", name="Sign and buy for")
            expect(buy).to_be_visible()
            buy.click()
            expect(page.get_by_text("is active until")).to_be_visible(timeout=60_000)

        after = build_services(Settings())
        [policy] = after.insurance.policies("zoe").to_dict("records")
        assert policy["status"] == "active"
        on_chain = after.chain.policy(int(policy["chain_policy"]))
        assert on_chain.owner.lower() == wallet.lower()  # the policy token is the trader's
        assert after.chain.balance(wallet) == Decimal(500) - Decimal(str(policy["premium"]))
        after.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
