"""The trader's own wallet on the dashboard, off the local chain: the browser wallet component
(`dashboard/wallet`, built from TypeScript with npm and committed as `build/wallet.js`)
connects an EIP-1193 wallet in the page and signs the premium's EIP-2612 permit; BTI relays
the purchase (`InsuranceService.buy` with ``wallet`` and ``permit``), so the trader pays no gas
and BTI never holds their key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

BUILD = Path(__file__).resolve().parent / "wallet" / "build" / "wallet.js"
SOURCE = Path(__file__).resolve().parent / "wallet" / "src" / "wallet.ts"

_component = st.components.v2.component("bti_wallet", js=BUILD.read_text())


def _noop() -> None:
    """The rerun a state or trigger change asks for is all that is needed."""


def _data(chain_id: int, **given: Any) -> dict[str, Any]:
    """What the component reads (`WalletData` in wallet.ts): what is not given is null."""
    return {
        "chainId": chain_id,
        "account": None,
        "quote": None,
        "permit": None,
        "premium": None,
    } | given


def connected(chain_id: int) -> str | None:
    """The connect panel (in the sidebar); the address the trader's wallet shared, if any."""
    with st.sidebar:
        result = _component(
            key="bti_wallet",
            data=_data(chain_id),
            on_account_change=_noop,
        )
    account = getattr(result, "account", None)
    return account if isinstance(account, str) and account else None


def sign_and_buy(
    chain_id: int, account: str, quote_id: str, permit: dict[str, Any], premium: str
) -> dict[str, Any] | None:
    """The buy button of a quote: the permit signed in the wallet ({signature, deadline,
    account, quote}) in the rerun that follows the signature, else None."""
    result = _component(
        key=f"bti_wallet_buy_{quote_id}",
        data=_data(chain_id, account=account, quote=quote_id, permit=permit, premium=premium),
        on_signed_change=_noop,
    )
    signed = getattr(result, "signed", None)
    if isinstance(signed, dict) and signed.get("quote") == quote_id:
        return signed
    return None
