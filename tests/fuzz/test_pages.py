"""The pages' inputs, fuzzed through Streamlit's AppTest: the Buy page's whole form and the
sign-in form, with values anywhere inside what each widget lets a person enter.

Property: the page never raises; asking for a quote either shows a quote (and stores it) or
shows an error saying what was wrong, with the database as it was; a sign-in either signs in
or says "Wrong username or password", storing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from bti_core.chain.node import AnvilNode
from tests.conftest import _fill
from tests.dashboard.conftest import sign_in
from tests.fuzz.conftest import cases, tally, tree_hash

ROOT = Path(__file__).resolve().parents[2]
DURATIONS = ["6 hours", "1 day", "3 days", "7 days", "14 days", "30 days"]


@dataclass
class Page:
    at: AppTest
    db: Path

    def state(self) -> str:
        return tree_hash(self.db)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, demo: dict, anvil: AnvilNode) -> Iterator[Path]:
    """Demo markets in a data folder of this module (the page reads the settings from the
    environment, so it is set here and put back afterwards)."""
    d = tmp_path_factory.mktemp("fuzz-pages") / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("BTI_DATA_DIR", str(d))
    mp.delenv("BTI_DATABASE_URL", raising=False)
    mp.setenv("BTI_CLAIMS_WATCH_SECONDS", "0")
    try:
        _fill(d, demo, anvil, mp)
        yield d
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def buy(data: Path) -> Page:
    at = AppTest.from_file(str(ROOT / "pages" / "buy_insurance.py"), default_timeout=120)
    sign_in(at)
    return Page(at, data / "bti.db")


def _run(at: AppTest) -> None:
    at.run()
    assert not at.exception, at.exception


def within(w, u: float) -> float:  # type: ignore[no-untyped-def]
    """A value at fraction ``u`` of a number widget's range (its max, or a large number)."""
    lo = float(w.min) if w.min is not None else 0.0
    hi = float(w.max) if w.max is not None else 1e9
    return lo + (hi - lo) * u


# fractions of a widget's range: its ends, tiny values and anything between
frac = st.one_of(
    st.sampled_from([0.0, 1.0, 1e-12, 1e-9, 1e-6]), st.floats(0, 1), st.floats(0, 1e-4)
)


@pytest.mark.slow
@cases(30)
@given(
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    side=st.sampled_from(["long", "short"]),
    otype=st.sampled_from(["market", "limit"]),
    mode=st.sampled_from(["isolated", "cross"]),
    qty=st.one_of(
        st.floats(0.001, 2), st.floats(0.001, 2), st.floats(0, 5), frac.map(lambda u: u * 1e9)
    ),
    entry=frac,
    lev=st.floats(0, 1),
    wallet=frac,
    cov=st.one_of(st.floats(0.2, 1), st.floats(0.2, 1), frac),
    share=st.integers(2, 20).map(lambda k: 5 * k),
    ded=st.one_of(st.just(0.0), st.just(0.0), frac),
    duration=st.sampled_from(DURATIONS),
)
def test_buy_form(
    buy: Page,
    symbol: str,
    side: str,
    otype: str,
    mode: str,
    qty: float,
    entry: float,
    lev: float,
    wallet: float,
    cov: float,
    share: int,
    ded: float,
    duration: str,
) -> None:
    at = buy.at
    at.selectbox(key="buy_symbol").set_value(symbol)
    at.radio(key="buy_side").set_value(side)
    at.radio(key="buy_type").set_value(otype)
    at.radio(key="buy_mode").set_value(mode)
    _run(at)  # the symbol's own quantity widget (each symbol has its default size)
    at.number_input(key=f"buy_qty_{symbol}").set_value(round(qty, 4))
    _run(at)
    if otype == "limit":
        w = at.number_input(key=f"buy_entry_l_{symbol}")
        w.set_value(round(within(w, entry), 2))
        _run(at)
    if at.error and "cannot be liquidated" in at.error[0].value:  # too big to be liquidated
        assert not [b for b in at.button if b.key == "buy_quote"]
        tally("page: Buy Insurance form", "refused")
        return
    if [s for s in at.slider if s.key == "buy_lev"]:  # none when 2× is the only leverage
        s = at.slider(key="buy_lev")
        s.set_value(round(s.min + (s.max - s.min) * lev))
    if mode == "cross":
        _run(at)
        w = at.number_input(key="buy_wallet")
        w.set_value(round(within(w, wallet), 2))
    _run(at)
    c = next(n for n in at.number_input if n.label == "Coverage (USDT)")
    c.set_value(round(within(c, cov), 2))
    at.slider(key="buy_share").set_value(share)
    d = at.number_input(key="buy_ded")
    d.set_value(round(within(d, ded), 2))
    at.select_slider(key="buy_dur").set_value(duration)
    before = buy.state()
    at.button(key="buy_quote").click()
    _run(at)
    quoted = [h for h in at.subheader if h.value.startswith("Quote for")]
    if quoted:
        values = {m.label: m.value for m in at.metric}
        assert values["P(liquidation)"].endswith("%") and "nan" not in str(values).lower()
        assert buy.state() != before, "a quote was shown but not stored"
        tally("page: Buy Insurance form", "accepted")
    else:
        assert at.error, "no quote and no error"
        assert all(e.value.strip() for e in at.error)
        assert buy.state() == before, "a refused quote changed the database"
        tally("page: Buy Insurance form", "refused")


SIGN_IN_PAGE = """
import streamlit as st
from dashboard import resources
user = resources.signed_in_user()
st.write(f"signed in as {user.username}")
"""


@pytest.mark.slow
@cases(40)
@given(
    user=st.one_of(
        st.sampled_from(["trader", "TRADER ", "underwriter", "", "root"]), st.text(max_size=30)
    ),
    password=st.one_of(st.sampled_from(["trader-demo", "", "x" * 100]), st.text(max_size=80)),
)
def test_sign_in_form(data: Path, user: str, password: str) -> None:
    # the form every signed-in page draws (`resources.signed_in_user`), without a page's data
    at = AppTest.from_string(SIGN_IN_PAGE, default_timeout=60)
    _run(at)
    attempts = ("sign_in_attempt",)  # a failed sign-in is recorded (the rate limit counts it)
    before = tree_hash(data / "bti.db", skip=attempts)
    at.text_input(key="sign_in_user").input(user)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click()
    _run(at)
    if at.error:
        assert at.error[0].value in (
            "Wrong username or password.",
            "Sign-in refused: too many wrong passwords: sign-in is paused for 15 minutes; "
            "try again then.",
        ), at.error[0].value
        assert tree_hash(data / "bti.db", skip=attempts) == before
        tally("page: sign-in form", "refused")
    else:
        assert not [t for t in at.text_input if t.key == "sign_in_user"], "no error, still a form"
        tally("page: sign-in form", "accepted")
