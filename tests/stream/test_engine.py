"""The embedded engine on a replayed crash, with the real chain and database: claims opened at
the crossing tick, audited, decided and paid once; alerts stored once; a crash between the
claims and the checkpoint, and a run started again from nothing, add nothing."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from bti_core.db.models import Alert, Claim
from bti_core.stream.engine import BatchReport, EmbeddedEngine, ReplaySource
from bti_core.stream.store import load_checkpoint
from tests.claims.test_service import NOW, World, buy, claim_paid_events, crash, world  # noqa: F401


def engine_for(w: World, **kw: Any) -> EmbeddedEngine:
    services = SimpleNamespace(risk=w.ins.risk, db=w.db, claims=w.claims)
    source = ReplaySource(
        w.wh, ["BTCUSDT"], pd.Timestamp(NOW), pd.Timestamp(NOW + timedelta(hours=12))
    )
    return EmbeddedEngine(services, source, batch=7, **kw)  # type: ignore[arg-type]


def counts(w: World) -> tuple[int, int]:
    with Session(w.db) as s:
        return (
            int(s.exec(select(func.count()).select_from(Claim)).one()),
            int(s.exec(select(func.count()).select_from(Alert)).one()),
        )


def test_a_replayed_crash_opens_claims_at_the_tick_once(world: World) -> None:  # noqa: F811
    w = world
    hit = buy(w, "alice", leverage="20", coverage="100")
    safe = buy(w, "carol", leverage="2", coverage="50")
    crash(w, drop=0.3, after_hours=3)
    reports = engine_for(w).run()
    claims = [c for r in reports for c in r.claims]
    assert len(claims) == 1
    with Session(w.db) as s:
        c = s.get(Claim, claims[0])
        assert c is not None and c.policy_id == hit.id and c.source == "stream"
        assert c.state == "paid" and c.trigger_price <= hit.liquidation_price
        assert c.evidence["kind"] == "mark_tick_reached_liquidation_price"
        assert c.evidence["bars"]  # the stored bars around the tick, for the reviewer
        alerts = s.exec(select(Alert)).all()
    kinds = {a.kind for a in alerts}
    assert "liquidation" in kinds and "near_liquidation" in kinds
    assert all(a.policy_id != safe.id for a in alerts if a.kind == "liquidation")
    assert {a.user_id for a in alerts if a.policy_id == hit.id} == {"alice"}
    assert len(claim_paid_events(w)) == 1
    offset, state = load_checkpoint(w.db, "replay")
    assert offset == sum(r.ticks for r in reports) and "BTCUSDT" in state

    # the same stream started again from nothing: its claim exists, its alerts exist
    before = counts(w)
    from bti_core.db.models import StreamCheckpoint

    with Session(w.db) as s:
        s.delete(s.get(StreamCheckpoint, "replay"))
        s.commit()
    again = engine_for(w).run()
    assert [c for r in again for c in r.claims] == [] and counts(w) == before
    assert len(claim_paid_events(w)) == 1


class CrashError(Exception):
    pass


def test_a_crash_between_the_claims_and_the_checkpoint_adds_nothing(world: World) -> None:  # noqa: F811
    w = world
    buy(w, "alice", leverage="20", coverage="100")
    buy(w, "bob", leverage="25", coverage="80")
    crash(w, drop=0.3, after_hours=3)

    def die_after_claims(r: BatchReport) -> None:
        if r.claims:
            raise CrashError  # the claims are open and paid; the alerts and checkpoint are not

    with pytest.raises(CrashError):
        engine_for(w, before_commit=die_after_claims).run()
    opened, alerts_before = counts(w)
    assert opened >= 1
    engine_for(w).run()  # the restart processes that batch again
    total_claims, total_alerts = counts(w)
    assert total_claims == 2 and total_alerts > alerts_before
    assert len(claim_paid_events(w)) == 2  # each paid once
    with Session(w.db) as s:
        keys = s.exec(select(Alert.key)).all()
    assert len(keys) == len(set(keys))
