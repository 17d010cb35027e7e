"""A crash at scale: one replayed crash liquidates 10,000 insured positions at once.

Every policy is a real on-chain purchase (its own trader and wallet, the policy token minted
to it) on a local anvil node, recorded in SQLite. The crash's ticks go through the embedded
engine, which opens every claim at its crossing tick, audits and decides them in chunks, and
pays the automatically approved ones in batches through the pool's ``payClaims``. Prints the
time of each stage and the total (goal: everything within 60 s), and checks that every policy
was paid exactly once on-chain, to its own wallet.

Run: `.venv/bin/python benchmarks/crash.py` (2,000 positions; `--n` for another size).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from eth_account import Account
from eth_utils.crypto import keccak
from sqlmodel import Session, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.world import bench_world, store_policies
from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode, free_port
from bti_core.chain.types import DecodedEvent, QuoteTerms
from bti_core.chain.units import to_units
from bti_core.claims.service import ClaimsService
from bti_core.db.models import Claim, Policy
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.ports import StreamDeps
from bti_core.stream.sources import ArraySource

SYMBOL = "BTCUSDT"


def send_all(chain: ChainClient, txs: list[tuple[Any, dict[str, Any]]], what: str) -> None:
    """Sign and send ``(account, tx)`` pairs without waiting, then wait for the last of each
    sender and check that every one succeeded (anvil mines each as it arrives)."""
    w3 = chain.w3
    failed = 0
    for i in range(0, len(txs), 100):  # the node's pool holds a bounded number of pending txs
        # bursts of full blocks push the base fee up 12.5 % a block: bring it back down, and
        # pay a fixed price well above it (the node's own suggestion ran away past 5,000 buys)
        w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(10**9)])
        price = 10 * 10**9
        hashes = []
        for acct, tx in txs[i : i + 100]:
            tx = {**tx, "gasPrice": price, "chainId": chain.chain_id}
            try:
                raw = acct.sign_transaction(tx).raw_transaction
                hashes.append(w3.eth.send_raw_transaction(raw))
            except Exception:
                bal = w3.eth.get_balance(acct.address)
                print(f"{what}: {acct.address} holds {bal} wei; gas {tx['gas']} × {price}")
                raise
        for h in hashes:
            r = w3.eth.wait_for_transaction_receipt(h, timeout=120, poll_latency=0.01)
            failed += r["status"] != 1
    if failed:
        raise SystemExit(f"{failed} of {len(txs)} {what} transactions failed")


def setup(n: int, tmp: str, node: AnvilNode) -> SimpleNamespace:
    # no snapshot per transaction while setting up
    w = bench_world(tmp, node, pool=Decimal(n) * 200, durable=False)
    assert w.chain is not None
    setup_chain, now, spot, db, wh = w.chain, w.now, w.spot, w.db, w.warehouse
    w3 = setup_chain.w3
    accts = [Account.from_key(keccak(text=f"bti-crash-bench-{i}")) for i in range(n)]
    t = time.perf_counter()
    for a in accts:  # gas money straight from the node (no transaction)
        w3.provider.make_request("anvil_setBalance", [a.address, hex(10**21)])
    token, pool = setup_chain.token, setup_chain.pool
    admin = setup_chain.admin
    nonce = int(w3.eth.get_transaction_count(admin.address))
    send_all(
        setup_chain,
        [
            (
                admin,
                {
                    "to": token.address,
                    "data": token.encode_abi("mint", [a.address, to_units(Decimal(10))]),
                    "gas": 120_000,
                    "nonce": nonce + i,
                },
            )
            for i, a in enumerate(accts)
        ],
        "mint",
    )
    send_all(
        setup_chain,
        [
            (
                a,
                {
                    "to": token.address,
                    "data": token.encode_abi("approve", [pool.address, 2**256 - 1]),
                    "gas": 80_000,
                    "nonce": 0,
                },
            )
            for a in accts
        ],
        "approve",
    )
    start, end = now - timedelta(hours=3), now + timedelta(days=2)
    rng = np.random.default_rng(5)
    lps = spot * rng.uniform(0.90, 0.96, n)
    terms = [keccak(text=f"bti-crash-bench-terms-{i}") for i in range(n)]
    buys = []
    deadline = int(time.time()) + 3600
    for i, a in enumerate(accts):
        quote, sig = setup_chain._signed_quote(
            a.address,
            QuoteTerms(terms[i], Decimal(100), Decimal(5), int(end.timestamp()), deadline),
        )
        data = pool.encode_abi("buyPolicy", [quote, sig])
        buys.append((a, {"to": pool.address, "data": data, "gas": 400_000, "nonce": 1}))
    send_all(setup_chain, buys, "buy")
    ids = {
        bytes(ev["args"]["termsHash"]): int(ev["args"]["policyId"])
        for ev in pool.events.PolicyPurchased().get_logs(from_block=0, to_block="latest")
    }
    store_policies(
        db,
        [
            {
                "id": f"crash-{i}",
                "user_id": f"trader-{i}",
                "side": "long",
                "liquidation_price": Decimal(f"{lps[i]:.2f}"),
                "spot": Decimal(f"{spot:.2f}"),
                "start": start,
                "end": end,
                "wallet": accts[i].address,
                "terms_hash": "0x" + terms[i].hex(),
                "chain_policy_id": ids[terms[i]],
            }
            for i in range(n)
        ],
    )
    print(f"setup: {n:,} policies bought on-chain and recorded in {time.perf_counter() - t:.0f} s")

    # the crash: the mark falls 15 % within a minute, an hour from now (its bar stored, as
    # the exchange's feed would bring it)
    at = pd.Timestamp(now) + pd.Timedelta(hours=1)
    w.store_bar(at, spot * 0.85, spot * 0.86)
    t0 = int(at.timestamp() * 1000) + 60_000
    ticks = ArraySource(
        np.full(60, SYMBOL, dtype=object),
        t0 + 1000 * np.arange(60, dtype=np.int64),
        spot * np.linspace(1.0, 0.85, 60),
    )
    return SimpleNamespace(
        db=db, wh=wh, risk=w.risk, ticks=ticks, n=n, deployment=setup_chain.deployment
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    # 10,000 is the goal's size; funding 10,000 wallets takes 30,000 setup transactions
    ap.add_argument("--n", type=int, default=2_000, help="insured positions liquidated")
    ap.add_argument("--profile", action="store_true", help="print where the time goes")
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnvilNode(Path(tmp) / "chain", port=free_port()) as node,
    ):
        w = setup(args.n, tmp, node)
        # durable (a snapshot of the node after each transaction), as `make run` is
        chain = ChainClient(node.url, w.deployment, on_commit=node.snapshot)
        claims = ClaimsService(w.db, w.wh, chain, risk=w.risk)
        services = StreamDeps(w.db, w.wh, w.risk, claims, Path(tmp) / "forecasts")
        stages: dict[str, float] = {}

        def timed(name: str, fn: Any) -> Any:
            def run(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

            return run

        claims.open_from_ticks = timed("open", claims.open_from_ticks)  # type: ignore[method-assign]
        claims._audit_and_decide_many = timed("audit and decide", claims._audit_and_decide_many)  # type: ignore[method-assign]
        claims.payments.pay_many = timed("pay on-chain", claims.payments.pay_many)  # type: ignore[method-assign]
        eng = EmbeddedEngine(services, w.ticks, name="crash", batch=10_000)
        t = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as prof:
                reports = eng.run()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        else:
            reports = eng.run()
        total = time.perf_counter() - t

        with Session(w.db) as s:
            rows = s.exec(select(Claim)).all()
        states = Counter(c.state for c in rows)
        paid_events = [
            e for e in chain.events() if isinstance(e, DecodedEvent) and e.name == "ClaimPaid"
        ]
        per_policy = Counter(int(e.args["policyId"]) for e in paid_events)
        txs = {c.payout_tx for c in rows if c.payout_tx}
        print(f"\n== a crash liquidating {w.n:,} insured positions at once")
        for name, secs in stages.items():
            print(f"{name:>18}: {secs:6.1f} s")
        print(
            f"{'total':>18}: {total:6.1f} s (goal ≤ 60 s) — "
            f"{sum(len(r.claims) for r in reports):,} claims opened, {dict(states)}; "
            f"{len(paid_events):,} ClaimPaid events in "
            f"{len(txs)} transactions"
        )
        assert len(rows) == w.n, f"{len(rows)} claims for {w.n} liquidations"
        assert all(v == 1 for v in per_policy.values()), "a policy was paid twice"
        assert len(per_policy) == states.get("paid", 0)
        paid_to = {int(e.args["policyId"]): str(e.args["to"]).lower() for e in paid_events}
        with Session(w.db) as s:
            wrong = sum(
                p.chain_policy_id in paid_to and paid_to[p.chain_policy_id] != str(p.wallet).lower()
                for p in s.exec(select(Policy)).all()
            )
        if txs:
            gas = [int(chain.w3.eth.get_transaction_receipt(h)["gasUsed"]) for h in txs]
            per = sum(gas) / max(len(paid_events), 1)
            print(f"gas: {per:,.0f} a payout, {max(gas):,} the largest transaction")
        print(f"paid exactly once each, {wrong} to a wallet other than the policy's own")


if __name__ == "__main__":
    main()
