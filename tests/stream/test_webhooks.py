"""Alert subscriptions delivered to a webhook — a real HTTP server on 127.0.0.1 — on SQLite
and PostgreSQL: what a subscription matches, once per alert and subscription (even with two
workers delivering at once), retried when the receiver fails, given up after the last
attempt; bad subscriptions refused with what is allowed, storing nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core.db.models import AlertDelivery, AlertSubscription
from bti_core.db.types import utcnow
from bti_core.stream import webhooks
from bti_core.stream.store import write_batch
from bti_core.stream.webhooks import SubscriptionError, deliver, subscribe, unsubscribe
from tests.stream.test_store import ALICE, BOB, OWNERS, UW, events


class Receiver:
    """A webhook receiver: records each POST; answers ``status`` (a list: one per request)."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.status: list[int] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                me.got.append((json.loads(self.rfile.read(n)), dict(self.headers)))
                code = me.status.pop(0) if me.status else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def keys(self) -> list[str]:
        return [h["X-BTI-Alert-Key"] for _, h in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_each_matching_alert_is_posted_once_per_subscription(
    engine: Engine, receiver: Receiver
) -> None:
    write_batch(engine, "s", events(3), owners=OWNERS, offset=3, state={})  # before: not sent
    mine = subscribe(engine, ALICE, webhook_url=receiver.url)
    near = subscribe(engine, UW, webhook_url=receiver.url, scope="all", kinds=["volatility_spike"])
    write_batch(engine, "s", events(6, start=10), owners=OWNERS, offset=9, state={})
    done = deliver(engine)
    # alice's policies are 1 and 3: 4 of the 6 new near-liquidation alerts; the spike to the UW
    assert (done.sent, done.retried, done.failed) == (5, 0, 0)
    bodies = [b for b, _ in receiver.got]
    assert sorted(b["subscription"] for b in bodies) == sorted([mine.id] * 4 + [near.id])
    assert all(b["user"] == "alice" for b in bodies if b["subscription"] == mine.id)
    assert {b["kind"] for b in bodies if b["subscription"] == near.id} == {"volatility_spike"}
    assert all(h["X-BTI-Alert-Key"] == b["key"] for b, h in receiver.got)
    assert not deliver(engine)  # nothing twice
    assert len(receiver.got) == 5

    unsubscribe(engine, ALICE, mine.id)
    write_batch(engine, "s", events(3, start=30), owners=OWNERS, offset=12, state={})
    deliver(engine)
    assert all(b["subscription"] == near.id for b, _ in receiver.got[5:])
    with pytest.raises(SubscriptionError, match="no subscription"):
        unsubscribe(engine, BOB, near.id)  # not his


def test_a_failing_receiver_is_retried_then_given_up(engine: Engine, receiver: Receiver) -> None:
    subscribe(engine, UW, webhook_url=receiver.url, scope="all", kinds=["volatility_spike"])
    write_batch(engine, "s", events(1), owners=OWNERS, offset=1, state={})
    receiver.status = [503]
    assert deliver(engine).retried == 1
    assert not deliver(engine)  # the retry is not due yet
    later = utcnow() + timedelta(minutes=1)
    assert deliver(engine, clock=lambda: later).sent == 1
    assert len(set(receiver.keys())) == 1 and len(receiver.got) == 2

    # a receiver that never answers 2xx: tried MAX_ATTEMPTS times, then failed for good
    write_batch(engine, "s", events(1, start=50), owners=OWNERS, offset=2, state={})
    receiver.status = [500] * webhooks.MAX_ATTEMPTS
    t = utcnow()
    outcomes = []
    for k in range(webhooks.MAX_ATTEMPTS + 2):
        at = t + timedelta(days=k)
        outcomes.append(deliver(engine, clock=lambda at=at: at))
    assert sum(o.retried for o in outcomes) == webhooks.MAX_ATTEMPTS - 1
    assert sum(o.failed for o in outcomes) == 1
    with Session(engine) as s:
        failed = s.exec(select(AlertDelivery).where(AlertDelivery.status == "failed")).one()
    assert failed.attempts == webhooks.MAX_ATTEMPTS and failed.last_error == "HTTP 500"


def test_an_unreachable_webhook_is_a_retry_not_a_crash(engine: Engine) -> None:
    subscribe(engine, ALICE, webhook_url="http://127.0.0.1:9/nothing-listens")
    write_batch(engine, "s", events(1), owners=OWNERS, offset=1, state={})
    assert deliver(engine).retried == 1


def test_two_workers_delivering_at_once_send_each_alert_once(
    engine: Engine, receiver: Receiver
) -> None:
    subscribe(engine, UW, webhook_url=receiver.url, scope="all")
    write_batch(engine, "s", events(20), owners=OWNERS, offset=20, state={})
    threads = [threading.Thread(target=deliver, args=(engine,)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(receiver.got) == 21 and len(set(receiver.keys())) == 21


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"webhook_url": "ftp://example.com/x"}, "http:// or https:// URL"),
        ({"webhook_url": "https://"}, "with a host"),
        ({"webhook_url": "https://u:p@example.com/"}, "no credentials"),
        ({"webhook_url": "https://example.com/" + "a" * 500}, "at most 500"),
        ({"webhook_url": "https://example.com/", "kinds": ["moon"]}, "unknown alert kind 'moon'"),
        ({"webhook_url": "https://example.com/", "symbols": ["BTC/USDT"]}, "letters and digits"),
        ({"webhook_url": "https://example.com/", "scope": "all"}, "only underwriters"),
        ({"webhook_url": "https://example.com/", "scope": "x"}, "scope must be"),
    ],
)
def test_bad_subscriptions_are_refused_and_store_nothing(
    engine: Engine, kw: dict[str, Any], says: str
) -> None:
    with pytest.raises(SubscriptionError, match=says):
        subscribe(engine, ALICE, **kw)
    with Session(engine) as s:
        assert s.exec(select(AlertSubscription)).all() == []


def test_a_user_has_at_most_twenty_subscriptions(engine: Engine) -> None:
    for _ in range(webhooks.MAX_SUBSCRIPTIONS):
        subscribe(engine, BOB, webhook_url="https://example.com/hook")
    with pytest.raises(SubscriptionError, match="the most allowed"):
        subscribe(engine, BOB, webhook_url="https://example.com/hook")


def test_a_backlog_larger_than_a_round_is_sent_over_rounds_each_once(
    engine: Engine, receiver: Receiver
) -> None:
    subscribe(engine, UW, webhook_url=receiver.url, scope="all")
    write_batch(engine, "s", events(20), owners=OWNERS, offset=20, state={})
    receiver.status = [500]  # the first fails: retried later, the rest go on meanwhile
    rounds = 0
    while deliver(engine, limit=3):
        rounds += 1
    assert rounds == 7 and len(set(receiver.keys())) == 21  # 20 sent, 1 waiting to retry
    later = utcnow() + timedelta(minutes=1)
    assert deliver(engine, clock=lambda: later).sent == 1
    assert len(receiver.got) == 22 and len(set(receiver.keys())) == 21
