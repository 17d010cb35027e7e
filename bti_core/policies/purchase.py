"""Purchases: a quote bought on-chain exactly once, and reconciliation of what a crash left
half-done. The policy side's only caller of the chain."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from sqlmodel import Session

from bti_core.chain.artifacts import refusal_type
from bti_core.chain.client import ChainClient
from bti_core.chain.types import OnChainStatus, Purchase, QuoteTerms, terms_hash
from bti_core.chain.wallets import LOCAL_CHAIN_ID, is_dev_address
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Policy, QuoteRecord
from bti_core.db.repository import (
    add_policy_event,
    get_policy,
    get_quote,
    open_cover_of,
    policies_with_status,
    policy_for_quote,
)
from bti_core.db.statuses import Peril, PolicyStatus
from bti_core.errors import ChainError, ContractRefusalError, PaymentError
from bti_core.orders import Cover, Order
from bti_core.policies.context import PolicyContext
from bti_core.policies.freshness import FreshMark, fresh_checks, fresh_mark
from bti_core.policies.lifecycle import FILING_PERIOD, LifecycleEvent, move_policy
from bti_core.policies.positions import PositionTerms, purchase_checks
from bti_core.policies.quoting import QuoteError, Quoting, order_and_cover, peril_of
from bti_core.underwriting import CONCENTRATION, Check, check_cover, require

log = logging.getLogger("bti.policies")

# what a policy keeps of its quote: the price and the figures behind it
_FROM_QUOTE = ("liquidation_price", "payout", "premium", "probability", "risk_index")
QUOTE_GRACE = timedelta(minutes=1)  # a purchase sent just before the quote ends may be mined


@dataclass(frozen=True)
class Permit:
    """A trader's EIP-2612 permit of a premium, signed in their own wallet."""

    signature: str  # 0x + 65 bytes (r, s, v)
    deadline: int  # unix seconds

    def as_json(self) -> dict[str, Any]:
        return {"signature": self.signature, "deadline": self.deadline}


@dataclass
class ReconcileReport:
    activated: list[int] = field(default_factory=list)
    declined: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"activated {len(self.activated)}, declined {len(self.declined)}, "
            f"cover released {len(self.released)}"
        )


class Purchases:
    """Buys quoted cover (custodial demo wallets, or a trader's own permit), reconciles what a
    crash left pending, and releases cover on-chain."""

    def __init__(self, ctx: PolicyContext, quoting: Quoting) -> None:
        self.ctx = ctx
        self.quoting = quoting

    def wallet_of(self, user_id: str) -> LocalAccount:
        """The trader's custodial demo wallet: only on the local dev chain, where BTI may hold
        keys; on any other chain the trader signs with their own wallet."""
        chain = self.ctx.chain
        if chain is not None and chain.chain_id != LOCAL_CHAIN_ID:
            raise PaymentError(
                f"chain {chain.chain_id} is not the local dev chain: BTI holds no trader's "
                "key there; sign the purchase in your own wallet"
            )
        return self.ctx.wallets.of(user_id)

    def _chain(self) -> ChainClient:
        if self.ctx.chain is None:
            raise ChainError("no chain is configured: buying pays the premium on-chain")
        return self.ctx.chain

    def buy(
        self,
        *,
        user_id: str,
        quote_id: str,
        wallet: str | None = None,
        permit: Permit | None = None,
    ) -> Policy:
        """Buy a quote's cover, paying the premium in BTI on-chain: from the trader's own
        ``wallet`` with the ``permit`` they signed there (`permit_request`; any chain), or
        from their custodial demo wallet (the local dev chain only).

        Steps, each durable before the next: (1) the policy is written ``pending`` with the
        hash of its terms; (2) the pool's ``buyPolicy`` takes the premium (unique per terms
        hash on-chain, so a retry never charges twice); (3) the policy turns ``active`` with the
        transaction hash. A crash between (1) and (3) is settled by `reconcile`. Buying the
        same quote again returns the same policy (finishing its payment if it was pending).
        """
        self.quoting.require_trader(user_id)
        now = self.ctx.clock()
        quote, existing = self._quote_of(user_id, quote_id)
        if existing is not None:
            return self._again(existing, quote_id)
        order, cover = order_and_cover(quote)
        failed = [Check(**c) for c in quote.checks if not c["passed"]]
        if quote.expires_at <= now:
            failed.append(
                Check(
                    "quote_expired",
                    False,
                    f"the quote expired at {quote.expires_at:%H:%M:%S} UTC; ask for a new one",
                )
            )
        if not failed:
            failed += self._fresh_checks(quote, order)
        if (wallet is None) != (permit is None):
            raise PaymentError("a purchase from your own wallet needs its address and its permit")
        if (
            wallet is not None
            and self._chain().chain_id != LOCAL_CHAIN_ID
            and is_dev_address(wallet)
        ):
            raise PaymentError(
                f"wallet {wallet} is one of anvil's public development accounts: anyone holds "
                "its key, so its policy token and payout would be anyone's; buy from a wallet "
                "of your own"
            )
        address = wallet if wallet is not None else self.wallet_of(user_id).address
        if not failed:
            self._require_balance(address, quote)
        policy, failed, ours = self._write_pending(
            quote, order, cover, address, now, failed, permit
        )
        if not ours:  # a second click got here first
            return self._again(policy, quote_id)
        if failed:
            require(failed)
        return self._pay(policy)

    def fresh_mark(self, symbol: str, side: int, since: datetime) -> FreshMark | None:
        """`freshness.fresh_mark` now, from the warehouse and the streams' marks."""
        wh, now = self.ctx.risk.warehouse, self.ctx.clock()
        return fresh_mark(wh, self.ctx.db, symbol, side, since, now)

    def _fresh_checks(self, quote: QuoteRecord, order: Order) -> list[Check]:
        """`freshness.fresh_checks` of the mark now against the quote's."""
        fresh = self.fresh_mark(order.symbol, order.side.sign, quote.created_at)
        return fresh_checks(fresh, quote, order)

    def permit_request(self, *, user_id: str, quote_id: str, wallet: str) -> dict[str, Any]:
        """What the trader signs in their own wallet to buy ``quote_id`` from ``wallet``: the
        EIP-2612 permit of the premium to the pool (``eth_signTypedData_v4``), valid until
        the quote's payment deadline. Hand the signature to `buy` with ``permit``."""
        self.quoting.require_trader(user_id)
        quote, _ = self._quote_of(user_id, quote_id)
        deadline = int((quote.expires_at + self.ctx.payment_window).timestamp())
        return self._chain().permit_request(wallet, quote.premium, deadline)

    def _quote_of(self, user_id: str, quote_id: str) -> tuple[QuoteRecord, Policy | None]:
        with session_scope(self.ctx.db) as s:
            quote = get_quote(s, quote_id=quote_id)
            if quote is None or quote.user_id != user_id:
                raise QuoteError(f"no quote {quote_id!r} for {user_id}; ask for a new quote")
            return quote, policy_for_quote(s, quote_id=quote_id)

    def _quote_record(self, quote_id: str) -> QuoteRecord | None:
        with session_scope(self.ctx.db) as s:
            return get_quote(s, quote_id=quote_id)

    def _require_balance(self, wallet: str, quote: QuoteRecord) -> None:
        balance = self._chain().balance(wallet)
        if balance < quote.premium:
            raise PaymentError(
                f"wallet {wallet} holds {balance:,.2f} BTI; the premium is "
                f"{quote.premium:,.2f} BTI. Get BTI from the faucet, then buy again (the quote "
                f"is still valid until {quote.expires_at:%H:%M:%S} UTC)"
            )

    def _write_pending(
        self,
        quote: QuoteRecord,
        order: Order,
        cover: Cover,
        wallet: str,
        now: datetime,
        failed: list[Check],
        permit: Permit | None = None,
    ) -> tuple[Policy, list[Check], bool]:
        """The limits are checked and the policy written in one serialised transaction, so
        purchases at the same moment (threads or processes) cannot both pass a limit. The
        policy (``pending``, or ``declined`` with the failed checks), or the one a concurrent
        purchase of the same quote wrote; whether it is this call's."""
        with write_scope(self.ctx.db, lock="cover") as s:
            existing = policy_for_quote(s, quote_id=quote.id)
            if existing is not None:
                return existing, [], False
            peril = peril_of(quote)
            if not failed:
                lp = None if peril is Peril.ADL else float(quote.liquidation_price)
                failed = self._limits_now(s, order, cover, quote.user_id, peril, lp)
            linked = quote.inputs.get("position")
            if linked is not None and not failed:
                terms = PositionTerms.of_json(linked)
                failed = purchase_checks(s, quote.user_id, terms, order, cover.coverage, now, peril)
            policy = self._new_policy(quote, order, cover, wallet, _terms(quote, order, now), now)
            policy.position_id = None if linked is None else int(linked["position_id"])
            policy.peril = peril.value
            policy.permit = None if permit is None else permit.as_json()
            s.add(policy)
            s.flush()
            add_policy_event(s, policy=policy, event="created", detail={"quote_id": quote.id})
            if failed:
                reasons = {"reasons": [c.reason for c in failed]}
                move_policy(s, policy=policy, event=LifecycleEvent.DECLINE, detail=reasons)
            return policy, failed, True

    def _limits_now(
        self,
        s: Session,
        order: Order,
        cover: Cover,
        user_id: str,
        peril: Peril,
        liquidation_price: float | None,
    ) -> list[Check]:
        """The pool's and the trader's limits, and the pool's concentration caps, against the
        open cover at this moment (ADL cover's own cap on the position is
        `purchase_checks`')."""
        exposure = self.quoting.exposure_now(s)  # one read: the caps and the pool's total
        mine = open_cover_of(s, user_id=user_id)
        fresh = check_cover(
            order,
            cover,
            allowed_symbols=self.quoting.allowed_symbols(),
            symbol_max_leverage=self.ctx.limits.max_leverage,
            user_exposure=mine,
            pool_locked=exposure.total,
            liquidation_reached=False,
            limits=self.ctx.limits,
            position_cover=Decimal(0)
            if peril is Peril.ADL
            else self.quoting.position_cover(s, user_id, order),
        )
        fresh += self.quoting.concentration(order, cover, liquidation_price, exposure)
        serialised = ("pool_capacity", "user_exposure", "position_cover", *CONCENTRATION)
        return [c for c in fresh if not c.passed and c.name in serialised]

    def _again(self, existing: Policy, quote_id: str) -> Policy:
        """Buying a quote that already bought a policy: the same policy (finishing a pending
        payment), or the reason it was declined."""
        if existing.status == PolicyStatus.DECLINED:
            raise QuoteError(f"quote {quote_id} was declined; ask for a new quote")
        if existing.status == PolicyStatus.PENDING:
            return self._pay(existing)
        return existing

    def _new_policy(
        self,
        quote: QuoteRecord,
        order: Order,
        cover: Cover,
        wallet: str,
        terms: dict[str, object],
        now: datetime,
    ) -> Policy:
        # the quote's figures and the cover's terms, as quoted
        priced = {k: getattr(quote, k) for k in _FROM_QUOTE} | {
            k: getattr(cover, k) for k in ("coverage", "share", "deductible")
        }
        return Policy(
            quote_id=quote.id,
            user_id=quote.user_id,
            symbol=order.symbol,
            side=str(order.side),
            quantity=order.quantity,
            entry_price=order.entry_price,
            leverage=order.leverage,
            margin_mode=str(order.margin_mode),
            order_type=str(order.order_type),
            margin=order.margin.quantize(Decimal("0.01")),
            start_at=now,
            end_at=now + timedelta(hours=cover.duration_hours),
            status=PolicyStatus.PENDING.value,
            created_at=now,
            wallet=wallet,
            terms_hash=HexBytes(terms_hash(terms)).to_0x_hex(),
            # the signed quote's deadline on-chain: never long after the quote itself ends, so
            # a purchase sent late (or again after a crash) cannot land on a stale price
            pay_deadline=min(now + self.ctx.payment_window, quote.expires_at + QUOTE_GRACE),
            **priced,
        )

    def _pay(self, policy: Policy) -> Policy:
        """Send (or find) the on-chain purchase of a pending policy and record the outcome."""
        chain = self._chain()
        assert policy.terms_hash is not None
        assert policy.pay_deadline is not None
        terms = bytes(HexBytes(policy.terms_hash))
        q = QuoteTerms(
            terms,
            policy.payout,
            policy.premium,
            expiry=int(policy.end_at.timestamp()),
            deadline=int(policy.pay_deadline.timestamp()),
        )
        try:
            if policy.permit is not None:  # the trader's own wallet: BTI relays their permit
                assert policy.wallet is not None
                purchase = chain.buy_policy_with_permit(
                    policy.wallet,
                    bytes(HexBytes(policy.permit["signature"])),
                    permit_deadline=int(policy.permit["deadline"]),
                    q=q,
                )
            else:
                purchase = chain.buy_policy(self.wallet_of(policy.user_id), q)
        except ChainError as exc:
            if isinstance(
                exc, refusal_type("InsurancePoolPolicyExists")
            ):  # paid before a crash: record it
                found = chain.purchase_of(terms)
                assert found is not None
                return self._activate(policy, found)
            if isinstance(exc, ContractRefusalError):  # the pool said no: nothing was charged
                self._decline(policy, str(exc))
                raise PaymentError(f"{exc}; no premium was taken") from exc
            raise ChainError(
                f"{exc}. Policy {policy.id} stays pending: no premium is taken twice, and it "
                "settles when the chain answers (reconcile)"
            ) from exc
        return self._activate(policy, purchase)

    def _activate(self, policy: Policy, purchase: Purchase) -> Policy:
        with write_scope(self.ctx.db) as s:
            p = get_policy(s, policy_id=policy.id or 0)
            assert p is not None
            if p.status != PolicyStatus.PENDING:
                return p
            p.chain_policy_id = purchase.policy_id
            p.tx_hash = purchase.tx_hash or None
            add_policy_event(
                s,
                policy=p,
                event="premium_collected",
                detail={
                    "amount": str(p.premium),
                    "currency": "BTI",
                    "tx": purchase.tx_hash,
                    "block": purchase.block,
                    "chain_policy_id": purchase.policy_id,
                },
            )
            move_policy(
                s, policy=p, event=LifecycleEvent.ACTIVATE, detail={"until": p.end_at.isoformat()}
            )
            return p

    def _decline(self, policy: Policy, reason: str) -> None:
        with write_scope(self.ctx.db) as s:
            p = get_policy(s, policy_id=policy.id or 0)
            if p is not None and p.status == PolicyStatus.PENDING:
                move_policy(s, policy=p, event=LifecycleEvent.DECLINE, detail={"reasons": [reason]})

    def reconcile(self) -> ReconcileReport:
        """Settle policies whose database state and chain disagree (run at start and on
        demand): a pending policy found on-chain is activated with its purchase; one not on
        chain is paid now if its signed quote is still valid, else declined (nothing was
        charged, and the signature can no longer be used); expired policies whose cover is
        still locked on-chain are released once their filing period is over."""
        chain = self._chain()
        now = self.ctx.clock()
        report = ReconcileReport()
        with session_scope(self.ctx.db) as s:
            pending = list(policies_with_status(s, statuses=[PolicyStatus.PENDING.value]))
            expired = list(policies_with_status(s, statuses=["expired"]))
        for p in pending:
            if p.terms_hash is None or p.pay_deadline is None:
                continue  # recorded before purchases went on-chain: nothing to settle
            found = chain.purchase_of(bytes(HexBytes(p.terms_hash)))
            if found is not None:
                self._activate(p, found)
                report.activated.append(p.id or 0)
            elif p.pay_deadline > now + timedelta(seconds=5):
                quote = self._quote_record(p.quote_id)
                stale = (
                    [] if quote is None else self._fresh_checks(quote, order_and_cover(quote)[0])
                )
                if stale:  # the market moved while it waited: it is no longer insurable
                    self._decline(p, stale[0].reason)
                    report.declined.append(p.id or 0)
                    continue
                try:
                    self._pay(p)
                    report.activated.append(p.id or 0)
                except PaymentError:
                    report.declined.append(p.id or 0)
            else:
                self._decline(
                    p,
                    "the payment never reached the chain before the quote's deadline "
                    f"({p.pay_deadline:%H:%M:%S} UTC); nothing was charged",
                )
                report.declined.append(p.id or 0)
        for p in expired:
            if p.end_at + FILING_PERIOD > now:  # a late claim may still be filed
                continue
            if p.chain_policy_id is not None and self.release(p):
                report.released.append(p.id or 0)
        return report

    def release(self, policy: Policy) -> bool:
        """Release an expired policy's cover on-chain (once; the claims role may at any time)."""
        chain = self._chain()
        assert policy.chain_policy_id is not None
        if chain.policy(policy.chain_policy_id).status != OnChainStatus.ACTIVE:
            return False
        tx = chain.release_cover(policy.chain_policy_id)
        with write_scope(self.ctx.db) as s:
            p = get_policy(s, policy_id=policy.id or 0)
            assert p is not None
            add_policy_event(s, policy=p, event="cover_released", detail={"tx": tx})
        return True


def _terms(quote: QuoteRecord, order: Order, now: datetime) -> dict[str, object]:
    """The policy's off-chain terms; their hash is the policy's key on-chain. ADL cover names
    its peril (liquidation cover's terms are as they always were)."""
    end_at = now + timedelta(hours=int(quote.inputs["cover"]["duration_hours"]))
    peril = peril_of(quote)
    return ({"peril": peril.value} if peril is Peril.ADL else {}) | {
        "quote_id": quote.id,
        "user_id": quote.user_id,
        "symbol": order.symbol,
        "order": quote.inputs["order"],
        "cover": quote.inputs["cover"],
        "liquidation_price": str(quote.liquidation_price),
        "payout": str(quote.payout),
        "premium": str(quote.premium),
        "start": now.isoformat(),
        "end": end_at.isoformat(),
    }
