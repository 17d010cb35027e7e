"""Each audit check with evidence that passes and evidence that does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bti_core.claims.checks import (
    ClaimFacts,
    Outcome,
    PolicyFacts,
    TraderFacts,
    adverse_selection,
    audit,
    in_window,
    mark_confirms,
    model_score,
    terms_match,
    user_signals,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
POLICY = PolicyFacts(
    side="long",
    symbol="BTCUSDT",
    quantity=0.1,
    entry_price=50_000,
    leverage=20,
    liquidation_price=47_700,
    start=T0,
    end=T0 + timedelta(hours=72),
    probability=0.2,
    risk_index=55,
)


def bar(at: datetime, low: float, last_low: float | None = None) -> dict:
    return {"ts": at.isoformat(), "high": 50_000, "low": low, "last_high": 50_000,
            "last_low": low if last_low is None else last_low}  # fmt: skip


def claim(at: datetime, low: float, last_low: float | None = None, **kw: object) -> ClaimFacts:
    return ClaimFacts(source="market_scan", trigger_at=at, bars=[bar(at, low, last_low)], **kw)  # type: ignore[arg-type]


def test_in_window() -> None:
    inside = claim(T0 + timedelta(hours=5), 47_000)
    assert in_window(POLICY, inside).outcome is Outcome.PASS
    late = claim(T0 + timedelta(hours=80), 47_000)
    c = in_window(POLICY, late)
    assert c.outcome is Outcome.FAIL and "outside the cover window" in c.reason


def test_the_mark_must_confirm_a_last_price_wick_does_not() -> None:
    at = T0 + timedelta(hours=5)
    assert mark_confirms(POLICY, claim(at, 47_600)).outcome is Outcome.PASS
    wick = mark_confirms(POLICY, claim(at, 48_500, last_low=47_000))
    assert wick.outcome is Outcome.FAIL and "wick" in wick.reason
    nothing = mark_confirms(POLICY, claim(at, 48_500))
    assert nothing.outcome is Outcome.FAIL
    no_data = ClaimFacts(source="trader", trigger_at=at, bars=[])
    assert mark_confirms(POLICY, no_data).outcome is Outcome.UNSURE


def test_a_short_is_judged_on_the_mark_high() -> None:
    short = PolicyFacts(**{**POLICY.__dict__, "side": "short", "liquidation_price": 52_300})
    at = T0 + timedelta(hours=2)
    up = ClaimFacts("market_scan", at, [{"ts": at.isoformat(), "high": 52_400, "low": 50_000}])
    assert mark_confirms(short, up).outcome is Outcome.PASS


def test_terms_match_a_trader_record() -> None:
    at = T0 + timedelta(hours=5)
    good = {"symbol": "BTCUSDT", "side": "long", "quantity": "0.1", "price": "47650"}
    c = ClaimFacts("trader", at, [], record=good)
    assert terms_match(POLICY, c).outcome is Outcome.PASS
    bad = {**good, "quantity": "0.5", "symbol": "ETHUSDT"}
    r = terms_match(POLICY, ClaimFacts("trader", at, [], record=bad))
    assert r.outcome is Outcome.FAIL and "ETHUSDT" in r.reason and "quantity" in r.reason
    assert terms_match(POLICY, claim(at, 47_000)).outcome is Outcome.PASS  # market scan


def test_adverse_selection() -> None:
    calm = claim(
        T0 + timedelta(hours=30), 47_000, pre_purchase_move=0.01, distance_at_purchase=0.05
    )
    assert adverse_selection(POLICY, calm).outcome is Outcome.PASS
    quick = claim(T0 + timedelta(minutes=20), 47_000)
    assert "within an hour" in adverse_selection(POLICY, quick).reason
    chasing = claim(
        T0 + timedelta(hours=30), 47_000, pre_purchase_move=0.08, distance_at_purchase=0.05
    )
    c = adverse_selection(POLICY, chasing)
    assert c.outcome is Outcome.UNSURE and "moving fast" in c.reason
    # the exchange's own record of a linked position's liquidation: the hour alone is no sign,
    # buying into a move still is
    assert adverse_selection(POLICY, quick, confirmed=True).outcome is Outcome.PASS
    chasing_quick = claim(
        T0 + timedelta(minutes=20), 47_000, pre_purchase_move=0.08, distance_at_purchase=0.05
    )
    c = adverse_selection(POLICY, chasing_quick, confirmed=True)
    assert c.outcome is Outcome.UNSURE and "moving fast" in c.reason
    assert "within an hour" not in c.reason


def test_user_signals() -> None:
    assert user_signals(POLICY, TraderFacts(0, 0, (20.0, 15.0))).outcome is Outcome.PASS
    c = user_signals(
        POLICY, TraderFacts(claims_last_30d=3, earlier_claims=2, earlier_leverages=(5.0, 5.0))
    )
    assert c.outcome is Outcome.UNSURE
    assert (
        "3 claims" in c.reason
        and "repeated" in c.reason
        and "twice the trader's usual 5×" in c.reason
    )


def test_model_score_at_purchase_and_before_the_trigger() -> None:
    assert model_score(POLICY).outcome is Outcome.PASS
    cheap = PolicyFacts(**{**POLICY.__dict__, "probability": 0.002})
    assert model_score(cheap).outcome is Outcome.UNSURE
    assert model_score(cheap, 0.001).outcome is Outcome.UNSURE  # a surprise both times
    later = model_score(cheap, 0.4)  # the market had moved: the model saw it coming
    assert later.outcome is Outcome.PASS and "40.0% just before the event" in later.reason


def test_one_owner_many_accounts_is_flagged() -> None:
    c = user_signals(POLICY, TraderFacts(shared_owner_with=("mallory", "mallory2")))
    assert c.outcome is Outcome.UNSURE and "mallory, mallory2" in c.reason


def test_audit_runs_all_six() -> None:
    checks = audit(POLICY, claim(T0 + timedelta(hours=5), 47_000), TraderFacts())
    assert [c.name for c in checks] == [
        "in_window", "mark_confirms", "terms_match", "adverse_selection", "user_signals", "model_score",
    ]  # fmt: skip
    assert all(c.outcome is Outcome.PASS for c in checks)
