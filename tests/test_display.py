"""Prices as a person reads them (`bti_core.display`): never "5.58e+04"."""

from __future__ import annotations

import pytest

from bti_core.display import price_text
from bti_core.stream.store import MESSAGES
from bti_core.stream.types import Event


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (55_812.4, "55,812.40"),
        (1.0, "1.00"),
        (0.3512, "0.3512"),
        (0.000123, "0.0001230"),
        (0.0, "0.00"),
        (float("nan"), "–"),
        (float("inf"), "–"),
    ],
)
def test_prices_read_as_on_the_pages(x: float, text: str) -> None:
    assert price_text(x) == text


def test_alert_messages_write_prices_without_an_exponent() -> None:
    e = Event("near_liquidation", "BTCUSDT", 0, 55_800.0, 3, 0.02)
    assert "the mark price 55,800.00 is within 2%" in MESSAGES["near_liquidation"](e)
    for kind, message in MESSAGES.items():
        said = message(Event(kind, "BTCUSDT", 0, 55_800.0, 3, 0.5))
        assert "e+" not in said, (kind, said)
