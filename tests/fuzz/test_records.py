"""The trader's filed liquidation record (the claim upload), fuzzed.

Property: `parse_record` either raises a `ClaimError` (a `BTIError`) that names the file and what
a record needs, or returns a record whose fields are all valid: a known side, positive finite
quantity and price, a UTC time between 2016 and now."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from bti_core.claims.records import EARLIEST, FUTURE_TOLERANCE, ClaimError, parse_record
from bti_core.errors import BTIError
from tests.fuzz.conftest import ANY_VALUE, cases, tally

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)

time_value = st.one_of(
    st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1)).map(lambda d: d.isoformat()),
    st.datetimes(datetime(2016, 1, 1), datetime(2024, 6, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
    ),
    st.sampled_from(
        ["", "now", "yesterday", "2024-13-01", "5138-01-01", "1970-01-01", "0", "1717243200000"]
    ),
    st.integers(-(10**20), 10**20),
    st.text(max_size=16),
)
VALID = {
    "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT", "btc/usdt"]),
    "side": st.sampled_from(["long", "short", "BUY", "sell", "Long "]),
    "quantity": st.decimals(Decimal("0.001"), Decimal(1000), places=3).map(str),
    "price": st.decimals(Decimal("0.01"), Decimal(10**6), places=2).map(str),
    "time": st.datetimes(datetime(2016, 1, 1), datetime(2024, 6, 1)).map(
        lambda d: d.strftime(d.strftime("%Y-%m-%dT%H:%M:%SZ"))
    ),
    "account": st.text(alphabet="abc123-", max_size=8),
}
BAD = {
    "symbol": st.text(max_size=10),
    "side": st.text(max_size=6),
    "quantity": ANY_VALUE,
    "price": ANY_VALUE,
    "time": time_value,
    "account": ANY_VALUE,
}


@st.composite
def fields(draw: st.DrawFn) -> dict[str, object]:
    """A valid record with none, one or two fields spoilt or missing, sometimes an extra one."""
    spoilt = draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2))
    record: dict[str, object] = {}
    for k in VALID:
        if k in spoilt and draw(st.integers(0, 3)) == 0:
            continue  # missing
        record[k.upper() if draw(st.integers(0, 10)) == 0 else k] = draw(
            (BAD if k in spoilt else VALID)[k]
        )
    if draw(st.integers(0, 5)) == 0:
        record["Extra Column"] = draw(ANY_VALUE)
    return record


def encode(draw: st.DrawFn, record: dict[str, object]) -> tuple[str, bytes]:
    how = draw(st.sampled_from(["json", "json-list", "csv", "csv-rows", "bytes", "other"]))
    if how.startswith("json"):
        payload: object = [record] if how == "json-list" else record
        if draw(st.integers(0, 10)) == 0:
            payload = draw(st.sampled_from([[], [record, record], "text", 5, None]))
        return "record.json", json.dumps(payload, default=str).encode()
    if how.startswith("csv"):
        keys = list(record)
        rows = [",".join(keys), ",".join(str(record[k]) for k in keys)]
        if how == "csv-rows":
            rows += rows[1:] * draw(st.integers(0, 3))
        return "record.csv", "\n".join(rows).encode(
            draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"])), "replace"
        )
    if how == "bytes":
        return draw(st.sampled_from(["record.csv", "record.json"])), draw(st.binary(max_size=300))
    return draw(
        st.sampled_from(["record.txt", "record", "RECORD.CSV", "r.JSON"])
    ), b"symbol\nBTCUSDT\n"


@cases(2400)
@given(data=st.data())
def test_parse_record(data: st.DataObject) -> None:
    record = data.draw(fields())
    name, content = encode(data.draw, record)
    if data.draw(st.integers(0, 200)) == 0:
        content = b" " * 100_001
    try:
        r = parse_record(content, name, now=NOW)
    except BTIError as exc:
        assert isinstance(exc, ClaimError)
        assert str(exc).startswith(f"{name}:"), f"{exc} does not name the file"
        tally("filed liquidation record", "refused")
        return
    assert set(r) >= {"symbol", "side", "quantity", "price", "time"}
    assert r["side"] in ("long", "short")
    for k in ("quantity", "price"):
        assert isinstance(r[k], Decimal) and r[k].is_finite() and r[k] > 0
    t = r["time"]
    assert isinstance(t, pd.Timestamp) and str(t.tz) == "UTC"
    assert EARLIEST <= t <= pd.Timestamp(NOW) + FUTURE_TOLERANCE
    tally("filed liquidation record", "accepted")
