"""The Capital page under AppTest on anvil: a provider takes BTI from the faucet, deposits,
is refused a deposit above the wallet, requests a withdrawal, waits the cooldown out and takes
it; the pool's figures, the share price chart, the yields and the stress table are drawn."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bti_core.chain.node import rpc_call
from tests.dashboard.conftest import sign_in

ROOT = Path(__file__).resolve().parents[2]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_a_provider_deposits_requests_and_withdraws(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("BTI_WITHDRAWAL_COOLDOWN_SECONDS", "2")  # this folder's pool: 2 s
    at = sign_in(AppTest.from_file(str(ROOT / "pages" / "capital.py"), default_timeout=120))
    assert not at.exception, at.exception
    assert metric(at, "Value") == "0.00 BTI" and metric(at, "Capital") == "1,000,000.00 BTI"
    next(b for b in at.sidebar.button if "faucet" in b.label).click().run()
    at.number_input(key="capital_deposit_amount").set_value(400.0)
    next(b for b in at.button if b.label == "Deposit").click().run()
    assert not at.exception, at.exception
    assert "400.00 BTI deposited" in at.success[0].value
    assert metric(at, "Value") == "400.00 BTI" and metric(at, "Net deposited") == "400.00 BTI"
    assert metric(at, "Capital") == "1,000,400.00 BTI"

    at.number_input(key="capital_deposit_amount").set_value(5000.0)
    next(b for b in at.button if b.label == "Deposit").click().run()
    assert "above the wallet's 600.00 BTI" in at.error[0].value
    assert metric(at, "Value") == "400.00 BTI"  # nothing moved

    at.button(key="capital_request").click().run()
    assert any("cooling down until" in i.value for i in at.info), [i.value for i in at.info]
    assert at.button(key="capital_withdraw").disabled
    time.sleep(2.5)
    rpc_call(os.environ["BTI_RPC_URL"], "evm_mine")  # a block past the cooldown
    at.run()
    assert any("is ready until" in s.value for s in at.success), [s.value for s in at.success]
    at.button(key="capital_withdraw").click().run()
    assert not at.exception, at.exception
    assert "400.00 BTI withdrawn" in at.success[0].value
    assert metric(at, "Value") == "0.00 BTI" and metric(at, "Capital") == "1,000,000.00 BTI"

    assert len(at.get("plotly_chart")) == 1  # the share price
    yields = next(d.value for d in at.dataframe if "window" in d.value.columns)
    assert list(yields["window"]) == ["7 days", "30 days", "365 days"]
    stress = next(d.value for d in at.dataframe if "scenario" in d.value.columns)
    assert stress["scenario"].iloc[0] == "10 October 2025 (stylised)"
    assert (stress["your share (BTI)"] == 0).all()  # nothing left in the pool
