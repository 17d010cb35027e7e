"""The running dashboard in Debian's chromium, driven by Playwright.

Starts `bti demo` and `streamlit run` on 127.0.0.1 in a temporary data folder, opens the Market
page, switches symbol, and saves screenshots under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import start_app
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = start_app(tmp_path_factory.mktemp("browser-data"))
    yield app.url
    app.stop()


def _metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_market_page_in_a_real_browser(server: str, page: Page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # plotly.js logs "WARN: …" with a stack trace per point it cannot draw as asked (a colour
    # array took 0.45 s of the Market's draw): none on this page
    plotly_warnings: list[str] = []
    page.on("console", lambda m: m.text.startswith("WARN") and plotly_warnings.append(m.text))
    page.goto(server)
    expect(page.get_by_role("heading", name="Market")).to_be_visible()
    chart = page.locator(".js-plotly-plot").first
    expect(chart).to_be_visible()
    legend = chart.locator(".legendtext")
    expect(legend.filter(has_text="last").first).to_be_attached()  # the candlesticks
    expect(legend.filter(has_text="mark").first).to_be_attached()
    expect(chart.locator("g.boxlayer path").first).to_be_attached()  # candle bodies drawn
    btc_last = _metric(page, "Last price")
    page.wait_for_timeout(800)  # let plotly finish drawing before the picture
    page.screenshot(path=str(ARTIFACTS / "market.png"), full_page=True)
    assert not plotly_warnings, plotly_warnings[:3]

    page.locator('[data-testid="stSelectbox"]').filter(has_text="Symbol").click()
    page.keyboard.type("ETHUSDT")
    page.keyboard.press("Enter")
    last_price = (
        page.locator('[data-testid="stMetric"]')
        .filter(has_text="Last price")
        .locator('[data-testid="stMetricValue"]')
    )
    expect(last_price).not_to_have_text(btc_last)
    expect(chart.get_by_text("ETHUSDT · last price")).to_be_attached()
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "market-ethusdt.png"), full_page=True)
    assert not plotly_warnings, plotly_warnings[:3]
