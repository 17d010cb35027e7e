"""Open claims' reserves booked in the pool, so claims come before queued withdrawals.

A claim that waits (for an underwriter, for the exchange's own record, for a payment that
failed) still owes its holder. The pool nets the reserves the claims service books for such
claims out of its share price (``InsurancePool.setClaimReserves``): a provider who takes a
withdrawal while a claim waits leaves with their share of it, as an insurer's case reserve
is booked when a claim is reported rather than when it is settled. A claim's reserve is what it
would pay — the approved amount once decided, the policy's payout terms until then — and a
denied claim's reserve is released (booked again if the denial is appealed). A paid claim's
reserve is released by the payout itself.

`Reserves.sync` brings the pool in line with the claims: it reads each open or denied claim's
wanted reserve, sends the ones that differ from what was last booked, and records them. The
pool *sets* a reserve rather than adding to it, so a process that dies between the chain and
the database sends the same figures again next round and changes nothing. Syncs of one pool
are serialised across this machine's processes (a lock file): a sync that read the claims
before another one's later change cannot overwrite the newer figure on-chain.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, or_, select

from bti_core.chain.client import ChainClient
from bti_core.claims.state import State
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Claim, Policy
from bti_core.errors import ContractRefusalError
from bti_core.filelock import file_lock

log = logging.getLogger("bti.claims")

#: states whose claim may still be paid: each holds a reserve of what it would pay
RESERVING = frozenset(
    {
        State.OPENED,
        State.AUDITING,
        State.REFERRED,
        State.APPEALED,
        State.APPROVED,
        State.ADJUSTED,
        State.PAYING,
        State.FAILED,
    }
)
#: reserves set in one transaction
BATCH = 200
LOCK_DIR = Path(tempfile.gettempdir()) / "bti-reserve-locks"


def wanted(claim: Claim) -> Decimal:
    """The reserve ``claim`` should hold: what it would pay while it may still be paid
    (the approved amount once decided, else its payout terms), nothing otherwise."""
    if claim.state not in RESERVING:
        return Decimal(0)
    amount = claim.amount_approved if claim.amount_approved is not None else claim.amount_claimed
    return max(amount, Decimal(0))


class Reserves:
    def __init__(self, db: Engine, chain: ChainClient, *, lock_dir: Path = LOCK_DIR) -> None:
        self.db = db
        self.chain = chain
        self.lock_dir = lock_dir

    def _lock_path(self) -> Path:
        d = self.chain.deployment
        return self.lock_dir / f"{self.chain.chain_id}-{d.pool.lower()}.lock"

    def due(self) -> list[tuple[int, int, Decimal]]:
        """``(claim, pool policy id, reserve)`` of every claim whose reserve in the pool is not
        the one it should hold (open claims, and denied ones still holding a reserve)."""
        with session_scope(self.db) as s:
            rows = s.exec(
                select(Claim, Policy.chain_policy_id)
                .join(Policy, col(Policy.id) == col(Claim.policy_id))
                .where(
                    col(Policy.chain_policy_id).is_not(None),
                    or_(
                        col(Claim.state).in_([x.value for x in RESERVING]),
                        col(Claim.reserved).is_not(None),
                    ),
                    Claim.state != State.PAID.value,
                )
                .order_by(col(Claim.id))
            ).all()
        out = []
        for claim, chain_id in rows:
            want = wanted(claim)
            if want != (claim.reserved or Decimal(0)) and chain_id is not None:
                out.append((claim.id or 0, int(chain_id), want))
        return out

    def sync(self) -> int:
        """Book the reserves that differ (`due`) in the pool and record them: how many were
        set. A batch the pool refuses is sent claim by claim, so one refusal (logged, tried
        again next round) holds no other claim's reserve up."""
        with file_lock(self._lock_path()):
            due = self.due()
            done: list[tuple[int, Decimal]] = []
            for i in range(0, len(due), BATCH):
                done += self._send(due[i : i + BATCH])
            self._record(done)
            return len(done)

    def _send(self, items: Sequence[tuple[int, int, Decimal]]) -> list[tuple[int, Decimal]]:
        try:
            self.chain.set_claim_reserves([(chain_id, want) for _, chain_id, want in items])
        except ContractRefusalError as exc:
            if len(items) == 1:
                log.warning("claim #%s: its reserve was not booked: %s", items[0][0], exc)
                return []
            return [done for item in items for done in self._send([item])]
        return [(cid, want) for cid, _, want in items]

    def _record(self, done: Sequence[tuple[int, Decimal]]) -> None:
        if not done:
            return
        with write_scope(self.db) as s:
            claims = {
                c.id: c
                for c in s.exec(
                    select(Claim).where(col(Claim.id).in_([cid for cid, _ in done]))
                ).all()
            }
            for cid, amount in done:
                claims[cid].reserved = amount if amount > 0 else None
