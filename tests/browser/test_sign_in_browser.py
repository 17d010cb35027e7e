"""The sign-in form in a real browser: what a person types as soon as the form appears stays
there while the page settles (the cookie component reporting in must not redraw the form)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, App, start_app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    a = start_app(tmp_path_factory.mktemp("signin"))
    yield a
    a.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("path", ["my_policies", "buy_insurance", "claim_review"])
def test_typing_at_once_is_kept_and_signs_in(app: App, browser: Browser, path: str) -> None:
    ctx = browser.new_context()  # a new session each time: no cookie, first run of the form
    page = ctx.new_page()
    page.set_default_timeout(45_000)
    try:
        page.goto(f"{app.url}/{path}")
        name = page.get_by_role("textbox", name="Username")
        secret = page.get_by_role("textbox", name="Password")
        name.fill("trader")
        secret.fill("trader-demo")
        page.wait_for_timeout(2_500)  # the cookie component reports well within this
        assert (name.input_value(), secret.input_value()) == ("trader", "trader-demo")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("· trader")).to_be_visible()
    finally:
        ctx.close()
