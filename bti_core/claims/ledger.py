"""Hash chaining of the claims audit log (pure).

Each entry's hash is ``sha256(prev_hash ‖ canonical JSON of the entry)`` (the first entry's
``prev_hash`` is 64 zeros), so editing an entry breaks its own hash and removing or reordering
one breaks the next entry's link; a separate head (the last id and hash) catches a truncated
tail. Canonical JSON: sorted keys, no spaces, ISO times, `Decimal` as strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


def canonical(entry: dict[str, Any]) -> str:
    def default(v: Any) -> str:
        if isinstance(v, datetime):
            return v.isoformat()
        return str(v)

    return json.dumps(entry, sort_keys=True, separators=(",", ":"), default=default)


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(entry)).encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    problem: str | None = None
    entry_id: int | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, every hash and link checks"
        where = f" at entry {self.entry_id}" if self.entry_id is not None else ""
        return f"audit log BROKEN{where}: {self.problem}"


def verify(
    rows: Iterable[tuple[int, str, str, dict[str, Any]]],
    head: tuple[int, str] | None,
) -> Verdict:
    """Check ``(id, prev_hash, hash, entry)`` rows in id order against the chain and its head
    ``(last id, last hash)``."""
    prev = GENESIS
    last_id = 0
    n = 0
    for row_id, prev_hash, h, entry in rows:
        n += 1
        if prev_hash != prev:
            return Verdict(
                False,
                n,
                "its link does not match the entry before it (removed or reordered)",
                row_id,
            )
        if entry_hash(prev_hash, entry) != h:
            return Verdict(False, n, "its content does not match its hash (edited)", row_id)
        prev, last_id = h, row_id
    if head is None:
        return Verdict(n == 0, n, None if n == 0 else "the chain head is missing", last_id or None)
    if head != (last_id, prev):
        return Verdict(
            False,
            n,
            f"the chain head says entry {head[0]} is last (entries removed from the end)",
            head[0],
        )
    return Verdict(True, n)


# The claim fields an entry vouches for: what decides and pays money. A claim row whose
# fields differ from its last entry's snapshot was changed outside the service.
DECISIVE = ("state", "amount_claimed", "amount_approved", "decided_by", "payout_tx")


@dataclass(frozen=True)
class ClaimRow:
    claim_id: int
    fields: dict[str, Any]  # the DECISIVE fields as stored now, as strings (None stays None)
    chain_policy_id: int | None


@dataclass(frozen=True)
class Anchor:
    """A payout the pool made, with the audit head it carried (``claimRef``)."""

    chain_policy_id: int
    claim_ref: str  # 64 hex digits, no 0x
    tx_hash: str


def cross_check(
    claims: Iterable[ClaimRow],
    entries: dict[int, list[tuple[str, str, dict[str, Any]]]],
    anchors: Iterable[Anchor],
    legacy_refs: dict[int, str] | None = None,
) -> list[str]:
    """Problems between the claims, their log entries and the payouts on-chain (pure).

    ``entries``: per claim id, ``(event, hash, detail)`` in log order. Each claim must have
    entries (a deleted log leaves claims without any); its decisive fields must equal the
    last snapshot logged; each payout on-chain must carry the hash of its claim's ``pay``
    entry (a log rewritten with recomputed hashes no longer has it), and each paid claim must
    have a payout on-chain. ``legacy_refs``: per chain policy id, the ``keccak(claim id)``
    reference of payouts made before the head was anchored (accepted, unanchored)."""
    problems: list[str] = []
    by_policy: dict[int, ClaimRow] = {}
    for c in claims:
        if c.chain_policy_id is not None:
            by_policy[c.chain_policy_id] = c
        log = entries.get(c.claim_id, [])
        if not log:
            problems.append(f"claim #{c.claim_id} has no audit entries (the log was deleted)")
            continue
        snaps = [d["claim"] for _, _, d in log if isinstance(d.get("claim"), dict)]
        if snaps and snaps[-1] != c.fields:
            diff = sorted(k for k in DECISIVE if snaps[-1].get(k) != c.fields.get(k))
            problems.append(
                f"claim #{c.claim_id}'s {', '.join(diff)} differ from what its log records "
                "(changed outside BTI)"
            )
    paid_on_chain: set[int] = set()
    for a in anchors:
        paid_on_chain.add(a.chain_policy_id)
        row = by_policy.get(a.chain_policy_id)
        if row is None:
            problems.append(
                f"the pool paid policy {a.chain_policy_id} (tx {a.tx_hash}) but no claim records it"
            )
            continue
        pays = {h for ev, h, _ in entries.get(row.claim_id, []) if ev == "pay"}
        legacy = (legacy_refs or {}).get(a.chain_policy_id)
        if a.claim_ref not in pays and a.claim_ref != legacy:
            problems.append(
                f"claim #{row.claim_id}'s payout (tx {a.tx_hash}) carries audit head "
                f"{a.claim_ref[:12]}…, which its log no longer holds (rewritten)"
            )
    for c in by_policy.values():
        if c.fields.get("state") == "paid" and c.chain_policy_id not in paid_on_chain:
            problems.append(f"claim #{c.claim_id} is recorded paid but the pool paid nothing")
    return problems
