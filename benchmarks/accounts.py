"""Linked exchange accounts: how fast BTI follows them, and how fast a linked policy's claim is
paid once the exchange has its record.

Prints:
1. position sync for N linked accounts (default 10,000; `--accounts N`) against the demo
   exchange on 127.0.0.1 (Binance USDⓈ-M's protocol, signed requests, through ccxt), served
   by a process of its own: accounts per second and the p50 / p99 of one account's sync
   (three signed requests, the diff and its write), with 4 threads (`BTI_BENCH_THREADS`);
   the reference is one signed request alone, measured in the same run;
2. tick → confirmed payout for a linked policy on anvil: the liquidating mark bar stored and
   the exchange's forced order recorded → scan → open → the exchange's record read → audit →
   decide → pay → receipt (p50 / max); the reference is the same for cover on a described
   order, in the same run;
3. a position changed on the exchange → its change recorded in BTI, through the accounts'
   user data streams (the stream's event wakes the account's signed read): p50 / p99 over 200
   accounts; the reference is the clock alone, which reads an account every
   `BTI_ACCOUNTS_SYNC_SECONDS` (60 s: 30 s on average).

Run: `.venv/bin/python benchmarks/accounts.py [--accounts N]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.world import bench_world
from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.demo_market import save
from bti_core.accounts.exchanges import connect
from bti_core.accounts.service import AccountsService
from bti_core.accounts.vault import Vault
from bti_core.auth import hash_password
from bti_core.chain.node import AnvilNode, free_port
from bti_core.claims.service import ClaimsService
from bti_core.db.engine import make_engine, migrate
from bti_core.db.models import AppUser
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService

THREADS = int(os.environ.get("BTI_BENCH_THREADS", "4"))
TRIALS = 6


def allow(what: str) -> None:
    """The local chain: demos allowed."""


def users(db: object, names: list[str]) -> None:
    hashed = hash_password("not-used-here")  # one bcrypt hash for all: its cost is not measured
    with Session(db) as s:  # type: ignore[call-overload]
        s.add_all(
            [
                AppUser(username=n, name=n, email=f"{n}@bench", role="trader", password_hash=hashed)
                for n in names
            ]
        )
        s.commit()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


SERVE = """
import sys, time
from pathlib import Path
from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.accounts.demo_market import load
ex = DemoExchange(weight_limit=10**9)
load(ex, Path(sys.argv[1]))
ex.start(int(sys.argv[2]))
print("up", flush=True)
while True:
    time.sleep(3600)
"""


@contextmanager
def exchange_process(books: DemoExchange, folder: Path) -> Iterator[str]:
    """The demo exchange with ``books``, served by a process of its own (as a remote exchange
    would be: its work does not share this process's interpreter)."""
    save(books, folder)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(folder), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def sync_many(n: int) -> None:
    print(f"== position sync of {n:,} linked accounts ({THREADS} threads, SQLite)")
    with tempfile.TemporaryDirectory() as tmp:
        books = DemoExchange(weight_limit=10**9)
        keys = []
        names = [f"t{i}" for i in range(n)]
        for i, name in enumerate(names):
            uid = books.add_account(10_000)
            side = "long" if i % 2 else "short"
            books.open_position(uid, "BTCUSDT" if i % 3 else "ETHUSDT", side, "0.1", 50_000, 20)
            keys.append((name, *books.add_key(uid)))
        db = make_engine(f"sqlite:///{tmp}/bti.db")
        migrate(db)
        users(db, names)
        with exchange_process(books, Path(tmp) / "before") as url:
            accounts = AccountsService(
                db, Vault(Path(tmp) / "keys" / "a.key"), demo_url=url, require_demo=allow
            )
            t = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                linked = list(pool.map(lambda k: accounts.link(k[0], "demo", k[1], k[2]).id, keys))
            dt_link = time.perf_counter() - t
        print(f"linked {n:,} accounts in {dt_link:.1f} s ({n / dt_link:,.0f}/s)")

        for uid in list(books.accounts)[::2]:  # half the positions change before the sync
            for (symbol, side), _ in list(books.accounts[uid].positions.items()):
                books.change(uid, symbol, side, size="0.2")

        def timed(account_id: int) -> tuple[float, int]:
            t0 = time.perf_counter()
            report = accounts.sync(account_id)
            return time.perf_counter() - t0, len(report.changes)

        with exchange_process(books, Path(tmp) / "after") as url:
            accounts.demo_url = url
            t = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                results = list(pool.map(timed, linked))
            dt = time.perf_counter() - t
            lat = [r[0] for r in results]
            changed = sum(r[1] for r in results)
            _, key, secret = keys[0]
            reader = connect("demo", key, secret, demo_url=url)
            reader.positions()  # warm
            client = reader.client  # type: ignore[attr-defined]
            one = []
            for _ in range(200):
                t0 = time.perf_counter()
                client.fapiPrivateV3GetPositionRisk()
                one.append(time.perf_counter() - t0)
        ref = pct(one, 50)
        print(
            f"synced {n:,} accounts in {dt:.1f} s: {n / dt:,.0f} accounts/s, {changed:,} "
            f"changes recorded; one sync p50 {pct(lat, 50) * 1000:.1f} ms, p99 "
            f"{pct(lat, 99) * 1000:.1f} ms"
        )
        print(
            f"reference: one signed request p50 {ref * 1000:.2f} ms; a sync's p50 = "
            f"{pct(lat, 50) / ref:.1f}× it (three signed requests, the diff and its write)"
        )


def payout_latency() -> None:
    print("\n== tick → confirmed payout (anvil, SQLite; auto-approved claims)")
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnvilNode(Path(tmp) / "chain", port=free_port()) as node,
        DemoExchange().running() as ex,
    ):
        w = bench_world(tmp, node)
        assert w.chain is not None
        accounts = AccountsService(
            w.db, Vault(Path(tmp) / "keys" / "a.key"), demo_url=ex.url, require_demo=allow
        )
        ins = InsuranceService(w.db, w.risk, chain=w.chain)
        claims = ClaimsService(w.db, w.warehouse, w.chain, accounts=accounts)
        t_bar = pd.Timestamp(w.now) + pd.Timedelta(hours=2)
        times: dict[str, list[float]] = {"linked": [], "described": []}
        for k in range(TRIALS + 1):
            for kind in ("linked", "described"):
                user = f"{kind}-{k}"
                users(w.db, [user])
                w.chain.faucet(ins.wallet_of(user).address, Decimal(1000))
                spot = Decimal(str(round(w.spot, 2)))
                cover = Cover(coverage="100", duration_hours=720)
                uid = ex.add_account(10_000)
                if kind == "linked":
                    ex.open_position(uid, "BTCUSDT", "long", "0.1", spot, 20)
                    accounts.link(user, "demo", *ex.add_key(uid))
                    [pos] = accounts.positions(user)
                    q = ins.quote_position(user_id=user, position_id=pos.id or 0, cover=cover)
                else:
                    order = Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(20))
                    q = ins.quote(user_id=user, order=order, cover=cover)
                policy = ins.buy(user_id=user, quote_id=q.record.id)
                lp = float(policy.liquidation_price)
                t = time.perf_counter()
                w.store_bar(t_bar, lp * 0.99)  # the tick, as the warehouse stores it
                ex.set_mark("BTCUSDT", lp * 0.99)  # and as the exchange's engine sees it
                report = claims.run()
                dt = time.perf_counter() - t
                assert len(report.paid) == 1, (kind, report)
                if k:  # the first round warms up
                    times[kind].append(dt)
                t_bar += pd.Timedelta(hours=1)
                w.spot = float(w.warehouse.latest("mark", "BTCUSDT", "1h")["close"])
        lk, ds = times["linked"], times["described"]
        print(
            f"linked policy: p50 {np.median(lk):.3f} s, max {max(lk):.3f} s over {TRIALS} "
            f"claims; described order (reference): p50 {np.median(ds):.3f} s — "
            f"{np.median(lk) / np.median(ds):.2f}× (the exchange's record read is the difference)"
        )


def stream_latency(n: int = 200) -> None:
    import threading

    from bti_core.accounts.user_stream import UserStreams

    print(f"\n== exchange change → recorded in BTI, through user data streams ({n} accounts)")
    with tempfile.TemporaryDirectory() as tmp, DemoExchange(weight_limit=10**9).running() as ex:
        db = make_engine(f"sqlite:///{tmp}/bti.db")
        migrate(db)
        names = [f"s{i}" for i in range(n)]
        users(db, names)
        accounts = AccountsService(
            db, Vault(Path(tmp) / "keys" / "a.key"), demo_url=ex.url, require_demo=allow
        )
        uids = {}
        for name in names:
            uid = ex.add_account(10_000)
            ex.open_position(uid, "BTCUSDT", "long", "0.1", 50_000, 20)
            uids[accounts.link(name, "demo", *ex.add_key(uid)).id] = uid
        streams = UserStreams(accounts, demo_ws_url=ex.ws_url).start()
        end = time.monotonic() + 60
        while streams.stats["opened"] < n and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(1.0)
        streams.take()  # the opening reads' wakes
        time.sleep(2.5)  # their gap (`MIN_GAP`) is over: a change is read at once
        changed_at: dict[int, float] = {}
        recorded: dict[int, float] = {}
        stop = threading.Event()

        def worker() -> None:  # the worker's accounts thread (`Worker.follow_accounts`)
            while not stop.is_set():
                streams.wait(0.25)
                woken = streams.take()
                if accounts.sync_many(woken):
                    for account_id in woken:
                        recorded.setdefault(account_id, time.perf_counter())

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        for account_id, uid in uids.items():
            changed_at[account_id] = time.perf_counter()
            ex.change(uid, "BTCUSDT", "long", size="0.05")
            time.sleep(0.02)
        end = time.monotonic() + 60
        while len(recorded) < n and time.monotonic() < end:
            time.sleep(0.05)
        stop.set()
        t.join(5)
        streams.stop()
        lat = [recorded[a] - changed_at[a] for a in recorded]
        print(
            f"{len(lat)} of {n} changes recorded: p50 {pct(lat, 50) * 1000:.0f} ms, p99 "
            f"{pct(lat, 99) * 1000:.0f} ms after the exchange made them; on the clock alone "
            "(reference) a change waits up to 60 s, 30 s on average, for its read"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    sync_many(args.accounts)
    payout_latency()
    stream_latency()


if __name__ == "__main__":
    main()
