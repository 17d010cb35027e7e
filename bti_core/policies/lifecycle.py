"""The policy lifecycle: a status and one `transition` (pure), the only way a policy's status
changes (`move_policy` applies it in a transaction and logs the event).

    pending ──pay──▶ active ──expire──▶ expired ──file (trader's record)──▶ claimed
       │                └──liquidate──▶ claimed ──pay_claim──▶ paid
       └──decline──▶ declined

A declined policy never took a premium; an expired one may still be claimed with the trader's
own record of a liquidation inside its window.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlmodel import Session

from bti_core.db.models import Policy, PolicyEvent
from bti_core.db.repository import add_policy_event
from bti_core.db.statuses import PolicyStatus
from bti_core.errors import BTIError


class LifecycleEvent(StrEnum):
    ACTIVATE = "active"  # the premium was collected on-chain
    DECLINE = "declined"
    EXPIRE = "expired"
    CLAIM = "claimed"
    PAY = "paid"
    CANCEL = "cancelled"  # by the holder (`changes`)


#: how long after a cover ends a claim on a liquidation inside its window may still be filed
#: with the exchange's record (`claims.opening.file_claim`); the pool keeps the cover locked
#: until then, so such a claim can be paid (the contract's own grace, `CLAIM_GRACE`, is 7 days)
FILING_PERIOD = timedelta(hours=72)

TRANSITIONS: dict[PolicyStatus, dict[LifecycleEvent, PolicyStatus]] = {
    PolicyStatus.PENDING: {
        LifecycleEvent.ACTIVATE: PolicyStatus.ACTIVE,
        LifecycleEvent.DECLINE: PolicyStatus.DECLINED,
    },
    PolicyStatus.ACTIVE: {
        LifecycleEvent.EXPIRE: PolicyStatus.EXPIRED,
        LifecycleEvent.CLAIM: PolicyStatus.CLAIMED,
        LifecycleEvent.CANCEL: PolicyStatus.CANCELLED,
    },
    PolicyStatus.EXPIRED: {LifecycleEvent.CLAIM: PolicyStatus.CLAIMED},
    PolicyStatus.CLAIMED: {LifecycleEvent.PAY: PolicyStatus.PAID},
    PolicyStatus.DECLINED: {},
    PolicyStatus.PAID: {},
    PolicyStatus.CANCELLED: {},
}


class PolicyTransitionError(BTIError, ValueError):
    """An event the policy's status does not allow."""


def transition(status: PolicyStatus | str, event: LifecycleEvent | str) -> PolicyStatus:
    """The status after ``event``, or `PolicyTransitionError` saying what is allowed."""
    now, ev = PolicyStatus(status), LifecycleEvent(event)
    nxt = TRANSITIONS[now].get(ev)
    if nxt is None:
        ok = ", ".join(e.value for e in TRANSITIONS[now]) or "nothing more"
        raise PolicyTransitionError(
            f"a policy that is {now.value} cannot become {ev.value}; it allows {ok}"
        )
    return nxt


def move_policy(
    session: Session,
    *,
    policy: Policy,
    event: LifecycleEvent,
    detail: dict[str, Any] | None = None,
) -> PolicyEvent:
    """Change a policy's status by its lifecycle's one `transition` (which refuses what is not
    allowed) and log the event, in the caller's transaction."""
    policy.status = transition(policy.status, event).value
    session.add(policy)
    return add_policy_event(session, policy=policy, event=event.value, detail=detail)
