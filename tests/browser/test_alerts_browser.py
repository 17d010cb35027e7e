"""The Alerts page in Debian's chromium: an underwriter replays a crash at ×10,000 from the
page (the progress bar runs, the result is reported), subscribes a webhook (a bad URL refused
first), and the live feed is there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import App, ensure_signed_in, settle, start_app
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    a = start_app(tmp_path_factory.mktemp("alerts-browser"))
    yield a
    a.stop()


def test_an_underwriter_replays_a_crash_and_subscribes_a_webhook(app: App, page: Page) -> None:
    page.goto(f"{app.url}/alerts")
    ensure_signed_in(page, "underwriter", "underwriter-demo")
    expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
    expect(page.get_by_role("heading", name="Replay a crash")).to_be_visible()
    settle(page)
    page.get_by_role("button", name="Replay").click()
    done = page.get_by_text("new alerts")
    expect(done).to_be_visible(timeout=90_000)
    assert "BTCUSDT −" in done.inner_text() and "ticks" in done.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)

    page.get_by_role("textbox", name="Webhook URL").fill("not a url")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_text("http:// or https:// URL")).to_be_visible()
    page.get_by_role("textbox", name="Webhook URL").fill("https://1.1.1.1/bti-hook")
    page.get_by_role("button", name="Subscribe").click()
    # the subscriptions table (a canvas grid: its cells are in the DOM, drawn, not "visible")
    expect(page.get_by_text("https://1.1.1.1/bti-hook").first).to_be_attached()
    # the live feed (a fragment refreshing on its own): the replay's alerts, or none yet
    feed = page.locator('[data-testid="stMetric"]').filter(has_text="Alerts").first
    expect(feed.or_(page.get_by_text("No alerts yet."))).to_be_visible()
