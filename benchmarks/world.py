"""The world the chain, claims, crash and stream benchmarks measure in: a fresh SQLite database
and warehouse in a temporary folder holding 90 days of a generated market, a fitted risk engine
and (where a node is given) deployed contracts; and policies written straight to the database
in bulk (as a book that was bought long ago would be)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode
from bti_core.db.engine import make_engine, migrate, session_scope
from bti_core.db.models import Policy, QuoteRecord
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import generate_demo_markets
from bti_core.market.warehouse import Warehouse
from bti_core.risk.engine import RiskEngine

SYMBOL = "BTCUSDT"
MONTH = pd.Timedelta(days=30)


@dataclass
class BenchWorld:
    tmp: Path
    now: datetime
    db: Engine
    warehouse: Warehouse
    ingestor: Ingestor
    risk: RiskEngine
    spot: float
    chain: ChainClient | None

    @property
    def forecasts_dir(self) -> Path:
        return self.tmp / "forecasts"

    def store_bar(self, ts: Any, low: float, close: float | None = None) -> None:
        """Store a live 1h mark bar of the simulated hours ahead, opening at the spot and
        falling to ``low`` (closing at ``close``, default the spot), through an ingestor whose
        clock runs a month ahead (the real one refuses bars from the future, as it should)."""
        c = self.spot if close is None else close
        bar = pd.DataFrame(
            {
                "ts": [ts],
                "open": [self.spot],
                "high": [max(self.spot, c)],
                "low": [low],
                "close": [c],
                "volume": [0.0],
            }
        )
        ahead = Ingestor(self.warehouse, None, clock=lambda: pd.Timestamp.now("UTC") + MONTH)
        ahead.ingest_frame(bar, symbol=SYMBOL, kind=Kind.MARK, timeframe="1h", source="live")


def bench_world(
    tmp: str,
    node: AnvilNode | None = None,
    *,
    pool: Decimal = Decimal(1_000_000),
    durable: bool = True,
) -> BenchWorld:
    """The world in ``tmp``: 90 days of hourly BTCUSDT (seed 2) stored through the ingestor,
    the risk model fitted once (as a running app has it), and with ``node`` the contracts
    deployed with ``pool`` BTI in the pool (``durable``: a node snapshot after each
    transaction, as `make run` has it)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    os.environ["BTI_DATA_DIR"] = tmp
    db = make_engine(f"sqlite:///{tmp}/bti.db")
    migrate(db)
    wh = Warehouse(Path(tmp) / "wh")
    ing = Ingestor(wh, None)
    generate_demo_markets(start=now - timedelta(days=90), periods=24 * 90, seed=2)[SYMBOL].ingest(
        ing
    )
    risk = RiskEngine(wh, n_paths=8_000)
    risk.symbol_risk(SYMBOL)
    chain = None
    if node is not None:
        chain = ChainClient(node.url, on_commit=node.snapshot if durable else None)
        chain.deploy(pool)
    spot = float(wh.latest(Kind.MARK, SYMBOL, "1h")["close"])
    return BenchWorld(Path(tmp), now, db, wh, ing, risk, spot, chain)


def store_policies(db: Engine, rows: list[dict[str, Any]]) -> None:
    """One active policy (and its quote) a row, written straight to the database. A row names
    ``id``, ``user_id``, ``side``, ``liquidation_price``, ``spot``, ``start``, ``end`` and
    may set ``coverage`` (100), ``premium`` (5), ``risk_index`` (50), ``leverage`` (20),
    ``wallet``, ``terms_hash`` and ``chain_policy_id``."""
    with session_scope(db) as s:
        s.add_all(
            [
                QuoteRecord(
                    id=r["id"],
                    expires_at=r["start"],
                    user_id=r["user_id"],
                    symbol=SYMBOL,
                    liquidation_price=r["liquidation_price"],
                    spot=r["spot"],
                    probability=0.2,
                    probability_se=0.0,
                    baseline_probability=0.2,
                    risk_index=r.get("risk_index", 50.0),
                    payout=r.get("coverage", Decimal(100)),
                    premium=r.get("premium", Decimal(5)),
                    created_at=r["start"],
                )
                for r in rows
            ]
        )
    with session_scope(db) as s:
        s.add_all(
            [
                Policy(
                    quote_id=r["id"],
                    user_id=r["user_id"],
                    symbol=SYMBOL,
                    side=r["side"],
                    quantity=Decimal("0.1"),
                    entry_price=r["spot"],
                    leverage=r.get("leverage", Decimal(20)),
                    margin_mode="isolated",
                    order_type="market",
                    margin=Decimal(100),
                    liquidation_price=r["liquidation_price"],
                    coverage=r.get("coverage", Decimal(100)),
                    share=Decimal(1),
                    deductible=Decimal(0),
                    payout=r.get("coverage", Decimal(100)),
                    premium=r.get("premium", Decimal(5)),
                    probability=0.2,
                    risk_index=r.get("risk_index", 50.0),
                    start_at=r["start"],
                    end_at=r["end"],
                    status="active",
                    wallet=r.get("wallet"),
                    terms_hash=r.get("terms_hash"),
                    chain_policy_id=r.get("chain_policy_id"),
                    created_at=r["start"],
                )
                for r in rows
            ]
        )
