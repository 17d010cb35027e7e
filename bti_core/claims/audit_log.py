"""The claims audit log in the database: append an entry, and verify the whole record.

An entry is appended inside the transaction that changes its claim, after the head row is
locked (``FOR UPDATE`` on PostgreSQL; SQLite write transactions are exclusive), so appends never
fork the chain. Each entry's detail carries a snapshot of the claim's decisive fields
(`ledger.DECISIVE`), so the claim row cannot be edited quietly either. When a claim is paid,
the hash of its ``pay`` entry is sent to the pool as the payout's ``claimRef``: the chain then
holds an anchor that a rewritten log (every hash recomputed) no longer matches.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from eth_utils.crypto import keccak
from hexbytes import HexBytes
from sqlalchemy import event, func
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as SASession
from sqlmodel import Session, col, select

from bti_core.chain.client import ChainClient
from bti_core.chain.types import DecodedEvent
from bti_core.claims.ledger import DECISIVE, Anchor, ClaimRow, Verdict, cross_check, entry_hash
from bti_core.claims.ledger import verify as verify_chain
from bti_core.claims.state import ClaimState, Event, State, transition
from bti_core.db.engine import session_scope
from bti_core.db.models import Claim, ClaimAudit, ClaimAuditHead, Policy
from bti_core.errors import BTIError, ChainError


class AuditLogError(BTIError):
    """The audit log cannot be appended to (its head is gone): nothing was changed."""


def entry_dict(e: ClaimAudit) -> dict[str, Any]:
    return {
        "id": e.id,
        "claim_id": e.claim_id,
        "at": e.at,
        "actor": e.actor,
        "event": e.event,
        "from": e.from_state,
        "to": e.to_state,
        "detail": e.detail,
    }


def snapshot(claim: Claim) -> dict[str, Any]:
    """The claim's decisive fields as strings (what an entry vouches for)."""
    return {k: None if getattr(claim, k) is None else str(getattr(claim, k)) for k in DECISIVE}


def legacy_ref(claim_id: int) -> str:
    """The claimRef of payouts made before the head was anchored: keccak of the claim id."""
    return HexBytes(keccak(text=f"bti-claim/{claim_id}")).hex()


def append(
    s: Session,
    claim: Claim,
    *,
    at: datetime,
    actor: str,
    event: str,
    from_state: str | None,
    detail: dict[str, Any] | None = None,
) -> str:
    """Append one entry for ``claim`` (its fields already set to the new state); the new head
    hash."""
    head, next_id = _locked_head(s)
    body = {**(detail or {}), "claim": snapshot(claim)}
    row = {
        "id": next_id,
        "claim_id": claim.id or 0,
        "at": at,
        "actor": actor,
        "event": event,
        "from_state": from_state,
        "to_state": claim.state,
        "detail": json.loads(json.dumps(body, default=str)),
        "prev_hash": head.last_hash,
    }
    row["hash"] = entry_hash(head.last_hash, entry_dict(ClaimAudit.model_construct(**row)))
    # plain inserts, many rows a statement, before the transaction commits (the claim rows
    # they refer to are written already): an ORM object and a statement per entry cost more
    # than the write, and a crash writes tens of thousands
    pending = s.info.setdefault(_PENDING, [])
    pending.append(row)
    if len(pending) >= _PENDING_MAX:
        _write_pending(s)
    head.last_id, head.last_hash = next_id, row["hash"]
    s.add(head)
    s.info[_HEAD] = (s.get_transaction(), head, next_id + 1)
    return str(row["hash"])


_HEAD = "bti.claims.audit_head"
_PENDING = "bti.claims.audit_pending"
_PENDING_MAX = 1_000


def _write_pending(s: Session) -> None:
    rows = s.info.pop(_PENDING, None)
    if rows:
        s.connection().execute(ClaimAudit.__table__.insert(), rows)  # type: ignore[attr-defined]


def _drop_pending(s: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the transaction ended uncommitted: so do its entries
        s.info.pop(_PENDING, None)


# the entries a transaction appended go in with it, or not at all (no savepoint is used around
# an append: a rolled-back savepoint would not take its pending entries with it)
event.listen(SASession, "before_commit", _write_pending)
event.listen(SASession, "after_transaction_end", _drop_pending)


def _locked_head(s: Session) -> tuple[ClaimAuditHead, int]:
    """The head row, locked for the rest of the transaction (SQLite renders no FOR UPDATE: its
    write transactions, `write_scope`, are exclusive already), and the next entry's id. Read
    once a transaction: the entries a transaction appends get the ids after the head's, set
    here rather than by the database, so each entry's hash is known before it is written."""
    cached = s.info.get(_HEAD)
    if cached is not None and cached[0] is s.get_transaction():
        return cached[1], cached[2]
    head = s.exec(select(ClaimAuditHead).where(ClaimAuditHead.id == 1).with_for_update()).first()
    if head is None:
        raise AuditLogError(
            "the claims audit log has no head row: it was deleted outside BTI, so no claim can "
            "be changed until it is restored; `bti claims verify` reports what is missing"
        )
    # past every stored entry, should the head lag them (a verify then reports the gap)
    top = s.exec(select(func.max(ClaimAudit.id))).one() or 0
    return head, max(int(top), head.last_id) + 1


def entries_of(db: Engine, claim_id: int) -> list[ClaimAudit]:
    with session_scope(db) as s:
        stmt = select(ClaimAudit).where(ClaimAudit.claim_id == claim_id)
        return list(s.exec(stmt.order_by(col(ClaimAudit.id))).all())


def _anchors(chain: ChainClient | None) -> list[Anchor] | None:
    if chain is None:
        return None
    out = []
    for e in chain.events():
        if isinstance(e, DecodedEvent) and e.name == "ClaimPaid" and e.contract == "InsurancePool":
            ref = str(e.args["claimRef"])
            out.append(Anchor(int(e.args["policyId"]), ref.removeprefix("0x"), e.tx_hash))
    return out


def verify(db: Engine, chain: ChainClient | None) -> Verdict:
    """Every hash and link of the log and its head; then every claim against its entries and
    every payout on-chain against the log's anchors."""
    with session_scope(db) as s:
        rows = s.exec(select(ClaimAudit).order_by(col(ClaimAudit.id))).all()
        head = s.get(ClaimAuditHead, 1)
        claims = s.exec(select(Claim, Policy).where(Claim.policy_id == Policy.id)).all()
    verdict = verify_chain(
        ((e.id or 0, e.prev_hash, e.hash, entry_dict(e)) for e in rows),
        None if head is None else (head.last_id, head.last_hash),
    )
    if head is None:
        verdict = Verdict(False, len(rows), "the chain head row is missing (deleted)", None)
    if not verdict.ok:
        return verdict
    by_claim: dict[int, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    for e in rows:
        by_claim[e.claim_id].append((e.event, e.hash, e.detail))
    try:
        anchors = _anchors(chain)
    except ChainError as exc:
        return Verdict(False, len(rows), f"the payouts on-chain could not be read ({exc})")
    problems = cross_check(
        [ClaimRow(c.id or 0, snapshot(c), p.chain_policy_id) for c, p in claims],
        by_claim,
        anchors or [],
        {p.chain_policy_id: legacy_ref(c.id or 0) for c, p in claims if p.chain_policy_id},
    )
    if anchors is None:  # no chain to compare with: the on-chain checks are skipped
        problems = [p for p in problems if "pool" not in p and "payout" not in p]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Verdict(False, len(rows), problems[0] + more, None)
    return Verdict(True, len(rows))


def move(
    s: Session,
    claim: Claim,
    event: Event,
    *,
    actor: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> str:
    """The one place a claim's state changes: the state machine's `transition`, then the
    entry that records it, in the caller's write transaction. The new head hash."""
    before = claim.state
    new = transition(ClaimState(State(claim.state), claim.appealed), event)
    claim.state, claim.appealed, claim.updated_at = new.state.value, new.appealed, at
    s.add(claim)
    return append(s, claim, at=at, actor=actor, event=event.value, from_state=before, detail=detail)
