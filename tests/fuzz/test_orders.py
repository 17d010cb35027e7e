"""The order, the cover and the quote, fuzzed with what people type and what code passes.

Properties: `Order` and `Cover` either refuse with an `OrderError` (a `BTIError`) that names the
field and says what is allowed, or hold exact, positive, bounded values equal to what was
typed; a quote either refuses with a `BTIError` and stores nothing, or stores a quote whose
probability, premium and liquidation price are finite and within their ranges."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bti_core.db.engine import make_engine, migrate
from bti_core.errors import BTIError
from bti_core.market.ingest import Ingestor
from bti_core.market.synthetic import DemoMarket
from bti_core.market.warehouse import Warehouse
from bti_core.orders import MAX_AMOUNT, MAX_DURATION_HOURS, Cover, Order
from bti_core.policies import InsuranceService
from bti_core.risk.engine import RiskEngine
from tests.fuzz.conftest import cases, tally, tree_hash

PLAIN = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")

typed_number = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str),
    st.floats(0, 1e7).map(lambda x: f"{x:,.2f}"),  # thousands separators
    st.floats(0, 200).map(lambda x: f"{x:.1f}".replace(".", ",")),  # a decimal comma
    st.from_regex(r"\A[ +-]?[0-9]{0,6}([.,_][0-9]{0,4}){0,2}([eE][+-]?[0-9]{1,4})?\s?\Z"),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-Infinity", "1e999999", "0x1A", "½", "10x"]),
    st.text(max_size=8),
)
anything = st.one_of(
    typed_number,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.decimals(places=None),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
FIELD_WORDS = (
    "quantity",
    "entry price",
    "leverage",
    "side",
    "margin mode",
    "order type",
    "symbol",
    "wallet balance",
)


def exact(value: object) -> Decimal | None:
    """What a well-typed value means, to compare with what the order holds."""
    if isinstance(value, str) and PLAIN.match(value.replace("_", "")):
        return Decimal(value.strip().replace("_", ""))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return None


VALID = {
    "symbol": st.sampled_from(["BTCUSDT", "btc/usdt:usdt", "ETH-USDT", "SOLUSDT"]),
    "side": st.sampled_from(["long", "SHORT", "Long "]),
    "quantity": st.decimals(Decimal("0.0001"), Decimal(10_000), places=4).map(str),
    "entry": st.one_of(st.floats(0.01, 1e6), st.integers(1, 10**6).map(lambda x: f"{x:,}")),
    "leverage": st.one_of(st.integers(1, 125), st.sampled_from(["2", "10", "20.5", "1,000"])),
    "mode": st.sampled_from(["isolated", "CROSS"]),
    "otype": st.sampled_from(["market", "limit"]),
    "wallet": st.just(None),
}
BAD = {
    "symbol": st.one_of(st.sampled_from(["BTC", "", "BTCUSDT\n", "BTC/EUR"]), st.text(max_size=12)),
    "side": st.one_of(st.sampled_from(["buy", "", "up"]), st.text(max_size=6)),
    "quantity": anything,
    "entry": anything,
    "leverage": anything,
    "mode": st.sampled_from(["x", "", "isolated cross"]),
    "otype": st.sampled_from(["stop", ""]),
    "wallet": anything,
}


@cases(2000)
@given(data=st.data())
def test_order(data: st.DataObject) -> None:
    """Every field valid, or one or two of them anything at all."""
    spoilt = data.draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2))
    v = {k: data.draw((BAD if k in spoilt else VALID)[k]) for k in VALID}
    try:
        order = Order(
            v["symbol"],
            v["side"],
            v["quantity"],
            v["entry"],
            v["leverage"],
            v["mode"],
            v["otype"],
            v["wallet"],
        )
    except BTIError as exc:
        msg = str(exc)
        assert any(w in msg for w in FIELD_WORDS), f"{msg!r} names no field"
        assert re.search(r"must|expected|one of", msg), f"{msg!r} does not say what is allowed"
        tally("Order", "refused")
        return
    for name, typed in (
        ("quantity", v["quantity"]),
        ("entry_price", v["entry"]),
        ("leverage", v["leverage"]),
    ):
        got = getattr(order, name)
        assert isinstance(got, Decimal) and got.is_finite() and 0 < got <= MAX_AMOUNT
        if isinstance(typed, str) and "," in typed:
            typed = typed.replace(",", "")  # grouping commas accepted only in groups of three
        if (want := exact(typed)) is not None:
            assert got == want, f"{name}: typed {typed!r}, stored {got}"
    assert order.leverage >= 1 and order.margin > 0
    tally("Order", "accepted")


@cases(1600)
@given(data=st.data())
def test_cover(data: st.DataObject) -> None:
    valid = {
        "coverage": st.decimals(Decimal("0.01"), Decimal(10**6), places=2).map(str),
        "hours": st.one_of(st.integers(1, 720), st.integers(1, 720).map(str)),
        "share": st.sampled_from(["1", "0.5", 1]),
        "deductible": st.sampled_from(["0", "5", 0]),
    }
    spoilt = data.draw(st.sets(st.sampled_from(sorted(valid)), max_size=2))
    v = {k: data.draw(anything if k in spoilt else valid[k]) for k in valid}
    coverage, hours, share, deductible = v["coverage"], v["hours"], v["share"], v["deductible"]
    try:
        cover = Cover(coverage, hours, share, deductible)  # type: ignore[arg-type]
    except BTIError as exc:
        msg = str(exc)
        assert any(w in msg for w in ("coverage", "duration", "share", "deductible")), msg
        assert "must" in msg, msg
        tally("Cover", "refused")
        return
    assert isinstance(cover.duration_hours, int) and 1 <= cover.duration_hours <= MAX_DURATION_HOURS
    assert 0 < cover.coverage <= MAX_AMOUNT and 0 < cover.share <= 1 and cover.deductible >= 0
    if isinstance(hours, str):
        assert cover.duration_hours == int(hours.strip().replace("_", ""))
    payout = cover.payout(Decimal(10) ** 9)
    assert 0 <= payout <= cover.coverage
    tally("Cover", "accepted")


# --- the quote -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quoting(
    tmp_path_factory: pytest.TempPathFactory, demo: dict[str, DemoMarket]
) -> tuple[InsuranceService, Path]:
    root = tmp_path_factory.mktemp("fuzz-quote")
    wh = Warehouse(root / "wh")
    ing = Ingestor(wh, None)
    m = demo["BTCUSDT"]
    m.ingest(ing)
    (root / "db").mkdir()
    engine = make_engine(f"sqlite:///{root / 'db' / 'bti.db'}")
    migrate(engine)
    risk = RiskEngine(wh, n_paths=2_000)
    risk.symbol_risk("BTCUSDT")
    return InsuranceService(engine, risk), root / "db"


near = st.floats(0.2, 5.0)  # a multiple of something sensible


@cases(500)
@given(
    user=st.one_of(st.sampled_from(["alice", "bob"]), st.text(max_size=10)),
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "BTC/USDT:USDT", "DOGEUSDT"]),
    side=st.sampled_from(["long", "short"]),
    qty=st.one_of(st.floats(1e-4, 2.0), st.floats(1e-9, 1e6)),
    entry_x=st.one_of(st.just(1.0), st.floats(0.98, 1.02), near),
    leverage=st.one_of(st.integers(1, 150), st.floats(1, 150)),
    cover_x=st.one_of(st.just(1.0), st.floats(0.01, 1.5)),
    hours=st.one_of(st.sampled_from([1, 8, 24, 72, 168, 720]), st.integers(-5, 1000)),
    limit=st.booleans(),
    mode=st.sampled_from(["isolated", "cross"]),
    wallet_x=st.floats(0.5, 5),
)
def test_quote(
    quoting: tuple[InsuranceService, Path],
    user: str,
    symbol: str,
    side: str,
    qty: float,
    entry_x: float,
    leverage: float,
    cover_x: float,
    hours: int,
    limit: bool,
    mode: str,
    wallet_x: float,
) -> None:
    svc, db_dir = quoting
    before = tree_hash(db_dir)
    try:
        spot = svc.risk.spot("BTCUSDT")
        entry = Decimal(str(round(spot * (entry_x if limit else 1.0), 2)))
        order = Order(
            symbol,
            side,
            Decimal(str(qty)),
            entry,
            Decimal(str(leverage)),
            mode,
            "limit" if limit else "market",
            Decimal(str(round(float(entry) * qty / leverage * wallet_x, 2)))
            if mode == "cross"
            else None,
        )
        cover = Cover(
            Decimal(str(round(float(order.margin) * cover_x, 2))) or Decimal("0.01"), hours
        )
        view = svc.quote(user_id=user, order=order, cover=cover)
    except BTIError as exc:
        assert str(exc) and re.search(
            r"must|expected|allowed|only|no |not|unknown|between|at most|at least", str(exc)
        ), str(exc)
        assert tree_hash(db_dir) == before, f"a refused quote changed the database: {exc}"
        tally("quote (InsuranceService.quote)", "refused")
        return
    r = view.record
    assert 0 <= r.probability <= 1 and math.isfinite(r.probability_se)
    assert r.premium >= 0 and r.payout >= 0 and r.liquidation_price >= 0
    assert r.payout <= cover.coverage
    assert all(c.reason for c in view.checks if not c.passed), "a failed check without a reason"
    assert tree_hash(db_dir) != before, "an accepted quote was not stored"
    tally("quote (InsuranceService.quote)", "accepted")
