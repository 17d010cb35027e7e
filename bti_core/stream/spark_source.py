"""The Spark job's source of ticks: ``bti_kafka``, a Python streaming data source
(`pyspark.sql.datasource`) reading the ticks topic with confluent-kafka in the driver. Its
offsets (partition → next offset) live in Spark's checkpoint: a batch is planned by reading
from the last committed offsets, and replayed after a failure by reading exactly between its
offsets again; a message that is not a valid tick is skipped, logged and dead-lettered."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

from bti_core.errors import BTIError
from bti_core.stream.kafka import DEAD, TICKS, DeadLetters, _config, decode_ticks

log = logging.getLogger("bti.stream.spark")
SOURCE = "bti_kafka"
TICK_SCHEMA = "symbol STRING, ts LONG, mark DOUBLE, partition INT, offset LONG"


class SparkError(BTIError):
    """pyspark is missing, or the Spark job could not start."""


def require_pyspark() -> Any:
    try:
        import pyspark
    except ImportError as exc:  # an optional extra
        raise SparkError(
            "Spark Structured Streaming needs pyspark: pip install 'bti[spark]'"
        ) from exc
    return pyspark


def _read_range(
    consumer: Any,
    topic: str,
    start: dict[str, int],
    end: dict[str, int] | None,
    limit: int,
    position: dict[str, int] | None = None,
    known: frozenset[str] | None = None,
    dead: DeadLetters | None = None,
) -> tuple[list[tuple[str, int, float, int, int]], dict[str, int]]:
    """Messages of ``topic`` from ``start`` (partition → next offset): up to ``limit`` of
    those there now, or — with ``end`` — exactly those before ``end``. The valid ticks as rows
    and the offsets after what was read. ``position``: where the consumer stands after the
    last read; when it is ``start`` the consumer reads on without seeking (and without the
    first fetch's wait)."""
    from confluent_kafka import TopicPartition

    at = dict(start)
    idle_wait = 0.05
    if position != start:
        parts = sorted(int(p) for p in start)
        consumer.assign([TopicPartition(topic, p, start[str(p)]) for p in parts])
        idle_wait = 3.0  # the first fetch after assigning takes a while
    msgs: list[Any] = []

    def done() -> bool:
        if end is None:
            return len(msgs) >= limit
        return all(at[k] >= end.get(k, at[k]) for k in at)

    while not done():
        want = limit - len(msgs) if end is None else 10_000
        got = consumer.consume(max(want, 1), idle_wait)
        if not got:
            if end is None:
                break  # nothing more there now
            missing = {k: (at[k], v) for k, v in end.items() if at.get(k, 0) < v}
            raise SparkError(f"{topic}: offsets {missing} could not be read again")
        idle_wait = 0.05
        for m in got:
            if m.error() is not None:
                raise SparkError(f"reading {topic}: {m.error()}")
            k = str(m.partition())
            if end is not None and m.offset() >= end.get(k, 0):
                continue  # beyond the batch being replayed
            at[k] = m.offset() + 1
            msgs.append(m)
    rows = []
    for m, tick in zip(msgs, decode_ticks([m.value() for m in msgs]), strict=True):
        reason = tick if isinstance(tick, str) else None
        if reason is None and known is not None and tick[0] not in known:
            reason = f"{tick[0]} is no market here (none of {len(known)} known)"
        if reason is not None:
            log.warning(
                "skipped %s partition %s offset %s: %s", topic, m.partition(), m.offset(), reason
            )
            if dead is not None:
                dead.send(m, reason)
            continue
        assert not isinstance(tick, str)
        rows.append((tick[0], tick[1], tick[2], m.partition(), m.offset()))
    if dead is not None:
        dead.flush()
    return rows, at


def reader_classes() -> tuple[type, type]:
    """The data source and its reader (pyspark is imported only when Spark is used)."""
    from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader

    class KafkaTickReader(SimpleDataSourceStreamReader):
        """Ticks from the topic, read in the driver from the offsets Spark checkpointed. The
        confluent-kafka client does not pickle: it is made inside the methods."""

        def __init__(self, options: dict[str, str]) -> None:
            opts = {k.lower(): v for k, v in options.items()}  # Spark's are case-insensitive
            self.bootstrap = opts["bootstrap"]
            self.topic = opts.get("topic", TICKS)
            self.limit = int(opts.get("maxticksperbatch", "50000"))
            listed = opts.get("symbols", "")
            self.known = frozenset(listed.split(",")) if listed else None
            self.dead_topic = opts.get("deadletters", DEAD) or None
            self._dead: Any = None
            self._consumer: Any = None
            self._at: dict[str, int] | None = None  # where the consumer stands

        def _client(self) -> Any:
            if self._consumer is None:
                from confluent_kafka import Consumer

                self._consumer = Consumer(
                    _config(
                        self.bootstrap,
                        {
                            "group.id": "bti-spark",  # required; no group is joined
                            "enable.auto.commit": False,
                            "queued.min.messages": 500_000,
                            "fetch.max.bytes": 50 * 2**20,
                            "max.partition.fetch.bytes": 10 * 2**20,
                            "fetch.wait.max.ms": 10,
                        },
                    )
                )
            return self._consumer

        def initialOffset(self) -> dict[str, int]:  # noqa: N802 — Spark's name
            md = self._client().list_topics(self.topic, timeout=10)
            t = md.topics.get(self.topic)
            if t is None or t.error is not None:
                raise SparkError(f"no topic {self.topic} on {self.bootstrap}")
            return {str(p): 0 for p in sorted(t.partitions)}

        def _dead_letters(self) -> Any:
            if self._dead is None and self.dead_topic is not None:
                self._dead = DeadLetters(self.bootstrap, self.dead_topic)
            return self._dead

        def read(self, start: dict[str, int]) -> tuple[Iterator[tuple[Any, ...]], dict[str, int]]:
            rows, end = _read_range(
                self._client(),
                self.topic,
                start,
                None,
                self.limit,
                self._at,
                self.known,
                self._dead_letters(),
            )
            self._at = end  # consume() returned no more than asked: the consumer is there
            return iter(rows), end

        def readBetweenOffsets(  # noqa: N802
            self, start: dict[str, int], end: dict[str, int]
        ) -> Iterator[tuple[Any, ...]]:
            # a batch read again after a failure: its dead letters went out the first time
            rows, _ = _read_range(
                self._client(), self.topic, start, end, sys.maxsize, self._at, self.known
            )
            self._at = None  # messages beyond ``end`` were fetched and dropped: seek next time
            return iter(rows)

        def commit(self, end: dict[str, int]) -> None:
            pass  # the offsets are Spark's checkpoint; the broker keeps no group

    class KafkaTicks(DataSource):
        """``spark.readStream.format("bti_kafka").option("bootstrap", "host:port")``."""

        @classmethod
        def name(cls) -> str:
            return SOURCE

        def schema(self) -> str:
            return TICK_SCHEMA

        def simpleStreamReader(self, schema: Any) -> KafkaTickReader:  # noqa: N802
            if not any(k.lower() == "bootstrap" for k in self.options):
                raise SparkError("the bti_kafka source needs option('bootstrap', 'host:port')")
            return KafkaTickReader(dict(self.options))

    return KafkaTicks, KafkaTickReader
