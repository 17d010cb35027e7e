"""Risk Queries in Debian's chromium: the demo book bought before the app starts, the
underwriter's view, a filter click that changes the numbers and the URL, the link reopened
in a new page reproducing the view, and the liquidation map; screenshots under
tests/artifacts/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import App, ensure_signed_in, metric, settle, start_app
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    a = start_app(
        tmp_path_factory.mktemp("rq-data"),
        setup=(("demo-book", "--policies", "40", "--traders", "6", "--seed", "2"),),
    )
    yield a
    a.stop()


def test_risk_queries_in_a_real_browser(app: App, page: Page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{app.url}/risk_queries")
    expect(page.get_by_role("heading", name="Risk queries")).to_be_visible(timeout=60_000)
    ensure_signed_in(page, "underwriter", "underwriter-demo")
    settle(page)
    everyone = metric(page, "Policies")
    assert int(everyone) > 10
    page.screenshot(path=str(ARTIFACTS / "risk-queries.png"), full_page=True)

    page.locator('[data-testid="stButtonGroup"]').filter(has_text="Side").get_by_role(
        "button", name="short"
    ).first.click()
    expect(
        page.locator('[data-testid="stMetric"]')
        .filter(has_text="Policies")
        .locator('[data-testid="stMetricValue"]')
        .first
    ).not_to_have_text(everyone)
    settle(page)
    shorts = metric(page, "Policies")
    assert "side=short" in page.url

    # the link reproduces the view in a fresh page (the session cookie signs it in)
    other = page.context.new_page()
    other.goto(page.url)
    expect(other.get_by_role("heading", name="Risk queries")).to_be_visible(timeout=60_000)
    ensure_signed_in(other, "underwriter", "underwriter-demo")
    settle(other)
    assert metric(other, "Policies") == shorts
    other.close()

    page.get_by_role("tab", name="Liquidation map").click()
    expect(page.get_by_text("Stress: mark price move within 24 h")).to_be_visible()
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "risk-queries-map.png"), full_page=True)


CUT_OFF = """() => [...document.querySelectorAll('[data-testid="stMetricValue"]')]
    .filter(v => [v, ...v.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))
    .map(v => v.innerText)"""


@pytest.mark.parametrize("width", [1280])  # the narrower of the two the issue names
def test_no_headline_figure_is_cut_off(app: App, page: Page, width: int) -> None:
    """Risk queries' totals read "14,364 …" and the explorer's expiry "2026-12-06 1…" (at
    1440 px too; 1280 is the harder case, and the suite's time is short)."""
    page.set_viewport_size({"width": width, "height": 900})
    for path, heading in (
        ("risk_queries", "Risk queries"),
        ("chain_explorer", "Chain explorer"),  # public: no sign-in
        ("chain_explorer?q=policy%201", "Policy #1"),
    ):
        page.goto(f"{app.url}/{path}")
        if path == "risk_queries":
            ensure_signed_in(page, "underwriter", "underwriter-demo")
        expect(page.get_by_role("heading", name=heading).first).to_be_visible(timeout=60_000)
        # the row of figures drawn (a loaded machine draws the heading well before it)
        values = page.locator('[data-testid="stMetricValue"]')
        expect(values.nth(3)).to_be_visible(timeout=60_000)
        settle(page)
        assert page.evaluate(CUT_OFF) == [], (path, width)
