"""Alert subscriptions delivered to a webhook — a real HTTP server on 127.0.0.1 — on SQLite
and PostgreSQL: what a subscription matches, once per alert and subscription (even with two
workers delivering at once), retried when the receiver fails, given up after the last
attempt; bad subscriptions refused with what is allowed, storing nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core.db.models import AlertDelivery, AlertSubscription
from bti_core.db.types import utcnow
from bti_core.outbound import networks
from bti_core.stream import webhooks
from bti_core.stream.store import write_batch
from bti_core.stream.webhooks import SubscriptionError, unsubscribe
from tests.stream.test_store import ALICE, BOB, OWNERS, UW, events

# the receivers of these tests listen on 127.0.0.1, which webhooks may reach only when the
# operator allows it (BTI_WEBHOOK_ALLOW_NETWORKS); the refusal itself is tested below
LOOPBACK = networks("127.0.0.0/8")
PUBLIC = "https://1.1.1.1/hook"  # an address literal: nothing is resolved, nothing is sent


def subscribe(engine: Engine, user: Any, **kw: Any) -> AlertSubscription:
    return webhooks.subscribe(engine, user, allowed=LOOPBACK, **kw)


def deliver(engine: Engine, **kw: Any) -> webhooks.Delivered:
    return webhooks.deliver(engine, allowed=LOOPBACK, **kw)


@pytest.fixture(autouse=True)
def users(engine: Engine) -> None:
    """The subscribers exist (a subscription of someone gone delivers nothing); no password
    (a bcrypt hash a test costs a second, and none of these users signs in)."""
    from bti_core.db.models import AppUser

    with Session(engine) as s:
        for u in (UW, ALICE, BOB):
            s.add(
                AppUser(username=u.username, name=u.name, email="", role=u.role, password_hash="!")
            )
        s.commit()


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


@pytest.mark.both_databases
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


@pytest.fixture
def backlog(engine: Engine, receiver: Receiver) -> Receiver:
    """The underwriter subscribed to every alert at ``receiver``, and 20 alerts (21 messages
    with the liquidation's) waiting to be sent."""
    subscribe(engine, UW, webhook_url=receiver.url, scope="all")
    write_batch(engine, "s", events(20), owners=OWNERS, offset=20, state={})
    return receiver


@pytest.mark.both_databases
def test_two_workers_delivering_at_once_send_each_alert_once(
    engine: Engine, backlog: Receiver
) -> None:
    receiver = backlog

    def drain() -> None:  # a round sends at most `per_subscription` of one subscription's
        while deliver(engine):
            pass

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(receiver.got) == 21 and len(set(receiver.keys())) == 21


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"webhook_url": "ftp://example.com/x"}, "http:// or https:// URL"),
        ({"webhook_url": "https://"}, "http:// or https:// URL"),
        ({"webhook_url": "https://u:p@example.com/"}, "no credentials"),
        ({"webhook_url": "https://1.1.1.1/" + "a" * 500}, "at most 500"),
        ({"webhook_url": "https://1.1.1.1/", "kinds": ["moon"]}, "unknown alert kind 'moon'"),
        ({"webhook_url": "https://1.1.1.1/", "symbols": ["BTC/USDT"]}, "letters and digits"),
        ({"webhook_url": "https://1.1.1.1/", "scope": "all"}, "only underwriters"),
        ({"webhook_url": "https://1.1.1.1/", "scope": "x"}, "scope must be"),
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
        subscribe(engine, BOB, webhook_url="https://1.1.1.1/hook")
    with pytest.raises(SubscriptionError, match="the most allowed"):
        subscribe(engine, BOB, webhook_url="https://1.1.1.1/hook")


@pytest.mark.both_databases
def test_a_backlog_larger_than_a_round_is_sent_over_rounds_each_once(
    engine: Engine, backlog: Receiver
) -> None:
    receiver = backlog
    receiver.status = [500]  # the first fails: retried later, the rest go on meanwhile
    rounds = 0
    while deliver(engine, limit=3):
        rounds += 1
    assert rounds == 7 and len(set(receiver.keys())) == 21  # 20 sent, 1 waiting to retry
    later = utcnow() + timedelta(minutes=1)
    assert deliver(engine, clock=lambda: later).sent == 1
    assert len(receiver.got) == 22 and len(set(receiver.keys())) == 21


# ------------------------------------------------------------------ hostile receivers and places


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8501/bti",  # the dashboard itself
        "http://localhost/",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://10.0.0.5/",
        "http://192.168.1.1/admin",
        "http://172.16.0.1/",
        "http://100.64.0.1/",  # shared address space (carrier NAT)
        "http://0.0.0.0:8545/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://2130706433/",  # 127.0.0.1 written as one number
        "http://0x7f000001/",  # and in hex
    ],
)
def test_webhooks_into_the_network_are_refused(engine: Engine, url: str) -> None:
    with pytest.raises(SubscriptionError, match="not a public address"):
        webhooks.subscribe(engine, ALICE, webhook_url=url)
    with Session(engine) as s:
        assert s.exec(select(AlertSubscription)).all() == []


def test_the_destination_is_checked_again_at_delivery(engine: Engine, receiver: Receiver) -> None:
    """A name can resolve somewhere public when subscribed and inside later (DNS rebinding):
    every delivery checks where it goes. Here the operator's allowance is withdrawn."""
    subscribe(engine, ALICE, webhook_url=receiver.url)
    write_batch(engine, "s", events(1), owners=OWNERS, offset=1, state={})
    assert webhooks.deliver(engine).retried == 1  # no allowance now: not sent
    assert receiver.got == []
    with Session(engine) as s:
        d = s.exec(select(AlertDelivery)).one()
    assert "not a public address" in (d.last_error or "")


def test_a_slow_receiver_is_cut_off_at_the_deadline(engine: Engine) -> None:
    """One byte every two seconds used to hold the worker's webhook step for ever."""
    from tests.stream.receivers import Slow

    with Slow() as slow:
        subscribe(engine, UW, webhook_url=slow.url, scope="all")
        write_batch(engine, "s", events(2), owners=OWNERS, offset=2, state={})
        t0 = time.monotonic()
        done = deliver(engine, deadline=3.0)
        took = time.monotonic() - t0
        assert (done.sent, done.retried) == (0, 3) and slow.requests == 3
        # all three at once (a pool), each cut at 3 s; the receiver would take 34 s a line
        assert took < 20, took
    with Session(engine) as s:
        errors = {d.last_error for d in s.exec(select(AlertDelivery)).all()}
    assert errors == {"DeliveryError: no complete answer from 127.0.0.1 within 3 s"}


def test_a_huge_answer_is_not_read(engine: Engine) -> None:
    """A 1 GiB answer took the worker from 525 MB to 2.56 GB: only the status line is read."""
    from tests.stream.receivers import Huge

    with Huge() as huge:
        subscribe(engine, ALICE, webhook_url=huge.url)
        write_batch(engine, "s", events(1), owners=OWNERS, offset=1, state={})
        assert deliver(engine).sent == 1
        time.sleep(0.5)  # the receiver notices the hang-up
        assert huge.sent < 64 << 20  # socket buffers' worth, not the gigabyte


def test_a_redirect_is_not_followed(engine: Engine) -> None:
    from tests.stream.receivers import Redirect

    with Redirect() as r:
        subscribe(engine, ALICE, webhook_url=r.url)
        write_batch(engine, "s", events(1), owners=OWNERS, offset=1, state={})
        assert deliver(engine).retried == 1
        assert r.requests == 1  # nothing went to the Location
    with Session(engine) as s:
        d = s.exec(select(AlertDelivery)).one()
    assert d.last_error == "HTTP 302 (redirects are not followed)"


def test_a_demoted_underwriters_every_alert_subscription_stops(
    engine: Engine, receiver: Receiver
) -> None:
    from bti_core.auth import set_role

    subscribe(engine, UW, webhook_url=receiver.url, scope="all")
    write_batch(engine, "s", events(2), owners=OWNERS, offset=2, state={})
    assert deliver(engine).sent == 3
    set_role(engine, UW.username, "trader")  # left the desk
    write_batch(engine, "s", events(2, start=10), owners=OWNERS, offset=4, state={})
    assert not deliver(engine) and len(receiver.got) == 3  # others' alerts: no longer theirs
