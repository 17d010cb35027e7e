"""The exchange's own record of a linked policy's liquidation: the forced orders
(``autoCloseType`` LIQUIDATION, or ADL for auto-deleveraging cover) of the insured position's
symbol and side inside the cover window, read with the account's key (`bti_core.accounts`).
Many policies' records are read at once, in a few threads (`read_records`): one slow
exchange does not hold the others' claims.

The read is made outside any lock (an exchange can be slow) and never raises: an exchange that
does not answer, a key it refuses or an account removed is a record in the state
``unreachable`` with the reason, which the audit weighs like an absent one once the wait is
over (`checks.exchange_confirms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

from bti_core.accounts.service import AccountsService
from bti_core.accounts.types import CloseKind
from bti_core.db.models import Policy
from bti_core.db.statuses import Peril
from bti_core.errors import BTIError
from bti_core.market.triggers import Trigger
from bti_core.orders import Cover

#: the claims' source of a claim opened on the exchange's ADL record
ADL_SOURCE = "exchange_adl"
#: exchange reads at once (each thread has its own ccxt client, `accounts.exchanges`)
READERS = 8


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def read_records(
    accounts: AccountsService | None, policies: Sequence[Policy], now: datetime
) -> dict[int, dict[str, Any]]:
    """`read_record` of each policy (its peril's kind of forced order), ``READERS`` at once;
    policy id → record."""
    if not policies:
        return {}
    with ThreadPoolExecutor(min(READERS, len(policies)), thread_name_prefix="bti-record") as ex:
        found = ex.map(lambda p: read_record(accounts, p, now), policies)
        return {p.id or 0: r for p, r in zip(policies, found, strict=True)}


def read_record(accounts: AccountsService | None, policy: Policy, now: datetime) -> dict[str, Any]:
    """What the exchange says of the insured position's liquidation (its auto-deleveraging,
    for ADL cover) between the policy's start and the earlier of its end and ``now``:
    ``state`` ``confirmed`` (with the orders), ``absent`` or ``unreachable`` (with the error),
    the ``kind`` of forced order asked for, and when it was asked."""
    from bti_core.db.engine import session_scope
    from bti_core.db.models import ExchangePosition

    until = min(policy.end_at, now)
    kind: CloseKind = "adl" if policy.peril == Peril.ADL.value else "liquidation"
    record: dict[str, Any] = {
        "kind": kind,
        "asked_at": now.isoformat(),
        "window": [policy.liquidations_from.isoformat(), until.isoformat()],
        "orders": [],
    }
    if accounts is None:
        return record | {"state": "unreachable", "error": "no exchange accounts are set up here"}
    try:
        with session_scope(accounts.db) as s:
            pos = s.get(ExchangePosition, policy.position_id)
            if pos is None:
                raise BTIError(f"linked position #{policy.position_id} is gone")
            account_id = pos.account_id
        orders = accounts.reader(account_id).forced_orders(
            policy.symbol, kind, _ms(policy.liquidations_from), _ms(until)
        )
    except BTIError as e:
        return record | {"state": "unreachable", "error": str(e)[:500]}
    mine = [o for o in orders if o.side == policy.side]
    record["account_id"] = account_id
    record["orders"] = [
        {
            "order_id": o.order_id,
            "quantity": str(o.quantity),
            "price": str(o.price),
            "time": datetime.fromtimestamp(o.time_ms / 1000, tz=policy.start_at.tzinfo).isoformat(),
        }
        for o in mine
    ]
    return record | {"state": "confirmed" if mine else "absent"}


def linked_amount(policy: Policy, record: dict[str, Any]) -> Decimal:
    """The payout of a confirmed linked liquidation: the cover's formula on the margin lost,
    which is the insured margin × (quantity liquidated ÷ quantity insured), at most the whole
    margin (`policies.positions`: a position shrunk after purchase pays in proportion)."""
    liquidated = sum((Decimal(o["quantity"]) for o in record.get("orders", [])), Decimal(0))
    share = min(Decimal(1), liquidated / policy.quantity) if policy.quantity > 0 else Decimal(0)
    cover = Cover(
        coverage=policy.coverage,
        duration_hours=1,  # the payout does not depend on the window
        share=policy.share,
        deductible=policy.deductible,
    )
    return min(policy.payout, cover.payout(policy.margin * share)).quantize(Decimal("0.01"))


def adl_amount(policy: Policy, record: dict[str, Any]) -> Decimal:
    """The payout of a confirmed auto-deleveraging: the cover's amount × (quantity
    deleveraged ÷ quantity insured), at most the amount (`policies.positions`' terms)."""
    done = sum((Decimal(o["quantity"]) for o in record.get("orders", [])), Decimal(0))
    share = min(Decimal(1), done / policy.quantity) if policy.quantity > 0 else Decimal(0)
    return (policy.payout * share).quantize(Decimal("0.01"))


def adl_trigger(policy: Policy, record: dict[str, Any]) -> Trigger | None:
    """The trigger of an ADL claim: the first ADL order of a ``confirmed`` record (its time
    and price), the record as its evidence; None without one."""
    orders = record.get("orders", [])
    if record.get("state") != "confirmed" or not orders:
        return None
    first = min(orders, key=lambda o: o["time"])
    return Trigger(
        policy.id or 0,
        datetime.fromisoformat(first["time"]),
        Decimal(first["price"]),
        {"exchange": record},
    )
