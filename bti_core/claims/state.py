"""The claim state machine (pure).

    opened ──audit──▶ auditing ──approve──▶ approved ──pay──▶ paying ──confirm──▶ paid
                          │ ──deny────▶ denied ──appeal (once)──▶ appealed ──▶ (underwriter)
                          └ ──refer───▶ referred ──▶ (underwriter) approve | deny | adjust
    adjusted ──pay──▶ paying;   paying ──fail──▶ failed ──retry──▶ paying

``transition(claim, event)`` returns the next state or raises `TransitionError` naming the
events the current state allows. Underwriter decisions (``underwriter_*``) apply to referred and
appealed claims only; automatic ones (``auto_*``) to auditing claims only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bti_core.errors import BTIError


class State(StrEnum):
    OPENED = "opened"
    AUDITING = "auditing"
    APPROVED = "approved"
    DENIED = "denied"
    REFERRED = "referred"
    ADJUSTED = "adjusted"
    APPEALED = "appealed"
    PAYING = "paying"
    PAID = "paid"
    FAILED = "failed"


class Event(StrEnum):
    AUDIT = "audit"
    AUTO_APPROVE = "auto_approve"
    AUTO_DENY = "auto_deny"
    REFER = "refer"
    UNDERWRITER_APPROVE = "underwriter_approve"
    UNDERWRITER_DENY = "underwriter_deny"
    UNDERWRITER_ADJUST = "underwriter_adjust"
    APPEAL = "appeal"
    PAY = "pay"
    CONFIRM = "confirm"
    FAIL = "fail"
    RETRY = "retry"


_DECIDE = {
    Event.UNDERWRITER_APPROVE: State.APPROVED,
    Event.UNDERWRITER_DENY: State.DENIED,
    Event.UNDERWRITER_ADJUST: State.ADJUSTED,
}

TRANSITIONS: dict[State, dict[Event, State]] = {
    State.OPENED: {Event.AUDIT: State.AUDITING},
    State.AUDITING: {
        Event.AUTO_APPROVE: State.APPROVED,
        Event.AUTO_DENY: State.DENIED,
        Event.REFER: State.REFERRED,
    },
    State.REFERRED: dict(_DECIDE),
    State.APPEALED: dict(_DECIDE),
    State.DENIED: {Event.APPEAL: State.APPEALED},
    State.APPROVED: {Event.PAY: State.PAYING},
    State.ADJUSTED: {Event.PAY: State.PAYING},
    State.PAYING: {Event.CONFIRM: State.PAID, Event.FAIL: State.FAILED},
    State.FAILED: {Event.RETRY: State.PAYING},
    State.PAID: {},
}

OPEN_FOR_UNDERWRITER = frozenset({State.REFERRED, State.APPEALED})
TERMINAL = frozenset({State.PAID})


class TransitionError(BTIError, ValueError):
    """An event the claim's state does not allow."""


@dataclass(frozen=True)
class ClaimState:
    state: State
    appealed: bool = False  # a denial may be appealed once


def allowed(claim: ClaimState) -> list[Event]:
    events = list(TRANSITIONS[claim.state])
    if claim.appealed and Event.APPEAL in events:
        events.remove(Event.APPEAL)
    return events


def transition(claim: ClaimState, event: Event | str) -> ClaimState:
    """The claim after ``event``, or `TransitionError` saying what the state allows."""
    try:
        ev = Event(event)
    except ValueError as exc:
        raise TransitionError(
            f"unknown claim event {event!r}; events are {', '.join(e.value for e in Event)}"
        ) from exc
    ok = allowed(claim)
    if ev not in ok:
        why = (
            "a denial can be appealed only once"
            if ev is Event.APPEAL and claim.state is State.DENIED
            else f"a claim that is {claim.state.value} allows "
            + (", ".join(e.value for e in ok) if ok else "nothing more")
        )
        raise TransitionError(f"cannot {ev.value} a claim that is {claim.state.value}: {why}")
    return ClaimState(TRANSITIONS[claim.state][ev], claim.appealed or ev is Event.APPEAL)
