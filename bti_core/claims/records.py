"""A trader's exchange liquidation record (CSV with a header row, or a JSON object), parsed
and checked before a claim is filed on it."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd

from bti_core.errors import BTIError
from bti_core.timeutil import to_utc


class ClaimError(BTIError, ValueError):
    """A claim action that cannot be done (unknown claim, not yours, bad record, no reason)."""


FUTURE_TOLERANCE = timedelta(minutes=5)  # clocks differ a little; a record from later does not
EARLIEST = pd.Timestamp("2016-01-01", tz="UTC")  # perpetual swaps began in 2016 (BitMEX)


REQUIRED = ("symbol", "side", "quantity", "price", "time")


def parse_record(content: bytes, filename: str, *, now: datetime | None = None) -> dict[str, Any]:
    """An exchange liquidation record from CSV (header row + one row) or JSON (an object);
    its time must be a real moment between 2016 and ``now`` (a few minutes' clock skew
    allowed)."""
    if len(content) > 100_000:
        raise ClaimError(
            f"{filename}: a liquidation record is a few lines; this is {len(content):,} bytes"
        )
    text = content.decode("utf-8-sig", errors="replace").strip()
    try:
        if filename.lower().endswith(".json"):
            data = json.loads(text)
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            if not isinstance(data, dict):
                raise ClaimError(f"{filename}: expected one JSON object with {', '.join(REQUIRED)}")
        elif filename.lower().endswith(".csv"):
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            if len(rows) != 1:
                raise ClaimError(
                    f"{filename}: expected a header row and one record; got {len(rows)} records"
                )
            data = rows[0]
        else:
            raise ClaimError(f"{filename}: upload a .csv or .json liquidation record")
    except json.JSONDecodeError as exc:
        raise ClaimError(f"{filename}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    except csv.Error as exc:
        raise ClaimError(
            f"{filename}: not a valid CSV file ({exc}); expected a header row and one record"
        ) from exc
    data = {str(k).strip().lower(): v for k, v in data.items()}
    missing = [k for k in REQUIRED if k not in data or str(data[k]).strip() == ""]
    if missing:
        raise ClaimError(
            f"{filename}: missing {', '.join(missing)}; a record needs {', '.join(REQUIRED)}"
        )
    try:
        qty, price = Decimal(str(data["quantity"])), Decimal(str(data["price"]))
    except InvalidOperation as exc:
        raise ClaimError(f"{filename}: quantity and price must be numbers") from exc
    if not (qty.is_finite() and price.is_finite()) or qty <= 0 or price <= 0:
        raise ClaimError(f"{filename}: quantity and price must be positive numbers")
    side = str(data["side"]).strip().lower()
    side = {"buy": "long", "sell": "short"}.get(side, side)
    if side not in ("long", "short"):
        raise ClaimError(
            f"{filename}: side must be long or short (or buy/sell); got {data['side']!r}"
        )
    try:
        t = pd.Timestamp(str(data["time"]).strip())
    except (ValueError, TypeError, OverflowError) as exc:
        raise ClaimError(
            f"{filename}: time {data['time']!r} is not a date-time (ISO 8601, e.g. "
            "2024-05-01T12:30:00Z)"
        ) from exc
    if pd.isna(t):
        raise ClaimError(f"{filename}: time {data['time']!r} is not a date-time (ISO 8601)")
    t = to_utc(t)
    latest = pd.Timestamp(now or datetime.now(UTC)).tz_convert("UTC") + FUTURE_TOLERANCE
    if not EARLIEST <= t <= latest:
        raise ClaimError(
            f"{filename}: time {data['time']!r} is not a liquidation that can have happened: "
            f"allowed from {EARLIEST:%Y-%m-%d} to now ({latest:%Y-%m-%d %H:%M} UTC)"
        )
    record: dict[str, Any] = {
        "symbol": str(data["symbol"]).strip().upper(),
        "side": side,
        "quantity": qty,
        "price": price,
        "time": t,
    }
    if str(data.get("account", "")).strip():  # the exchange account id, when the export has it
        record["account"] = str(data["account"]).strip()
    return record
