"""Alerts and checkpoints on SQLite and PostgreSQL: a batch written again adds nothing, the
checkpoint never moves back, a failure inside the transaction writes neither, a process killed
while writing leaves both or neither, and who may see and acknowledge what."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bti_core.auth import User
from bti_core.db.engine import make_engine
from bti_core.db.models import Alert, StreamCheckpoint
from bti_core.stream.store import AlertError, acknowledge, alerts_for, load_checkpoint, write_batch
from bti_core.stream.types import Event

UW = User("uw", "Una", "underwriter")
ALICE = User("alice", "Alice", "trader")
BOB = User("bob", "Bob", "trader")


def events(n: int, start: int = 0) -> list[Event]:
    return [
        Event("near_liquidation", "BTCUSDT", 1_700_000_000_000 + i, 100.0 + i, i % 3 + 1, 0.05)
        for i in range(start, start + n)
    ] + [Event("volatility_spike", "BTCUSDT", 1_700_000_000_000 + start, 99.0, None, -4.5)]


OWNERS = {1: "alice", 2: "bob", 3: "alice"}


def count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Alert)).one())


@pytest.mark.both_databases
def test_a_batch_written_twice_adds_nothing_and_the_checkpoint_never_moves_back(
    engine: Engine,
) -> None:
    w = write_batch(engine, "s", events(5), owners=OWNERS, offset=5, state={"BTCUSDT": "a"})
    assert w.alerts == 6 and count(engine) == 6
    again = write_batch(engine, "s", events(5), owners=OWNERS, offset=5, state={"BTCUSDT": "a"})
    assert again.alerts == 0 and count(engine) == 6
    write_batch(engine, "s", events(3, 5), owners=OWNERS, offset=8, state={"BTCUSDT": "b"})
    assert load_checkpoint(engine, "s") == (8, {"BTCUSDT": "b"})
    # an older batch replayed by a slower process: its alerts exist, the checkpoint stays
    write_batch(engine, "s", events(5), owners=OWNERS, offset=5, state={"BTCUSDT": "a"})
    assert load_checkpoint(engine, "s") == (8, {"BTCUSDT": "b"}) and count(engine) == 10
    assert load_checkpoint(engine, "other") == (0, {})


def test_who_sees_and_acknowledges_what(engine: Engine) -> None:
    write_batch(engine, "s", events(6), owners=OWNERS, offset=6, state={})
    mine = [r.alert for r in alerts_for(engine, ALICE)]
    assert mine and {a.user_id for a in mine} == {"alice"}
    assert len(alerts_for(engine, UW)) == 7  # every alert, the global spike included
    assert "within 5% of its liquidation price" in mine[0].message
    with pytest.raises(AlertError, match="no alert"):
        acknowledge(engine, mine[0].id or 0, BOB)
    first = acknowledge(engine, mine[0].id or 0, ALICE)
    assert acknowledge(engine, mine[0].id or 0, ALICE) == first  # the first time stays
    assert len(alerts_for(engine, ALICE, unacknowledged=True)) == len(mine) - 1


def test_an_underwriters_mark_leaves_the_traders_copy_unseen(engine: Engine) -> None:
    """Seen is each reader's own: an underwriter sweeping the feed does not hide a trader's
    liquidation alert from the trader."""
    write_batch(engine, "s", events(6), owners=OWNERS, offset=6, state={})
    ids = [r.alert.id or 0 for r in alerts_for(engine, UW)]
    for i in ids:
        acknowledge(engine, i, UW)
    assert alerts_for(engine, UW, unacknowledged=True) == []
    alices = alerts_for(engine, ALICE, unacknowledged=True)
    assert alices and not any(r.seen for r in alerts_for(engine, ALICE))
    acknowledge(engine, alices[0].alert.id or 0, ALICE)
    assert len(alerts_for(engine, ALICE, unacknowledged=True)) == len(alices) - 1
    assert all(r.seen for r in alerts_for(engine, UW))  # hers did not change his


@pytest.mark.both_databases
def test_a_failure_inside_the_transaction_writes_neither(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bti_core.stream.store as store

    def broken(*_: object) -> object:
        raise RuntimeError("the insert failed")

    monkeypatch.setattr(store, "_insert", broken)  # inside the transaction, after the reads
    with pytest.raises(RuntimeError, match="the insert failed"):
        write_batch(engine, "s", events(2), owners=OWNERS, offset=3, state={})
    assert count(engine) == 0 and load_checkpoint(engine, "s") == (0, {})


def _writer(url: str, ready: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    eng = make_engine(url)
    ready.set()
    k = 0
    while True:  # batches of 20 alerts, each with its checkpoint, until killed
        write_batch(
            eng, "kill", events(20, 20 * k), owners=OWNERS, offset=20 * (k + 1), state={"k": k}
        )
        k += 1


@pytest.mark.both_databases
@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_a_process_killed_while_writing_leaves_alerts_and_checkpoint_together(
    engine: Engine, db_url: str, delay: float
) -> None:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer, args=(db_url, ready))
    proc.start()
    assert ready.wait(60)
    time.sleep(delay + 0.5)
    os.kill(proc.pid or 0, signal.SIGKILL)
    proc.join(10)
    offset, state = load_checkpoint(engine, "kill")
    assert offset > 0
    with Session(engine) as s:
        n_near = int(
            s.exec(
                select(func.count()).select_from(Alert).where(Alert.kind == "near_liquidation")
            ).one()
        )
        cp = s.get(StreamCheckpoint, "kill")
    # every batch up to the checkpoint is stored, and none after it
    assert n_near == offset and state == {"k": offset // 20 - 1} and cp is not None
