"""The embedded engine on a replayed crash, with the real chain and database: claims opened at
the crossing tick, audited, decided and paid once; alerts stored once; a crash between the
claims and the checkpoint, and a run started again from nothing, add nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from bti_core.db.models import Alert, Claim
from bti_core.market.schema import Kind
from bti_core.risk.forecast_store import hourly_mark_closes, refresh
from bti_core.stream.engine import EmbeddedEngine
from bti_core.stream.ports import BatchReport
from bti_core.stream.sources import ReplaySource
from bti_core.stream.store import load_checkpoint
from tests.worlds import NOW, World, buy, claim_paid_events, crash, stream_services


def engine_for(w: World, **kw: Any) -> EmbeddedEngine:
    services = stream_services(w)
    source = ReplaySource(
        w.wh, ["BTCUSDT"], pd.Timestamp(NOW), pd.Timestamp(NOW + timedelta(hours=12))
    )
    return EmbeddedEngine(services, source, batch=7, **kw)


def counts(w: World) -> tuple[int, int]:
    with Session(w.db) as s:
        return (
            int(s.exec(select(func.count()).select_from(Claim)).one()),
            int(s.exec(select(func.count()).select_from(Alert)).one()),
        )


def test_a_replayed_crash_opens_claims_at_the_tick_once(world: World) -> None:
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
        # ticks made of bars are hints: the stored bar proves it, and dates it by its span
        assert c.evidence["kind"] == "mark_reached_liquidation_price"
        assert c.evidence["timeframe"] == "1h" and c.evidence["stream"] == "replay"
        assert pd.Timestamp(c.trigger_at).minute == 0
        assert pd.Timestamp(c.evidence["until"]) == pd.Timestamp(c.trigger_at) + pd.Timedelta("1h")
        assert c.evidence["bars"]  # the stored bars around it, for the reviewer
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


@pytest.mark.both_databases
def test_a_crash_between_the_claims_and_the_checkpoint_adds_nothing(world: World) -> None:
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


def extreme_market(w: World) -> pd.Timestamp:
    """A funding settlement of −0.25 % 8 hours in, and the forecast fitted at ``NOW`` on the
    hours before it (a random walk's: the development data's best), into the stream's
    forecast folder. Returns the settlement's time."""
    settle = pd.Timestamp(NOW + timedelta(hours=8))
    funding = pd.DataFrame({"ts": [settle], "funding_rate": [-0.0025]})
    w.ingest.ingest_frame(funding, symbol="BTCUSDT", kind=Kind.FUNDING, timeframe="8h", source="t")
    bars = w.wh.bars("BTCUSDT", "1h", pd.Timestamp(NOW - timedelta(days=30)), kind=Kind.MARK)
    closes = hourly_mark_closes(bars[bars["ts"] < pd.Timestamp(NOW)])
    folder = stream_services(w).forecasts_dir
    fc = refresh(folder, "BTCUSDT", closes, "price", "random_walk")
    assert fc.origin == pd.Timestamp(NOW - timedelta(hours=1))
    return settle


def test_funding_at_an_extreme_and_a_breached_forecast_band_are_raised_once(world: World) -> None:
    """The market's context comes from the warehouse (funding) and the forecast cache (the
    band the worker fits each hour): a −30 % crash leaves a random walk's 95 % band, and a
    funding settlement of −0.25 % inside the replay is extreme."""
    w = world
    crash(w, drop=0.3, after_hours=3)
    settle = extreme_market(w)
    engine_for(w).run()
    with Session(w.db) as s:
        alerts = s.exec(select(Alert).where(col(Alert.policy_id).is_(None))).all()
    funding_alerts = [a for a in alerts if a.kind == "funding_extreme"]
    assert [(a.at, a.value) for a in funding_alerts] == [(settle.to_pydatetime(), -0.0025)]
    assert "shorts pay longs" in funding_alerts[0].message
    breach = [a for a in alerts if a.kind == "forecast_breach"]
    assert len(breach) == 1 and breach[0].price < breach[0].value  # below the lower bound
    assert NOW + timedelta(hours=3) < breach[0].at <= NOW + timedelta(hours=10)

    before = counts(w)
    engine_for(w, name="again").run()  # another stream over the same ticks adds nothing
    assert counts(w) == before
