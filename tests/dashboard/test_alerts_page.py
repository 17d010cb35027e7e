"""The Alerts page under AppTest: a trader's own alerts, an underwriter's all, filters, and
acknowledging from the page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from streamlit.testing.v1 import AppTest

from bti_core.db.engine import make_engine, migrate
from bti_core.stream.store import alerts_for, write_batch
from bti_core.stream.types import Event
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
    assert mine and all(r.seen for r in mine)
    theirs = alerts_for(make_engine(), User("underwriter", "U", "underwriter"))
    assert not any(r.seen for r in theirs)  # the trader's marks are the trader's own


def test_an_underwriter_sees_every_alert_and_filters_by_kind(data_dir: Path) -> None:
    seed()
    at = page("underwriter", "underwriter-demo")
    assert metric(at, "Alerts") == "4"  # both traders' and the global spike
    at.pills(key="alert_kinds").set_value(["volatility_spike"]).run()
    assert metric(at, "Alerts") == "1"
    assert "σ" in at.dataframe[0].value["message"].iloc[0]


def test_a_trader_subscribes_a_webhook_and_a_bad_url_is_refused(data_dir: Path) -> None:
    seed()
    at = page("trader", "trader-demo")
    url = next(t for t in at.text_input if t.label == "Webhook URL")
    url.set_value("ftp://example.com/x")
    next(b for b in at.button if b.label == "Subscribe").click().run()
    assert "http:// or https:// URL" in at.error[0].value
    from bti_core.auth import User
    from bti_core.stream.webhooks import subscriptions_of

    me = User("trader", "T", "trader")
    assert subscriptions_of(make_engine(), me) == []
    for inside in ("http://169.254.169.254/latest/meta-data", "http://127.0.0.1:8501/bti"):
        url = next(t for t in at.text_input if t.label == "Webhook URL")
        url.set_value(inside)
        next(b for b in at.button if b.label == "Subscribe").click().run()
        assert "not a public address" in at.error[0].value, inside
    assert subscriptions_of(make_engine(), me) == []
    url = next(t for t in at.text_input if t.label == "Webhook URL")
    url.set_value("https://1.1.1.1/hook")  # an address: no name to resolve offline
    next(t for t in at.text_input if t.label.startswith("Symbols")).set_value("btcusdt")
    next(b for b in at.button if b.label == "Subscribe").click().run()
    assert not at.exception and not at.error
    subs = subscriptions_of(make_engine(), me)
    assert [(x.webhook_url, x.symbols, x.scope) for x in subs] == [
        ("https://1.1.1.1/hook", ["BTCUSDT"], "mine")
    ]
    # the confirmation survives the rerun that draws the new subscription (it used to vanish)
    saved = f"Subscription #{subs[0].id} saved: new alerts go to https://1.1.1.1/hook"
    assert at.success[0].value == saved and at.toast[0].value == saved
    assert "Every alert" not in [t.label for t in at.toggle]  # underwriters only
    at.button(key="webhook_remove").click().run()
    assert subscriptions_of(make_engine(), me) == []
    assert at.success[0].value == f"Subscription #{subs[0].id} removed."


def test_an_underwriter_replays_a_crash_that_claims_a_policy(recent: Path) -> None:
    from sqlmodel import Session, select

    from bti_core.db.models import Claim, Policy
    from tests.dashboard.test_claim_review import page as any_page

    buyer = any_page("buy_insurance.py", "trader", "trader-demo")
    buyer.button(key="faucet").click().run()
    buyer.button(key="buy_quote").click().run()
    buyer.button(key="buy_go").click().run()
    assert not buyer.error, [e.value for e in buyer.error]
    db = make_engine()
    with Session(db) as s:  # bought an hour ago, so the crash comes after it
        for pol in s.exec(select(Policy)).all():
            pol.start_at -= timedelta(hours=1)
            s.add(pol)
        s.commit()

    at = page("underwriter", "underwriter-demo")
    assert "Replay a crash" in [h.value for h in at.subheader]
    next(n for n in at.number_input if n.label == "Fall (%)").set_value(40)
    next(n for n in at.number_input if n.label.startswith("Over")).set_value(20)
    next(s for s in at.selectbox if s.label == "Speed").set_value(10_000)
    next(b for b in at.button if b.label == "Replay").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    done = at.success[0].value
    assert "BTCUSDT −" in done and "1 claim opened" in done
    with Session(db) as s:
        claims = s.exec(select(Claim)).all()
    assert len(claims) == 1
    trader = page("trader", "trader-demo")
    assert metric(trader, "Liquidations") == "1"


def test_a_replay_right_after_a_purchase_falls_in_the_present_minute(recent: Path) -> None:
    """The newest purchase this minute: the fall may not start before it, so it is the present
    minute alone, and that minute is replayed (it was read up to, not including, its open)."""
    from tests.dashboard.test_claim_review import page as any_page

    buyer = any_page("buy_insurance.py", "trader", "trader-demo")
    buyer.button(key="faucet").click().run()
    buyer.button(key="buy_quote").click().run()
    buyer.button(key="buy_go").click().run()
    assert not buyer.error, [e.value for e in buyer.error]

    at = page("underwriter", "underwriter-demo")
    next(s for s in at.selectbox if s.label == "Speed").set_value(10_000)
    next(b for b in at.button if b.label == "Replay").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    done = at.success[0].value
    assert "BTCUSDT −" in done and " 0 ticks" not in done, done
