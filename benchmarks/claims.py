"""Claims speed, end to end on a local anvil node and SQLite.

Prints:
1. time from the liquidating mark bar being stored to the payout transaction being mined, for
   an auto-approved claim: store the bar → scan → open → audit → decide → pay → receipt
   (p50 / max over several claims; goal ≤ 2 s);
2. claims audited and decided per second (the automatic audit and decision of many opened
   claims, without the payment).

Run: `.venv/bin/python benchmarks/claims.py`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.world import bench_world, store_policies
from bti_core.chain.node import AnvilNode, free_port
from bti_core.claims.service import ClaimsService
from bti_core.market.schema import Kind
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService

TRIALS = 8
MANY = 300


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnvilNode(Path(tmp) / "chain", port=free_port()) as node,
    ):
        w = bench_world(tmp, node)
        assert w.chain is not None
        chain, wh, now = w.chain, w.warehouse, w.now
        ins = InsuranceService(w.db, w.risk, chain=chain)
        claims = ClaimsService(w.db, wh, chain)

        print("== liquidating bar stored → payout mined (auto-approved claims)")
        lat = []
        t_bar = pd.Timestamp(now) + pd.Timedelta(hours=2)
        for k in range(TRIALS + 1):
            user = f"bench-{k}"
            chain.faucet(ins.wallet_of(user).address, Decimal(1000))
            spot = float(wh.latest(Kind.MARK, "BTCUSDT", "1h")["close"])
            q = ins.quote(
                user_id=user,
                order=Order(
                    "BTCUSDT", "long", Decimal("0.1"), Decimal(str(round(spot, 2))), Decimal(20)
                ),
                cover=Cover(coverage="100", duration_hours=720),
            )
            pol = ins.buy(user_id=user, quote_id=q.record.id)
            lp = float(pol.liquidation_price)
            t = time.perf_counter()
            w.store_bar(t_bar, lp * 0.99)
            report = claims.run()
            dt = time.perf_counter() - t
            assert len(report.paid) == 1, report
            if k:  # the first is a warm-up
                lat.append(dt)
            t_bar += pd.Timedelta(hours=1)
        print(
            f"p50 {np.median(lat):.3f} s, max {max(lat):.3f} s over {TRIALS} claims (goal ≤ 2 s; "
            "incl. the durable chain snapshot)"
        )

        print(f"\n== automatic audit and decision of {MANY} claims")
        base = pd.Timestamp(t_bar) + pd.Timedelta(hours=2)
        start = base.to_pydatetime() - timedelta(hours=2)
        store_policies(
            w.db,
            [
                {
                    "id": f"bench-many-{i}",
                    "user_id": f"u{i}" if i % 2 else f"s{i % 10}",
                    "side": "long",
                    "liquidation_price": Decimal(str(round(spot * 0.96, 2))),
                    "spot": Decimal(str(round(spot, 2))),
                    "start": start,
                    "end": base.to_pydatetime() + timedelta(days=3),
                }
                for i in range(MANY)
            ],
        )
        w.store_bar(base, spot * 0.9)
        t = time.perf_counter()
        opened = claims.scan()
        t_scan = time.perf_counter() - t
        t = time.perf_counter()
        states = [claims.audit_and_decide(c).state for c in opened]
        dt = time.perf_counter() - t
        print(f"scan opened {len(opened)} claims in {t_scan:.2f} s ({len(opened) / t_scan:,.0f}/s)")
        print(
            f"audited and decided {len(states)} in {dt:.2f} s: {len(states) / dt:,.0f} claims/s "
            f"({pd.Series(states).value_counts().to_dict()})"
        )


if __name__ == "__main__":
    main()
