"""The capital providers' side of the pool: the share price over time, what the pool earned
and paid, a provider's realised yield, and deposits, withdrawal requests and withdrawals.

The pool is an ERC-4626 vault whose assets are its booked reserves (`InsurancePool`): one
share is worth

    price = (reserves − claims reserved + 1 wei) / (supply + 1 wei)

(OpenZeppelin's virtual share and asset, decimals offset 0; the open claims' reserves are
netted out, so a provider who leaves before a claim is paid leaves with its share of it). The
history is rebuilt from the pool's own events, each of which moves the reserves, the claims
reserved or the supply by the amount it states: ``CapitalDeposited`` (+assets, +shares),
``CapitalWithdrawn`` (−assets, −shares), ``PolicyPurchased`` (+premium), ``PolicyAmended``
(+charge, −refund), ``ClaimReserveSet`` (the pool's claims reserved, as it states) and
``ClaimPaid`` (−amount). So the price rises with every premium and a denied claim's released
reserve, and falls only when a claim opens (its reserve) or is paid above it, or with a
cancelled cover's refund of unused premium; deposits and withdrawals leave it where it was
(up to a wei of rounding, which favours the pool).

Realised yield over ``d`` days: ``price(now) / price(now − d) − 1``, the price at
``now − d`` being the last point at or before it; a pool younger than ``d`` days is measured
from its first deposit and says so (``full_window`` false). Annualised simply, ``× 365 / d``
(no compounding: premiums are not reinvested on a schedule).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from eth_account.signers.local import LocalAccount

from bti_core.chain.client import ChainClient
from bti_core.chain.types import DecodedEvent, PoolStats, ProviderPosition
from bti_core.chain.units import from_units, to_units
from bti_core.errors import BTIError

#: blocks after which the pool's events are kept as read (a reorg deeper than this is not
#: followed: the history is a report, never a payment's evidence)
CONFIRMATIONS = 5
#: the windows the realised yield is shown for (days)
YIELD_WINDOWS = (7, 30, 365)
#: the largest single deposit or withdrawal a command or page accepts (BTI)
MAX_AMOUNT = Decimal(1_000_000_000)
#: the finest amount (BTI): the token has 18 decimals, people type at most 8
AMOUNT_STEP = Decimal("1e-8")
_POOL_EVENTS = {
    "CapitalDeposited",
    "CapitalWithdrawn",
    "PolicyPurchased",
    "PolicyAmended",
    "ClaimReserveSet",
    "ClaimPaid",
}


class CapitalError(BTIError, ValueError):
    """A capital action cannot be done as asked (its message says what is allowed)."""


def parse_amount(value: Any, what: str) -> Decimal:
    """A deposit or withdrawal amount typed by a person: a positive number of BTI with at most
    8 decimals, at most 1,000,000,000."""
    try:
        amount = Decimal(str(value).strip().replace(",", "").replace("_", ""))
    except (InvalidOperation, ValueError):
        raise CapitalError(
            f"{what} must be a number of BTI (e.g. 250 or 1000.5); got {value!r}"
        ) from None
    if not amount.is_finite() or amount <= 0:
        raise CapitalError(f"{what} must be a positive number of BTI; got {value!r}")
    if amount > MAX_AMOUNT:
        raise CapitalError(f"{what} must be at most {MAX_AMOUNT:,.0f} BTI; got {amount:,}")
    if amount != amount.quantize(AMOUNT_STEP):
        raise CapitalError(f"{what} may have at most 8 decimals; got {value!r}")
    return amount


@dataclass(frozen=True)
class PoolPoint:
    """The pool after one event: what happened and the share price it left."""

    time: datetime
    block: int
    kind: str  # deposit | withdrawal | premium | refund | claim | reserve | release
    amount: Decimal  # BTI the event moved (positive)
    reserves: Decimal
    supply: Decimal
    provider: str | None  # the capital event's provider
    reserved: Decimal = Decimal(0)  # the open claims' reserves after the event

    @property
    def price(self) -> Decimal:
        """BTI per share: (reserves − reserved + 1 wei) / (supply + 1 wei), in whole wei
        rounded down, as the contract's ``convertToAssets`` of one share (integers: a
        Decimal's 28 digits would round where the contract does not)."""
        assets = to_units(self.reserves) - to_units(self.reserved)
        return from_units((assets + 1) * 10**18 // (to_units(self.supply) + 1))


def pool_history(
    events: Iterable[DecodedEvent | dict[str, Any]], times: Mapping[int, datetime]
) -> list[PoolPoint]:
    """The pool's reserves, supply and share price after each of its events, oldest first
    (``times``: each block's time). Events of other contracts and kinds are passed over."""
    ours = sorted(
        (e for e in events if isinstance(e, DecodedEvent) and e.name in _POOL_EVENTS),
        key=lambda e: (e.block, e.log_index),
    )
    reserves = supply = reserved = Decimal(0)
    out: list[PoolPoint] = []
    for i, e in enumerate(ours):
        a = e.args
        who: str | None = None
        if e.name == "ClaimReserveSet":
            total = from_units(int(a["totalReserved"]))
            step, reserved = total - reserved, total
            nxt = ours[i + 1] if i + 1 < len(ours) else None
            paid_now = (  # a payout releases its reserve first: one point, the claim's
                nxt is not None
                and nxt.name == "ClaimPaid"
                and nxt.block == e.block
                and int(nxt.args["policyId"]) == int(a["policyId"])
            )
            if step and not paid_now:
                kind = "reserve" if step > 0 else "release"
                out.append(
                    PoolPoint(
                        times[e.block], e.block, kind, abs(step), reserves, supply, None, reserved
                    )
                )
            continue
        if e.name == "PolicyAmended":  # a change: its charge in, its refund out (either, both)
            for kind, units, sign in (("premium", a["charge"], 1), ("refund", a["refund"], -1)):
                if int(units):
                    reserves += sign * from_units(int(units))
                    out.append(
                        PoolPoint(
                            times[e.block],
                            e.block,
                            kind,
                            from_units(int(units)),
                            reserves,
                            supply,
                            None,
                            reserved,
                        )
                    )
            continue
        if e.name == "CapitalDeposited":
            kind, amount, who = "deposit", from_units(int(a["assets"])), str(a["provider"])
            reserves += amount
            supply += from_units(int(a["shares"]))
        elif e.name == "CapitalWithdrawn":
            kind, amount, who = "withdrawal", from_units(int(a["assets"])), str(a["provider"])
            reserves -= amount
            supply -= from_units(int(a["shares"]))
        elif e.name == "PolicyPurchased":
            kind, amount = "premium", from_units(int(a["premium"]))
            reserves += amount
        else:
            kind, amount = "claim", from_units(int(a["amount"]))
            reserves -= amount
        out.append(
            PoolPoint(times[e.block], e.block, kind, amount, reserves, supply, who, reserved)
        )
    # Block times never fall on a real chain. The demo chain's clock is moved back to buy its
    # book in the past, after the pool was deployed now: an event stamped later than a later
    # block is placed at that block's time, so the history reads in time order.
    for i in range(len(out) - 2, -1, -1):
        if out[i].time > out[i + 1].time:
            out[i] = replace(out[i], time=out[i + 1].time)
    return out


@dataclass(frozen=True)
class YieldFigure:
    days: int
    start: datetime
    start_price: Decimal
    end_price: Decimal
    full_window: bool  # false: the pool is younger than the window (measured from its start)

    @property
    def ret(self) -> float:
        return float(self.end_price / self.start_price - 1) if self.start_price > 0 else 0.0

    def annualised(self, now: datetime) -> float:
        """The return × 365 / the days it was earned over (simple, no compounding)."""
        days = max((now - self.start).total_seconds() / 86400, 1 / 24)
        return self.ret * 365 / days


def price_at(history: Sequence[PoolPoint], when: datetime) -> PoolPoint | None:
    """The last point at or before ``when`` (None: the pool had no event yet)."""
    last = None
    for p in history:
        if p.time > when:
            break
        last = p
    return last


def realised_yields(
    history: Sequence[PoolPoint], now: datetime, windows: Iterable[int] = YIELD_WINDOWS
) -> list[YieldFigure]:
    """The share price's change over each window ending ``now`` (none for an empty pool)."""
    if not history:
        return []
    end = history[-1].price
    out = []
    for d in windows:
        then = now - timedelta(days=d)
        at = price_at(history, then)
        if at is None:  # younger than the window: from the first deposit
            out.append(YieldFigure(d, history[0].time, history[0].price, end, False))
        else:
            out.append(YieldFigure(d, then, at.price, end, True))
    return out


@dataclass(frozen=True)
class Flows:
    """What moved through the pool in a window."""

    premiums: Decimal  # net of refunds of unused premium
    claims: Decimal
    deposits: Decimal
    withdrawals: Decimal


def flows(history: Sequence[PoolPoint], since: datetime | None = None) -> Flows:
    """Premiums earned (net of refunds), claims paid, capital in and out since ``since``
    (all: None)."""
    tot = dict.fromkeys(("premium", "refund", "claim", "deposit", "withdrawal"), Decimal(0))
    for p in history:
        if p.kind in tot and (since is None or p.time >= since):
            tot[p.kind] += p.amount
    return Flows(tot["premium"] - tot["refund"], tot["claim"], tot["deposit"], tot["withdrawal"])


@dataclass(frozen=True)
class CapitalReport:
    """A provider's position and the pool's figures, read together."""

    position: ProviderPosition
    pool: PoolStats
    supply: Decimal
    history: list[PoolPoint]
    now: datetime

    @property
    def pool_share(self) -> float:
        """The provider's share of the pool (its free and requested shares over the supply)."""
        held = self.position.shares + self.position.requested
        return float(held / self.supply) if self.supply > 0 else 0.0

    @property
    def yields(self) -> list[YieldFigure]:
        return realised_yields(self.history, self.now)

    @property
    def net_deposited(self) -> Decimal:
        """The provider's deposits less its withdrawals (BTI)."""
        mine = [p for p in self.history if p.provider == self.position.address]
        return sum((p.amount for p in mine if p.kind == "deposit"), Decimal(0)) - sum(
            (p.amount for p in mine if p.kind == "withdrawal"), Decimal(0)
        )

    @property
    def gain(self) -> Decimal:
        """What the provider's capital earned (or lost): its value now less what it put in net."""
        return self.position.total_value - self.net_deposited

    def stress_loss(self, payout: float) -> float:
        """The provider's part of a scenario's claims: its share of the pool × the payout
        (capped at what it holds: a provider never owes more than its shares)."""
        return min(payout * self.pool_share, float(self.position.total_value))


class CapitalService:
    """Deposits, withdrawal requests and withdrawals for a user's wallet, and the reports.

    ``wallet_of`` gives a user's custodial wallet (the demo's: local chain only, refused
    elsewhere with a message); on another chain the provider signs in their own wallet."""

    def __init__(self, chain: ChainClient, wallet_of: Callable[[str], LocalAccount]) -> None:
        self.chain = chain
        self.wallet_of = wallet_of
        self._times: dict[int, datetime] = {}  # block → time (blocks never change once read)
        # the pool's events up to a settled block, kept: a page draws the history on every
        # run, and re-reading and decoding every event since the deployment grew with the pool
        self._lock = threading.Lock()
        self._pool = ""
        self._settled: list[DecodedEvent] = []
        self._settled_to = -1

    def _block_times(self, blocks: Iterable[int]) -> dict[int, datetime]:
        for b in set(blocks) - self._times.keys():
            ts = int(self.chain.w3.eth.get_block(b)["timestamp"])
            self._times[b] = datetime.fromtimestamp(ts, UTC)
        return self._times

    def history(self) -> list[PoolPoint]:
        """`pool_history` of the pool's events. Those older than `CONFIRMATIONS` blocks are
        kept between calls and only newer blocks read; a chain whose head went back (a node
        restored from an older snapshot) is read again from the deployment."""
        with self._lock:
            d = self.chain.deployment
            head = int(self.chain.w3.eth.block_number)
            if d.pool != self._pool or head < self._settled_to:
                self._pool, self._settled, self._settled_to = d.pool, [], d.block - 1
            fresh = [
                e
                for e in self.chain.events(self._settled_to + 1, head, addresses=[d.pool])
                if isinstance(e, DecodedEvent) and e.name in _POOL_EVENTS
            ]
            settle_to = max(self._settled_to, head - CONFIRMATIONS)
            self._settled += [e for e in fresh if e.block <= settle_to]
            self._settled_to = settle_to
            events = self._settled + [e for e in fresh if e.block > settle_to]
            return pool_history(events, self._block_times(e.block for e in events))

    def report(self, address: str) -> CapitalReport:
        pos = self.chain.provider(address)
        supply = from_units(int(self.chain.pool.functions.totalSupply().call()))
        return CapitalReport(
            pos,
            self.chain.pool_stats(),
            supply,
            self.history(),
            datetime.fromtimestamp(pos.now, UTC),
        )

    def report_of(self, user: str) -> CapitalReport:
        return self.report(self.wallet_of(user).address)

    def deposit(self, user: str, amount: Any) -> str:
        """Deposit ``amount`` BTI from ``user``'s wallet; refused above its balance."""
        value = parse_amount(amount, "a deposit")
        wallet = self.wallet_of(user)
        held = self.chain.balance(wallet.address)
        if value > held:
            raise CapitalError(
                f"a deposit of {value:,.2f} BTI is above the wallet's {held:,.2f} BTI"
            )
        return self.chain.deposit(wallet, value)

    def request(self, user: str, amount: Any | None = None) -> str:
        """Ask to withdraw ``amount`` BTI (None: all the free shares) after the cooldown."""
        value = None if amount is None else parse_amount(amount, "a withdrawal request")
        return self.chain.request_withdrawal(self.wallet_of(user), value)

    def cancel(self, user: str) -> str:
        return self.chain.cancel_withdrawal(self.wallet_of(user))

    def withdraw(self, user: str, amount: Any | None = None) -> tuple[str, Decimal]:
        """Take a ready request (all of what the pool lets go now: None)."""
        value = None if amount is None else parse_amount(amount, "a withdrawal")
        return self.chain.withdraw(self.wallet_of(user), value)
