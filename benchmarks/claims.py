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

import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode, free_port
from bti_core.claims.service import ClaimsService
from bti_core.db.engine import make_engine, migrate, session_scope
from bti_core.db.models import Policy, QuoteRecord
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets
from bti_core.market.warehouse import Warehouse
from bti_core.orders import Cover, Order
from bti_core.policies import InsuranceService
from bti_core.risk.engine import RiskEngine

TRIALS = 8
MANY = 300


def main() -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnvilNode(Path(tmp) / "chain", port=free_port()) as node,
    ):
        os.environ["BTI_DATA_DIR"] = tmp
        db = make_engine(f"sqlite:///{tmp}/bti.db")
        migrate(db)
        wh = Warehouse(Path(tmp) / "wh")
        ing = Ingestor(wh, None)
        m = generate_demo_markets(start=now - timedelta(days=90), periods=24 * 90, seed=2)[
            "BTCUSDT"
        ]
        m.ingest(ing)
        chain = ChainClient(node.url, on_commit=node.snapshot)
        chain.deploy(Decimal(1_000_000))
        ins = InsuranceService(db, RiskEngine(wh, n_paths=8_000), chain=chain)
        claims = ClaimsService(db, wh, chain)
        ins.risk.symbol_risk("BTCUSDT")  # fit once, as a running app has

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
            bar = pd.DataFrame(
                {
                    "ts": [t_bar],
                    "open": [spot],
                    "high": [spot * 1.001],
                    "low": [lp * 0.99],
                    "close": [spot],
                    "volume": [0.0],
                }
            )
            t = time.perf_counter()
            ing.ingest_frame(bar, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="live")
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
        with session_scope(db) as s:
            for i in range(MANY):
                s.add(
                    QuoteRecord(
                        id=f"bench-many-{i}",
                        expires_at=base.to_pydatetime(),
                        user_id="x",
                        symbol="BTCUSDT",
                        liquidation_price=Decimal(1),
                        spot=Decimal(1),
                        probability=0.2,
                        probability_se=0.0,
                        baseline_probability=0.2,
                        risk_index=50,
                        payout=Decimal(100),
                        premium=Decimal(5),
                    )
                )
        with session_scope(db) as s:
            for i in range(MANY):
                s.add(
                    Policy(
                        quote_id=f"bench-many-{i}",
                        user_id=f"u{i}" if i % 2 else f"s{i % 10}",
                        symbol="BTCUSDT",
                        side="long",
                        quantity=Decimal("0.1"),
                        entry_price=Decimal(spot),
                        leverage=Decimal(20),
                        margin_mode="isolated",
                        order_type="market",
                        margin=Decimal(100),
                        liquidation_price=Decimal(str(round(spot * 0.96, 2))),
                        coverage=Decimal(100),
                        share=Decimal(1),
                        deductible=Decimal(0),
                        payout=Decimal(100),
                        premium=Decimal(5),
                        probability=0.2,
                        risk_index=50,
                        start_at=base.to_pydatetime() - timedelta(hours=2),
                        end_at=base.to_pydatetime() + timedelta(days=3),
                        status="active",
                    )
                )
        crash = pd.DataFrame(
            {
                "ts": [base],
                "open": [spot],
                "high": [spot],
                "low": [spot * 0.9],
                "close": [spot],
                "volume": [0.0],
            }
        )
        ing.ingest_frame(crash, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="live")
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
