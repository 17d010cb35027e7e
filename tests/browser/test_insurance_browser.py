"""The purchase journey in a real browser, on the app's own local chain node: faucet, quote,
buy, the premium's transaction in the Chain Explorer, My policies; then the app stops (its
node with it) and starts again with every balance and policy kept."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from bti_core.chain.node import is_up
from tests.browser.conftest import App, start_app
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


def sign_in(page: Page, user: str, password: str) -> None:
    """Fill and submit the sign-in form. The form can be redrawn once while the page settles
    (the cookie component reports in), dropping what was typed: type until it stays."""
    name = page.get_by_role("textbox", name="Username")
    secret = page.get_by_role("textbox", name="Password")
    signed = page.get_by_text(f"· {user}")  # "Signed in as … · role"
    for _ in range(10):
        name.fill(user)
        secret.fill(password)
        page.wait_for_timeout(700)
        if name.input_value() == user and secret.input_value() == password:
            page.get_by_role("button", name="Login").click()
            try:
                expect(signed).to_be_visible(timeout=10_000)
                return
            except AssertionError:
                continue
    expect(signed).to_be_visible()


def ensure_signed_in(page: Page, user: str, password: str) -> None:
    """Sign in unless the session cookie already did."""
    signed = page.get_by_text(f"· {user}")
    form = page.get_by_role("textbox", name="Username")
    expect(signed.or_(form)).to_be_visible()
    if not signed.is_visible():
        sign_in(page, user, password)


def _metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return box.locator('[data-testid="stMetricValue"]').first.inner_text()


def test_buy_cover_and_find_its_payment_on_chain(app: App, page: Page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{app.url}/buy_insurance")
    sign_in(page, "trader", "trader-demo")
    expect(page.get_by_role("heading", name="Buy insurance")).to_be_visible()
    page.get_by_role("button", name="Get 1,000 BTI (demo faucet)").click()
    expect(page.get_by_text("1,000.00", exact=True)).to_be_visible()
    page.get_by_role("button", name="Get quote").click()
    expect(page.get_by_text("Premium (USDT)")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()  # the risk factors
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "buy-insurance.png"), full_page=True)
    page.get_by_role("button", name="Buy cover for").click()
    success = page.locator('[data-testid="stAlertContentSuccess"]')
    expect(success).to_contain_text("is active until")
    href = success.locator("a").get_attribute("href")
    assert href is not None and "/chain_explorer?q=0x" in href
    balance = float(_metric(page, "BTI balance").replace(",", ""))
    assert 0 < balance < 1000

    page.goto(href if href.startswith("http") else f"{app.url}{href}")
    expect(page.get_by_role("heading", name="Chain explorer")).to_be_visible()
    expect(page.get_by_text("Transaction 0x")).to_be_visible()
    expect(page.get_by_text("buyPolicy")).to_be_visible()
    expect(page.get_by_text("PolicyPurchased").first).to_be_attached()
    assert _metric(page, "Policies") == "1"
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "chain-explorer.png"), full_page=True)

    page.goto(f"{app.url}/my_policies")  # a fresh page load: a new session
    expect(page.get_by_role("heading", name="My policies")).to_be_visible()
    ensure_signed_in(page, "trader", "trader-demo")
    assert _metric(page, "Active policies") == "1"
    page.screenshot(path=str(ARTIFACTS / "my-policies.png"), full_page=True)


def _claim_states(app: App, *, until: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(app.data / "bti.db") as db:
            states = [r[0] for r in db.execute("SELECT state FROM claim ORDER BY id")]
        if until in states or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_a_crash_opens_a_claim_the_underwriter_approves_and_the_pool_pays(
    app: App, page: Page
) -> None:
    out = app.bti("crash", "--drop", "0.4", "--after", "2")
    assert "replayed" in out
    # the claim opens in this run or in the worker beside it, whichever comes first
    assert _claim_states(app, until="referred") == ["referred"]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("textbox", name="Username")).to_be_visible()
    page.goto(f"{app.url}/claim_review")
    ensure_signed_in(page, "underwriter", "underwriter-demo")
    expect(page.get_by_role("heading", name="Claim review")).to_be_visible()
    expect(page.get_by_text("Claim #1 · referred")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()  # the evidence
    assert _metric(page, "Awaiting review") == "1"
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "claim-review.png"), full_page=True)

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
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "claim-paid-explorer.png"), full_page=True)

    page.goto(f"{app.url}/my_policies")
    ensure_signed_in(page, "underwriter", "underwriter-demo")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("textbox", name="Username")).to_be_visible()
    sign_in(page, "trader", "trader-demo")
    expect(page.get_by_role("heading", name="My claims")).to_be_visible()
    claims = page.locator('[data-testid="stDataFrame"]').nth(1)
    expect(claims).to_contain_text("paid")
    page.screenshot(path=str(ARTIFACTS / "my-claims.png"), full_page=True)


def test_a_restart_keeps_the_chain_and_the_policy(app: App, page: Page) -> None:
    app.stop()
    assert not is_up(f"http://127.0.0.1:{app.chain_port}")  # the app's node stopped with it
    assert (app.data / "chain" / "anvil-state.json").exists()
    again = start_app(app.data, BTI_CLAIMS_AUTO_LIMIT="1")
    try:
        page.goto(f"{again.url}/chain_explorer")
        expect(page.get_by_role("heading", name="Chain explorer")).to_be_visible()
        assert _metric(page, "Policies") == "1"
        assert _metric(page, "Claims paid (BTI)") != "0.00"
        page.goto(f"{again.url}/my_policies")
        ensure_signed_in(page, "trader", "trader-demo")
        expect(page.get_by_role("heading", name="My claims")).to_be_visible()
        expect(page.locator('[data-testid="stDataFrame"]').nth(1)).to_contain_text("paid")
    finally:
        again.stop()
