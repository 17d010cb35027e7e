"""Partial claims: a linked position partly liquidated is paid its share, and the cover goes on
for the rest of the position.

When the exchange's own record shows it liquidated part of the insured quantity and its
position is still open (read after the liquidation), the claim is a *part*: it pays the
cover's formula on the margin lost (`exchange.linked_amount`: the insured margin × quantity
liquidated ÷ quantity insured) and the rest of the cover stays in force on what is left:

    rest     = min(insured quantity − liquidated, the position's size now)
    kept     = min(payout − paid, Cover.payout(margin × rest ÷ insured quantity))

so what one policy pays over all its parts never exceeds the payout it was bought for. On-chain
the pool pays the part and keeps ``kept`` locked under the rest's terms hash
(``InsurancePool.payClaimPart``: sent again, refused). Off-chain the claim is paid as any other,
and the cover on the rest is a new policy row — its *continuation* — with the same on-chain
policy, the rest's quantity, margin and payout, the exchange's liquidation price for the rest,
and liquidations counted from just after the one paid (`Policy.claims_from`: the first
liquidation is never read again as the rest's; the purchase, its time and its market, stay the
original's). It needs no premium: the premium was paid for the whole.

Decided once: the part is written in the claim's evidence when the claim is decided (its
figures are then what the payment sends and what the record creates), the continuation is
created in the transaction that records the payout, and its terms hash is derived from the
claim's anchor, so a payout sent twice carries the same terms and the pool refuses the second.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_utils.crypto import keccak
from sqlmodel import Session

from bti_core.db.models import Claim, ExchangePosition, Policy, QuoteRecord
from bti_core.db.repository import add_policy_event
from bti_core.db.statuses import Peril, PolicyStatus, PositionState
from bti_core.orders import Cover

CENT = Decimal("0.01")


def partly(policy: Policy, record: dict[str, Any]) -> bool:
    """Whether a confirmed record liquidated less than the insured quantity (only then is
    the account read again for what is left: a whole liquidation needs no read)."""
    orders = record.get("orders") or []
    done = sum((Decimal(o["quantity"]) for o in orders), Decimal(0))
    return record.get("state") == "confirmed" and Decimal(0) < done < policy.quantity


def part_of(
    policy: Policy, record: dict[str, Any], position: ExchangePosition | None, amount: Decimal
) -> dict[str, str] | None:
    """The part a confirmed linked liquidation is, for the claim's evidence; None when it is a
    whole one (all of the insured quantity, a position closed, or not read since)."""
    orders = record.get("orders") or []
    if policy.peril != Peril.LIQUIDATION.value or record.get("state") != "confirmed" or not orders:
        return None
    liquidated = sum((Decimal(o["quantity"]) for o in orders), Decimal(0))
    last = max(datetime.fromisoformat(o["time"]) for o in orders)
    if not Decimal(0) < liquidated < policy.quantity or position is None:
        return None
    if position.status != PositionState.OPEN.value or position.size <= 0:
        return None  # the rest was closed (or liquidated) too: nothing left to cover
    if position.exchange_ms < int(last.timestamp() * 1000):
        return None  # not read since the liquidation: its size now is not known
    rest = min(policy.quantity - liquidated, position.size)
    cover = Cover(
        coverage=policy.coverage, duration_hours=1, share=policy.share, deductible=policy.deductible
    )
    kept = min(policy.payout - amount, cover.payout(policy.margin * rest / policy.quantity))
    kept = kept.quantize(CENT)
    if kept <= 0:
        return None
    return {
        "liquidated": str(liquidated),
        "rest": str(rest),
        "kept": str(kept),
        "since": (last + timedelta(seconds=1)).isoformat(),
        "liquidation_price": str(position.liquidation_price or policy.liquidation_price),
    }


def kept_of(claim: Claim, policy: Policy) -> Decimal | None:
    """The cover a part keeps on-chain — its figure at the decision, never more than the
    payout less what an underwriter approved — or None when the claim pays in full."""
    part = (claim.evidence or {}).get("part")
    if not part or claim.amount_approved is None:
        return None
    kept = min(Decimal(part["kept"]), policy.payout - claim.amount_approved)
    return kept if kept > 0 else None


def rest_terms(policy: Policy, claim: Claim) -> bytes:
    """The terms hash of the cover kept on the rest: derived from the policy's terms and the
    claim's anchor (`claim_ref`), so every send of this payout carries the same one."""
    return keccak(text=f"continuation:{policy.terms_hash}:{claim.claim_ref}")


def continue_cover(s: Session, policy: Policy, claim: Claim, tx: str) -> Policy | None:
    """Write the continuation of ``policy`` after its part ``claim`` was paid (in the caller's
    transaction, the one that records the payout); None when the claim was not a part."""
    part = (claim.evidence or {}).get("part")
    kept = kept_of(claim, policy)
    if not part or kept is None:
        return None
    quote = s.get(QuoteRecord, policy.quote_id)
    assert quote is not None
    rest, liquidated = Decimal(part["rest"]), Decimal(part["liquidated"])
    new_quote = QuoteRecord.model_validate(
        {**quote.model_dump(), "id": f"{quote.id[:22]}-c{claim.id}"[:32]}
    )
    s.add(new_quote)
    s.flush()  # before the policy that refers to it (no ORM relationship orders them)
    terms = "0x" + rest_terms(policy, claim).hex()
    rest_policy = Policy.model_validate(
        {
            **policy.model_dump(),
            "id": None,
            "quote_id": new_quote.id,
            "quantity": rest,
            "margin": (policy.margin * rest / policy.quantity).quantize(Decimal("0.00000001")),
            "payout": kept,
            "coverage": kept,  # the rest's cover as the caps and the next claim count it
            "premium": Decimal(0),  # paid for the whole, on the first policy
            "liquidation_price": Decimal(part["liquidation_price"]),
            "claims_from": datetime.fromisoformat(part["since"]),
            "status": PolicyStatus.ACTIVE.value,
            "terms_hash": terms,
            "permit": None,
        }
    )
    s.add(rest_policy)
    s.flush()
    add_policy_event(
        s,
        policy=policy,
        event="continued",
        detail={"policy_id": rest_policy.id, "quantity": str(rest), "kept": str(kept), "tx": tx},
    )
    add_policy_event(
        s,
        policy=rest_policy,
        event="continuation_of",
        detail={"policy_id": policy.id, "liquidated": str(liquidated), "kept": str(kept)},
    )
    return rest_policy
