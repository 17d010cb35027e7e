"""Changing a cover after it is bought: extend its window, raise its amount, or cancel it.

A change is priced like a new cover and shown before it is made. Its price is today's quote
for the changed cover over the time it has left (the same engine, checks and caps as a new
cover, with the policy's own cover left out of the exposures it replaces), less a credit for
the premium the cover as it is has not used yet:

    unused   = (premium − fee) × (end − now) / (end − start)      (pro rata by time)
    charge   = max(0, new premium − unused)
    refund   = max(0, unused − new premium)

Cancelling refunds ``unused`` (the issuing fee is kept: it paid for writing the cover). The
rule is Nexus Mutual's for edited covers (the unused part of the old premium is credited);
time is the measure because the premium bought cover for a window.

Made once, on-chain: the holder confirms the priced change, which is written ``sent`` and
then sent as ``InsurancePool.amendPolicy``, signed on the terms the policy has (so it can
apply once, and not at all after another change); the policy is changed, and the change
logged in its lifecycle, when the pool has done it. A crash between is settled by
`reconcile` from the pool's ``PolicyAmended`` event for the change's terms; a change whose
deadline passed unsent can no longer land and lapses. Changes are made from the custodial demo
wallet (the local chain); on another chain the holder's own wallet would sign, which the
dashboard does not offer yet.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from hexbytes import HexBytes
from sqlalchemy import update
from sqlmodel import col, select

from bti_core.chain.artifacts import refusal_type
from bti_core.chain.types import AmendmentTerms, terms_hash
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Policy, PolicyChange
from bti_core.db.repository import add_policy_event, get_quote
from bti_core.db.statuses import ChangeState, Peril, PolicyStatus
from bti_core.errors import BTIError, ChainError, ContractRefusalError, PaymentError
from bti_core.orders import Cover, Order, OrderType
from bti_core.policies.context import PolicyContext
from bti_core.policies.lifecycle import LifecycleEvent, move_policy
from bti_core.policies.purchase import Purchases
from bti_core.policies.quoting import Quoting, order_and_cover
from bti_core.underwriting import Check

KINDS = ("extend", "raise", "cancel")
LOGGED = {"extend": "extended", "raise": "raised"}  # the lifecycle's word for a change
MONEY = Decimal("0.00000001")
#: how long a priced change may be confirmed (and the on-chain signature's deadline)
CHANGE_TTL = timedelta(minutes=5)


class ChangeError(BTIError, ValueError):
    """A change that cannot be priced or made as asked (the message says what is allowed)."""


@dataclass(frozen=True)
class ChangeView:
    """A priced change and what refuses it, if anything."""

    change: PolicyChange
    policy: Policy
    failed: list[Check]

    @property
    def allowed(self) -> bool:
        return not self.failed


def unused_premium(policy: Policy, fee: Decimal, now: datetime) -> Decimal:
    """The premium the cover has not used yet: ``(premium − fee) × time left / window``."""
    window = (policy.end_at - policy.start_at).total_seconds()
    left = max(0.0, (policy.end_at - now).total_seconds())
    if window <= 0:
        return Decimal(0)
    share = Decimal(str(min(1.0, left / window)))
    return max(Decimal(0), (policy.premium - fee) * share).quantize(MONEY, ROUND_DOWN)


def _hours(value: Any, what: str) -> int:
    try:
        hours = int(str(value).strip())
    except ValueError:
        raise ChangeError(f"{what} must be a whole number of hours; got {value!r}") from None
    if not 1 <= hours <= 720:
        raise ChangeError(f"{what} must be from 1 to 720 hours; got {hours}")
    return hours


def _amount(value: Any, what: str) -> Decimal:
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise ChangeError(f"{what} must be a number of USDT; got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ChangeError(f"{what} must be a positive number of USDT; got {value!r}")
    return amount


class Changes:
    """Price, confirm and settle changes to policies (see the module's docstring)."""

    def __init__(self, ctx: PolicyContext, quoting: Quoting, purchases: Purchases) -> None:
        self.ctx = ctx
        self.quoting = quoting
        self.purchases = purchases

    # ------------------------------------------------------------------ pricing

    def price(
        self,
        *,
        user_id: str,
        policy_id: int,
        kind: str,
        hours: Any = None,
        coverage: Any = None,
    ) -> ChangeView:
        """Price ``kind`` of the trader's policy: ``extend`` by ``hours``, ``raise`` to
        ``coverage`` (USDT), or ``cancel``; the priced change is stored for `confirm`."""
        if kind not in KINDS:
            raise ChangeError(f"a change is one of {', '.join(KINDS)}; got {kind!r}")
        now = self.ctx.clock()
        policy = self._policy(user_id, policy_id)
        quote = get_quote_record(self.ctx, policy.quote_id)
        fee = Decimal(str(quote.premium_breakdown.get("fee", "0")))
        unused = unused_premium(policy, fee, now)
        order, cover = order_and_cover(quote)
        failed: list[Check] = []
        if kind == "cancel":
            if self._reached(policy):
                failed.append(
                    Check(
                        "liquidation_reached",
                        False,
                        "the mark price has reached this cover's liquidation price: its claim "
                        "is opening, so it can no longer be cancelled",
                    )
                )
            new_cover, payout, new_premium, end_at = Decimal(0), Decimal(0), Decimal(0), now
            quote_id = None
        else:
            if policy.position_id is not None or policy.peril != Peril.LIQUIDATION.value:
                raise ChangeError(
                    "cover on a linked exchange position is extended or raised by buying new "
                    "cover on the position; it can be cancelled"
                )
            if kind == "extend":
                if hours is None:
                    raise ChangeError("an extension needs the hours to add (1 to 720)")
                end_at = policy.end_at + timedelta(hours=_hours(hours, "the extension"))
                new_cover = policy.coverage
            else:
                if coverage is None:
                    raise ChangeError("a raise needs the new coverage (USDT)")
                new_cover = _amount(coverage, "the new coverage")
                if new_cover <= policy.coverage:
                    raise ChangeError(
                        f"a raise must be above the cover's {policy.coverage:,.2f} USDT; got "
                        f"{new_cover:,.2f} (to lower a cover, cancel it and buy the smaller one)"
                    )
                end_at = policy.end_at
            left = math.ceil((end_at - now).total_seconds() / 3600)
            if left > 720:
                raise ChangeError(
                    f"a cover runs at most 720 hours from now; this change would run {left}"
                )
            view = self.quoting.quote(
                user_id=user_id,
                order=_held(order),
                cover=Cover(
                    coverage=new_cover,
                    duration_hours=max(1, left),
                    share=cover.share,
                    deductible=cover.deductible,
                ),
                replacing=policy,
            )
            failed = [c for c in view.checks if not c.passed and c.name != "market_entry"]
            new_premium = view.premium.total.quantize(MONEY, ROUND_DOWN)
            payout = view.record.payout
            quote_id = view.record.id
        charge = max(Decimal(0), new_premium - unused)
        refund = max(Decimal(0), unused - new_premium)
        change_id = uuid.uuid4().hex
        record = PolicyChange(
            id=change_id,
            policy_id=policy.id or 0,
            user_id=user_id,
            kind=kind,
            created_at=now,
            expires_at=now + CHANGE_TTL,
            from_terms=policy.terms_hash or "",
            terms_hash="0x"
            + terms_hash(
                {
                    "change": change_id,
                    "policy": policy.id,
                    "from": policy.terms_hash,
                    "kind": kind,
                    "coverage": str(new_cover),
                    "payout": str(payout),
                    "end": end_at.isoformat(),
                }
            ).hex(),
            coverage=new_cover,
            payout=payout,
            end_at=end_at,
            new_premium=new_premium,
            credit=unused,
            charge=charge,
            refund=refund,
            quote_id=quote_id,
            checks=[{"name": c.name, "passed": c.passed, "reason": c.reason} for c in failed],
            state=ChangeState.PRICED.value,
        )
        with session_scope(self.ctx.db) as s:
            s.add(record)
        return ChangeView(record, policy, failed)

    # ------------------------------------------------------------------ making it

    def confirm(self, *, user_id: str, change_id: str) -> Policy:
        """Make a priced change: once, on-chain, then on the policy (module docstring)."""
        now = self.ctx.clock()
        with write_scope(self.ctx.db) as s:
            change = s.get(PolicyChange, change_id)
            if change is None or change.user_id != user_id:
                raise ChangeError(f"there is no change {change_id[:8]} of yours")
            policy = s.get(Policy, change.policy_id)
            assert policy is not None
            if change.state == ChangeState.DONE:
                return policy
            if change.state != ChangeState.PRICED:
                raise ChangeError(
                    f"change {change_id[:8]} is {change.state}"
                    + (f": {change.reason}" if change.reason else "")
                )
            if change.checks:
                raise ChangeError(
                    "underwriting refuses this change: "
                    + "; ".join(c["reason"] for c in change.checks)
                )
            if change.expires_at <= now:
                raise ChangeError(
                    f"the price of change {change_id[:8]} expired at "
                    f"{change.expires_at:%H:%M:%S} UTC; price it again"
                )
            if policy.status != PolicyStatus.ACTIVE or policy.terms_hash != change.from_terms:
                raise ChangeError(
                    f"policy {policy.id} changed since this change was priced (it is "
                    f"{policy.status}): price it again"
                )
            # the one confirm that moves it on: a second click finds it sent
            moved = s.execute(
                update(PolicyChange)
                .where(col(PolicyChange.id) == change_id, col(PolicyChange.state) == "priced")
                .values(state=ChangeState.SENT.value)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise ChangeError(f"change {change_id[:8]} is already being made")
        wallet = self.purchases.wallet_of(user_id)
        chain = self.purchases._chain()
        if change.charge > 0:
            held = chain.balance(wallet.address)
            if held < change.charge:
                self._close(change_id, ChangeState.REFUSED, f"the wallet holds {held:,.2f} BTI")
                raise PaymentError(
                    f"this change costs {change.charge:,.2f} BTI and the wallet holds "
                    f"{held:,.2f} BTI (the demo faucet gives more)"
                )
        assert policy.chain_policy_id is not None
        try:
            tx = chain.amend_policy(wallet, self._terms(change, policy.chain_policy_id))
        except ChainError as exc:
            if isinstance(exc, ContractRefusalError) and not isinstance(
                exc, refusal_type("InsurancePoolPolicyExists")
            ):
                self._close(change_id, ChangeState.REFUSED, str(exc)[:500])
                raise PaymentError(f"{exc}; nothing was charged or refunded") from exc
            raise ChainError(
                f"{exc}. The change stays sent: it is made at most once, and it settles when "
                "the chain answers (reconcile)"
            ) from exc
        return self._apply(change_id, tx)

    def _terms(self, change: PolicyChange, chain_policy_id: int) -> AmendmentTerms:
        return AmendmentTerms(
            policy_id=chain_policy_id,
            from_terms=bytes(HexBytes(change.from_terms)),
            terms=bytes(HexBytes(change.terms_hash)),
            coverage=change.payout,  # on-chain coverage is what the cover pays
            charge=change.charge,
            refund=change.refund,
            expiry=int(change.end_at.timestamp()),
            deadline=int(change.expires_at.timestamp()),
        )

    def _apply(self, change_id: str, tx: str) -> Policy:
        """The pool made the change: the policy takes it, its lifecycle logs it."""
        with write_scope(self.ctx.db) as s:
            change = s.get(PolicyChange, change_id)
            assert change is not None
            policy = s.get(Policy, change.policy_id)
            assert policy is not None
            if change.state == ChangeState.DONE:
                return policy
            detail: dict[str, Any] = {
                "change": change.id,
                "tx": tx,
                "charge": str(change.charge),
                "refund": str(change.refund),
                "credit": str(change.credit),
                "new_premium": str(change.new_premium),
            }
            policy.premium = policy.premium + change.charge - change.refund
            if change.kind == "cancel":
                move_policy(s, policy=policy, event=LifecycleEvent.CANCEL, detail=detail)
            else:
                detail |= {
                    "end": {"from": policy.end_at.isoformat(), "to": change.end_at.isoformat()},
                    "coverage": {"from": str(policy.coverage), "to": str(change.coverage)},
                    "payout": {"from": str(policy.payout), "to": str(change.payout)},
                }
                policy.end_at, policy.coverage = change.end_at, change.coverage
                policy.payout, policy.terms_hash = change.payout, change.terms_hash
                s.add(policy)  # still active: logged, no move of its status
                add_policy_event(s, policy=policy, event=LOGGED[change.kind], detail=detail)
            change.state, change.tx_hash = ChangeState.DONE.value, tx
            s.add(change)
            return policy

    def _close(self, change_id: str, state: ChangeState, reason: str) -> None:
        with write_scope(self.ctx.db) as s:
            change = s.get(PolicyChange, change_id)
            if change is not None and change.state == ChangeState.SENT:
                change.state, change.reason = state.value, reason
                s.add(change)

    def reconcile(self) -> int:
        """Settle changes a crash left sent: made on-chain (the pool's ``PolicyAmended`` for
        their terms) → applied; past their deadline and not made → lapsed (nothing moved).
        Returns how many were settled."""
        now = self.ctx.clock()
        with session_scope(self.ctx.db) as s:
            sent = list(
                s.exec(select(PolicyChange).where(col(PolicyChange.state) == ChangeState.SENT))
            )
        if not sent:
            return 0
        chain = self.purchases._chain()
        settled = 0
        for change in sent:
            found = chain.amendment_of(bytes(HexBytes(change.terms_hash)))
            if found is not None:
                self._apply(change.id, found)
                settled += 1
            elif change.expires_at + timedelta(seconds=30) < now:
                self._close(change.id, ChangeState.LAPSED, "its deadline passed unsent")
                settled += 1
        return settled

    # ------------------------------------------------------------------ reads

    def renewal(self, *, user_id: str, policy_id: int) -> tuple[Order, Cover]:
        """The order and cover to buy again to renew a policy (any status): the same
        position, as a limit order at its entry (it is open at that price), and the same
        cover; the Buy page prices it at today's quote."""
        with session_scope(self.ctx.db) as s:
            policy = s.get(Policy, policy_id)
        if policy is None or policy.user_id != user_id:
            raise ChangeError(f"there is no policy {policy_id} of yours")
        order, cover = order_and_cover(get_quote_record(self.ctx, policy.quote_id))
        return _held(order), Cover(
            coverage=policy.coverage,
            duration_hours=cover.duration_hours,
            share=cover.share,
            deductible=cover.deductible,
        )

    def _policy(self, user_id: str, policy_id: int) -> Policy:
        now = self.ctx.clock()
        with session_scope(self.ctx.db) as s:
            policy = s.get(Policy, policy_id)
        if policy is None or policy.user_id != user_id:
            raise ChangeError(f"there is no policy {policy_id} of yours")
        if policy.status != PolicyStatus.ACTIVE:
            raise ChangeError(
                f"policy {policy_id} is {policy.status}: only an active cover can be changed"
                + (" (renew it: buy the same cover again)" if policy.status == "expired" else "")
            )
        if policy.end_at <= now:
            raise ChangeError(
                f"policy {policy_id} ended at {policy.end_at:%Y-%m-%d %H:%M} UTC: renew it "
                "instead (buy the same cover again)"
            )
        if policy.chain_policy_id is None or policy.terms_hash is None:
            raise ChangeError(f"policy {policy_id} is not on-chain: it cannot be changed")
        return policy

    def _reached(self, policy: Policy) -> bool:
        """Whether the mark now is at or past the policy's liquidation price."""
        try:
            mark = self.ctx.risk.spot(policy.symbol)
        except BTIError:
            return False
        lp = float(policy.liquidation_price)
        return mark <= lp if policy.side == "long" else mark >= lp


def _held(order: Order) -> Order:
    """The order of a position already open at its entry: a limit order at that price, so it
    is priced from the mark now and never refused as a market order away from the mark."""
    return dataclasses.replace(order, order_type=OrderType.LIMIT)


def get_quote_record(ctx: PolicyContext, quote_id: str) -> Any:
    with session_scope(ctx.db) as s:
        quote = get_quote(s, quote_id=quote_id)
    if quote is None:
        raise ChangeError(f"the quote {quote_id[:8]} the policy was bought on is gone")
    return quote
