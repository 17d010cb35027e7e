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
        return f"audit log BROKEN at entry {self.entry_id}: {self.problem}"


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
