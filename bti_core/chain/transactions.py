"""How BTI talks to a node: reads that fail as `ChainError` (a revert with the contract's
decoded reason), and the one way a transaction leaves BTI (under the sender's nonce lock, sent
again on the next nonce when another host of the same key took it, then waited for)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception, Web3RPCError

from bti_core.chain.artifacts import decode_revert, refusal_type
from bti_core.chain.nonces import NonceLock
from bti_core.chain.reverts import explain_refusal, revert_data
from bti_core.errors import ChainError, TransactionTimeoutError

# what a node says when another sender of the same key took the nonce first
_NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced")
_SEND_ATTEMPTS = 8


@dataclass(eq=False)
class Transactions:
    """Reads and transactions on the node at ``url`` (``w3``) of chain ``chain_id()``."""

    w3: Web3
    url: str
    _: KW_ONLY
    chain_id: Callable[[], int]
    timeout: float
    nonce_lock: NonceLock

    def rpc(self, fn: Callable[[], Any], what: str = "call") -> Any:
        """Run a read, turning every failure into a ChainError."""
        try:
            return fn()
        except ContractLogicError as exc:
            raise self.revert_error(exc, what) from exc
        except (requests.exceptions.RequestException, OSError) as exc:
            raise ChainError(
                f"chain node at {self.url} is not answering ({type(exc).__name__}); "
                "start it with `make run` or set BTI_RPC_URL"
            ) from exc
        except (Web3RPCError, Web3Exception) as exc:
            raise ChainError(f"{what} failed: {exc}") from exc

    def revert_error(self, exc: ContractLogicError, what: str) -> ChainError:
        decoded = decode_revert(revert_data(exc))
        if decoded is None:
            return ChainError(f"{what} reverted: {exc.message or exc}", reason="revert")
        name, args = decoded
        return refusal_type(name)(
            f"{what} refused: {explain_refusal(name, args)}", reason=name, args=args
        )

    def transact(self, call: Any, sender: LocalAccount, what: str, *, value: int = 0) -> Any:
        """Estimate (a revert surfaces here with its reason), sign, send, wait; the receipt."""
        tx_params = {"from": sender.address, "value": value, "chainId": self.chain_id()}

        def build(nonce: int) -> dict[str, Any]:
            gas = self.rpc(lambda: call.estimate_gas(tx_params), what)
            return dict(
                self.rpc(
                    lambda: call.build_transaction(
                        {**tx_params, "nonce": nonce, "gas": int(gas * 1.25) + 10_000}
                    ),
                    what,
                )
            )

        return self.send(build, sender, what)

    def send(self, build: Callable[[int], dict[str, Any]], sender: LocalAccount, what: str) -> Any:
        """The one way a transaction leaves BTI: under the sender's nonce lock, take the next
        nonce, build (``build(nonce)``), sign and send; then wait for the receipt. A revert is
        a `ChainError` with the pool's decoded reason."""
        for attempt in range(_SEND_ATTEMPTS):
            with self.nonce_lock.hold(self.chain_id(), sender.address):
                nonce = int(
                    self.rpc(
                        lambda: self.w3.eth.get_transaction_count(sender.address, "pending"),
                        what,
                    )
                )
                tx = build(nonce)
                raw = sender.sign_transaction(tx).raw_transaction
                try:
                    tx_hash = self.rpc(
                        lambda raw=raw: self.w3.eth.send_raw_transaction(raw),  # type: ignore[misc]
                        what,
                    )
                    break
                except ChainError as exc:
                    # the same key used from another host took this nonce: take the next one
                    taken = any(m in str(exc).lower() for m in _NONCE_TAKEN)
                    if not taken or attempt == _SEND_ATTEMPTS - 1:
                        raise
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))  # let the other host go on
        return self.wait(tx_hash, what, int(tx["gas"]))

    def wait(self, tx_hash: Any, what: str, gas_limit: int) -> Any:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.timeout, poll_latency=0.01
            )
        except TimeExhausted as exc:
            raise TransactionTimeoutError(
                f"{what}: transaction {HexBytes(tx_hash).to_0x_hex()} not mined within "
                f"{self.timeout:.0f} s; it may still be mined (reconcile will settle it)"
            ) from exc
        except (requests.exceptions.RequestException, OSError) as exc:
            raise ChainError(f"chain node at {self.url} stopped answering during {what}") from exc
        if receipt["status"] != 1:
            if receipt["gasUsed"] >= gas_limit:
                raise ChainError(f"{what} ran out of gas ({gas_limit:,})", reason="out_of_gas")
            raise ChainError(f"{what} reverted in block {receipt['blockNumber']}", reason="revert")
        return receipt
