"""Automatic renewal with the trader's consent.

A trader may consent to renew a cover when it ends: the same order and cover (`Changes.renewal`)
bought again at that moment's quote, as long as its premium is at most the ``max_premium`` they
agreed to, up to ``times`` renewals. Each renewal is an ordinary purchase — the same engine,
checks, caps and on-chain payment from the trader's wallet — so nothing is renewed that a new
cover would be refused; a refusal (underwriting, a premium above the consent, a wallet short of
BTI) stops the consent with its reason, shown on the policy, and moves no money.

When: the worker's ``renewals`` duty renews a cover once the expiry duty has ended it (its
status ``expired``), so the old and the new cover never overlap (a liquidation is insured once);
the gap is at most a worker round. A cover claimed, cancelled or declined is not renewed.

Once, across processes and crashes: a renewal's quote is written on the consent only if it has
none (compare-and-set); every process then buys that stored quote, and buying a quote twice
returns the same policy (`Purchases.buy`). The consent moves to the new policy only from the old
one (compare-and-set again). A process that dies after the quote was stored buys it next round
(or, if it expired unbought, quotes again); one that dies after the purchase finds it bought.

Custodial demo wallets only: on a chain that is not the local one BTI holds no trader's key, and
an automatic purchase would need a standing permit the dashboard does not ask for yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from bti_core.chain.wallets import LOCAL_CHAIN_ID
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Policy, Renewal
from bti_core.db.repository import add_policy_event, get_quote
from bti_core.db.statuses import Peril, PolicyStatus, RenewalState
from bti_core.errors import BTIError, ChainError, ContractRefusalError
from bti_core.policies.changes import ChangeError, Changes
from bti_core.policies.context import PolicyContext
from bti_core.policies.purchase import Purchases
from bti_core.policies.quoting import Quoting

#: the most renewals one consent may make
MAX_TIMES = 12
#: the highest premium a consent may agree to (BTI)
MAX_PREMIUM = Decimal(1_000_000)
#: a cover in one of these will never end by expiry: its consent stops
_ENDED_OTHERWISE = {
    PolicyStatus.CLAIMED.value: "the cover was claimed",
    PolicyStatus.PAID.value: "the cover was claimed and paid",
    PolicyStatus.CANCELLED.value: "the cover was cancelled",
    PolicyStatus.DECLINED.value: "the cover was never bought",
}


class RenewalError(ChangeError):
    """A consent that cannot be given as asked (the message says what is allowed)."""


@dataclass
class RenewalReport:
    renewed: list[int] = field(default_factory=list)  # the new policies
    stopped: list[int] = field(default_factory=list)  # consents stopped with a reason

    def __str__(self) -> str:
        return f"renewed {len(self.renewed)}, stopped {len(self.stopped)}"


def _premium(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise RenewalError(
            f"the most you agree to pay must be a number of BTI; got {value!r}"
        ) from None
    if not amount.is_finite() or not 0 < amount <= MAX_PREMIUM:
        raise RenewalError(
            f"the most you agree to pay must be above 0 and at most {MAX_PREMIUM:,.0f} BTI; "
            f"got {value!r}"
        )
    return amount.quantize(Decimal("0.01"))


def _times(value: Any) -> int:
    try:
        times = int(str(value).strip())
    except ValueError:
        raise RenewalError(f"renewals must be a whole number; got {value!r}") from None
    if not 1 <= times <= MAX_TIMES:
        raise RenewalError(f"renewals must be from 1 to {MAX_TIMES}; got {times}")
    return times


class Renewals:
    """Consents to renew covers automatically, and the worker duty that renews them."""

    def __init__(
        self, ctx: PolicyContext, quoting: Quoting, purchases: Purchases, changes: Changes
    ) -> None:
        self.ctx = ctx
        self.quoting = quoting
        self.purchases = purchases
        self.changes = changes

    # ------------------------------------------------------------------ consent

    def consent(self, *, user_id: str, policy_id: int, max_premium: Any, times: Any = 1) -> Renewal:
        """Consent to renew the trader's active cover ``times`` times, each at most
        ``max_premium`` BTI; replaces a standing consent on the same cover."""
        most, n = _premium(max_premium), _times(times)
        chain = self.ctx.chain
        if chain is not None and chain.chain_id != LOCAL_CHAIN_ID:
            raise RenewalError(
                f"chain {chain.chain_id} is not the local dev chain: BTI holds no key of yours "
                "there to pay a renewal; renew by hand (Renew) from your own wallet"
            )
        now = self.ctx.clock()
        with write_scope(self.ctx.db, lock="renewal") as s:
            policy = s.get(Policy, policy_id)
            if policy is None or policy.user_id != user_id:
                raise RenewalError(f"there is no policy {policy_id} of yours")
            if policy.status != PolicyStatus.ACTIVE.value or policy.end_at <= now:
                raise RenewalError(
                    f"policy {policy_id} is {policy.status}"
                    + (" and ended" if policy.end_at <= now else "")
                    + ": only an active cover can be renewed automatically (renew this one by "
                    "hand)"
                )
            if policy.position_id is not None or policy.peril != Peril.LIQUIDATION.value:
                raise RenewalError(
                    "cover on a linked exchange position is renewed by buying new cover on the "
                    "position (it may have changed or closed)"
                )
            r = s.exec(
                select(Renewal).where(
                    Renewal.policy_id == policy_id, Renewal.state == RenewalState.STANDING.value
                )
            ).first() or Renewal(
                user_id=user_id,
                policy_id=policy_id,
                first_policy_id=policy_id,
                max_premium=most,
                times_left=n,
                state=RenewalState.STANDING.value,
                created_at=now,
            )
            r.max_premium, r.times_left, r.updated_at = most, n, now
            s.add(r)
            add_policy_event(
                s,
                policy=policy,
                event="renewal_consented",
                detail={"max_premium": str(most), "times": n},
            )
            s.flush()
            return r

    def withdraw(self, *, user_id: str, policy_id: int) -> None:
        """Withdraw the standing consent on the trader's cover (none: an error saying so)."""
        now = self.ctx.clock()
        with write_scope(self.ctx.db, lock="renewal") as s:
            r = s.exec(
                select(Renewal).where(
                    Renewal.policy_id == policy_id,
                    Renewal.user_id == user_id,
                    Renewal.state == RenewalState.STANDING.value,
                )
            ).first()
            if r is None:
                raise RenewalError(f"policy {policy_id} of yours has no automatic renewal to stop")
            r.state, r.reason, r.updated_at = RenewalState.WITHDRAWN.value, "withdrawn by you", now
            s.add(r)
            policy = s.get(Policy, policy_id)
            assert policy is not None
            add_policy_event(s, policy=policy, event="renewal_withdrawn", detail={})

    def of(self, user_id: str, policy_id: int) -> Renewal | None:
        """The consent on this cover, standing or the last one that ended."""
        with session_scope(self.ctx.db) as s:
            return s.exec(
                select(Renewal)
                .where(Renewal.user_id == user_id, Renewal.policy_id == policy_id)
                .order_by(col(Renewal.id).desc())
            ).first()

    # ------------------------------------------------------------------ the duty

    def run(self) -> RenewalReport:
        """Renew every cover with a standing consent that has ended (see the module)."""
        report = RenewalReport()
        with session_scope(self.ctx.db) as s:
            due = s.exec(
                select(Renewal.id)
                .join(Policy, col(Policy.id) == col(Renewal.policy_id))
                .where(
                    Renewal.state == RenewalState.STANDING.value,
                    col(Policy.status).in_([PolicyStatus.EXPIRED.value, *_ENDED_OTHERWISE]),
                )
                .order_by(col(Renewal.id))
            ).all()
        for rid in due:
            new, stopped = self._renew(rid or 0)
            if new is not None:
                report.renewed.append(new)
            if stopped:
                report.stopped.append(rid or 0)
        return report

    def _renew(self, rid: int) -> tuple[int | None, bool]:
        """Renew consent ``rid`` once: (the new policy, whether the consent stopped)."""
        with session_scope(self.ctx.db) as s:
            r = s.get(Renewal, rid)
            if r is None or r.state != RenewalState.STANDING.value:
                return None, False
            policy = s.get(Policy, r.policy_id)
            assert policy is not None
        if policy.status in _ENDED_OTHERWISE:
            return None, self._stop(r, policy, _ENDED_OTHERWISE[policy.status] + ": not renewed")
        quote_id = r.quote_id
        if quote_id is not None and self._expired(quote_id):
            self._set_quote(r, expected=quote_id, quote_id=None)  # quoted, never bought
            quote_id = None
        if quote_id is None:
            try:
                order, cover = self.changes.renewal(user_id=r.user_id, policy_id=policy.id or 0)
                view = self.quoting.quote(user_id=r.user_id, order=order, cover=cover)
            except ChainError:
                raise
            except BTIError as exc:
                return None, self._stop(r, policy, f"it could not be quoted: {exc}")
            if not view.insurable:
                why = "; ".join(c.reason for c in view.failed)
                return None, self._stop(r, policy, f"underwriting refused it: {why}")
            premium = view.record.premium
            if premium > r.max_premium:
                return None, self._stop(
                    r,
                    policy,
                    f"today's premium {premium:,.2f} BTI is above the {r.max_premium:,.2f} BTI "
                    "you agreed to",
                )
            quote_id = self._set_quote(r, expected=None, quote_id=view.record.id)
            if quote_id is None:  # the consent moved on meanwhile (another process)
                return None, False
        try:
            new = self.purchases.buy(user_id=r.user_id, quote_id=quote_id)
        except ChainError as exc:
            if not isinstance(exc, ContractRefusalError):
                raise  # the node is down: the stored quote is bought next round
            return None, self._stop(r, policy, f"the pool refused it: {exc}")
        except BTIError as exc:
            return None, self._stop(r, policy, f"the purchase was refused: {exc}")
        if new.status != PolicyStatus.ACTIVE.value:
            return None, self._stop(r, policy, f"the renewal was {new.status}")
        return (new.id if self._moved(r, policy, new) else None), False

    def _expired(self, quote_id: str) -> bool:
        with session_scope(self.ctx.db) as s:
            q = get_quote(s, quote_id=quote_id)
            bought = s.exec(select(Policy.id).where(Policy.quote_id == quote_id)).first()
        return q is None or (bought is None and q.expires_at <= self.ctx.clock())

    def _set_quote(self, r: Renewal, *, expected: str | None, quote_id: str | None) -> str | None:
        """Write ``quote_id`` on the consent if it still holds ``expected`` on the same cover;
        the quote the consent holds afterwards (another process's if it was first), None if
        the consent is no longer standing on that cover."""
        with write_scope(self.ctx.db, lock="renewal") as s:
            cur = s.exec(select(Renewal).where(Renewal.id == r.id).with_for_update()).one()
            if cur.state != RenewalState.STANDING.value or cur.policy_id != r.policy_id:
                return None
            if cur.quote_id == expected:
                cur.quote_id, cur.updated_at = quote_id, self.ctx.clock()
                s.add(cur)
            return cur.quote_id

    def _moved(self, r: Renewal, old: Policy, new: Policy) -> bool:
        """Move the consent from ``old`` to ``new`` (once) and log both covers' events."""
        now = self.ctx.clock()
        with write_scope(self.ctx.db, lock="renewal") as s:
            moved = s.execute(
                update(Renewal)
                .where(*_standing_on(r, old))
                .values(
                    policy_id=new.id,
                    times_left=Renewal.times_left - 1,
                    quote_id=None,
                    updated_at=now,
                    state=RenewalState.STANDING.value
                    if r.times_left > 1
                    else RenewalState.DONE.value,
                )
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                return False
            add_policy_event(
                s,
                policy=old,
                event="renewed",
                detail={"policy_id": new.id, "premium": str(new.premium)},
            )
            add_policy_event(s, policy=new, event="renewal_of", detail={"policy_id": old.id})
            return True

    def _stop(self, r: Renewal, policy: Policy, reason: str) -> bool:
        """Stop the consent with ``reason`` (logged on the cover); false if it had moved on."""
        with write_scope(self.ctx.db, lock="renewal") as s:
            stopped = s.execute(
                update(Renewal)
                .where(*_standing_on(r, policy))
                .values(
                    state=RenewalState.STOPPED.value,
                    reason=reason[:500],
                    quote_id=None,
                    updated_at=self.ctx.clock(),
                )
            )
            if stopped.rowcount != 1:  # type: ignore[attr-defined]
                return False
            add_policy_event(
                s, policy=policy, event="renewal_stopped", detail={"reason": reason[:500]}
            )
            return True


def _standing_on(r: Renewal, policy: Policy) -> tuple[Any, ...]:
    """The consent ``r``, still standing on ``policy`` (a compare-and-set's condition)."""
    return (
        col(Renewal.id) == r.id,
        col(Renewal.policy_id) == policy.id,
        col(Renewal.state) == RenewalState.STANDING.value,
    )


def consent_text(r: Renewal | None) -> str | None:
    """A consent in a trader's words (None: there is none to speak of)."""
    if r is None:
        return None
    times = f"{r.times_left} more time" + ("s" if r.times_left != 1 else "")
    match r.state:
        case RenewalState.STANDING.value:
            return (
                f"Renews automatically when it ends, {times}, at today's price up to "
                f"{r.max_premium:,.2f} BTI each time."
            )
        case RenewalState.STOPPED.value:
            return f"Automatic renewal stopped: {r.reason}."
        case RenewalState.DONE.value:
            return "Automatic renewal done: its renewals are used up."
        case _:
            return None
