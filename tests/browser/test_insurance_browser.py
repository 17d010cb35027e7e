"""The whole journey in a real browser, both roles, on the app's own local chain node, with a
screenshot of every page (tests/artifacts/): the trader's market, quote (a symbol switch, a
stale quote cleared, the what-if and the countdown), purchase, policies and the explorer; a
crash replayed now; the underwriter's review with its reasons, the payout; the trader's paid
claim; then the app stops (its node with it) and starts again with everything kept."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from bti_core.chain.node import is_up
from tests.browser.conftest import (
    App,
    ensure_signed_in,
    metric,
    session_cookie,
    settle,
    sign_in,
    sign_out,
    start_app,
)
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)  # a 2-core CI machine under a full test run is slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    # every claim goes to an underwriter, so the journey shows the review
    a = start_app(tmp_path_factory.mktemp("journey-data"), BTI_CLAIMS_AUTO_LIMIT="1")
    yield a
    if a.proc.poll() is None:
        a.stop()


def shot(page: Page, name: str) -> None:
    """The whole page: the app scrolls inside its main container, so the viewport is made as
    tall as the content for the picture."""
    settle(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": 1500, "height": 1300}
    tall = page.evaluate(
        '() => Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], '
        '[data-testid="stAppViewContainer"]\')].map(e => e.scrollHeight), innerHeight)'
    )
    page.set_viewport_size({"width": size["width"], "height": min(int(tall), 6000)})
    settle(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)


def choose(page: Page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def test_market_quote_buy_policies_and_explorer(app: App, page: Page) -> None:
    page.goto(app.url)
    expect(page.get_by_role("heading", name="Market")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    basis = page.locator('[data-testid="stMetric"]').filter(has_text="Mark price")
    expect(basis.get_by_text("basis")).to_be_visible()
    assert basis.locator('[data-testid="stMetricDeltaIcon-Up"]').count() == 0  # not a change
    assert basis.locator('[data-testid="stMetricDeltaIcon-Down"]').count() == 0
    shot(page, "market")

    page.goto(f"{app.url}/buy_insurance")
    sign_in(page, "trader", "trader-demo")
    expect(page.get_by_role("heading", name="Buy insurance")).to_be_visible()
    page.get_by_role("button", name="Get 1,000 BTI (demo faucet)").click()
    expect(page.get_by_text("1,000.00", exact=True)).to_be_visible()
    # the cover is the margin from the first draw (it showed 0.00 when set only through state)
    margin = page.get_by_text(re.compile(r"^Notional .* · margin [\d,.]+ USDT$"))
    coverage = page.get_by_role("spinbutton", name="Coverage (USDT)")
    expect(coverage).to_have_value(
        margin.inner_text().split("margin ")[1].split(" ")[0].replace(",", "")
    )
    entry = page.get_by_text(re.compile(r"^Entry: .* mark price now"))
    btc_entry = entry.inner_text()
    choose(page, "Symbol", "ETHUSDT")
    expect(entry).to_contain_text("ETHUSDT's mark price")
    assert entry.inner_text() != btc_entry  # not BTC's price carried over
    page.get_by_role("button", name="Get quote").click()
    expect(page.get_by_text("Quote for a long 20× ETHUSDT order")).to_be_visible()
    choose(page, "Symbol", "BTCUSDT")
    expect(page.get_by_text("The form changed since the last quote")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Buy cover for"))).to_have_count(0)

    page.get_by_role("button", name="Get quote").click()
    expect(page.get_by_text("Quote for a long 20× BTCUSDT order")).to_be_visible()
    expect(page.get_by_text(re.compile(r"valid for \d+:\d\d"))).to_be_visible()  # counting
    # leverage moved: the 20× quote and its button go
    page.get_by_role("slider").first.focus()
    page.keyboard.press("ArrowLeft")
    settle(page)
    expect(page.get_by_text("The form changed since the last quote")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Buy cover for"))).to_have_count(0)
    page.get_by_role("button", name="Get quote").click()
    expect(page.get_by_text("Quote for a long 19× BTCUSDT order")).to_be_visible()
    expect(coverage).to_have_value(
        margin.inner_text().split("margin ")[1].split(" ")[0].replace(",", "")
    )
    # a reload keeps the form and the quote: both are in the URL
    premium = metric(page, "Premium (BTI)")
    expect(page).to_have_url(re.compile(r"[?&]quote=[0-9a-f]{32}"))
    session_cookie(page)
    page.reload()
    expect(page.get_by_text("Quote for a long 19× BTCUSDT order")).to_be_visible()
    assert metric(page, "Premium (BTI)") == premium
    expect(coverage).to_have_value(
        margin.inner_text().split("margin ")[1].split(" ")[0].replace(",", "")
    )
    page.get_by_role("tab", name="What if").click()
    expect(page.get_by_text("What if: premium by leverage and duration")).to_be_visible()
    shot(page, "buy-insurance")
    page.get_by_role("button", name=re.compile("^Buy cover for")).click()
    success = page.locator('[data-testid="stAlertContentSuccess"]')
    expect(success).to_contain_text("is active until")
    href = success.locator("a").get_attribute("href")
    assert href is not None and "/chain_explorer?q=0x" in href
    balance = float(metric(page, "BTI balance").replace(",", ""))
    assert 0 < balance < 1000

    page.goto(href if href.startswith("http") else f"{app.url}{href}")
    expect(page.get_by_role("heading", name="Chain explorer")).to_be_visible()
    expect(page.get_by_text("Transaction 0x")).to_be_visible()
    expect(page.get_by_text("buyPolicy")).to_be_visible()
    expect(page.get_by_text(re.compile(r"gas used \d{1,3}(,\d{3})+"))).to_be_visible()
    expect(page.locator('[data-testid="stCode"]').first).to_be_visible()  # copyable hash
    assert metric(page, "Policies") == "1"
    shot(page, "chain-explorer")

    page.goto(f"{app.url}/my_policies")  # a fresh page load: the session carries over
    expect(page.get_by_role("heading", name="My policies")).to_be_visible()
    expect(page.get_by_text("· trader")).to_be_visible()
    assert metric(page, "Active policies") == "1"
    expect(page.get_by_text(re.compile(r"Premium of [\d,.]+ BTI collected"))).to_be_visible()
    grid = page.locator('[data-testid="stDataFrame"]').first
    for column in ("Ends (UTC)", "P(liquidation)", "On-chain", "Transaction"):
        expect(grid.get_by_text(column, exact=True)).to_be_attached()
    # every column fits: the grid (drawn on a canvas) needs no sideways scroll
    scroller = grid.locator(".dvn-scroller").first
    wide, shown = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert wide <= shown + 2, (wide, shown)
    shot(page, "my-policies")


def _claim_states(app: App, *, until: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(app.data / "bti.db") as db:
            states = [r[0] for r in db.execute("SELECT state FROM claim ORDER BY id")]
        if until in states or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_a_crash_now_a_referral_with_its_reasons_and_the_payout(app: App, page: Page) -> None:
    out = app.bti("crash", "--drop", "0.4")
    assert "replayed (ending now)" in out
    # the claim opens in this run or in the worker beside it, whichever comes first
    assert _claim_states(app, until="referred") == ["referred"]
    page.goto(app.url)
    expect(page.get_by_text(re.compile(r"BTCUSDT from .* is a replayed crash"))).to_be_visible()
    shot(page, "market-replayed-crash")

    page.goto(f"{app.url}/my_policies")
    sign_out(page)
    page.goto(f"{app.url}/claim_review")
    sign_in(page, "underwriter", "underwriter-demo")
    expect(page.get_by_role("heading", name="Claim review")).to_be_visible()
    expect(page.get_by_text("Claim #1 · referred")).to_be_visible()
    why = page.locator('[data-testid="stAlertContentWarning"]').filter(has_text="Why it waits")
    expect(why).to_contain_text("above the 1.00 BTI automatic limit")
    # the market before the purchase was calm: the hour in progress (whose aggregate holds the
    # crash) is not read as "before the purchase"
    expect(why).not_to_contain_text("moving fast")
    expect(page.get_by_text("Inside the cover window", exact=False).first).to_be_visible()
    shown = metric(page, "Mark at trigger")
    expect(page.get_by_text(f"the mark price reached {shown} in the bar of")).to_be_visible()
    assert metric(page, "Awaiting review") == "1"
    assert page.get_by_role("spinbutton", name="Adjusted amount (BTI)").count() == 0
    page.get_by_text("adjust", exact=True).click()
    expect(page.get_by_role("spinbutton", name="Adjusted amount (BTI)")).to_be_visible()
    page.get_by_text("approve", exact=True).click()
    expect(page.get_by_role("spinbutton", name="Adjusted amount (BTI)")).to_have_count(0)
    shot(page, "claim-review")

    page.get_by_role("button", name="Submit decision").click()
    expect(page.get_by_text("write the reason")).to_be_visible()
    page.get_by_role("textbox", name="Reason (required, kept in the audit log)").fill(
        "the mark price reached the liquidation price; terms match"
    )
    page.get_by_role("button", name="Submit decision").click()
    success = page.locator('[data-testid="stAlertContentSuccess"]')
    expect(success).to_contain_text("is paid")
    href = success.locator("a").get_attribute("href")
    assert href is not None and "/chain_explorer?q=0x" in href

    page.goto(href if href.startswith("http") else f"{app.url}{href}")
    expect(page.get_by_text("payClaim")).to_be_visible()
    expect(page.get_by_text("ClaimPaid").first).to_be_attached()
    shot(page, "claim-paid-explorer")

    page.goto(f"{app.url}/my_policies")
    ensure_signed_in(page, "underwriter", "underwriter-demo")
    sign_out(page)
    sign_in(page, "trader", "trader-demo")
    expect(page.get_by_role("heading", name="My claims")).to_be_visible()
    claims = page.locator('[data-testid="stDataFrame"]').nth(1)
    expect(claims).to_contain_text("paid")
    expect(page.get_by_text(re.compile(r"Claim #1 paid: [\d,.]+ BTI"))).to_be_visible()
    shot(page, "my-claims")


def test_a_provider_deposits_and_asks_for_a_withdrawal(app: App, page: Page) -> None:
    page.goto(f"{app.url}/capital")
    ensure_signed_in(page, "trader", "trader-demo")
    expect(page.get_by_role("heading", name="Your capital")).to_be_visible()
    page.get_by_role("button", name="Get 1,000 BTI (demo faucet)").click()
    expect(page.get_by_text("1,000 BTI sent to your wallet.").first).to_be_visible()
    amount = page.get_by_role("spinbutton", name="Amount (BTI)")
    amount.fill("500")
    page.get_by_role("button", name="Deposit", exact=True).click()
    expect(page.get_by_text("500.00 BTI deposited for pool shares.").first).to_be_visible()
    deposited = page.locator('[data-testid="stMetric"]').filter(has_text="Net deposited")
    expect(deposited).to_contain_text("500.00 BTI")  # drawn by the run the flash came with
    expect(page.locator(".js-plotly-plot").first).to_be_visible()  # the share price
    page.get_by_role("tab", name="Withdraw").click()
    page.get_by_role("button", name="Request", exact=True).click()
    expect(
        page.get_by_text(re.compile(r"Withdrawal request of 500\.00 BTI cooling down until"))
    ).to_be_visible()
    expect(page.get_by_role("button", name="Withdraw", exact=True)).to_be_disabled()


def test_a_restart_keeps_the_chain_and_the_policy(app: App, page: Page) -> None:
    app.stop()
    assert not is_up(f"http://127.0.0.1:{app.chain_port}")  # the app's node stopped with it
    assert (app.data / "chain" / "anvil-state.json").exists()
    again = start_app(app.data, BTI_CLAIMS_AUTO_LIMIT="1")
    try:
        page.goto(f"{again.url}/chain_explorer")
        expect(page.get_by_role("heading", name="Chain explorer")).to_be_visible()
        assert metric(page, "Policies") == "1"
        assert metric(page, "Claims paid (BTI)") != "0"
        page.goto(f"{again.url}/my_policies")
        ensure_signed_in(page, "trader", "trader-demo")  # the session outlived the restart
        expect(page.get_by_role("heading", name="My claims")).to_be_visible()
        expect(page.locator('[data-testid="stDataFrame"]').nth(1)).to_contain_text("paid")
    finally:
        again.stop()
