"""Page speed in a real browser (Debian's chromium, headless) over a running app.

Starts the app as `make run` does (demo markets, its own chain node, the worker, streamlit) in
a temporary folder, signs in once, then prints per page, p50 and p95 over ``--runs``:

1. first render: a fresh tab (of a browser that has opened the app before, so its static
   files are cached, as a user's next tab is) opens the page's URL, until the page is settled
   (its heading drawn, the script no longer running, no spinner) — goal ≤ 2 s; the very first
   page of a browser with nothing cached is printed apart;
2. warm navigation: from another page of the same tab, a click on the page's sidebar link
   until settled — goal ≤ 0.5 s;
3. quote: on Buy insurance, "Get quote" until the quote and its charts are shown and settled,
   the first of a tab apart (3 s after the page settled, as a person fills the form; the page
   loads the chart library while the browser is idle) — goal ≤ 0.5 s.

Run: `.venv/bin/python benchmarks/pages.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, sign_in, start_app

PAGES = [  # (url path, heading, sidebar link, who)
    ("", "Market", "Market", "trader"),
    ("buy_insurance", "Buy insurance", "Buy insurance", "trader"),
    ("my_policies", "My policies", "My policies", "trader"),
    ("chain_explorer", "Chain explorer", "Chain explorer", "trader"),
    ("claim_review", "Claim review", "Claim review", "underwriter"),
]
SETTLED = """() => !document.querySelector(
    '[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-testid="stSkeleton"]')"""


def settled(page: Page, heading: str) -> None:
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=60_000)
    page.wait_for_function(SETTLED, polling=25, timeout=60_000)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def line(name: str, xs: list[float], goal: float) -> str:
    p50, p95 = statistics.median(xs), pct(xs, 0.95)
    verdict = "ok" if p95 <= goal else "over"
    return f"  {name:<34} p50 {p50:6.2f} s  p95 {p95:6.2f} s  (goal ≤ {goal:g} s: {verdict})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    app = start_app(Path(tempfile.mkdtemp(prefix="bti-pages-")) / "data")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            sessions = {}
            for who, password in (("trader", "trader-demo"), ("underwriter", "underwriter-demo")):
                ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
                page = ctx.new_page()
                page.goto(f"{app.url}/my_policies")
                sign_in(page, who, password)
                page.wait_for_timeout(300)  # the session cookie is written
                sessions[who] = ctx.storage_state()
                ctx.close()
            # the risk engine's warm-up is part of starting the app, not of a page
            time.sleep(5)
            print(f"pages over {app.url} ({args.runs} runs each)")
            first: dict[str, list[float]] = {}
            warm: dict[str, list[float]] = {}
            contexts = {
                who: browser.new_context(
                    storage_state=state, viewport={"width": 1500, "height": 1000}
                )
                for who, state in sessions.items()
            }
            cold = {}
            for who, ctx in contexts.items():  # a browser's very first page: nothing cached yet
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(f"{app.url}/my_policies")
                settled(page, "My policies")
                cold[who] = time.perf_counter() - t0
                page.close()
            for path, heading, link, who in PAGES:
                for _ in range(args.runs):
                    page = contexts[who].new_page()  # a fresh tab of a browser that has been used
                    t0 = time.perf_counter()
                    page.goto(f"{app.url}/{path}")
                    settled(page, heading)
                    first.setdefault(heading, []).append(time.perf_counter() - t0)
                    other = PAGES[0] if heading != "Market" else PAGES[3]
                    page.get_by_role("link", name=other[2], exact=True).click()
                    settled(page, other[1])
                    t0 = time.perf_counter()
                    page.get_by_role("link", name=link, exact=True).click()
                    settled(page, heading)
                    warm.setdefault(heading, []).append(time.perf_counter() - t0)
                    page.close()
            print(
                "a browser's first page, nothing cached: "
                + ", ".join(f"{who} {t:.2f} s" for who, t in cold.items())
            )
            print("first render in a fresh tab")
            for name, xs in first.items():
                print(line(name, xs, 2.0))
            print("warm navigation (sidebar link)")
            for name, xs in warm.items():
                print(line(name, xs, 0.5))

            page = contexts["trader"].new_page()
            page.goto(f"{app.url}/buy_insurance")
            settled(page, "Buy insurance")
            page.wait_for_timeout(3000)  # a person reads and fills the form first
            quotes = []
            for i in range(args.runs + 1):
                t0 = time.perf_counter()
                page.get_by_role("button", name="Get quote").click()
                expect(page.get_by_text("Quote for a long")).to_be_visible(timeout=60_000)
                page.wait_for_function(SETTLED, polling=25, timeout=60_000)
                quotes.append(time.perf_counter() - t0)
                page.get_by_role("slider").first.focus()  # a changed form: a new quote
                page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
                page.wait_for_function(SETTLED, polling=25, timeout=60_000)
            print("Get quote → quote shown")
            print(line("first of the tab (3 s after it settled)", quotes[:1], 0.5))
            print(line("then", quotes[1:], 0.5))
            browser.close()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
