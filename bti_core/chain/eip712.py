"""EIP-712 typed data for BTI's contracts: the quoter's signed quote (``InsurancePool.Quote``)
and the trader's EIP-2612 permit, as ``eth_signTypedData_v4`` takes them.

Source: EIP-712 (typed structured data hashing and signing), EIP-2612 (permit); the struct
fields are the contracts' own, in their order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from bti_core.chain.types import AmendmentTerms, QuoteTerms
from bti_core.chain.units import to_units
from bti_core.errors import ChainError

QUOTE_FIELDS = (  # InsurancePool.Quote, as the pool hashes it
    ("holder", "address"),
    ("termsHash", "bytes32"),
    ("coverage", "uint256"),
    ("premium", "uint256"),
    ("expiry", "uint64"),
    ("deadline", "uint64"),
)
AMENDMENT_FIELDS = (  # InsurancePool.Amendment, as the pool hashes it
    ("policyId", "uint256"),
    ("fromTerms", "bytes32"),
    ("termsHash", "bytes32"),
    ("coverage", "uint256"),
    ("charge", "uint256"),
    ("refund", "uint256"),
    ("expiry", "uint64"),
    ("deadline", "uint64"),
)
PERMIT_FIELDS = (  # EIP-2612
    ("owner", "address"),
    ("spender", "address"),
    ("value", "uint256"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
)


def typed_data(
    primary: str,
    fields: tuple[tuple[str, str], ...],
    domain: tuple[str, str],
    chain_id: int,
    message: dict[str, Any],
) -> dict[str, Any]:
    """EIP-712 typed data for a struct of one of BTI's contracts; ``domain`` is the contract's
    EIP-712 name and address (version "1")."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: [{"name": n, "type": t} for n, t in fields],
        },
        "primaryType": primary,
        "domain": {
            "name": domain[0],
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(domain[1]),
        },
        "message": message,
    }


def quote_message(holder: str, q: QuoteTerms) -> dict[str, Any]:
    """The ``Quote`` struct of ``q`` for ``holder`` (amounts in token units)."""
    return {
        "holder": to_checksum_address(holder),
        "termsHash": q.terms,
        "coverage": to_units(q.coverage),
        "premium": to_units(q.premium),
        "expiry": int(q.expiry),
        "deadline": int(q.deadline),
    }


def amendment_message(a: AmendmentTerms) -> dict[str, Any]:
    """The ``Amendment`` struct of ``a`` (amounts in token units)."""
    return {
        "policyId": int(a.policy_id),
        "fromTerms": a.from_terms,
        "termsHash": a.terms,
        "coverage": to_units(a.coverage),
        "charge": to_units(a.charge),
        "refund": to_units(a.refund),
        "expiry": int(a.expiry),
        "deadline": int(a.deadline),
    }


def as_tuple(message: dict[str, Any], fields: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
    """A struct message as the contract call takes it: its values in the fields' order."""
    return tuple(message[name] for name, _ in fields)


def permit_message(
    owner: str, spender: str, amount: Decimal, nonce: int, deadline: int
) -> dict[str, Any]:
    """The EIP-2612 ``Permit`` letting ``spender`` take ``amount`` of ``owner``'s tokens."""
    return {
        "owner": to_checksum_address(owner),
        "spender": to_checksum_address(spender),
        "value": to_units(amount),
        "nonce": int(nonce),
        "deadline": int(deadline),
    }


def split_signature(signature: bytes | str) -> tuple[int, bytes, bytes]:
    """``(v, r, s)`` of a 65-byte ``r ‖ s ‖ v`` signature (``v`` as 27 or 28)."""
    sig = bytes(HexBytes(signature))
    if len(sig) != 65:
        raise ChainError(
            f"a permit signature is 65 bytes (r, s, v); got {len(sig)}: sign the permit "
            "request with eth_signTypedData_v4"
        )
    v = sig[64]
    return (v if v >= 27 else v + 27), sig[:32], sig[32:64]
