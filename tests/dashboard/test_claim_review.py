"""Claim Review and the trader's claims under AppTest: roles, the queue, evidence, decisions
with reasons, the payout, and an appeal — on the session's anvil node and a replayed crash."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from bti_core.config import get_settings
from bti_core.db.engine import make_engine
from bti_core.db.models import Policy
from bti_core.market.ingest import Ingestor
from bti_core.market.replay import crash_now
from bti_core.market.warehouse import Warehouse
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]


def page(name: str, user: str, password: str) -> AppTest:
    return sign_in(
        AppTest.from_file(str(ROOT / "pages" / name), default_timeout=120), user, password
    )


def buy_and_crash(policies: int = 1) -> None:
    """Buy ``policies`` policies, date them an hour back (as if bought then), and replay a
    crash that ends now."""
    at = page("buy_insurance.py", "trader", "trader-demo")
    at.button(key="faucet").click().run()
    for k in range(policies):
        # one policy a position (a second on the same one is refused: `position_cover`)
        at.number_input(key="buy_qty_BTCUSDT").set_value(0.1 + 0.01 * k)
        at.button(key="buy_quote").click().run()
        at.button(key="buy_go").click().run()
        assert not at.error, [e.value for e in at.error]
    settings = get_settings()
    db = make_engine(settings.resolved_database_url)
    with Session(db) as s:
        for pol in s.exec(select(Policy)).all():
            pol.start_at -= timedelta(hours=1)
            s.add(pol)
        s.commit()
    wh = Warehouse(settings.warehouse_dir)
    crash_now(wh, Ingestor(wh, db), "BTCUSDT", drop=0.4, minutes=20)
    db.dispose()


@pytest.fixture
def referred(recent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BTI_CLAIMS_AUTO_LIMIT", "1")  # every claim needs an underwriter
    buy_and_crash()
    return recent


def test_traders_cannot_open_the_review(filled: Path) -> None:
    at = page("claim_review.py", "trader", "trader-demo")
    assert "Only underwriters" in at.error[0].value
    assert not at.dataframe
    assert "scan" not in [b.key for b in at.button]


def test_underwriter_reviews_and_pays_a_referred_claim(referred: Path) -> None:
    at = page("claim_review.py", "underwriter", "underwriter-demo")
    assert not at.error
    at.button(key="scan").click().run()
    # the trader sees why the claim waits and until when, and no "None" anywhere
    waiting = page("my_policies.py", "trader", "trader-demo")
    row = waiting.dataframe[1].value.iloc[0]
    assert row["state"] == "referred"
    assert row["decision"].startswith("Waiting for an underwriter (by ")
    assert "above the 1.00 BTI automatic limit" in row["decision"]
    assert all(d.proto.placeholder == "–" for d in waiting.dataframe)  # a dash, not None
    assert all(d.proto.placeholder == "–" for d in at.dataframe)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Awaiting review"] == "1"
    assert at.subheader[0].value.startswith("Claim #1 · referred")
    assert len(at.get("plotly_chart")) == 1  # the evidence
    # why it waits: the limit, in BTI with separators, and the checks that were unsure
    why = at.warning[0].value
    assert "Why it waits for you" in why
    assert "above the 1.00 BTI automatic limit" in why and "Not bought into a move" in why
    # checks in words, reasons whole; the header's mark is the mark the check judged
    audit = " ".join(md.value for md in at.markdown)
    assert "**Inside the cover window** (passed)" in audit
    assert "**Mark price reached the liquidation price** (passed)" in audit
    assert "mark_confirms" not in audit and "model_score" not in audit
    shown = {mt.label: mt.value for mt in at.metric}["Mark at trigger"]
    assert f"the mark price reached {shown} in the bar of" in audit
    # the adjusted amount appears only for an adjustment
    assert not [n for n in at.number_input if n.key.startswith("adjust_amount")]
    at.radio(key="decision").set_value("adjust").run()
    assert [n for n in at.number_input if n.key.startswith("adjust_amount")]
    # a decision needs a reason
    at.radio(key="decision").set_value("approve").run()
    assert not [n for n in at.number_input if n.key.startswith("adjust_amount")]
    at.button(key="decide").click().run()
    assert "write the reason" in at.error[0].value
    at.text_area(key="reason_1").input("mark confirms; terms match")
    at.button(key="decide").click().run()
    assert not at.exception, at.exception
    assert "is paid" in at.success[0].value
    assert "/chain_explorer?q=0x" in at.success[0].value  # the payout transaction
    assert {m.label: m.value for m in at.metric}["Paid"] == "1"

    mine = page("my_policies.py", "trader", "trader-demo")
    claims = mine.dataframe[1].value
    assert claims["state"].tolist() == ["paid"]
    policies = mine.dataframe[0].value
    assert policies["status"].tolist() == ["paid"]
    assert policies["distance_to_liquidation"].isna().all()  # closed: nothing to liquidate
    assert claims["payout_tx"].iloc[0].startswith("/chain_explorer?q=0x")


def test_a_denied_claim_is_appealed_once_from_my_policies(referred: Path) -> None:
    uw = page("claim_review.py", "underwriter", "underwriter-demo")
    uw.button(key="scan").click().run()
    uw.radio(key="decision").set_value("deny")
    uw.text_area(key="reason_1").input("bought into the move")
    uw.button(key="decide").click().run()
    assert "is denied" in uw.success[0].value

    mine = page("my_policies.py", "trader", "trader-demo")
    assert mine.dataframe[1].value["state"].tolist() == ["denied"]
    mine.text_area(key="appeal_reason").input("the mark price did reach my level")
    next(b for b in mine.button if b.label == "Appeal").click().run()
    assert "is appealed" in mine.success[0].value
    assert mine.dataframe[1].value["state"].tolist() == ["appealed"]
    assert not [f for f in mine.get("form") if "appeal" in str(f.proto).lower()]  # once

    uw = page("claim_review.py", "underwriter", "underwriter-demo")
    assert {m.label: m.value for m in uw.metric}["Awaiting review"] == "1"
    assert uw.subheader[0].value.startswith("Claim #1 · appealed")


def test_several_claims_are_decided_at_once(recent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTI_CLAIMS_AUTO_LIMIT", "1")
    buy_and_crash(policies=3)
    uw = page("claim_review.py", "underwriter", "underwriter-demo")
    uw.button(key="scan").click().run()
    assert {m.label: m.value for m in uw.metric}["Awaiting review"] == "3"
    uw.multiselect(key="bulk").set_value([1, 3])
    uw.radio(key="bulk_dec").set_value("deny")
    uw.text_area(key="bulk_r").input("bought into the move, all of them")
    next(b for b in uw.button if b.label == "Decide the chosen claims").click().run()
    assert not uw.exception, uw.exception
    assert "Decided: #1 denied, #3 denied." in uw.success[0].value
    assert {m.label: m.value for m in uw.metric}["Awaiting review"] == "1"
    mine = page("my_policies.py", "trader", "trader-demo")
    claims = mine.dataframe[1].value.set_index("state")
    assert sorted(claims.index) == ["denied", "denied", "referred"]
    assert claims["due"].notna().tolist() == [s == "referred" for s in claims.index]


def test_after_a_decision_the_next_claim_is_chosen_not_switched_to(
    recent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form used to switch to the next claim by itself, under a message scrolled out of
    sight: a decision on the wrong claim was one click away."""
    monkeypatch.setenv("BTI_CLAIMS_AUTO_LIMIT", "1")
    buy_and_crash(policies=2)
    uw = page("claim_review.py", "underwriter", "underwriter-demo")
    uw.button(key="scan").click().run()
    first = int(uw.subheader[0].value.split("#")[1].split()[0])  # the soonest due
    other = 3 - first
    uw.radio(key="decision").set_value("deny")
    uw.text_area(key=f"reason_{first}").input("bought into the move")
    uw.button(key="decide").click().run()
    assert not uw.exception, uw.exception
    assert uw.success[0].value == f"Claim #{first} is denied." == uw.toast[0].value
    assert "Pick the next claim to review" in uw.info[0].value
    assert not [h for h in uw.subheader if h.value.startswith("Claim #")]
    uw.selectbox(key="claim_pick").set_value(other).run()
    assert uw.subheader[0].value.startswith(f"Claim #{other} · referred")
