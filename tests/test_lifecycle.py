"""The policy lifecycle: the one transition and what it refuses (table-driven)."""

from __future__ import annotations

import pytest

from bti_core.db.statuses import PolicyStatus
from bti_core.policies.lifecycle import (
    TRANSITIONS,
    LifecycleEvent,
    PolicyTransitionError,
    transition,
)


@pytest.mark.parametrize(
    ("status", "event", "after"),
    [
        ("pending", "active", "active"),
        ("pending", "declined", "declined"),
        ("active", "expired", "expired"),
        ("active", "claimed", "claimed"),
        ("expired", "claimed", "claimed"),  # a trader's own record after the window ended
        ("claimed", "paid", "paid"),
    ],
)
def test_allowed_transitions(status: str, event: str, after: str) -> None:
    assert transition(status, event) is PolicyStatus(after)


@pytest.mark.parametrize(
    ("status", "event", "says"),
    [
        ("declined", "active", "declined cannot become active; it allows nothing more"),
        ("paid", "claimed", "paid cannot become claimed"),
        ("active", "paid", "it allows expired, claimed"),  # paid only through a claim
        ("pending", "expired", "it allows active, declined"),  # never active, nothing to expire
    ],
)
def test_refused_transitions_say_what_is_allowed(status: str, event: str, says: str) -> None:
    with pytest.raises(PolicyTransitionError, match=says):
        transition(status, event)


def test_every_status_is_in_the_table_and_terminal_ones_allow_nothing() -> None:
    assert set(TRANSITIONS) == set(PolicyStatus)
    reachable = {after for moves in TRANSITIONS.values() for after in moves.values()}
    assert reachable | {PolicyStatus.PENDING} == set(PolicyStatus)
    assert TRANSITIONS[PolicyStatus.PAID] == TRANSITIONS[PolicyStatus.DECLINED] == {}
    assert {e.value for e in LifecycleEvent} <= {s.value for s in PolicyStatus}
