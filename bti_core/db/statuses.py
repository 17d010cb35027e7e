"""The values a status column may hold, one enum each, for every module that writes or queries
them (a query says ``Policy.status == PolicyStatus.ACTIVE.value``, never a bare string). The
moves between a policy's statuses are `bti_core.policies.lifecycle`'s; a claim's are
`bti_core.claims.state`'s."""

from __future__ import annotations

from enum import StrEnum


class PolicyStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DECLINED = "declined"
    EXPIRED = "expired"
    CLAIMED = "claimed"
    PAID = "paid"
    CANCELLED = "cancelled"  # by its holder, the unused premium refunded


class ChangeState(StrEnum):
    """A change to a policy (`PolicyChange`): priced and shown, sent on-chain, done; or
    refused by the pool, or never confirmed before its price expired."""

    PRICED = "priced"
    SENT = "sent"
    DONE = "done"
    REFUSED = "refused"
    LAPSED = "lapsed"


class RenewalState(StrEnum):
    """A trader's consent to renew a cover automatically (`Renewal`): standing (it renews the
    cover it is on when that ends), done (its renewals are used up), stopped (a renewal could
    not be made: the reason is kept), withdrawn (by the trader)."""

    STANDING = "standing"
    DONE = "done"
    STOPPED = "stopped"
    WITHDRAWN = "withdrawn"


class Peril(StrEnum):
    """What a policy pays for: the insured position's liquidation, or its auto-deleveraging
    (ADL: closed in profit by the exchange against a bankrupt counterparty)."""

    LIQUIDATION = "liquidation"
    ADL = "adl"


class HoldState(StrEnum):
    """A stream's unconfirmed crossing (`HeldTrigger`): held until the bars prove or refute it,
    or its wait lapses."""

    HELD = "held"
    CONFIRMED = "confirmed"
    REFUTED = "refuted"
    LAPSED = "lapsed"


#: a policy whose cover is open: bought and waiting for its payment, or in force
OPEN_STATUSES: tuple[str, ...] = (PolicyStatus.PENDING.value, PolicyStatus.ACTIVE.value)
#: a policy a liquidation inside its window can still claim on
CLAIMABLE_STATUSES: tuple[str, ...] = (PolicyStatus.ACTIVE.value, PolicyStatus.EXPIRED.value)


class AccountStatus(StrEnum):
    """A linked exchange account: its key works, the exchange refused it since (revoked, or
    its secret changed), or the trader removed it (its secrets wiped)."""

    LINKED = "linked"
    REFUSED = "refused"
    REMOVED = "removed"


class PositionState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
