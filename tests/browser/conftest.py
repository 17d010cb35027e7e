"""The running dashboard for browser tests: `bti demo`, `streamlit run` on 127.0.0.1 and
`bti worker` beside it in a temporary data folder, with its own local chain node on a free port
(as `make run` has), and Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from dashboard.launch import start_server
from tests.conftest import ROOT, free_port

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


@dataclass
class App:
    url: str
    data: Path
    chain_port: int
    proc: subprocess.Popen[bytes]
    log: IO[str]
    env: dict[str, str]
    worker: subprocess.Popen[bytes] | None = None

    def bti(self, *args: str) -> str:
        """Run the `bti` command against this app's data folder and chain."""
        r = subprocess.run(
            [str(Path(sys.executable).parent / "bti"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def stop(self) -> None:
        for proc in (self.proc, self.worker):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()


def start_app(
    data: Path,
    chain_port: int | None = None,
    *,
    setup: tuple[tuple[str, ...], ...] = (),
    **extra_env: str,
) -> App:
    """`bti demo`, then each `bti` command of ``setup`` (before anything else uses the chain),
    then the dashboard and the worker."""
    chain_port = chain_port or free_port()
    env = {
        **os.environ,
        "BTI_DATA_DIR": str(data),
        "BTI_CHAIN_PORT": str(chain_port),
        **extra_env,
    }
    env.pop("BTI_RPC_URL", None)
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        # markets up to the present: a crash is replayed now, on bars that end now
        [str(bin_dir / "bti"), "demo", "--days", "60", "--if-missing", "--quiet"],
        env=env,
        check=True,
        capture_output=True,
    )
    for args in setup:
        subprocess.run([str(bin_dir / "bti"), *args], env=env, check=True, capture_output=True)
    log = (data / "streamlit.log").open("w")
    try:
        proc, url = start_server(free_port(), env, log=log)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}: {(data / 'streamlit.log').read_text()}") from None
    worker = subprocess.Popen(
        [str(bin_dir / "bti"), "worker", "--every", "2"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return App(url, data, chain_port, proc, log, env, worker)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextmanager
def fresh_page(browser: Browser, **context: Any) -> Iterator[Page]:
    """A tab in a new browser context (no cookies: a new visitor), closed on the way out."""
    ctx = browser.new_context(**context)
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(45_000)
        yield pg
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def page(browser: Browser) -> Iterator[Page]:
    with fresh_page(browser, viewport={"width": 1500, "height": 1300}) as pg:
        yield pg


def sign_out(page: Page) -> None:
    """Sign out and wait until the server has cleared the session cookie: the page goes to
    ``/bti/signout`` and back after the form shows, and a navigation started before that
    round trip ends is aborted by it (net::ERR_ABORTED under load)."""
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("textbox", name="Username")).to_be_visible()
    deadline = time.monotonic() + 15
    while any(c["name"] == "bti_session" for c in page.context.cookies()):
        assert time.monotonic() < deadline, "the sign-out never cleared the session cookie"
        page.wait_for_timeout(100)
    page.wait_for_load_state()
    expect(page.get_by_role("textbox", name="Username")).to_be_visible()


def sign_in(page: Page, user: str, password: str) -> None:
    """Fill and submit the sign-in form, as a person would: a person who sees the form redrawn
    empty (the rerun after a sign-out can land after the first keystrokes) types again."""
    signed = page.get_by_text(f"· {user}")  # "Signed in as … · role"
    for _ in range(3):
        name = page.get_by_role("textbox", name="Username")
        secret = page.get_by_role("textbox", name="Password")
        name.fill(user)
        secret.fill(password)
        if name.input_value() != user or secret.input_value() != password:
            continue
        # marks this document: the sign-in's round trip replaces it (see session_cookie)
        page.evaluate("window.__btiBeforeSignIn = true")
        page.get_by_role("button", name="Sign in").click()
        try:
            expect(signed).to_be_visible(timeout=15_000)
            return
        except AssertionError:
            if page.get_by_role("textbox", name="Username").count() == 0:
                raise
    expect(signed).to_be_visible()


def session_cookie(page: Page, timeout: float = 30.0) -> None:
    """Wait for the sign-in's round trip to the server, which sets the session cookie (a tab
    reloaded before it lands has no cookie yet, as a person reloading at once would see)."""
    deadline = time.monotonic() + timeout
    while not any(c["name"] == "bti_session" for c in page.context.cookies()):
        assert time.monotonic() < deadline, "the session cookie was never set"
        page.wait_for_timeout(100)
    # The cookie comes with the server's redirect back to the page, before the page it
    # redirects to has loaded: a reload then would abort that navigation (ERR_ABORTED, as a
    # CI run saw). Wait until the document marked before the sign-in has been replaced.
    while True:
        assert time.monotonic() < deadline, "the sign-in's round trip never came back"
        try:
            if not page.evaluate("window.__btiBeforeSignIn === true"):
                break
        except PlaywrightError:  # the context went away mid-navigation: look again
            pass
        page.wait_for_timeout(100)
    page.wait_for_load_state()


def ensure_signed_in(page: Page, user: str, password: str) -> None:
    """Sign in unless the session cookie already did."""
    signed = page.get_by_text(f"· {user}")
    form = page.get_by_role("textbox", name="Username")
    expect(signed.or_(form)).to_be_visible()
    if not signed.is_visible():
        sign_in(page, user, password)


def metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return box.locator('[data-testid="stMetricValue"]').first.inner_text()


def settle(page: Page) -> None:
    """Until the app has finished running the script (the status widget gone) and plotly has
    drawn."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )
    page.wait_for_timeout(400)
