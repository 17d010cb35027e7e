"""Money under concurrency and crashes, with real processes, on a local anvil node.

Prints:
1. **concurrency**: ``--claims`` liquidated policies (default 200), then 8 `bti worker --once`
   and 4 `bti claims run` started at once over them: claims decided more than once, paid more
   than once (on-chain and in the log), left unpaid, and whether `verify` passes;
2. **faults**: ``--runs`` times (default 100), new policies are liquidated and a claims run is
   killed with SIGKILL at a random moment of its pipeline (after it has connected), then a
   restart (`reconcile`, then `run`) settles it: double payments, lost claims and the log.

3. **forged ticks**: policies at 20× and 5×, then a true crash of −12 % on the Kafka ticks
   topic (a real broker on 127.0.0.1) with ``--forged`` forged ticks among it (default 1,000:
   single prints through the 5× level, glitches just through the 20× level, ticks stamped in
   the future, made-up markets): claims used up by forged ticks (any claim on a 5× policy),
   true liquidations paid, paid twice, dead-lettered;
4. **hostile webhooks**: `bti worker` as a process claims a crash of ``--hooks`` policies, once
   with no webhook and once while a receiver answers a byte every two seconds and another a
   1 GiB body to an underwriter's every-alert subscription: seconds from the crash to the last
   payout in each (the ratio is the figure), and the worker's peak memory.

Run: `.venv/bin/python benchmarks/faults.py` (about 15 minutes on two cores; `--runs 10
--claims 40` for a quick look; `--only forged,hooks` for the last two alone; `--postgres` starts
a throwaway PostgreSQL server on 127.0.0.1 and runs on it; `--database-url
postgresql+psycopg://…` uses yours).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
from sqlmodel import Session, col, select

from bti_core.chain.node import AnvilNode, free_port
from bti_core.chain.types import DecodedEvent
from bti_core.config import Settings
from bti_core.db.models import Claim, ClaimAudit, HeldTrigger, Policy
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets
from bti_core.orders import Cover, Order
from bti_core.services import Services, build_services

BIN = Path(sys.executable).parent
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

# a claims run that says when it is ready, so the kill lands inside the pipeline, not in imports
CHILD = """
import sys
from bti_core.config import get_settings
from bti_core.services import build_services
svc = build_services(get_settings())
claims = svc.claims
svc.chain.chain_id
svc.risk.n_paths = 4_000
svc.risk.symbol_risk("BTCUSDT")  # fitted before, as in a running worker
print("ready", flush=True)
claims.run()
print("done", flush=True)
"""


def _setup(svc: Services) -> None:
    m = generate_demo_markets(start=NOW - timedelta(days=60), periods=24 * 60, seed=5)["BTCUSDT"]
    m.ingest(svc.ingestor, source="d")
    svc.risk.n_paths = 4_000


def _crash(svc: Services) -> None:
    """One bar after the last whose low is 20 % under its close, on the mark and the last
    price alike: every open 10× long is liquidated, and the closes (what the volatility is
    fitted on) do not move, so the next quotes are priced as before."""
    last_bar = svc.warehouse.latest(Kind.MARK, "BTCUSDT", "1h")
    ts = max(pd.Timestamp(NOW + timedelta(hours=3)), last_bar["ts"] + pd.Timedelta(hours=1))
    c = float(last_bar["close"])
    bar = pd.DataFrame(
        {
            "ts": pd.DatetimeIndex([ts]).astype("datetime64[us, UTC]"),
            "open": [c],
            "high": [c * 1.001],
            "low": [c * 0.8],
            "close": [c],
            "volume": [0.0],
        }
    )
    for kind in (Kind.MARK, Kind.OHLCV):
        svc.ingestor.ingest_frame(bar, symbol="BTCUSDT", kind=kind, timeframe="1h", source="r")


def _buy(svc: Services, users: list[str]) -> None:
    """One policy each, then the crash that liquidates them."""
    spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
    for user in users:
        svc.chain.faucet(svc.insurance.wallet_of(user).address, Decimal(1000))
        q = svc.insurance.quote(
            user_id=user,
            order=Order("BTCUSDT", "long", Decimal(1000) / spot, spot, Decimal(10)),
            cover=Cover(coverage="50", duration_hours=336),
        )
        svc.insurance.buy(user_id=user, quote_id=q.record.id)
    _crash(svc)


def _books(svc: Services) -> dict[str, object]:
    """What the invariants are checked on: per claim its log's steps, payouts on-chain."""
    with Session(svc.db) as s:
        claims = s.exec(select(Claim)).all()
        entries = s.exec(select(ClaimAudit).order_by(col(ClaimAudit.id))).all()
        policies = s.exec(select(Policy).where(col(Policy.status).in_(["paid", "claimed"]))).all()
        active = s.exec(select(Policy).where(Policy.status == "active")).all()
    steps = Counter((e.claim_id, e.event) for e in entries)
    paid_on_chain = Counter(
        int(e.args["policyId"])
        for e in svc.chain.events()
        if isinstance(e, DecodedEvent) and e.name == "ClaimPaid"
    )
    return {
        "claims": len(claims),
        "decided_twice": sum(
            1 for c in claims if steps[(c.id, "auto_approve")] + steps[(c.id, "refer")] > 1
        ),
        "paid_twice_log": sum(1 for c in claims if steps[(c.id, "confirm")] > 1),
        "paid_twice_chain": sum(1 for v in paid_on_chain.values() if v > 1),
        "unpaid": sum(1 for c in claims if c.state != "paid"),
        # a liquidated policy that is still active after the restart: its claim was lost
        "lost": len(active),
        "paid_without_claim": len(set(paid_on_chain) - {p.chain_policy_id for p in policies}),
        "verify": str(svc.claims.verify_log()),
        "states": dict(Counter(c.state for c in claims)),
        "why_unpaid": Counter(
            (
                c.decision_reason
                or "; ".join(str(ch.get("name")) for ch in c.checks if ch.get("outcome") != "pass")
            )[:90]
            for c in claims
            if c.state != "paid"
        ).most_common(3),
    }


def concurrency(svc: Services, env: dict[str, str], n: int) -> None:
    print(f"== concurrency: {n} liquidated policies, 8 workers + 4 CLI runs at once")
    t0 = time.perf_counter()
    _buy(svc, [f"c{i}" for i in range(n)])
    print(f"   bought {n} policies in {time.perf_counter() - t0:.1f} s")
    cmds = [[str(BIN / "bti"), "worker", "--once"]] * 8 + [[str(BIN / "bti"), "claims", "run"]] * 4
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in cmds
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    bad = [o for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
    b = _books(svc)
    print(f"   12 processes done in {wall:.1f} s; exit codes non-zero: {len(bad)}")
    print(
        f"   claims {b['claims']}: decided twice {b['decided_twice']}, paid twice "
        f"{b['paid_twice_log']} (log) / {b['paid_twice_chain']} (chain), unpaid {b['unpaid']}"
    )
    print(f"   {b['verify']}")
    for o in bad[:2]:
        print("   " + o[-600:].replace("\n", "\n   "))


def faults(svc: Services, env: dict[str, str], runs: int, seed: int) -> None:
    rng = random.Random(seed)
    print(f"== faults: {runs} claims runs killed (SIGKILL) at random points, then restarted")
    # how long the pipeline takes once ready, for two claims: the kill lands in [0, that]
    _buy(svc, ["cal0", "cal1"])
    p = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    p.stdout.readline()
    t0 = time.perf_counter()
    p.wait()
    span = max(0.2, time.perf_counter() - t0)
    print(f"   a run's pipeline (2 claims, after connecting) takes {span:.2f} s")
    killed = finished = 0
    t_all = time.perf_counter()
    for k in range(runs):
        _buy(svc, [f"f{k}a", f"f{k}b"])
        p = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True
        )
        assert p.stdout is not None
        p.stdout.readline()  # "ready"
        time.sleep(rng.uniform(0, span))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        else:
            finished += 1
        p.wait()
        # the restart: what a worker does after a crash
        svc.claims.reconcile()
        svc.claims.run()
        if (k + 1) % 20 == 0:
            print(f"   {k + 1} runs ({time.perf_counter() - t_all:.0f} s)", flush=True)
    b = _books(svc)
    print(f"   killed mid-pipeline {killed}, finished before the kill {finished}")
    print(f"   claims by state {b['states']}; not paid because {b['why_unpaid']}")
    print(
        f"   claims {b['claims']}: double payments {b['paid_twice_chain']} (chain) / "
        f"{b['paid_twice_log']} (log), decided twice {b['decided_twice']}, lost claims "
        f"{b['lost']}, unpaid {b['unpaid']}, payouts without a claim {b['paid_without_claim']}"
    )
    print(f"   {b['verify']}")


def forged_ticks(svc: Services, n_forged: int, seed: int) -> None:
    """Section 3 of the module docstring, through a real broker."""
    from bti_core.stream import kafka
    from bti_core.stream.broker import LocalBroker
    from bti_core.stream.engine import EmbeddedEngine
    from bti_core.stream.ports import StreamDeps

    rng = random.Random(seed)
    n = 20
    logging.getLogger("bti.stream").setLevel(logging.ERROR)  # a line per skipped message
    print(f"== forged ticks: {n_forged:,} forged among a true crash, {2 * n} policies")
    spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
    policies: dict[str, list[Policy]] = {"20": [], "5": []}
    for lev in policies:
        for i in range(n):
            user = f"k{lev}x{i}"
            svc.chain.faucet(svc.insurance.wallet_of(user).address, Decimal(1000))
            q = svc.insurance.quote(
                user_id=user,
                order=Order("BTCUSDT", "long", Decimal("0.05"), spot, Decimal(lev)),
                cover=Cover(coverage="40", duration_hours=48),
            )
            policies[lev].append(svc.insurance.buy(user_id=user, quote_id=q.record.id))
    lp20 = max(float(p.liquidation_price) for p in policies["20"])
    lp5 = max(float(p.liquidation_price) for p in policies["5"])
    s0 = float(spot)
    t0 = int((NOW + timedelta(hours=3)).timestamp() * 1000)  # after the purchases
    # the truth: 10 quiet minutes, a fall of 12 % over 5 (through every 20× level, far above
    # every 5× one), then 3 minutes down there; one tick a second
    true = [("BTCUSDT", t0 + 1000 * i, s0 * (1 + 0.002 * rng.uniform(-1, 1))) for i in range(600)]
    true += [("BTCUSDT", t0 + 600_000 + 1000 * i, s0 * (1 - 0.12 * i / 300)) for i in range(300)]
    true += [("BTCUSDT", t0 + 900_000 + 1000 * i, s0 * 0.88) for i in range(180)]
    forged: list[tuple[str, int, float]] = []
    year_2100 = 4_102_444_800_000
    for k in range(n_forged):
        at = t0 + rng.randrange(0, 1_080_000) + 500  # between true ticks
        kind = k % 5
        if kind in (0, 1):  # a single print through every 5× level
            forged.append(("BTCUSDT", at, lp5 * rng.uniform(0.5, 0.999)))
        elif kind == 2:  # a glitch just through the 20× level, before the true fall
            forged.append(("BTCUSDT", t0 + rng.randrange(0, 590_000) + 500, lp20 * 0.998))
        elif kind == 3:  # from the future
            forged.append(("BTCUSDT", year_2100 + at, lp5 * 0.5))
        else:  # a market that does not exist
            forged.append((f"FAKE{k}USDT", at, 1.0))
    ticks = sorted(true + forged, key=lambda t: t[1] if t[1] < year_2100 else t[1] - year_2100)
    claims_clock = svc.claims.clock
    svc.claims.clock = lambda: datetime.now(UTC) + timedelta(hours=12)  # after the crash
    with LocalBroker() as broker:
        kafka.ensure_topics(broker.bootstrap, {kafka.TICKS: 1, kafka.ALERTS: 1, kafka.CLAIMS: 1})
        kafka.publish_ticks(broker.bootstrap, ticks)
        services = StreamDeps.of(svc)
        source, sink = kafka.KafkaTickSource(broker.bootstrap), kafka.KafkaSink(broker.bootstrap)
        t_run = time.perf_counter()
        try:
            eng = EmbeddedEngine(services, source, name="forged", batch=500, sink=sink)
            eng.run(follow=lambda: source.stats.messages < len(ticks))
        finally:
            source.close()
            sink.close()
        wall = time.perf_counter() - t_run
        dead = kafka.read_dead_letters(broker.bootstrap)
    svc.claims.clock = claims_clock
    ids20 = {p.id for p in policies["20"]}
    ids5 = {p.id for p in policies["5"]}
    with Session(svc.db) as s:
        claims = s.exec(select(Claim).where(col(Claim.policy_id).in_(ids20 | ids5))).all()
        held = s.exec(select(HeldTrigger).where(col(HeldTrigger.policy_id).in_(ids20 | ids5))).all()
    chain_ids = {p.chain_policy_id for p in policies["20"] + policies["5"]}
    paid = Counter(
        int(e.args["policyId"])
        for e in svc.chain.events()
        if isinstance(e, DecodedEvent)
        and e.name == "ClaimPaid"
        and int(e.args["policyId"]) in chain_ids
    )
    used_by_forged = sum(1 for c in claims if c.policy_id in ids5)
    true_paid = sum(1 for c in claims if c.policy_id in ids20 and c.state == "paid")
    print(f"   {len(ticks):,} ticks ({len(forged):,} forged) scored in {wall:.1f} s")
    print(
        f"   claims used up by forged ticks: {used_by_forged}; true liquidations paid "
        f"{true_paid} of {n}; paid twice on-chain {sum(1 for v in paid.values() if v > 1)}"
    )
    print(
        f"   dead-lettered {len(dead)} (future and made-up markets); held crossings "
        f"{len(held)} ({dict(Counter(h.state for h in held))})"
    )


def _rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hook_run(node: AnvilNode, n: int, hostile: bool) -> tuple[float, float, str]:
    """A worker process claims a crash of ``n`` policies bought 3 hours ago (minute mark bars
    ingested while it runs); with ``hostile``, alerts are due to a slow and a huge receiver.
    Seconds from the crash to the last payout, the worker's peak RSS (MB), what the hostile
    receivers saw."""
    from bti_core.auth import User
    from bti_core.db.models import AppUser
    from bti_core.outbound import networks
    from bti_core.stream.store import write_batch
    from bti_core.stream.types import Event
    from bti_core.stream.webhooks import subscribe
    from tests.stream.receivers import Huge, Slow

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "BTI_DATA_DIR": tmp,
            "BTI_RPC_URL": node.url,
            "BTI_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
            "BTI_WEBHOOK_TIMEOUT_SECONDS": "120",
        }
        env.pop("BTI_DATABASE_URL", None)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            svc = build_services(Settings())
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _setup(svc)
        spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
        for i in range(n):
            user = f"h{i}"
            svc.chain.faucet(svc.insurance.wallet_of(user).address, Decimal(1000))
            q = svc.insurance.quote(
                user_id=user,
                order=Order("BTCUSDT", "long", Decimal("0.05"), spot, Decimal(20)),
                cover=Cover(coverage="40", duration_hours=48),
            )
            svc.insurance.buy(user_id=user, quote_id=q.record.id)
        bought = datetime.now(UTC) - timedelta(hours=3)
        with Session(svc.db) as s:  # as if bought three hours ago: the crash is then the past
            for p in s.exec(select(Policy)).all():
                p.start_at = p.created_at = bought
                s.add(p)
            s.add(
                AppUser(
                    username="desk", name="Desk", email="", role="underwriter", password_hash="!"
                )
            )
            s.commit()
        receivers = [Huge(), Slow()] if hostile else []  # the huge one's due first
        for r in receivers:
            r.__enter__()
            desk = User("desk", "Desk", "underwriter")
            subscribe(svc.db, desk, webhook_url=r.url, scope="all", allowed=networks("127.0.0.0/8"))
        if hostile:  # a backlog of alerts due to both
            now_ms = int(time.time() * 1000)
            spikes = [
                Event("volatility_spike", "BTCUSDT", now_ms - 1000 * i, 1.0, None, -5.0)
                for i in range(40)
            ]
            write_batch(svc.db, "bench", spikes, owners={}, offset=1, state={})
        worker = subprocess.Popen(
            [str(BIN / "bti"), "worker", "--every", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(8)  # started, and (hostile) inside the receivers' answers
            start = pd.Timestamp(bought + timedelta(minutes=90)).floor("1min")
            closes = [float(spot) * (1 - 0.3 * (i + 1) / 20) for i in range(20)]
            bars = pd.DataFrame(
                {
                    "ts": pd.date_range(start, periods=20, freq="1min"),
                    "open": closes,
                    "high": closes,
                    "low": closes,
                    "close": closes,
                    "volume": 0.0,
                }
            )
            t0 = time.perf_counter()
            svc.ingestor.ingest_frame(
                bars, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1m", source="exchange"
            )
            while True:
                with Session(svc.db) as s:
                    states = [c.state for c in s.exec(select(Claim)).all()]
                if len(states) == n and set(states) == {"paid"}:
                    break
                if time.perf_counter() - t0 > 600:
                    raise SystemExit(f"not paid within 10 minutes: {Counter(states)}")
                time.sleep(0.25)
            took = time.perf_counter() - t0
            if hostile:
                time.sleep(10)  # the huge answers keep coming: let them try
            peak = _rss_peak_mb(worker.pid)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            seen = (
                f"1 GiB receiver: {receivers[0].requests} requests, "
                f"{receivers[0].sent / 2**20:,.1f} MiB sent in all (each answer cut at 64 KiB "
                f"read); slow receiver: {receivers[1].requests} requests held"
                if hostile
                else ""
            )
            for r in receivers:
                r.__exit__()
            svc.close()
    return took, peak, seen


def hostile_webhooks(node: AnvilNode, n: int) -> None:
    print(f"== hostile webhooks: a worker process claims a crash of {n} policies")
    calm, calm_peak, _ = _hook_run(node, n, hostile=False)
    print(
        f"   no webhooks:       all paid {calm:.1f} s after the crash; "
        f"worker peak {calm_peak:,.0f} MB"
    )
    rough, peak, seen = _hook_run(node, n, hostile=True)
    print(
        f"   slow + 1 GiB hooks: all paid {rough:.1f} s after the crash ({rough / calm:.2f}× the "
        f"calm run); worker peak {peak:,.0f} MB"
    )
    print(f"   {seen}")


@contextmanager
def _postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (as the tests start one; as root it runs as
    the ``postgres`` user)."""
    import pwd
    import shutil

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    initdb = shutil.which("initdb") or str(bins[0] / "initdb")
    pg_ctl = shutil.which("pg_ctl") or str(bins[0] / "pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="bti-pg-"))
    (base / "sock").mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = "postgres" if "postgres" in {p.pw_name for p in pwd.getpwall()} else "nobody"
        shutil.chown(base, user)
        shutil.chown(base / "sock", user)
        as_user = ["runuser", "-u", user, "--"]
    port = free_port()
    run = [*as_user, initdb, "-D", str(base / "data"), "-U", "bti", "-A", "trust", "--no-sync"]
    subprocess.run(run, check=True, capture_output=True)
    opts = f"-p {port} -k {base / 'sock'} -c listen_addresses=127.0.0.1 -c max_connections=200"
    ctl = [*as_user, pg_ctl, "-D", str(base / "data"), "-o", opts, "-l", str(base / "log")]
    subprocess.run([*ctl, "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://bti@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--postgres", action="store_true", help="start a PostgreSQL server for it")
    ap.add_argument("--forged", type=int, default=1000, help="forged ticks in section 3")
    ap.add_argument("--hooks", type=int, default=20, help="policies claimed in section 4")
    ap.add_argument(
        "--only",
        default="concurrency,faults,forged,hooks",
        help="sections to run (comma-separated)",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnvilNode(Path(tmp) / "chain", port=free_port()) as node,
        _postgres() if args.postgres else nullcontext(args.database_url) as db_url,
    ):
        env = {**os.environ, "BTI_DATA_DIR": tmp, "BTI_RPC_URL": node.url}
        if db_url:
            env["BTI_DATABASE_URL"] = db_url
        env.pop("BTI_CLAIMS_AUTO_LIMIT", None)
        os.environ.update(env)
        svc = build_services(Settings())
        _setup(svc)
        print(f"database: {svc.db.url.render_as_string(hide_password=True)}")
        if args.claims and "concurrency" in only:
            concurrency(svc, env, args.claims)
        if args.runs and "faults" in only:
            faults(svc, env, args.runs, args.seed)
        if args.forged and "forged" in only:
            forged_ticks(svc, args.forged, args.seed)
        svc.close()
        if args.hooks and "hooks" in only:
            hostile_webhooks(node, args.hooks)


if __name__ == "__main__":
    main()
