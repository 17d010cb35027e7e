"""A contract's refusal in words: the custom error a call reverted with, decoded and explained
with its arguments."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hexbytes import HexBytes
from web3.exceptions import ContractLogicError

from bti_core.chain.types import OnChainStatus
from bti_core.chain.units import format_bti, from_units

_STATUS_NAMES = {s.value: s.name.lower() for s in OnChainStatus}


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def explain_refusal(name: str, a: dict[str, Any]) -> str:
    """A sentence for a decoded custom error."""
    bti = format_bti
    msgs: dict[str, Callable[[], str]] = {
        "InsurancePoolInsufficientCapacity": lambda: (
            f"pool capacity exhausted: {bti(a['available'])} of cover left, "
            f"{bti(a['requested'])} asked"
        ),
        "ERC20InsufficientBalance": lambda: (
            f"wallet {a['sender']} holds {bti(a['balance'])}; {bti(a['needed'])} needed "
            "(get BTI from the faucet)"
        ),
        "ERC20InsufficientAllowance": lambda: (
            f"the pool may spend {bti(a['allowance'])} of {a['spender']}'s allowance; "
            f"{bti(a['needed'])} needed (approve the pool first)"
        ),
        "AccessControlUnauthorizedAccount": lambda: (
            f"{a['account']} lacks the role this call needs ({HexBytes(a['neededRole']).hex()})"
        ),
        "OwnableUnauthorizedAccount": lambda: f"{a['account']} is not the owner",
        "EnforcedPause": lambda: "the pool is paused; purchases, payouts and capital wait",
        "ExpectedPause": lambda: "the pool is not paused",
        "InsurancePoolPolicyNotActive": lambda: (
            f"policy {a['policyId']} is {_STATUS_NAMES.get(a['status'], a['status'])}, not "
            "active: a policy is paid at most once"
        ),
        "InsurancePoolUnknownPolicy": lambda: f"no policy {a['policyId']} on-chain",
        "InsurancePoolPayoutAboveCoverage": lambda: (
            f"payout {bti(a['amount'])} is above the policy's coverage {bti(a['coverage'])}"
        ),
        "InsurancePoolPayoutAboveFreeReserves": lambda: (
            f"payout {bti(a['amount'])} is above the reserves not locked by other policies "
            f"({bti(a['available'])})"
        ),
        "InsurancePoolWithdrawalAboveFree": lambda: (
            f"withdrawal {bti(a['requested'])} is above the free reserves {bti(a['free'])} "
            "(the rest backs active cover)"
        ),
        "ERC4626ExceededMaxWithdraw": lambda: (
            f"withdrawal {bti(a['assets'])} is above what {a['owner']} may withdraw now "
            f"({bti(a['max'])}: a ready request's value at most, and never capital backing "
            "active cover)"
        ),
        "ERC4626ExceededMaxRedeem": lambda: (
            f"redeeming {a['shares']} shares is above the {a['max']} {a['owner']} may redeem now"
        ),
        "ERC4626ExceededMaxDeposit": lambda: "deposits are closed (the pool is paused)",
        "InsurancePoolNoWithdrawalRequest": lambda: (
            f"{a['owner']} has no withdrawal request: request one first; it can be taken "
            "after the pool's cooldown"
        ),
        "InsurancePoolWithdrawalNotReady": lambda: (
            f"{a['owner']}'s withdrawal request is cooling down until {_utc(a['readyAt'])}"
        ),
        "InsurancePoolWithdrawalLapsed": lambda: (
            f"{a['owner']}'s withdrawal request lapsed at {_utc(a['expiresAt'])} (a ready "
            "request is open for two days): cancel it or request again"
        ),
        "InsurancePoolAboveRequest": lambda: (
            f"redeeming {from_units(a['shares']):,.6f} shares is above the "
            f"{from_units(a['requested']):,.6f} {a['owner']} requested"
        ),
        "InsurancePoolRequestAboveShares": lambda: (
            f"a request for {from_units(a['shares']):,.6f} shares is above the "
            f"{from_units(a['held']):,.6f} {a['owner']} holds outside requests"
        ),
        "InsurancePoolQuoteExpired": lambda: (
            "the signed quote's deadline passed; ask for a new quote"
        ),
        "InsurancePoolBadExpiry": lambda: "the policy's expiry is not in the future",
        "InsurancePoolNotQuoteHolder": lambda: f"the quote is for {a['holder']}, not {a['caller']}",
        "InsurancePoolBadQuoteSignature": lambda: (
            f"the quote was not signed by BTI's quoter ({a['signer']})"
        ),
        "InsurancePoolPolicyExists": lambda: (
            f"these terms were already bought as policy {a['policyId']} (no second charge)"
        ),
        "InsurancePoolReleaseTooEarly": lambda: (
            f"policy {a['policyId']}'s cover can be released by anyone only after "
            f"{_utc(a['allowedFrom'])}"
        ),
        "InsurancePoolNotPolicyHolder": lambda: (
            f"policy {a['policyId']} is held by {a['holder']}, not {a['caller']}: only its "
            "holder may change or cancel it"
        ),
        "InsurancePoolStaleAmendment": lambda: (
            f"policy {a['policyId']} changed since this change was priced: price it again"
        ),
        "InsurancePoolPolicyEnded": lambda: (
            f"policy {a['policyId']} ended at {_utc(a['expiry'])}: an ended cover cannot be "
            "changed (renew it as a new cover)"
        ),
        "InsurancePoolRefundAbovePremium": lambda: (
            f"a refund of {bti(a['refund'])} is above the {bti(a['premium'])} premium paid"
        ),
        "InsurancePoolReserveAboveCoverage": lambda: (
            f"a claim reserve of {bti(a['reserve'])} on policy {a['policyId']} is above its "
            f"{bti(a['coverage'])} cover"
        ),
        "InsurancePoolClaimOpen": lambda: (
            f"policy {a['policyId']} has a claim open (reserved {bti(a['reserved'])}): it "
            "cannot be changed or released until the claim is decided"
        ),
        "ReentrancyGuardReentrantCall": lambda: "re-entrant call refused",
        "InsurancePoolZeroAmount": lambda: "amounts must be positive",
        "InsurancePoolLengthMismatch": lambda: (
            f"a batch payout needs as many amounts and claim references as policies; got "
            f"{a['policyIds']} policies, {a['amounts']} amounts, {a['claimRefs']} references"
        ),
        "Error": lambda: str(a.get("message")),
    }
    f = msgs.get(name)
    if f is None:
        return f"{name}({', '.join(f'{k}={v}' for k, v in a.items())})"
    try:
        return f()
    except (KeyError, TypeError):
        return name


def revert_data(exc: ContractLogicError) -> str | None:
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str) else None
