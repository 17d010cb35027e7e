"""The insurance service: quote an order's cover, buy it, list and expire policies.

A quote is priced from the symbol's shared Monte Carlo table (a lookup), explained by the risk
index, checked by underwriting and stored with an expiry. Buying re-checks capacity and the
trader's exposure at that moment, writes the policy ``pending``, pays the premium in BTI through
the pool contract and then marks it ``active`` with the transaction; a quote buys at most one
policy (a unique key) and a policy's terms at most one on-chain purchase (a unique hash in the
contract), so neither a double click nor a crash and retry ever insures or charges twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bti_core.auth import AuthError, get_user
from bti_core.chain.client import ChainClient, PolicyStatus, Purchase, terms_hash
from bti_core.chain.wallets import LOCAL_CHAIN_ID, CustodialWallets
from bti_core.claims.triggers import Insured, find_triggers
from bti_core.db.engine import session_scope, write_scope
from bti_core.db.models import Policy, PolicyEvent, QuoteRecord
from bti_core.db.repository import (
    active_policies,
    add_policy_event,
    add_quote,
    claims_count,
    get_policy,
    get_quote,
    open_cover,
    policies_of,
    policies_with_status,
    policy_events,
    policy_for_quote,
)
from bti_core.db.types import utcnow
from bti_core.errors import BTIError, ChainError, PaymentError
from bti_core.market.schema import Kind, timeframe_delta
from bti_core.orders import Cover, MarginMode, Order
from bti_core.pricing import Premium, PricingConfig, price
from bti_core.risk.engine import RiskEngine
from bti_core.risk.index import RiskIndex, TraderHistory, macro_signal_at, risk_index
from bti_core.risk.liquidation import brackets_for, liquidation_price
from bti_core.underwriting import (
    Check,
    Limits,
    UnderwritingError,
    check_cover,
    check_premium,
    require,
)

PRICE_PLACES = Decimal("0.00000001")
log = logging.getLogger("bti.policies")
EXPIRY_DATA_GRACE = timedelta(days=1)  # how long an ended policy waits for market data


class QuoteError(BTIError, LookupError):
    """A quote that cannot be bought (unknown, someone else's)."""


# reverts that are the pool refusing the purchase (the policy is declined); any other failure
# (node down, timeout) leaves it pending for reconciliation
_REFUSALS = frozenset(
    {
        "InsufficientCapacity",
        "ERC20InsufficientBalance",
        "ERC20InsufficientAllowance",
        "EnforcedPause",
        "QuoteExpired",
        "BadExpiry",
        "BadQuoteSignature",
        "NotQuoteHolder",
        "ZeroAmount",
    }
)


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


@dataclass(frozen=True)
class QuoteView:
    record: QuoteRecord
    order: Order
    cover: Cover
    risk: RiskIndex
    premium: Premium
    checks: list[Check]
    model: str = ""  # what the probability was simulated from (`SymbolRisk.model_summary`)

    @property
    def insurable(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x))).quantize(PRICE_PLACES, rounding=ROUND_HALF_UP)


class InsuranceService:
    def __init__(
        self,
        db: Engine,
        risk: RiskEngine,
        *,
        limits: Limits | None = None,
        pricing: PricingConfig | None = None,
        quote_ttl: timedelta = timedelta(minutes=5),
        macro: pd.Series | None = None,
        clock: Callable[[], datetime] = utcnow,
        chain: ChainClient | None = None,
        payment_window: timedelta = timedelta(minutes=2),
        wallets: CustodialWallets | None = None,
    ) -> None:
        self.db = db
        self.risk = risk
        self.limits = limits or Limits()
        self.pricing = pricing or PricingConfig()
        self.quote_ttl = quote_ttl
        self.macro = macro
        self.clock = clock
        self.chain = chain
        self.payment_window = payment_window  # the signed quote's deadline after a purchase
        self.wallets = wallets or CustodialWallets()

    # --- quotes -----------------------------------------------------------------------------

    def allowed_symbols(self) -> list[str]:
        return self.risk.warehouse.symbols()

    def trader_history(self, user_id: str) -> TraderHistory:
        with session_scope(self.db) as s:
            pols = [p for p in policies_of(s, user_id=user_id) if p.status != "declined"]
        if not pols:
            return TraderHistory()
        liquidated = sum(p.status in ("claimed", "paid") for p in pols)
        with session_scope(self.db) as s:
            claims = claims_count(s, user_id=user_id)
        return TraderHistory(
            policies=len(pols),
            liquidations=liquidated,
            claims=claims,
            average_leverage=float(np.mean([float(p.leverage) for p in pols])),
        )

    def _exposure(self, user_id: str, s: Session | None = None) -> tuple[Decimal, Decimal]:
        """(this trader's open cover, the pool's open cover), pending purchases included;
        in ``s`` when given (the purchase's serialised transaction)."""
        if s is None:
            with session_scope(self.db) as fresh:
                return self._exposure(user_id, fresh)
        return open_cover(s, user_id=user_id)

    def _require_trader(self, user_id: str) -> None:
        user = get_user(self.db, user_id)
        if user is not None and user.is_underwriter:
            raise AuthError(
                f"{user_id} is an underwriter: underwriters decide claims and do not buy "
                "cover with that account; sign in as a trader to insure an order"
            )

    def quote(self, *, user_id: str, order: Order, cover: Cover) -> QuoteView:
        """Price the cover of an order and store the quote (with any failed checks)."""
        self._require_trader(user_id)
        now = self.clock()
        sr = self.risk.symbol_risk(order.symbol)
        br = brackets_for(order.symbol)
        side = order.side.sign
        q, ep = float(order.quantity), float(order.entry_price)
        wallet = order.wallet_balance if order.margin_mode is MarginMode.CROSS else None
        margin_or_wallet = float(wallet if wallet is not None else order.margin)
        lp = float(liquidation_price(ep, q, side, margin_or_wallet, br))
        reached = (sr.spot <= lp) if side > 0 else (sr.spot >= lp)
        p_arr, se_arr = sr.probability(lp, cover.duration_hours, side)
        p = 1.0 if reached else float(p_arr)
        se = 0.0 if reached else float(se_arr)
        base_p = float(sr.baseline(lp, cover.duration_hours, side))
        max_lev = Decimal(str(br.max_leverage_for(q * ep)))
        mine, pool = self._exposure(user_id)
        payout = cover.payout(order.margin).quantize(Decimal("0.01"))
        checks = check_cover(
            order,
            cover,
            allowed_symbols=self.allowed_symbols(),
            symbol_max_leverage=max_lev,
            user_exposure=mine,
            pool_locked=pool,
            liquidation_reached=reached,
            limits=self.limits,
            liquidation_price=lp,
            payout=payout,
        )
        distance = abs(sr.spot - lp) / sr.spot if lp > 0 else 1.0
        index = risk_index(
            probability=p,
            side=side,
            leverage=float(order.leverage),
            max_leverage=float(min(max_lev, self.limits.max_leverage)),
            coverage=float(cover.coverage),
            margin=float(order.margin),
            duration_hours=cover.duration_hours,
            max_duration_hours=self.limits.max_duration_hours,
            notional=float(order.notional),
            order_type=str(order.order_type),
            margin_mode=str(order.margin_mode),
            distance_to_liquidation=distance,
            market=sr.features,
            trader=self.trader_history(user_id),
            macro_signal=macro_signal_at(self.macro, pd.Timestamp(now)),
        )
        capacity = self.limits.pool_capacity
        utilisation = min(1.0, float((pool + cover.coverage) / capacity)) if capacity > 0 else 1.0
        premium = price(
            payout=payout,
            probability=p,
            n_paths=sr.table.n_paths,
            utilisation=utilisation,
            config=self.pricing,
        )
        checks.append(check_premium(premium.total, payout))
        record = QuoteRecord(
            id=uuid.uuid4().hex,
            created_at=now,
            expires_at=now + self.quote_ttl,
            user_id=user_id,
            symbol=order.symbol,
            inputs={
                "order": {k: None if v is None else str(v) for k, v in asdict(order).items()},
                "cover": {k: str(v) for k, v in asdict(cover).items()},
            },
            liquidation_price=_dec(lp),
            spot=_dec(sr.spot),
            probability=p,
            probability_se=se,
            baseline_probability=base_p,
            risk_index=index.value,
            risk_breakdown=[asdict(c) for c in index.contributions],
            payout=payout,
            premium=premium.total,
            premium_breakdown={k: str(v) for k, v in asdict(premium).items()},
            checks=[asdict(c) for c in checks],
        )
        with session_scope(self.db) as s:
            add_quote(s, quote=record)
        return QuoteView(record, order, cover, index, premium, checks, sr.model_summary())

    # --- purchase ---------------------------------------------------------------------------

    def wallet_of(self, user_id: str) -> LocalAccount:
        """The trader's custodial demo wallet: only on the local dev chain, where BTI may hold
        keys; on any other chain the trader signs with their own wallet."""
        if self.chain is not None and self.chain.chain_id != LOCAL_CHAIN_ID:
            raise PaymentError(
                f"chain {self.chain.chain_id} is not the local dev chain: BTI holds no trader's "
                "key there; sign the purchase in your own wallet"
            )
        return self.wallets.of(user_id)

    def _chain(self) -> ChainClient:
        if self.chain is None:
            raise ChainError("no chain is configured: buying pays the premium on-chain")
        return self.chain

    def buy(self, *, user_id: str, quote_id: str) -> Policy:
        """Buy a quote's cover, paying the premium in BTI on-chain.

        Steps, each durable before the next: (1) the policy is written ``pending`` with the
        hash of its terms; (2) the pool's ``buyPolicy`` takes the premium (unique per terms
        hash on-chain, so a retry never charges twice); (3) the policy turns ``active`` with the
        transaction hash. A crash between (1) and (3) is settled by `reconcile`. Buying the
        same quote again returns the same policy (finishing its payment if it was pending).
        """
        self._require_trader(user_id)
        now = self.clock()
        chain = self._chain()
        with session_scope(self.db) as s:
            quote = get_quote(s, quote_id=quote_id)
            if quote is None or quote.user_id != user_id:
                raise QuoteError(f"no quote {quote_id!r} for {user_id}; ask for a new quote")
            existing = policy_for_quote(s, quote_id=quote_id)
        if existing is not None:
            return self._again(existing, quote_id)
        order = Order(**quote.inputs["order"])
        cover = Cover(
            coverage=Decimal(quote.inputs["cover"]["coverage"]),
            duration_hours=int(quote.inputs["cover"]["duration_hours"]),
            share=Decimal(quote.inputs["cover"]["share"]),
            deductible=Decimal(quote.inputs["cover"]["deductible"]),
        )
        failed = [Check(**c) for c in quote.checks if not c["passed"]]
        if quote.expires_at <= now:
            failed.append(
                Check(
                    "quote_expired",
                    False,
                    f"the quote expired at {quote.expires_at:%H:%M:%S} UTC; ask for a new one",
                )
            )
        wallet = self.wallet_of(user_id)
        if not failed:
            balance = chain.balance(wallet.address)
            if balance < quote.premium:
                raise PaymentError(
                    f"wallet {wallet.address} holds {balance:,.2f} BTI; the premium is "
                    f"{quote.premium:,.2f} BTI. Get BTI from the faucet, then buy again "
                    "(the quote is still valid until "
                    f"{quote.expires_at:%H:%M:%S} UTC)"
                )
        end_at = now + timedelta(hours=cover.duration_hours)
        terms = {
            "quote_id": quote.id,
            "user_id": user_id,
            "symbol": order.symbol,
            "order": quote.inputs["order"],
            "cover": quote.inputs["cover"],
            "liquidation_price": str(quote.liquidation_price),
            "payout": str(quote.payout),
            "premium": str(quote.premium),
            "start": now.isoformat(),
            "end": end_at.isoformat(),
        }
        # the limits are checked and the policy written in one serialised transaction, so
        # purchases at the same moment (threads or processes) cannot both pass a limit
        with write_scope(self.db, lock="cover") as s:
            existing = policy_for_quote(s, quote_id=quote_id)
            if existing is None:
                if not failed:
                    mine, pool = self._exposure(user_id, s)
                    fresh = check_cover(
                        order,
                        cover,
                        allowed_symbols=self.allowed_symbols(),
                        symbol_max_leverage=self.limits.max_leverage,
                        user_exposure=mine,
                        pool_locked=pool,
                        liquidation_reached=False,
                        limits=self.limits,
                    )
                    failed = [
                        c
                        for c in fresh
                        if not c.passed and c.name in ("pool_capacity", "user_exposure")
                    ]
                policy = self._new_policy(quote, order, cover, wallet.address, terms, now)
                s.add(policy)
                s.flush()
                add_policy_event(s, policy=policy, event="created", detail={"quote_id": quote.id})
                if failed:
                    policy.status = "declined"
                    add_policy_event(
                        s,
                        policy=policy,
                        event="declined",
                        detail={"reasons": [c.reason for c in failed]},
                    )
        if existing is not None:  # a second click got here first
            return self._again(existing, quote_id)
        if failed:
            require(failed)
        return self._pay(policy)

    def _again(self, existing: Policy, quote_id: str) -> Policy:
        """Buying a quote that already bought a policy: the same policy (finishing a pending
        payment), or the reason it was declined."""
        if existing.status == "declined":
            raise QuoteError(f"quote {quote_id} was declined; ask for a new quote")
        if existing.status == "pending":
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
            liquidation_price=quote.liquidation_price,
            coverage=cover.coverage,
            share=cover.share,
            deductible=cover.deductible,
            payout=quote.payout,
            premium=quote.premium,
            probability=quote.probability,
            risk_index=quote.risk_index,
            start_at=now,
            end_at=now + timedelta(hours=cover.duration_hours),
            status="pending",
            created_at=now,
            wallet=wallet,
            terms_hash=HexBytes(terms_hash(terms)).to_0x_hex(),
            pay_deadline=now + self.payment_window,
        )

    def _pay(self, policy: Policy) -> Policy:
        """Send (or find) the on-chain purchase of a pending policy and record the outcome."""
        chain = self._chain()
        assert policy.terms_hash is not None
        assert policy.pay_deadline is not None
        terms = bytes(HexBytes(policy.terms_hash))
        try:
            purchase = chain.buy_policy(
                self.wallet_of(policy.user_id),
                terms=terms,
                coverage=policy.payout,
                premium=policy.premium,
                expiry=int(policy.end_at.timestamp()),
                deadline=int(policy.pay_deadline.timestamp()),
            )
        except ChainError as exc:
            if exc.reason == "PolicyExists":  # paid before a crash: record, never re-charge
                found = chain.purchase_of(terms)
                assert found is not None
                return self._activate(policy, found)
            if exc.reason in _REFUSALS:
                self._decline(policy, str(exc))
                raise PaymentError(f"{exc}; no premium was taken") from exc
            raise ChainError(
                f"{exc}. Policy {policy.id} stays pending: no premium is taken twice, and it "
                "settles when the chain answers (reconcile)"
            ) from exc
        return self._activate(policy, purchase)

    def _activate(self, policy: Policy, purchase: Purchase) -> Policy:
        with write_scope(self.db) as s:
            p = get_policy(s, policy_id=policy.id or 0)
            assert p is not None
            if p.status != "pending":
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
            p.status = "active"
            add_policy_event(s, policy=p, event="active", detail={"until": p.end_at.isoformat()})
            return p

    def _decline(self, policy: Policy, reason: str) -> None:
        with write_scope(self.db) as s:
            p = get_policy(s, policy_id=policy.id or 0)
            if p is not None and p.status == "pending":
                p.status = "declined"
                add_policy_event(s, policy=p, event="declined", detail={"reasons": [reason]})

    def reconcile(self) -> ReconcileReport:
        """Settle policies whose database state and chain disagree (run at start and on
        demand): a pending policy found on-chain is activated with its purchase; one not on
        chain is paid now if its signed quote is still valid, else declined (nothing was
        charged, and the signature can no longer be used); expired policies whose cover is
        still locked on-chain are released."""
        chain = self._chain()
        now = self.clock()
        report = ReconcileReport()
        with session_scope(self.db) as s:
            pending = list(policies_with_status(s, statuses=["pending"]))
            expired = list(policies_with_status(s, statuses=["expired"]))
        for p in pending:
            if p.terms_hash is None or p.pay_deadline is None:
                continue  # recorded before purchases went on-chain: nothing to settle
            found = chain.purchase_of(bytes(HexBytes(p.terms_hash)))
            if found is not None:
                self._activate(p, found)
                report.activated.append(p.id or 0)
            elif p.pay_deadline > now + timedelta(seconds=5):
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
            if p.chain_policy_id is not None and self._release(p):
                report.released.append(p.id or 0)
        return report

    def _release(self, policy: Policy) -> bool:
        """Release an expired policy's cover on-chain (once; the claims role may at any time)."""
        chain = self._chain()
        assert policy.chain_policy_id is not None
        if chain.policy(policy.chain_policy_id).status != PolicyStatus.ACTIVE:
            return False
        tx = chain.release_cover(policy.chain_policy_id)
        with write_scope(self.db) as s:
            p = get_policy(s, policy_id=policy.id or 0)
            assert p is not None
            add_policy_event(s, policy=p, event="cover_released", detail={"tx": tx})
        return True

    # --- listing and expiry -----------------------------------------------------------------

    def _awaits_claim(self, p: Policy, now: datetime) -> bool:
        """Whether an ended policy must stay open for the claims scan: its mark price reached
        the liquidation price inside the window, or the market data does not yet cover the
        window's end (waited for at most ``EXPIRY_DATA_GRACE``)."""
        try:
            tf = self.risk.warehouse.timeframes(p.symbol, Kind.MARK)[0]
            mark = self.risk.warehouse.query(
                Kind.MARK, p.symbol, tf, pd.Timestamp(p.start_at), pd.Timestamp(p.end_at)
            )
            last_bar = self.risk.warehouse.latest(Kind.MARK, p.symbol, tf)["ts"]
        except (BTIError, IndexError):
            return now < p.end_at + EXPIRY_DATA_GRACE
        insured = Insured(p.id or 0, p.side, float(p.liquidation_price), p.start_at, p.end_at)
        if find_triggers([insured], mark):
            return True
        covered = pd.Timestamp(last_bar) + timeframe_delta(tf) >= pd.Timestamp(p.end_at)
        return not covered and now < p.end_at + EXPIRY_DATA_GRACE

    def expire_due(self) -> int:
        """Mark active policies whose window has ended without a liquidation as expired and
        release their cover on-chain; returns how many expired. A policy whose mark reached its
        liquidation price stays active for the claims scan. (A release that fails, node down,
        is retried by `reconcile`.)"""
        now = self.clock()
        done: list[Policy] = []
        with session_scope(self.db) as s:
            due = [p for p in active_policies(s) if p.end_at <= now]
        due = [p for p in due if not self._awaits_claim(p, now)]
        with write_scope(self.db) as s:
            for p in due:
                fresh = s.get(Policy, p.id)
                if fresh is not None and fresh.status == "active":
                    fresh.status = "expired"
                    add_policy_event(s, policy=fresh, event="expired")
                    done.append(fresh)
        if self.chain is not None:
            for p in done:
                if p.chain_policy_id is not None:
                    try:
                        self._release(p)
                    except ChainError as exc:  # reconcile retries it
                        log.warning("releasing the cover of policy %s failed: %s", p.id, exc)
        return len(done)

    def policies(self, user_id: str) -> pd.DataFrame:
        """The trader's policies with the distance from the current mark price to liquidation
        (a read: expiring ended policies is the worker's job)."""
        with session_scope(self.db) as s:
            pols = policies_of(s, user_id=user_id)
        rows = []
        for p in pols:
            try:
                spot = self.risk.spot(p.symbol)
            except BTIError:
                spot = float("nan")
            lp = float(p.liquidation_price)
            sign = 1 if p.side == "long" else -1
            rows.append(
                {
                    "policy": p.id,
                    "symbol": p.symbol,
                    "side": p.side,
                    "leverage": float(p.leverage),
                    "status": p.status,
                    "coverage": float(p.coverage),
                    "premium": float(p.premium),
                    "liquidation_price": lp,
                    "mark_price": spot,
                    "distance_to_liquidation": sign * (spot - lp) / spot if lp > 0 else 1.0,
                    "start": p.start_at,
                    "end": p.end_at,
                    "probability_at_purchase": p.probability,
                    "risk_index": p.risk_index,
                    "chain_policy": p.chain_policy_id,
                    "purchase_tx": p.tx_hash,
                }
            )
        return pd.DataFrame(rows)

    def events(self, policy_id: int) -> list[PolicyEvent]:
        with session_scope(self.db) as s:
            return list(policy_events(s, policy_id=policy_id))


__all__ = ["InsuranceService", "QuoteError", "QuoteView", "UnderwritingError"]
