"""The Alerts page under AppTest: a trader's own alerts, an underwriter's all, filters, and
acknowledging from the page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from bti_core.db.engine import make_engine, migrate
from bti_core.stream.scoring import Event
from bti_core.stream.store import alerts_for, write_batch
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]
T = 1_764_000_000_000


def seed() -> None:
    db = make_engine()
    migrate(db)
    events = [
        Event("near_liquidation", "BTCUSDT", T, 95.0, 1, 0.05),
        Event("liquidation", "BTCUSDT", T + 1000, 89.0, 1),
        Event("near_liquidation", "ETHUSDT", T + 2000, 1900.0, 2, 0.05),
        Event("volatility_spike", "BTCUSDT", T + 3000, 88.0, None, -5.2),
    ]
    write_batch(db, "t", events, owners={1: "trader", 2: "tina"}, offset=4, state={})
    db.dispose()


def page(user: str, password: str) -> AppTest:
    return sign_in(
        AppTest.from_file(str(ROOT / "pages" / "alerts.py"), default_timeout=60), user, password
    )


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_a_trader_sees_their_alerts_and_acknowledges_them(data_dir: Path) -> None:
    seed()
    at = page("trader", "trader-demo")
    assert not at.exception
    assert metric(at, "Alerts") == "2" and metric(at, "Liquidations") == "1"
    frame = at.dataframe[0].value
    assert set(frame["policy"]) == {1} and "within 5% of its liquidation price" in " ".join(
        frame["message"]
    )
    at.multiselect(key="alert_ack_pick").set_value(frame["alert"].tolist()).run()
    at.button(key="alert_ack").click().run()
    assert not at.exception and metric(at, "Unacknowledged") == "0"
    at.toggle(key="alert_open_only").set_value(True).run()
    assert "No alerts match" in at.info[0].value
    from bti_core.auth import User

    mine = alerts_for(make_engine(), User("trader", "T", "trader"))
    assert all(a.acknowledged_by == "trader" for a in mine)


def test_an_underwriter_sees_every_alert_and_filters_by_kind(data_dir: Path) -> None:
    seed()
    at = page("underwriter", "underwriter-demo")
    assert metric(at, "Alerts") == "4"  # both traders' and the global spike
    at.pills(key="alert_kinds").set_value(["volatility_spike"]).run()
    assert metric(at, "Alerts") == "1"
    assert "σ" in at.dataframe[0].value["message"].iloc[0]
