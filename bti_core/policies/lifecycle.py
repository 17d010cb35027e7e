"""The policy lifecycle (pure): a status and one `transition`, the only way a policy's status
changes (`bti_core.db.repository.move_policy` applies it and logs the event).

    pending ──pay──▶ active ──expire──▶ expired ──file (trader's record)──▶ claimed
       │                └──liquidate──▶ claimed ──pay_claim──▶ paid
       └──decline──▶ declined

A declined policy never took a premium; an expired one may still be claimed with the trader's
own record of a liquidation inside its window.
"""

from __future__ import annotations

from enum import StrEnum

from bti_core.errors import BTIError


class PolicyStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DECLINED = "declined"
    EXPIRED = "expired"
    CLAIMED = "claimed"
    PAID = "paid"


class PolicyEvent(StrEnum):
    ACTIVATE = "active"  # the premium was collected on-chain
    DECLINE = "declined"
    EXPIRE = "expired"
    CLAIM = "claimed"
    PAY = "paid"


TRANSITIONS: dict[PolicyStatus, dict[PolicyEvent, PolicyStatus]] = {
    PolicyStatus.PENDING: {
        PolicyEvent.ACTIVATE: PolicyStatus.ACTIVE,
        PolicyEvent.DECLINE: PolicyStatus.DECLINED,
    },
    PolicyStatus.ACTIVE: {
        PolicyEvent.EXPIRE: PolicyStatus.EXPIRED,
        PolicyEvent.CLAIM: PolicyStatus.CLAIMED,
    },
    PolicyStatus.EXPIRED: {PolicyEvent.CLAIM: PolicyStatus.CLAIMED},
    PolicyStatus.CLAIMED: {PolicyEvent.PAY: PolicyStatus.PAID},
    PolicyStatus.DECLINED: {},
    PolicyStatus.PAID: {},
}


class PolicyTransitionError(BTIError, ValueError):
    """An event the policy's status does not allow."""


def transition(status: PolicyStatus | str, event: PolicyEvent | str) -> PolicyStatus:
    """The status after ``event``, or `PolicyTransitionError` saying what is allowed."""
    now, ev = PolicyStatus(status), PolicyEvent(event)
    nxt = TRANSITIONS[now].get(ev)
    if nxt is None:
        ok = ", ".join(e.value for e in TRANSITIONS[now]) or "nothing more"
        raise PolicyTransitionError(
            f"a policy that is {now.value} cannot become {ev.value}; it allows {ok}"
        )
    return nxt
