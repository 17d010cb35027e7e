"""Risk Queries speed on a book of 100,000 policies.

Prints:
1. loading the book from SQLite (`load_book`: one join, the claims' decisions, the market state
   at purchase) — once per change to the book, cached by the page;
2. a filter change: the filter applied and every view recomputed (`book_views`, the
   liquidation map, the stress result, the report's sentences), p50 / p95 / max over random
   filters (goal ≤ 300 ms);
3. the PDF report's build time (goal ≤ 5 s);
4. with ``--browser``: the page in headless chromium, a filter click until the page has
   settled with the new numbers, p50 / p95 (goal ≤ 1 s).

Run: `.venv/bin/python benchmarks/risk_queries.py [--policies 100000] [--browser]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bti_core.analytics import book as bk  # noqa: E402
from bti_core.analytics import filters as bf  # noqa: E402
from bti_core.analytics import views as bv  # noqa: E402
from bti_core.analytics.report import build_report  # noqa: E402
from bti_core.db.engine import make_engine, migrate  # noqa: E402
from bti_core.db.models import Claim, Policy, QuoteRecord  # noqa: E402
from bti_core.market.ingest import Ingestor  # noqa: E402
from bti_core.market.synthetic import generate_demo_markets  # noqa: E402
from bti_core.market.warehouse import Warehouse  # noqa: E402
from dashboard.launch import start_server  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def fill(data: Path, n: int, seed: int = 0) -> tuple[str, dict[str, float]]:
    """Demo markets for a year and ``n`` synthetic policies (10 % claimed) written straight
    into SQLite: the benchmark times reads, not purchases."""
    url = f"sqlite:///{data / 'bti.db'}"
    eng = make_engine(url)
    migrate(eng)
    last = pd.Timestamp.now(tz="UTC").floor("1h") - pd.Timedelta("1h")
    markets = generate_demo_markets(
        start=last - pd.Timedelta(days=365), periods=24 * 365, seed=seed
    )
    ing = Ingestor(Warehouse(data / "warehouse"), eng)
    spots = {}
    for sym in SYMBOLS:
        m = markets[sym]
        m.ingest(ing, source="bench", funding=False)
        spots[sym] = float(m.mark["close"].iloc[-1])
    rng = np.random.default_rng(seed)
    start = (last - pd.to_timedelta(rng.uniform(0, 360 * 24, n), unit="h")).floor("s")
    hours = rng.choice([6, 24, 48, 72, 168, 336], n)
    sym = rng.choice(SYMBOLS, n, p=[0.4, 0.3, 0.2, 0.1])
    side = rng.choice(["long", "short"], n, p=[0.6, 0.4])
    lev = rng.choice([2, 3, 5, 10, 20, 25, 50, 75], n)
    entry = np.array([spots[s] for s in sym]) * rng.uniform(0.7, 1.3, n)
    lp = np.where(side == "long", entry * (1 - 0.9 / lev), entry * (1 + 0.9 / lev))
    payout = np.round(np.exp(rng.normal(np.log(300), 0.8, n)), 2)
    end = start + pd.to_timedelta(hours, unit="h")
    now = pd.Timestamp.now("UTC")
    status = np.where(end > now, "active", "expired")
    claimed = rng.random(n) < 0.1
    status = np.where(claimed, "paid", status)
    qrows, prows, crows = [], [], []
    for i in range(n):
        qid = uuid.uuid4().hex
        s0, e0 = start[i].to_pydatetime(), end[i].to_pydatetime()
        qrows.append(
            {
                "id": qid,
                "created_at": s0,
                "expires_at": s0,
                "user_id": f"t{i % 300}",
                "symbol": sym[i],
                "inputs": {},
                "liquidation_price": dec(lp[i], 4),
                "spot": dec(entry[i], 4),
                "probability": 0.05,
                "probability_se": 0.001,
                "baseline_probability": 0.04,
                "risk_index": 40.0,
                "risk_breakdown": [],
                "payout": dec(payout[i], 2),
                "premium": dec(payout[i] * 0.08, 2),
                "premium_breakdown": {},
                "checks": [],
            }
        )
        prows.append(
            {
                "id": i + 1,
                "quote_id": qid,
                "user_id": f"t{i % 300}",
                "symbol": sym[i],
                "side": side[i],
                "quantity": Decimal(1),
                "entry_price": dec(entry[i], 4),
                "leverage": Decimal(int(lev[i])),
                "margin_mode": "isolated" if i % 7 else "cross",
                "order_type": "market" if i % 4 else "limit",
                "margin": dec(payout[i], 2),
                "liquidation_price": dec(lp[i], 4),
                "coverage": dec(payout[i], 2),
                "share": Decimal(1),
                "deductible": Decimal(0),
                "payout": dec(payout[i], 2),
                "premium": dec(payout[i] * 0.08, 2),
                "probability": float(rng.uniform(0.005, 0.3)),
                "risk_index": float(rng.uniform(0, 100)),
                "start_at": s0,
                "end_at": e0,
                "status": status[i],
                "created_at": s0,
            }
        )
        if claimed[i]:
            crows.append(
                {
                    "policy_id": i + 1,
                    "user_id": f"t{i % 300}",
                    "source": "market_scan",
                    "state": "paid",
                    "opened_at": e0,
                    "trigger_at": e0,
                    "trigger_price": dec(lp[i], 4),
                    "liquidation_price": dec(lp[i], 4),
                    "evidence": {},
                    "checks": [],
                    "amount_claimed": dec(payout[i], 2),
                    "amount_approved": dec(payout[i], 2),
                    "claim_ref": "0x",
                    "updated_at": e0,
                }
            )
    with eng.begin() as conn:
        conn.execute(QuoteRecord.__table__.insert(), qrows)  # type: ignore[attr-defined]
        conn.execute(Policy.__table__.insert(), prows)  # type: ignore[attr-defined]
        conn.execute(Claim.__table__.insert(), crows)  # type: ignore[attr-defined]
    eng.dispose()
    return url, spots


def dec(x: float, places: int) -> Decimal:
    return Decimal(f"{float(x):.{places}f}")


def random_filter(rng: np.random.Generator) -> bf.BookFilter:
    def some(values: tuple[str, ...]) -> tuple[str, ...]:
        if rng.random() < 0.5:
            return ()
        k = int(rng.integers(1, len(values)))
        return tuple(str(v) for v in rng.choice(values, k, replace=False))

    return bf.BookFilter(
        range=str(rng.choice(["all", "30d", "90d", "1y"])),
        symbols=some(SYMBOLS),
        sides=some(bk.SIDES),
        leverage=some(tuple(b[0] for b in bk.LEVERAGE_BUCKETS)),
        duration=some(tuple(b[0] for b in bk.DURATION_BUCKETS)),
        trends=some(bk.TRENDS),
        vol_regimes=some(bk.VOL_REGIMES),
        statuses=some(bk.STATUSES),
    )


def filter_change(
    book: pd.DataFrame, flt: bf.BookFilter, spots: dict[str, float], now: pd.Timestamp
) -> None:
    """What the page computes on a filter change."""
    sel = flt.apply(book, now)
    v = bv.book_views(sel)
    sym = str(v.by_symbol["symbol"].iloc[0]) if len(v.by_symbol) else "BTCUSDT"
    bv.liquidation_map(sel, sym, spots[sym])
    bv.stress(sel, sym, -0.2, spots[sym], now=now, reserves=1e6, locked=5e5)
    build_report(sel, flt, now=now, views=v).sentences()


def browser(data: Path, policies: int, clicks: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    env = {**os.environ, "BTI_DATA_DIR": str(data)}
    env.pop("BTI_RPC_URL", None)
    port = 8700 + os.getpid() % 200
    env["BTI_CHAIN_PORT"] = str(port + 1000)
    proc, url = start_server(port, env, timeout=180)
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = b.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/risk_queries")
            page.get_by_role("textbox", name="Username").fill("underwriter")
            page.get_by_role("textbox", name="Password").fill("underwriter-demo")
            page.get_by_role("button", name="Sign in").click()
            value = (
                page.locator('[data-testid="stMetric"]')
                .filter(has_text="Policies")
                .locator('[data-testid="stMetricValue"]')
                .first
            )
            expect(value).to_have_text(f"{policies:,}", timeout=180_000)
            idle = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
            page.wait_for_function(idle, timeout=120_000)
            times = []
            for i in range(clicks):
                before = value.inner_text()
                t0 = time.perf_counter()
                page.locator('[data-testid="stButtonGroup"]').filter(has_text="Side").get_by_role(
                    "button", name="short" if i % 2 == 0 else "long"
                ).first.click()
                expect(value).not_to_have_text(before, timeout=60_000)
                page.wait_for_function(idle, timeout=60_000)
                times.append(time.perf_counter() - t0)
                page.locator('[data-testid="stButtonGroup"]').filter(has_text="Side").get_by_role(
                    "button", name="short" if i % 2 == 0 else "long"
                ).first.click()  # and off again
                expect(value).to_have_text(before, timeout=60_000)
                page.wait_for_function(idle, timeout=60_000)
            b.close()
        print(
            f"browser: filter click → settled, {clicks} clicks: "
            f"p50 {pct(times, 50) * 1000:.0f} ms, "
            f"p95 {pct(times, 95) * 1000:.0f} ms (goal ≤ 1000 ms)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=40)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--clicks", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        t0 = time.perf_counter()
        url, spots = fill(data, args.policies)
        print(f"book of {args.policies:,} policies written in {time.perf_counter() - t0:.1f} s")
        eng = make_engine(url)
        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            book = bk.load_book(eng, Warehouse(data / "warehouse"))
            loads.append(time.perf_counter() - t0)
        print(
            f"load_book: {min(loads) * 1000:.0f} ms "
            "(best of 3; read again only when the book changes)"
        )
        now = pd.Timestamp.now("UTC")
        rng = np.random.default_rng(1)
        filter_change(book, bf.BookFilter(), spots, now)  # warm
        times = []
        for _ in range(args.changes):
            flt = random_filter(rng)
            t0 = time.perf_counter()
            filter_change(book, flt, spots, now)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        filter_change(book, bf.BookFilter(), spots, now)
        whole = time.perf_counter() - t0
        print(
            f"filter change, every view, {args.changes} random filters: "
            f"p50 {pct(times, 50) * 1000:.0f} ms, p95 {pct(times, 95) * 1000:.0f} ms, "
            f"max {max(times) * 1000:.0f} ms; the whole book "
            f"{whole * 1000:.0f} ms (goal ≤ 300 ms)"
        )
        t0 = time.perf_counter()
        rep = build_report(book, bf.BookFilter(), now=now)
        pdf = rep.pdf()
        print(
            f"PDF report of the whole book: {time.perf_counter() - t0:.2f} s, "
            f"{len(pdf) / 1024:.0f} KiB (goal ≤ 5 s)"
        )
        t0 = time.perf_counter()
        csv = rep.csv()
        print(
            f"CSV of the whole book: {time.perf_counter() - t0:.2f} s, {len(csv) / 2**20:.1f} MiB"
        )
        eng.dispose()
        if args.browser:
            browser(data, args.policies, args.clicks)


if __name__ == "__main__":
    main()
