"""The running dashboard in Debian's chromium, driven by Playwright.

Starts `bti demo` and `streamlit run` on 127.0.0.1 in a temporary data folder, opens the Market
page, switches symbol, and saves screenshots under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, ROOT, free_port

CHROMIUM = "/usr/bin/chromium"
# As root in a container chromium needs --no-sandbox; the rest keep it off the closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("browser-data")
    env = {**os.environ, "BTI_DATA_DIR": str(data)}
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "bti"), "demo", "--days", "60", "--end", "2025-06-01"],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (data / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [
            str(bin_dir / "streamlit"),
            "run",
            str(ROOT / "dashboard" / "app.py"),
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--server.headless=true",
            "--browser.gatherUsageStats=false",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not start: {(data / 'streamlit.log').read_text()}"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1500, "height": 1300})
        pg = ctx.new_page()
        pg.set_default_timeout(45_000)
        yield pg
        ctx.close()
        browser.close()


def _metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_market_page_in_a_real_browser(server: str, page: Page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
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
