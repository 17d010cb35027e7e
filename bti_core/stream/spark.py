"""Spark Structured Streaming: the same scoring module at scale (pyspark, the ``spark`` extra).

The query:

1. **Source** — ``bti_kafka``, a Python streaming data source (`pyspark.sql.datasource`)
   reading the ticks topic with confluent-kafka in the driver (`KafkaTickReader`, a
   `SimpleDataSourceStreamReader`). Its offsets (partition → next offset) live in Spark's
   checkpoint: a batch is planned by reading from the last committed offsets, and replayed
   after a failure by reading exactly between its offsets again. Rows: ``symbol, ts, mark,
   partition, offset``; a message that is not a valid tick is skipped and logged.
2. **State** — ``groupBy(symbol).applyInPandasWithState``: each symbol's `SymbolState` (its
   JSON) is Spark's per-group state; a group's rows, in partition-offset order (a symbol's
   ticks are in one partition, keyed by symbol), drop late ticks as the embedded Kafka source
   does and are scored by `bti_core.stream.scoring.score` against the symbol's book, read
   from the database in the executor (`engine.read_book`).
3. **Sink** — ``foreachBatch`` in the driver: the batch's liquidations open their claims
   through the claims service (`engine.open_claims`: audited, decided, paid), the optional
   `KafkaSink` publishes alerts and claims, and the alerts are stored with the batch id as
   the stream's checkpoint offset (`store.write_batch`). A batch Spark runs again after a
   crash opens no claim twice (one per policy) and stores no alert twice (keyed).

So for the same ticks the Spark job's alerts and claims are the embedded engine's.

Local mode by default (``local[2]``, the UI off, bound to 127.0.0.1). At scale: read Kafka
with Spark's own connector (``spark-sql-kafka-0-10``, ``.format("kafka")``) and point the
master at the cluster (README, "Running at scale").
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bti_core.stream.engine import (
    PENDING_MS,
    fresh_state,
    market_context,
    open_claims,
    proven_liquidations,
    read_book,
    stored_mark_before,
)
from bti_core.stream.kafka import TICKS
from bti_core.stream.ports import BatchReport, StreamDeps
from bti_core.stream.scoring import score
from bti_core.stream.spark_source import (
    SOURCE,
    SparkError,
    reader_classes,
    require_pyspark,
)
from bti_core.stream.store import write_batch
from bti_core.stream.types import DEFAULT_RULES, NO_CONTEXT, Context, Event, Rules, SymbolState

log = logging.getLogger("bti.stream.spark")
# pyspark's worker concatenates the frames a group yields; a batch whose events carry no
# policy has all-NA columns, about which pandas warns (the result is the same)
warnings.filterwarnings(
    "ignore",
    message="The behavior of DataFrame concatenation with empty or all-NA",
    category=FutureWarning,
)

EVENT_SCHEMA = (
    "kind STRING, symbol STRING, at_ms LONG, price DOUBLE, policy LONG, value DOUBLE, "
    "owner STRING, since_ms LONG, detail ARRAY<DOUBLE>"
)
STATE_SCHEMA = "state STRING"
TICKS_ROW = "__ticks__"  # one row a group and batch: how many ticks it scored (value)
UNKNOWN_ROW = "__unknown__"  # ticks of a symbol that is no market here: dropped, no state


# --- the per-symbol state ----------------------------------------------------------------------

_ENGINES: dict[str, Any] = {}  # database URL → engine, one per executor process


def _db(url: str) -> Any:
    if url not in _ENGINES:
        from bti_core.db.engine import make_engine

        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


@dataclass(frozen=True)
class Scorer:
    """The function Spark calls per symbol and batch (pickled to the executors)."""

    db_url: str
    initial: dict[str, str]  # symbol → first state as JSON (the risk engine's fit)
    rules: Rules = DEFAULT_RULES
    # symbol → `Context` as JSON (funding, forecast band), read in the driver at the start
    contexts: dict[str, str] = field(default_factory=dict)
    clock_offset_ms: int = 0  # the claims' clock minus this machine's (tests run it ahead)

    def __call__(
        self, key: tuple[str], frames: Iterator[pd.DataFrame], group: Any
    ) -> Iterator[pd.DataFrame]:
        sym = key[0]
        pdf = pd.concat(list(frames), ignore_index=True).sort_values(
            ["partition", "offset"], kind="stable"
        )
        columns = [c.split()[0] for c in EVENT_SCHEMA.split(", ")]

        def row(kind: str, at: int, value: float) -> dict[str, Any]:
            return {
                "kind": kind,
                "symbol": sym,
                "at_ms": at,
                "price": float("nan"),
                "policy": None,
                "value": value,
                "owner": None,
                "since_ms": -1,
                "detail": [],
            }

        if sym not in self.initial:  # no market here: dropped, counted, and no state kept
            out = pd.DataFrame([row(UNKNOWN_ROW, -1, float(len(pdf)))], columns=columns)
            yield out.astype({"policy": "Int64"})
            return
        state = (
            SymbolState.from_json(group.get[0])
            if group.exists
            else SymbolState.from_json(self.initial[sym])
        )
        ts = pdf["ts"].to_numpy(dtype=np.int64)
        px = pdf["mark"].to_numpy(dtype=np.float64)
        now_ms = int(time.time() * 1000) + self.clock_offset_ms
        # a tick from beyond the clock is refused first (`score` counts it): it must not make
        # the true ticks after it look late. Late or repeated ticks (older than the newest
        # before them) are dropped, as the embedded Kafka source drops them
        future = ts > now_ms + self.rules.max_ahead_ms
        state.refused_future += int(future.sum())
        ts, px = ts[~future], px[~future]
        prior = np.maximum.accumulate(np.concatenate([[state.last_ms], ts]))[:-1]
        keep = ts >= prior
        ts, px = ts[keep], px[keep]
        rows: list[dict[str, Any]] = []
        if len(ts):
            book, owners = read_book(_db(self.db_url), sym, int(ts[0]) - PENDING_MS)
            pending = np.array([int(k) for k in state.pending], dtype=np.int64)
            book = book.take(
                ((book.end_ms >= int(ts[0])) & (book.start_ms <= int(ts[-1])))
                | np.isin(book.policy, pending)
            )
            ctx = Context.from_json(self.contexts[sym]) if sym in self.contexts else NO_CONTEXT
            state, events, _ = score(state, book, ts, px, self.rules, ctx, now_ms=now_ms)
            rows = [
                {
                    "kind": e.kind,
                    "symbol": e.symbol,
                    "at_ms": e.at_ms,
                    "price": e.price,
                    "policy": e.policy,
                    "value": e.value,
                    "owner": None if e.policy is None else owners.get(e.policy),
                    "since_ms": e.since_ms,
                    "detail": list(e.detail),
                }
                for e in events
            ]
        group.update((state.to_json(),))
        rows.append(row(TICKS_ROW, int(ts[-1]) if len(ts) else -1, float(len(ts))))
        out = pd.DataFrame(rows, columns=columns)
        yield out.astype({"policy": "Int64"})


# --- the sink and the query --------------------------------------------------------------------


@dataclass
class SparkRun:
    """What the query's batches did (the driver's view, for the CLI, tests and benchmark)."""

    batches: list[BatchReport] = field(default_factory=list)

    @property
    def ticks(self) -> int:
        return sum(r.ticks for r in self.batches)


def batch_sink(
    deps: StreamDeps,
    name: str,
    run: SparkRun,
    sink: Callable[[str, BatchReport], None] | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Callable[[Any, int], None]:
    """``foreachBatch``: claims, the optional Kafka sink, then the alerts (module docstring)."""

    def handle(df: Any, batch_id: int) -> None:
        rows = df.collect()
        events = sorted(
            (
                Event(
                    r["kind"],
                    r["symbol"],
                    int(r["at_ms"]),
                    float(r["price"]),
                    None if r["policy"] is None else int(r["policy"]),
                    float(r["value"]),
                    int(r["since_ms"]),
                    tuple(float(x) for x in (r["detail"] or ())),
                )
                for r in rows
                if r["kind"] not in (TICKS_ROW, UNKNOWN_ROW)
            ),
            key=lambda e: (e.at_ms, e.symbol, e.kind),
        )
        ticks = int(sum(r["value"] for r in rows if r["kind"] == TICKS_ROW))
        unknown = [r for r in rows if r["kind"] == UNKNOWN_ROW]
        for r in unknown:
            log.warning("dropped %d ticks of %r: no such market here", int(r["value"]), r["symbol"])
        owners = {int(r["policy"]): r["owner"] for r in rows if r["policy"] is not None}
        report = BatchReport(batch_id, ticks, events=events, owners=owners, read=ticks)
        report.unknown = int(sum(r["value"] for r in unknown))
        report.claims, report.opened = open_claims(deps, name, events, None, rules)
        report.events += proven_liquidations(report.events, report.opened)
        if sink is not None:
            sink(name, report)
        written = write_batch(
            deps.db,
            name,
            report.events,
            owners=owners,
            offset=batch_id + 1,
            state={"engine": "spark", "batch": batch_id},
        )
        report.alerts = written.alerts
        run.batches.append(report)

    return handle


def offset_ms(deps: StreamDeps) -> int:
    """The claims' clock minus this machine's, in ms (0 in production; tests run it ahead)."""
    return int((deps.claims.clock().timestamp() - time.time()) * 1000)


def session(master: str = "local[2]", *, app: str = "bti-stream") -> Any:
    """A Spark session for the stream: local mode bound to 127.0.0.1 with the UI off unless
    ``master`` names a cluster; the executors run this interpreter (``PYSPARK_PYTHON``)."""
    require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    b = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")  # one state store per partition
    )
    if master.startswith("local"):
        b = b.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    source, _ = reader_classes()
    spark.dataSource.register(source)
    return spark


def start(
    spark: Any,
    deps: StreamDeps,
    *,
    bootstrap: str,
    checkpoint: Path,
    name: str = "spark",
    topic: str = TICKS,
    rules: Rules = DEFAULT_RULES,
    max_ticks: int = 50_000,
    trigger_seconds: float = 0.5,
    sink: Callable[[str, BatchReport], None] | None = None,
    symbols: list[str] | None = None,
) -> tuple[Any, SparkRun]:
    """Start the query (module docstring); returns it and the driver's record of its batches.
    ``symbols``: those whose first state comes from the risk engine's fit (default: every
    symbol the warehouse holds mark prices of)."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    from bti_core.market.schema import Kind

    known = symbols if symbols is not None else deps.risk.warehouse.symbols(Kind.MARK)
    first: dict[str, str] = {}
    for sym in known:
        state = fresh_state(deps, sym)
        # the newest stored mark is the first trusted price (ticks older than it, a replay of
        # history, start from their own first tick instead)
        seed = stored_mark_before(deps, sym, int(time.time() * 1000) + offset_ms(deps))
        if seed is not None:
            state.trusted_ms, state.trusted_price = seed
        first[sym] = state.to_json()
    scorer = Scorer(
        deps.db.url.render_as_string(hide_password=False),
        first,
        rules,
        {s: market_context(deps, s).to_json() for s in known},
        offset_ms(deps),
    )
    ticks = (
        spark.readStream.format(SOURCE)
        .option("bootstrap", bootstrap)
        .option("topic", topic)
        .option("maxTicksPerBatch", str(max_ticks))
        .option("symbols", ",".join(sorted(known)))
        .load()
    )
    events = ticks.groupBy("symbol").applyInPandasWithState(
        scorer, EVENT_SCHEMA, STATE_SCHEMA, "append", GroupStateTimeout.NoTimeout
    )
    run = SparkRun()
    query = (
        events.writeStream.foreachBatch(batch_sink(deps, name, run, sink, rules))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{trigger_seconds} seconds")
        .queryName(name)
        .start()
    )
    return query, run


def progress(query: Any) -> dict[str, Any]:
    """The query's last progress report (rows per second, batch duration) as a dict."""
    p = query.lastProgress
    if not p:
        return {}
    return dict(json.loads(p.json)) if hasattr(p, "json") else dict(p)


def supervise(
    query: Any,
    run: SparkRun,
    *,
    idle_exit: float | None = None,
    on_batch: Callable[[Any], None] = lambda _r: None,
    poll: float = 0.5,
) -> dict[str, Any]:
    """Watch a started query until it stops, fails or has been idle ``idle_exit`` seconds
    (counted from its first trigger: Spark's start-up is not idleness); ``on_batch`` sees each
    batch's report once. Stops the query and returns its last progress report (`progress`).
    Raises `SparkError` with Spark's own reason if the query failed."""
    seen, last = 0, time.monotonic()
    while query.isActive:
        time.sleep(poll)
        if len(run.batches) > seen:
            for r in run.batches[seen:]:
                on_batch(r)
            seen, last = len(run.batches), time.monotonic()
        if query.exception() is not None:
            raise SparkError(f"the Spark query stopped: {query.exception()}")
        if query.lastProgress is None:
            last = time.monotonic()  # still starting: idle counts from the first trigger
        elif idle_exit is not None and time.monotonic() - last > idle_exit:
            break
    p = progress(query)
    query.stop()
    return p
