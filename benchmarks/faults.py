"""Money under concurrency and crashes, with real processes, on a local anvil node.

Prints:
1. **concurrency**: ``--claims`` liquidated policies (default 200), then 8 `bti worker --once`
   and 4 `bti claims run` started at once over them: claims decided more than once, paid more
   than once (on-chain and in the log), left unpaid, and whether `verify` passes;
2. **faults**: ``--runs`` times (default 100), new policies are liquidated and a claims run is
   killed with SIGKILL at a random moment of its pipeline (after it has connected), then a
   restart (`reconcile`, then `run`) settles it: double payments, lost claims and the log.

Run: `.venv/bin/python benchmarks/faults.py` (about 15 minutes on two cores; `--runs 10
--claims 40` for a quick look; `--postgres` starts a throwaway PostgreSQL server on 127.0.0.1
and runs on it; `--database-url postgresql+psycopg://…` uses yours).
"""

from __future__ import annotations

import argparse
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

from bti_core.chain.client import DecodedEvent
from bti_core.chain.node import AnvilNode, free_port
from bti_core.config import Settings
from bti_core.db.models import Claim, ClaimAudit, Policy
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
    for kind, frame, tf in ((Kind.MARK, m.mark, "1h"), (Kind.OHLCV, m.ohlcv, "1h")):
        svc.ingestor.ingest_frame(frame, symbol="BTCUSDT", kind=kind, timeframe=tf, source="d")
    svc.ingestor.ingest_frame(
        m.funding, symbol="BTCUSDT", kind=Kind.FUNDING, timeframe="8h", source="d"
    )
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
    args = ap.parse_args()
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
        if args.claims:
            concurrency(svc, env, args.claims)
        if args.runs:
            faults(svc, env, args.runs, args.seed)
        svc.close()


if __name__ == "__main__":
    main()
