"""Custodial demo wallets and the guard that keeps them (and anvil's keys) on the dev chain.

A trader's demo wallet key is ``keccak(secret ‖ "/" ‖ user_id)`` where ``secret`` is 32 random
bytes made once per install (``<data_dir>/wallet.secret``, mode 0600). Knowing a username
therefore tells nothing about its key; before this, the key was ``keccak("bti-demo-wallet/" +
user)`` and anyone who knew a username could move that trader's BTI, policy NFT and payout.

Custodial wallets exist only on a local development chain (chain id 31337): on any other
network BTI holds no trader's key, and a purchase must be authorised by the trader's own
signature (an EIP-2612 permit and the signed quote).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from bti_core.errors import ChainError, DemoOnlyError

LOCAL_CHAIN_ID = 31337

# anvil's (and Hardhat's) default accounts come from this published mnemonic: every key derived
# from it is public knowledge, usable only on a local development chain
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS_CHECKED = 1_000  # m/44'/60'/0'/0/i for i below this (anvil --accounts N uses them)
# anvil's default accounts 0–3, the ones BTI's tests and demo sign with
ANVIL_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
)


@functools.cache
def dev_addresses() -> frozenset[str]:
    """The addresses of the first `DEV_ACCOUNTS_CHECKED` keys of anvil's public mnemonic on
    the standard path ``m/44'/60'/0'/0/i`` (anvil's ten default accounts are the first ten).
    Derived once, on first use (about half a second), so only a check that needs it pays."""
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(ANVIL_MNEMONIC, "")
    return frozenset(
        Account.from_key(key_from_seed(seed, f"m/44'/60'/0'/0/{i}")).address
        for i in range(DEV_ACCOUNTS_CHECKED)
    )


def is_dev_key(key: str) -> bool:
    """Whether ``key`` is derived from anvil's published development mnemonic."""
    try:
        address = Account.from_key(key).address
    except (ValueError, TypeError):
        return False
    return address in dev_addresses()


def is_dev_address(address: str) -> bool:
    """Whether ``address`` belongs to a key of anvil's published development mnemonic."""
    try:
        return _checksum(address) in dev_addresses()
    except ValueError:
        return False


def _checksum(address: str) -> str:
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address))


def require_safe_keys(chain_id: int, keys: dict[str, str]) -> None:
    """Refuse anvil's public keys on any chain but the local dev chain: anyone holding them
    could sign quotes, buy them and pay the claims to themselves."""
    if chain_id == LOCAL_CHAIN_ID:
        return
    public = sorted(name for name, key in keys.items() if is_dev_key(key))
    if public:
        names = ", ".join(f"BTI_{n.upper()}_KEY" for n in public)
        raise ChainError(
            f"chain {chain_id} is not the local dev chain ({LOCAL_CHAIN_ID}), and {names} "
            "still hold anvil's public development keys, which anyone can use to drain the "
            "pool; set keys of your own before connecting",
            reason="DevKeysOnPublicChain",
        )


def require_local_chain(chain_id: int, what: str, url: str | None = None) -> None:
    """Refuse a demo (``what``: its name, as the user asked for it) on any chain but the local
    development chain: demo accounts have published passwords, the faucet mints BTI from
    nothing, a crash replay writes a market that pays claims, and the demo book buys cover
    with custodial keys. On a real network each of them would move real money."""
    if chain_id == LOCAL_CHAIN_ID:
        return
    where = f"chain {chain_id}" + (f" at {url}" if url else "")
    raise DemoOnlyError(
        f"{what} is a demo of the local development chain ({LOCAL_CHAIN_ID}) and is refused "
        f"on {where}: there it would move real money. Unset BTI_RPC_URL to run the demo on "
        "the local chain"
    )


def load_secret(path: Path) -> bytes:
    """The install's wallet secret, created once (atomically: concurrent first runs agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs is kept
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    raw = path.read_text().strip()
    try:
        secret = bytes.fromhex(raw)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ChainError(f"{path} does not hold a wallet secret (64 hex digits); remove it")
    return secret


class CustodialWallets:
    """The demo's custodial wallets, one per trader, derived from a per-install secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        # no secret given: a random one, so two services never share a guessable key
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    @classmethod
    def at(cls, path: Path) -> CustodialWallets:
        return cls(load_secret(path))

    def of(self, user_id: str) -> LocalAccount:
        if not user_id.strip():
            raise ChainError("a wallet needs a non-empty user id")
        return Account.from_key(keccak(self._secret + b"/" + user_id.encode()))
