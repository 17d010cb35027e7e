"""Hash-chained audit log: verify passes an intact chain and finds edits, removals and cuts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bti_core.claims.ledger import GENESIS, entry_hash, verify


def chain(n: int) -> list[tuple[int, str, str, dict[str, Any]]]:
    rows, prev = [], GENESIS
    for i in range(1, n + 1):
        e = {"id": i, "event": "x", "at": datetime(2026, 1, 1, tzinfo=UTC), "detail": {"k": i}}
        h = entry_hash(prev, e)
        rows.append((i, prev, h, e))
        prev = h
    return rows


def test_an_intact_chain_verifies() -> None:
    rows = chain(5)
    v = verify(rows, (5, rows[-1][2]))
    assert v.ok and v.entries == 5 and "intact" in str(v)
    assert verify([], None).ok


def test_an_edited_entry_is_found() -> None:
    rows = chain(5)
    i, prev, h, e = rows[2]
    rows[2] = (i, prev, h, {**e, "detail": {"k": 999}})
    v = verify(rows, (5, rows[-1][2]))
    assert not v.ok and v.entry_id == 3 and "edited" in str(v)


def test_a_removed_entry_is_found() -> None:
    rows = chain(5)
    del rows[1]
    v = verify(rows, (5, rows[-1][2]))
    assert not v.ok and v.entry_id == 3 and "removed" in str(v)


def test_a_cut_tail_is_found_by_the_head() -> None:
    rows = chain(5)
    head = (5, rows[-1][2])
    v = verify(rows[:3], head)
    assert not v.ok and "removed from the end" in str(v)
