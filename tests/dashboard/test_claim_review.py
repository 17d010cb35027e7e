"""Claim Review and the trader's claims under AppTest: roles, the queue, evidence, decisions
with reasons, the payout, and an appeal — on the session's anvil node and a replayed crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bti_core.config import get_settings
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind
from bti_core.market.synthetic import replay_crash
from bti_core.market.warehouse import Warehouse
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]


def page(name: str, user: str, password: str) -> AppTest:
    return sign_in(
        AppTest.from_file(str(ROOT / "pages" / name), default_timeout=120), user, password
    )


def buy_and_crash() -> None:
    at = page("buy_insurance.py", "trader", "trader-demo")
    at.button(key="faucet").click().run()
    at.button(key="buy_quote").click().run()
    at.button(key="buy_go").click().run()
    assert not at.error, [e.value for e in at.error]
    wh = Warehouse(get_settings().warehouse_dir)
    close0 = float(wh.query(Kind.MARK, "BTCUSDT", "1h").iloc[-1]["close"])
    start = datetime.now(UTC) + timedelta(hours=3)
    last, mark = replay_crash(close0, start=start, hours=6, drop=0.4)
    ing = Ingestor(wh, None)
    ing.ingest_frame(mark, symbol="BTCUSDT", kind=Kind.MARK, timeframe="1h", source="replay")
    ing.ingest_frame(last, symbol="BTCUSDT", kind=Kind.OHLCV, timeframe="1h", source="replay")


@pytest.fixture
def referred(filled: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BTI_CLAIMS_AUTO_LIMIT", "1")  # every claim needs an underwriter
    buy_and_crash()
    return filled


def test_traders_cannot_open_the_review(filled: Path) -> None:
    at = page("claim_review.py", "trader", "trader-demo")
    assert "Only underwriters" in at.error[0].value
    assert not at.dataframe
    assert "scan" not in [b.key for b in at.button]


def test_underwriter_reviews_and_pays_a_referred_claim(referred: Path) -> None:
    at = page("claim_review.py", "underwriter", "underwriter-demo")
    assert not at.error
    at.button(key="scan").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Awaiting review"] == "1"
    assert at.subheader[0].value.startswith("Claim #1 · referred")
    assert len(at.get("plotly_chart")) == 1  # the evidence
    checks = at.dataframe[1].value
    assert set(checks["check"]) >= {"in_window", "mark_confirms", "model_score"}
    # a decision needs a reason
    at.radio(key="decision").set_value("approve")
    at.text_area(key="reason").input("")
    submit = next(b for b in at.button if b.label == "Submit decision")
    submit.click().run()
    assert "write the reason" in at.error[0].value
    at.text_area(key="reason").input("mark confirms; terms match")
    next(b for b in at.button if b.label == "Submit decision").click().run()
    assert not at.exception, at.exception
    assert "is paid" in at.success[0].value
    assert "/chain_explorer?q=0x" in at.success[0].value  # the payout transaction
    assert {m.label: m.value for m in at.metric}["Paid"] == "1"

    mine = page("my_policies.py", "trader", "trader-demo")
    claims = mine.dataframe[1].value
    assert claims["state"].tolist() == ["paid"]
    assert claims["payout_tx"].iloc[0].startswith("/chain_explorer?q=0x")


def test_a_denied_claim_is_appealed_once_from_my_policies(referred: Path) -> None:
    uw = page("claim_review.py", "underwriter", "underwriter-demo")
    uw.button(key="scan").click().run()
    uw.radio(key="decision").set_value("deny")
    uw.text_area(key="reason").input("bought into the move")
    next(b for b in uw.button if b.label == "Submit decision").click().run()
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
