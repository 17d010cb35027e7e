"""The pool-utilisation alert: raised when the cover locked reaches the level, once, re-armed
when it falls back; four processes checking at once raise it once."""

from __future__ import annotations

import multiprocessing as mp
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlmodel import Session, select

from bti_core.db.engine import make_engine
from bti_core.db.models import Alert, Policy
from bti_core.stream.pool import POOL, check_pool
from bti_core.stream.types import Rules
from bti_core.underwriting import Limits
from tests.worlds import World, buy

CAPACITY = Decimal(200)  # a small pool: 100 BTI of cover is half of it


def services(db: object) -> SimpleNamespace:
    return SimpleNamespace(db=db, limits=Limits(pool_capacity=CAPACITY))


def pool_alerts(w: World) -> list[Alert]:
    with Session(w.db) as s:
        return list(s.exec(select(Alert).where(Alert.kind == "pool_utilisation")).all())


def test_the_alert_is_raised_at_the_level_once_and_re_armed_below_it(world: World) -> None:
    w = world
    buy(w, "alice", coverage="100")
    first = check_pool(services(w.db))
    assert first.utilisation == 0.5 and not first.raised and pool_alerts(w) == []
    bob = buy(w, "bob", coverage="60")  # 160 of 200: 80 %, over the 75 % level
    assert check_pool(services(w.db)).raised
    assert not check_pool(services(w.db)).raised  # still over: not raised again
    [a] = pool_alerts(w)
    assert a.symbol == POOL and a.user_id is None and a.value == 0.8 and a.price == 160.0
    assert "80% of its capacity" in a.message

    with Session(w.db) as s:  # bob's policy ends: 50 %, under the level less 5 points
        p = s.get(Policy, bob.id)
        assert p is not None
        p.status = "expired"
        s.add(p)
        s.commit()
    assert not check_pool(services(w.db)).raised
    buy(w, "carol", coverage="60")
    assert check_pool(services(w.db)).raised  # re-armed, so raised again
    assert len(pool_alerts(w)) == 2
    assert not check_pool(services(w.db), Rules(pool_level=0.95)).raised


def _check(url: str, barrier: object) -> None:
    db = make_engine(url)
    barrier.wait()  # type: ignore[attr-defined]
    check_pool(services(db))
    db.dispose()


@pytest.mark.slow
@pytest.mark.both_databases
def test_four_processes_checking_at_once_raise_it_once(world: World) -> None:
    w = world
    buy(w, "alice", coverage="100")
    buy(w, "bob", coverage="60")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    url = w.db.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_check, args=(url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(pool_alerts(w)) == 1
