"""The claim state machine, exhaustively: every event in every state (and after an appeal)."""

from __future__ import annotations

import pytest

from bti_core.claims.state import (
    TRANSITIONS,
    ClaimState,
    Event,
    State,
    TransitionError,
    allowed,
    transition,
)

EXPECTED = {
    (State.OPENED, Event.AUDIT): State.AUDITING,
    (State.AUDITING, Event.AUTO_APPROVE): State.APPROVED,
    (State.AUDITING, Event.AUTO_DENY): State.DENIED,
    (State.AUDITING, Event.REFER): State.REFERRED,
    (State.REFERRED, Event.UNDERWRITER_APPROVE): State.APPROVED,
    (State.REFERRED, Event.UNDERWRITER_DENY): State.DENIED,
    (State.REFERRED, Event.UNDERWRITER_ADJUST): State.ADJUSTED,
    (State.APPEALED, Event.UNDERWRITER_APPROVE): State.APPROVED,
    (State.APPEALED, Event.UNDERWRITER_DENY): State.DENIED,
    (State.APPEALED, Event.UNDERWRITER_ADJUST): State.ADJUSTED,
    (State.DENIED, Event.APPEAL): State.APPEALED,
    (State.APPROVED, Event.PAY): State.PAYING,
    (State.ADJUSTED, Event.PAY): State.PAYING,
    (State.PAYING, Event.CONFIRM): State.PAID,
    (State.PAYING, Event.FAIL): State.FAILED,
    (State.FAILED, Event.RETRY): State.PAYING,
}


@pytest.mark.parametrize("appealed", [False, True])
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_event_in_every_state(state: State, event: Event, appealed: bool) -> None:
    claim = ClaimState(state, appealed)
    want = EXPECTED.get((state, event))
    if want is not None and not (appealed and event is Event.APPEAL):
        after = transition(claim, event)
        assert after.state is want
        assert after.appealed == (appealed or event is Event.APPEAL)
    else:
        with pytest.raises(TransitionError, match=f"cannot {event.value} a claim that is"):
            transition(claim, event)


def test_the_table_is_exactly_the_specification() -> None:
    table = {(s, e): t for s, row in TRANSITIONS.items() for e, t in row.items()}
    assert table == EXPECTED


def test_a_denial_is_appealed_once() -> None:
    c = transition(ClaimState(State.DENIED), Event.APPEAL)
    c = transition(c, Event.UNDERWRITER_DENY)
    assert c == ClaimState(State.DENIED, appealed=True)
    assert allowed(c) == []
    with pytest.raises(TransitionError, match="appealed only once"):
        transition(c, Event.APPEAL)


def test_errors_say_what_is_allowed() -> None:
    with pytest.raises(TransitionError, match="allows pay"):
        transition(ClaimState(State.APPROVED), Event.CONFIRM)
    with pytest.raises(TransitionError, match="allows nothing more"):
        transition(ClaimState(State.PAID), Event.PAY)
    with pytest.raises(TransitionError, match="unknown claim event 'explode'"):
        transition(ClaimState(State.OPENED), "explode")
