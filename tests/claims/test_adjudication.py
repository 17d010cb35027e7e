"""Adjudication (pure): checks, amount and the automatic limit → decision (table-driven)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bti_core.claims.adjudication import adjudicate
from bti_core.claims.checks import AuditCheck, Outcome
from bti_core.claims.state import Event

P, F, U = Outcome.PASS, Outcome.FAIL, Outcome.UNSURE


def checks(**outcomes: Outcome) -> list[AuditCheck]:
    base = {"in_window": P, "mark_confirms": P, "terms_match": P, "adverse_selection": P}
    return [AuditCheck(n, o, f"{n} said so") for n, o in {**base, **outcomes}.items()]


@pytest.mark.parametrize(
    ("outcomes", "amount", "event", "reason"),
    [
        ({}, "100", Event.AUTO_APPROVE, "every check passed"),
        ({}, "1595", Event.REFER, "payout 1,595.00 BTI is above the 1,000.00 BTI automatic limit"),
        (
            {"mark_confirms": F},
            "100",
            Event.AUTO_DENY,
            "Mark price reached the liquidation price: mark_confirms said so",
        ),
        ({"mark_confirms": F, "adverse_selection": U}, "5000", Event.AUTO_DENY, "mark_confirms"),
        ({"adverse_selection": U}, "100", Event.REFER, "Not bought into a move: adverse_selection"),
        ({"adverse_selection": F}, "100", Event.REFER, "adverse_selection"),  # soft, not hard
    ],
)
def test_decisions(outcomes: dict, amount: str, event: Event, reason: str) -> None:
    d = adjudicate(checks(**outcomes), Decimal(amount), Decimal(1000))
    assert d.event is event
    assert any(reason in r for r in d.reasons), d.reasons
    assert (d.amount == Decimal(amount)) is (event is Event.AUTO_APPROVE)


def test_a_referral_gives_every_reason_not_only_the_first() -> None:
    d = adjudicate(checks(adverse_selection=U), Decimal(2000), Decimal(1000))
    assert len(d.reasons) == 2 and "automatic limit" in d.reasons[1]
