"""The pages' words for what the engine stores: every claim source has its own (a stream's or
an ADL claim once read as "filed with the trader's record")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bti_core.claims.exchange import ADL_SOURCE
from dashboard.text import claim_source, policy_event


@pytest.mark.parametrize(
    ("source", "short", "long"),
    [
        ("market_scan", "market", "found in the market"),
        ("stream", "price stream", "seen by the price stream, confirmed"),
        ("trader", "trader's record", "filed with the trader's exchange record"),
        (ADL_SOURCE, "exchange ADL record", "opened on the exchange's auto-deleveraging record"),
    ],
)
def test_each_claim_source_has_its_words(source: str, short: str, long: str) -> None:
    assert claim_source(source, short=True) == short
    assert claim_source(source) == long
    said = policy_event("claimed", {"claim_id": 7, "source": source}, datetime.now(UTC), str)
    expected = "filed by you" if source == "trader" else long
    assert f"Claim #7 opened ({expected})" in said
