"""Chain speed on the local anvil node.

Prints:
1. buyPolicy transactions per second, three ways: the service path (sign the quote, estimate,
   send, wait for the receipt) with the durable state snapshot after each purchase (what the
   app does), the same without snapshots, and pipelined (all signed and sent, then all
   receipts awaited: the node's own capacity);
2. explorer latency on a chain of 10,000 blocks: the latest 50 blocks, a transaction lookup
   with receipt and decoded events, an address page and a policy page (p50/p95; goal ≤ 300 ms
   for the first two).

Run: `.venv/bin/python benchmarks/chain.py`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bti_core.chain.client import ChainClient
from bti_core.chain.explorer import Explorer
from bti_core.chain.node import AnvilNode, free_port
from bti_core.chain.types import QuoteTerms, terms_hash
from bti_core.chain.units import to_units
from bti_core.chain.wallets import CustodialWallets

N_BUYS = 200
TARGET_BLOCKS = 10_000


def ms(xs: list[float], q: float) -> str:
    return f"{np.percentile(xs, q) * 1000:.1f} ms"


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, AnvilNode(Path(tmp), port=free_port()) as node:
        chain = ChainClient(node.url)
        chain.deploy(Decimal(100_000_000))
        demo = CustodialWallets()
        wallets = [demo.of(f"bench-{i}") for i in range(8)]
        for w in wallets:
            chain.faucet(w.address, Decimal(1_000_000))
            chain.ensure_allowance(w, Decimal(1_000_000))
        now = int(time.time())
        k = 0

        def buy_one() -> str:
            nonlocal k
            k += 1
            w = wallets[k % len(wallets)]
            q = QuoteTerms(
                terms_hash({"bench": k}), Decimal(100), Decimal("2.5"), now + 86_400, now + 3_600
            )
            return chain.buy_policy(w, q).tx_hash

        print("== buyPolicy throughput on anvil (automine)")
        for label, on_commit in (
            ("service path + durable snapshot:", node.snapshot),
            ("service path, no snapshot:      ", None),
        ):
            chain.on_commit = on_commit
            t = time.perf_counter()
            for _ in range(N_BUYS):
                buy_one()
            dt = time.perf_counter() - t
            print(f"{label} {N_BUYS / dt:6.1f} tx/s ({dt / N_BUYS * 1000:.0f} ms each)")

        # pipelined: sign everything first, send all, then collect receipts
        pool = chain.pool
        signed = []
        nonces = {w.address: chain.w3.eth.get_transaction_count(w.address) for w in wallets}
        fee = chain.w3.eth.gas_price * 2 + 1
        for _ in range(N_BUYS):
            k += 1
            w = wallets[k % len(wallets)]
            q = {
                "holder": w.address,
                "termsHash": terms_hash({"bench": k}),
                "coverage": to_units(Decimal(100)),
                "premium": to_units(Decimal("2.5")),
                "expiry": now + 86_400,
                "deadline": now + 3_600,
            }
            tx = pool.functions.buyPolicy(tuple(q.values()), chain.sign_quote(q)).build_transaction(
                {
                    "from": w.address,
                    "nonce": nonces[w.address],
                    "gas": 400_000,
                    "maxFeePerGas": fee,
                    "maxPriorityFeePerGas": 1,
                    "chainId": chain.chain_id,
                }
            )
            nonces[w.address] += 1
            signed.append(w.sign_transaction(tx).raw_transaction)
        t = time.perf_counter()
        hashes = [chain.w3.eth.send_raw_transaction(raw) for raw in signed]
        receipts = [
            chain.w3.eth.wait_for_transaction_receipt(h, poll_latency=0.005) for h in hashes
        ]
        dt = time.perf_counter() - t
        assert all(r["status"] == 1 for r in receipts)
        print(f"pipelined (pre-signed, send all, then receipts): {N_BUYS / dt:6.1f} tx/s")

        print(f"\n== explorer on a chain of {TARGET_BLOCKS:,} blocks")
        early_tx = receipts[0]["transactionHash"].to_0x_hex()
        head = chain.w3.eth.block_number
        todo = TARGET_BLOCKS - head - 60
        while todo > 0:  # in chunks: one huge anvil_mine outlasts the HTTP timeout
            chain.w3.provider.make_request("anvil_mine", [hex(min(500, todo))])  # type: ignore[arg-type]
            todo -= 500
        for _ in range(60):  # the newest blocks carry purchases, as on a busy day
            buy_one()
        ex = Explorer(chain)
        print(f"head block {ex.head():,}; {chain.pool_stats().policies:,} policies")
        lat = timed(lambda: ex.latest_blocks(50), 30)
        print(f"latest 50 blocks:   p50 {ms(lat, 50)}, p95 {ms(lat, 95)} (goal ≤ 300 ms)")
        lat = timed(lambda: ex.transaction(early_tx), 30)
        print(f"transaction lookup: p50 {ms(lat, 50)}, p95 {ms(lat, 95)} (goal ≤ 300 ms)")
        lat = timed(lambda: ex.address(wallets[1].address), 10)
        print(f"address page:       p50 {ms(lat, 50)}, p95 {ms(lat, 95)}")
        lat = timed(lambda: ex.policy(5), 30)
        print(f"policy page:        p50 {ms(lat, 50)}, p95 {ms(lat, 95)}")
        lat = timed(lambda: ex.search(early_tx), 30)
        print(f"search by tx hash:  p50 {ms(lat, 50)}, p95 {ms(lat, 95)}")


if __name__ == "__main__":
    main()
