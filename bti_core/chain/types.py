"""What the chain client reads and returns: a deployment, a policy and a purchase as the
contracts hold them, the pool's books, decoded events, and the hash that binds a policy's
off-chain terms."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

ZERO_HASH = b"\x00" * 32


class OnChainStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    PAID = 2
    RELEASED = 3


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    token: str
    policy: str
    pool: str
    block: int  # first block of the deployment: event queries start here, never at genesis

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class OnChainPolicy:
    policy_id: int
    buyer: str
    owner: str
    start: int
    expiry: int
    status: OnChainStatus
    coverage: Decimal
    premium: Decimal
    paid: Decimal
    terms_hash: str
    reserved: Decimal = Decimal(0)  # the open claim's reserve (`setClaimReserves`)


@dataclass(frozen=True)
class QuoteTerms:
    """What the quoter's EIP-712 signature binds a purchase to: ``terms`` (keccak of the
    off-chain terms; one purchase each), cover of at most ``coverage`` BTI for ``premium`` BTI
    until ``expiry``, to be bought before ``deadline`` (both unix seconds)."""

    terms: bytes
    coverage: Decimal
    premium: Decimal
    expiry: int
    deadline: int


@dataclass(frozen=True)
class AmendmentTerms:
    """A change to policy ``policy_id`` as the quoter signs it (`InsurancePool.Amendment`):
    from its current ``from_terms`` to ``terms`` with ``coverage`` BTI until ``expiry``, the
    holder paying ``charge`` and receiving ``refund`` now, before ``deadline``. ``coverage``
    0 cancels."""

    policy_id: int
    from_terms: bytes
    terms: bytes
    coverage: Decimal
    charge: Decimal
    refund: Decimal
    expiry: int
    deadline: int


@dataclass(frozen=True)
class Purchase:
    policy_id: int
    tx_hash: str
    block: int


@dataclass(frozen=True)
class PoolStats:
    reserves: Decimal
    locked: Decimal
    free: Decimal
    premiums_in: Decimal
    claims_paid: Decimal
    capital_in: Decimal
    capital_out: Decimal
    policies: int
    paused: bool
    premiums_refunded: Decimal = Decimal(0)
    claims_reserved: Decimal = Decimal(0)  # open claims' reserves, out of the share price

    @property
    def utilisation(self) -> float:
        return float(self.locked / self.reserves) if self.reserves > 0 else 0.0


#: A withdrawal request's state, as `ProviderPosition.request_state` names it.
REQUEST_STATES = ("none", "cooling down", "ready", "lapsed")


@dataclass(frozen=True)
class ProviderPosition:
    """A capital provider's place in the pool, read in one block.

    ``shares`` are held freely; ``requested`` sit in escrow behind a withdrawal request,
    takeable from ``ready_at`` until ``expires_at`` (unix seconds; 0 without a request). Values
    are at the share price of that block; ``can_withdraw_now`` is what the pool lets go now
    (a ready request, bounded by the free reserves)."""

    address: str
    shares: Decimal
    requested: Decimal
    value: Decimal
    requested_value: Decimal
    ready_at: int
    expires_at: int
    can_withdraw_now: Decimal
    share_price: Decimal
    cooldown: int
    window: int
    now: int

    @property
    def request_state(self) -> str:
        if self.requested <= 0:
            return "none"
        if self.now < self.ready_at:
            return "cooling down"
        return "ready" if self.now < self.expires_at else "lapsed"

    @property
    def total_value(self) -> Decimal:
        return self.value + self.requested_value


@dataclass(frozen=True)
class DecodedEvent:
    contract: str
    name: str
    args: dict[str, Any]
    block: int
    tx_hash: str
    log_index: int
    address: str


def terms_hash(terms: dict[str, Any]) -> bytes:
    """keccak256 of the canonical JSON of a policy's off-chain terms (sorted keys, no spaces)."""
    return keccak(text=json.dumps(terms, sort_keys=True, separators=(",", ":"), default=str))
