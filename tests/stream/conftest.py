"""Fixtures of the stream tests: a Kafka-compatible broker and a Binance websocket, each on
127.0.0.1 for one test. A test that uses the broker is marked ``kafka`` (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bti_core.stream.broker import LocalBroker
from bti_core.stream.kafka import ALERTS, CLAIMS, TICKS, ensure_topics
from tests.stream.exchange_ws import BinanceWs


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A memory-only broker with BTI's topics; the ticks topic has the test module's
    ``TICK_PARTITIONS`` partitions (3 by default)."""
    partitions = getattr(request.module, "TICK_PARTITIONS", 3)
    with LocalBroker() as b:
        ensure_topics(b.bootstrap, {TICKS: partitions, ALERTS: 1, CLAIMS: 1})
        yield b.bootstrap


@pytest.fixture
def binance_ws() -> Iterator[BinanceWs]:
    server = BinanceWs()
    yield server
    server.close()
