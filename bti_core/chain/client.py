"""The chain client: deploy or load BTI's contracts, then buy, pay, move capital and read.

Amounts cross this boundary as `Decimal` BTI and become integer token units only in
`bti_core.chain.units`. Every failure (node down, revert with its decoded reason, out of gas,
missing deployment) becomes a `ChainError` whose message says what happened and what to do.

Wallets: the service keys (admin, claims, quoter) come from settings (anvil's well-known dev
keys by default, refused on any chain but the local one: `bti_core.chain.wallets`). Traders'
demo wallets are custodial on the local chain only, derived from a per-install secret.

Nonces: every transaction of a key is signed and sent under that key's nonce lock, a file lock
shared by every process on the machine (`NonceLock`), so workers, CLI runs and dashboards that
send from the same key at once never collide on "nonce too low".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from bti_core.chain.artifacts import PROJECT_CONTRACTS, artifact
from bti_core.chain.eip712 import (
    AMENDMENT_FIELDS,
    PERMIT_FIELDS,
    QUOTE_FIELDS,
    amendment_message,
    as_tuple,
    permit_message,
    quote_message,
    split_signature,
    typed_data,
)
from bti_core.chain.events import EventDecoder
from bti_core.chain.nonces import NonceLock
from bti_core.chain.transactions import Transactions
from bti_core.chain.types import (
    AmendmentTerms,
    DecodedEvent,
    Deployment,
    OnChainPolicy,
    OnChainStatus,
    PoolStats,
    ProviderPosition,
    Purchase,
    QuoteTerms,
)
from bti_core.chain.units import from_units, to_units
from bti_core.chain.wallets import ANVIL_KEYS, require_local_chain
from bti_core.errors import ChainError

#: Seconds from a withdrawal request to its first moment on a pool `deploy` makes by default:
#: seven days, the claim grace (a claim triggered inside a cover's window may be filed and
#: decided up to seven days after it ends), so a claim triggered before a request is decided
#: before that capital can leave; between Hyperliquid HLP's four days and Drift's ~13.
WITHDRAWAL_COOLDOWN = 7 * 24 * 3600
MAX_WITHDRAWAL_COOLDOWN = 90 * 24 * 3600


class ChainClient:
    """BTI's contracts on one node."""

    def __init__(
        self,
        url: str | Web3,
        deployment: Deployment | None = None,
        *,
        admin_key: str = ANVIL_KEYS[0],
        claims_key: str = ANVIL_KEYS[1],
        quoter_key: str = ANVIL_KEYS[2],
        on_commit: Callable[[], object] | None = None,
        timeout: float = 30.0,
        nonce_lock: NonceLock | None = None,
    ):
        """``url`` is a node's JSON-RPC address or a ready `Web3` (any provider: tests, a
        wallet's, a node with middleware of its own)."""
        if isinstance(url, Web3):
            self.w3 = url
            self.url = str(getattr(url.provider, "endpoint_uri", None) or url.provider)
        else:
            self.url = url
            # eth_chainId and other static answers cached: web3 checks every call against them
            self.w3 = Web3(
                Web3.HTTPProvider(
                    url, request_kwargs={"timeout": timeout}, cache_allowed_requests=True
                )
            )
        self.admin: LocalAccount = Account.from_key(admin_key)
        self.claims: LocalAccount = Account.from_key(claims_key)
        self.quoter: LocalAccount = Account.from_key(quoter_key)
        self.on_commit = on_commit  # called after each transaction that matters (snapshots)
        self.timeout = timeout
        self.nonce_lock = nonce_lock or NonceLock()
        self._deployment = deployment
        self._chain_id: int | None = None
        self._contracts: dict[tuple[str, str], Contract] = {}
        self._events = EventDecoder(self.w3)
        self.tx = Transactions(
            self.w3,
            self.url,
            chain_id=lambda: self.chain_id,
            timeout=timeout,
            nonce_lock=self.nonce_lock,
        )

    # ------------------------------------------------------------------ plumbing

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id))
        return self._chain_id

    @property
    def deployment(self) -> Deployment:
        if self._deployment is None:
            raise ChainError(
                "BTI's contracts are not deployed on this node; `bti chain status` deploys them"
            )
        return self._deployment

    def _contract(self, name: str, address: str) -> Contract:
        # built once per address: web3 spends ~20 ms building a contract's function table
        key = (name, address.lower())
        c = self._contracts.get(key)
        if c is None:
            c = self.w3.eth.contract(address=to_checksum_address(address), abi=artifact(name).abi)
            self._contracts[key] = c
        return c

    @property
    def token(self) -> Contract:
        return self._contract("BTIToken", self.deployment.token)

    @property
    def pool(self) -> Contract:
        return self._contract("InsurancePool", self.deployment.pool)

    @property
    def policy_token(self) -> Contract:
        return self._contract("BTIPolicy", self.deployment.policy)

    def _rpc(self, fn: Callable[[], Any], what: str = "call") -> Any:
        """Run a read, turning every failure into a ChainError (`Transactions.rpc`)."""
        return self.tx.rpc(fn, what)

    def transact(self, call: Any, sender: LocalAccount, what: str, *, value: int = 0) -> Any:
        """Estimate, sign, send, wait (`Transactions.transact`); the receipt."""
        return self.tx.transact(call, sender, what, value=value)

    def send(self, build: Callable[[int], dict[str, Any]], sender: LocalAccount, what: str) -> Any:
        """Send under the sender's nonce lock and wait (`Transactions.send`); the receipt."""
        return self.tx.send(build, sender, what)

    def _committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    def persist(self) -> None:
        """Make what was mined durable: a local node's snapshot (``on_commit``); nothing to do
        on a chain that keeps its own blocks."""
        self._committed()

    def _deploy(self, name: str, *args: Any) -> str:
        art = artifact(name)
        ctor = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(*args)
        receipt = self.transact(ctor, self.admin, f"deploy {name}")
        return str(receipt["contractAddress"])

    # ------------------------------------------------------------------ deployment

    def use_deployment(self, deployment: Deployment | None) -> None:
        self._deployment = deployment

    def is_deployed(self) -> bool:
        d = self._deployment
        if d is None or d.chain_id != self.chain_id:
            return False
        code = self._rpc(lambda: self.w3.eth.get_code(to_checksum_address(d.pool)))
        return len(code) > 0

    def outdated(self) -> list[str]:
        """The deployed contracts whose code is not the size this BTI's compiled contracts
        have: a deployment made by an older BTI (its pool lacks functions this one calls).
        The size is what can be compared: the immutables set at deployment fill fixed-size
        slots, so one version's code always has one size."""
        d = self.deployment
        out = []
        for name, address in zip(PROJECT_CONTRACTS, (d.token, d.policy, d.pool), strict=True):
            if len(self._code(address)) != artifact(name).runtime_size:
                out.append(name)
        return out

    def _code(self, address: str) -> bytes:
        return bytes(self._rpc(lambda: self.w3.eth.get_code(to_checksum_address(address))))

    def deploy(
        self, seed_capital: Decimal = Decimal(0), *, withdrawal_cooldown: int = WITHDRAWAL_COOLDOWN
    ) -> Deployment:
        """Deploy token, policy NFT and pool; hand the NFT to the pool; fund gas for the service
        keys; deposit ``seed_capital`` BTI (minted to the admin) as the pool's first capital.
        ``withdrawal_cooldown``: seconds between a provider's withdrawal request and its first
        moment, fixed for the pool's life."""
        if not 0 <= withdrawal_cooldown <= MAX_WITHDRAWAL_COOLDOWN:
            raise ChainError(
                f"withdrawal cooldown must be 0 to {MAX_WITHDRAWAL_COOLDOWN:,} seconds "
                f"(90 days); got {withdrawal_cooldown!r}"
            )
        first = int(self._rpc(lambda: self.w3.eth.block_number)) + 1
        token = self._deploy("BTIToken", self.admin.address)
        policy = self._deploy("BTIPolicy", self.admin.address)
        pool = self._deploy(
            "InsurancePool",
            token,
            policy,
            self.admin.address,
            self.claims.address,
            self.quoter.address,
            int(withdrawal_cooldown),
        )
        self._deployment = Deployment(self.chain_id, token, policy, pool, first)
        self.transact(
            self.policy_token.functions.transferOwnership(pool), self.admin, "hand NFT to pool"
        )
        for acct in {self.claims.address, self.quoter.address} - {self.admin.address}:
            self.send_gas(acct, Decimal("10"))
        if seed_capital > 0:  # the operator's explicit seed (`bti chain deploy`): a mint
            self._mint(self.admin.address, seed_capital)
            self.deposit(self.admin, seed_capital)
        self._committed()
        return self._deployment

    # ------------------------------------------------------------------ wallets

    def send_gas(self, to: str, eth: Decimal) -> None:
        """Send ``eth`` of the chain's native coin for gas from the admin."""
        fee = int(self._rpc(lambda: self.w3.eth.gas_price)) * 2 + 1

        def build(nonce: int) -> dict[str, Any]:
            return {
                "to": to_checksum_address(to),
                "value": to_units(eth),
                "chainId": self.chain_id,
                "gas": 21_000,
                "maxFeePerGas": fee,
                "maxPriorityFeePerGas": 1,
                "nonce": nonce,
            }

        self.send(build, self.admin, "send gas")

    def faucet(self, to: str, amount: Decimal, *, gas: Decimal = Decimal("1")) -> str:
        """Demo faucet: mint ``amount`` BTI to ``to`` and top its gas up to ``gas``. Only on
        the local development chain: anywhere else it would print money."""
        require_local_chain(self.chain_id, "the faucet", self.url)
        receipt = self._mint(to, amount)
        have = Decimal(self._rpc(lambda: self.w3.eth.get_balance(to_checksum_address(to))))
        if gas > 0 and have < to_units(gas) / 2:
            self.send_gas(to, gas)
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def _mint(self, to: str, amount: Decimal) -> Any:
        if amount <= 0:
            raise ChainError(f"faucet amount must be positive; got {amount}")
        if amount > Decimal(1_000_000_000):
            raise ChainError(f"faucet amount must be at most 1,000,000,000 BTI; got {amount:,}")
        return self.transact(
            self.token.functions.mint(to_checksum_address(to), to_units(amount)),
            self.admin,
            "mint",
        )

    def balance(self, address: str) -> Decimal:
        """BTI balance of ``address``."""
        units = self._rpc(
            lambda: self.token.functions.balanceOf(to_checksum_address(address)).call()
        )
        return from_units(int(units))

    def gas_balance(self, address: str) -> Decimal:
        return from_units(
            int(self._rpc(lambda: self.w3.eth.get_balance(to_checksum_address(address))))
        )

    def ensure_allowance(self, wallet: LocalAccount, amount: Decimal) -> None:
        """Let the pool spend at least ``amount`` of the wallet's BTI (one unlimited approval,
        as a wallet's "enable BTI" step does)."""
        need = to_units(amount)
        have = int(
            self._rpc(
                lambda: self.token.functions.allowance(wallet.address, self.deployment.pool).call()
            )
        )
        if have < need:
            self.transact(
                self.token.functions.approve(self.deployment.pool, 2**256 - 1), wallet, "approve"
            )

    # ------------------------------------------------------------------ policies

    def sign_quote(self, quote: dict[str, Any]) -> bytes:
        """The quoter's EIP-712 signature of a quote (the struct InsurancePool verifies)."""
        typed = typed_data(
            "Quote", QUOTE_FIELDS, ("BTI InsurancePool", self.deployment.pool), self.chain_id, quote
        )
        return bytes(self.quoter.sign_typed_data(full_message=typed).signature)

    def _signed_quote(self, holder: str, q: QuoteTerms) -> tuple[tuple[Any, ...], bytes]:
        quote = quote_message(holder, q)
        return as_tuple(quote, QUOTE_FIELDS), self.sign_quote(quote)

    def _purchase(self, receipt: Any) -> Purchase:
        (ev,) = self.pool.events.PolicyPurchased().process_receipt(receipt, errors=DISCARD)
        self._committed()
        return Purchase(
            int(ev["args"]["policyId"]),
            receipt["transactionHash"].to_0x_hex(),
            int(receipt["blockNumber"]),
        )

    def buy_policy(self, wallet: LocalAccount, q: QuoteTerms) -> Purchase:
        """Pay ``q.premium`` BTI from ``wallet`` (a key BTI holds: the demo's custodial wallets)
        for cover of at most ``q.coverage`` until ``q.expiry``. Idempotent by ``q.terms``:
        terms already bought raise ``InsurancePoolPolicyExists`` and charge nothing."""
        self.ensure_allowance(wallet, q.premium)
        quote, sig = self._signed_quote(wallet.address, q)
        receipt = self.transact(self.pool.functions.buyPolicy(quote, sig), wallet, "buy policy")
        return self._purchase(receipt)

    def sign_amendment(self, a: AmendmentTerms) -> bytes:
        """The quoter's EIP-712 signature of a change to a policy (`InsurancePool.Amendment`)."""
        typed = typed_data(
            "Amendment",
            AMENDMENT_FIELDS,
            ("BTI InsurancePool", self.deployment.pool),
            self.chain_id,
            amendment_message(a),
        )
        return bytes(self.quoter.sign_typed_data(full_message=typed).signature)

    def amend_policy(self, wallet: LocalAccount, a: AmendmentTerms) -> str:
        """Change (or, with coverage 0, cancel) the policy ``wallet`` holds as ``a`` says,
        paying ``a.charge`` and receiving ``a.refund``; once only (the pool refuses a change
        priced on terms the policy no longer has)."""
        if a.charge > 0:
            self.ensure_allowance(wallet, a.charge)
        message = amendment_message(a)
        receipt = self.transact(
            self.pool.functions.amendPolicy(
                as_tuple(message, AMENDMENT_FIELDS), self.sign_amendment(a)
            ),
            wallet,
            "change policy",
        )
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def permit_request(self, owner: str, amount: Decimal, deadline: int) -> dict[str, Any]:
        """The EIP-2612 permit a trader signs in their own wallet (``eth_signTypedData_v4``)
        to let the pool take ``amount`` BTI for a premium: BTI never holds their key."""
        nonce = int(
            self._rpc(lambda: self.token.functions.nonces(to_checksum_address(owner)).call())
        )
        return typed_data(
            "Permit",
            PERMIT_FIELDS,
            ("BTI", self.deployment.token),
            self.chain_id,
            permit_message(owner, self.deployment.pool, amount, nonce, deadline),
        )

    def buy_policy_with_permit(
        self,
        holder: str,
        permit_signature: bytes,
        *,
        permit_deadline: int,
        q: QuoteTerms,
    ) -> Purchase:
        """Relay a purchase for ``holder``, whose own wallet signed the permit of ``q.premium``
        (`permit_request`); BTI's admin key pays the gas, the policy token goes to the holder.
        Idempotent by ``terms`` as `buy_policy` is."""
        v, r, s_ = split_signature(permit_signature)
        quote, qsig = self._signed_quote(holder, q)
        call = self.pool.functions.buyPolicyWithPermit(quote, qsig, int(permit_deadline), v, r, s_)
        return self._purchase(self.transact(call, self.admin, "buy policy (permit)"))

    def policy_id_by_terms(self, terms: bytes) -> int:
        return int(self._rpc(lambda: self.pool.functions.policyIdByTerms(terms).call()))

    def purchase_of(self, terms: bytes) -> Purchase | None:
        """The purchase of ``terms`` if it is on-chain (for reconciliation), else None."""
        pid = self.policy_id_by_terms(terms)
        if pid == 0:
            return None
        logs = self._rpc(
            lambda: self.pool.events.PolicyPurchased().get_logs(
                from_block=self.deployment.block,
                to_block="latest",
                argument_filters={"termsHash": terms},
            )
        )
        for log in logs:
            return Purchase(pid, log["transactionHash"].to_0x_hex(), int(log["blockNumber"]))
        return Purchase(pid, "", 0)

    def amendment_of(self, terms: bytes) -> str | None:
        """The transaction of the change to ``terms`` if the pool made it (reconciliation)."""
        logs = self._rpc(
            lambda: self.pool.events.PolicyAmended().get_logs(
                from_block=self.deployment.block,
                to_block="latest",
                argument_filters={"termsHash": terms},
            )
        )
        for log in logs:
            return str(log["transactionHash"].to_0x_hex())
        return None

    def policy(self, policy_id: int) -> OnChainPolicy:
        p = self._rpc(lambda: self.pool.functions.policy(int(policy_id)).call(), "policy lookup")
        owner = self._rpc(lambda: self.policy_token.functions.ownerOf(int(policy_id)).call())
        return OnChainPolicy(
            policy_id=int(policy_id),
            buyer=str(p[0]),
            owner=str(owner),
            start=int(p[1]),
            expiry=int(p[2]),
            status=OnChainStatus(int(p[3])),
            coverage=from_units(int(p[4])),
            premium=from_units(int(p[5])),
            paid=from_units(int(p[6])),
            terms_hash=HexBytes(p[7]).to_0x_hex(),
            reserved=from_units(int(p[8])),
        )

    def pay_claim(self, policy_id: int, amount: Decimal, claim_ref: bytes) -> str:
        """Pay ``amount`` BTI on ``policy_id`` to its policy token's owner (claims role)."""
        call = self.pool.functions.payClaim(int(policy_id), to_units(amount), claim_ref)
        receipt = self.transact(call, self.claims, "pay claim")
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def pay_claim_part(
        self, policy_id: int, amount: Decimal, coverage: Decimal, terms: bytes, claim_ref: bytes
    ) -> str:
        """Pay ``amount`` BTI of ``policy_id`` (a partial liquidation's share) to its token's
        owner and keep the rest of the cover active: ``coverage`` BTI under the new ``terms``
        hash (claims role). Sent again after a crash it is refused (the terms are used)."""
        call = self.pool.functions.payClaimPart(
            int(policy_id), to_units(amount), to_units(coverage), terms, claim_ref
        )
        receipt = self.transact(call, self.claims, "pay part of a claim")
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def pay_claims(
        self, items: Sequence[tuple[int, Decimal, bytes]], *, persist: bool = True
    ) -> tuple[str, set[int]]:
        """Pay each ``(policy id, amount, claim ref)`` in one transaction (claims role); the
        transaction and the policies it paid (the others were no longer active: skipped).
        Any other refusal reverts the whole batch (`ChainError` with the reason). With
        ``persist=False`` the caller makes it durable (`persist`) before relying on it: one
        snapshot for many batches."""
        if not items:
            raise ValueError("a batch payout needs at least one claim")
        call = self.pool.functions.payClaims(
            [int(p) for p, _, _ in items],
            [to_units(a) for _, a, _ in items],
            [bytes(r) for _, _, r in items],
        )
        receipt = self.transact(call, self.claims, f"pay {len(items)} claims")
        if persist:
            self._committed()
        paid = {
            int(ev["args"]["policyId"])
            for ev in self.pool.events.ClaimPaid().process_receipt(receipt, errors=DISCARD)
        }
        return str(receipt["transactionHash"].to_0x_hex()), paid

    def set_claim_reserves(self, items: Sequence[tuple[int, Decimal]]) -> str:
        """Book each ``(policy id, reserve)`` of open claims in one transaction (claims
        role; 0 releases a reserve). The pool sets rather than adds, so sending the same
        reserves again after a crash changes nothing."""
        if not items:
            raise ValueError("setting claim reserves needs at least one policy")
        call = self.pool.functions.setClaimReserves(
            [int(p) for p, _ in items], [to_units(a) for _, a in items]
        )
        receipt = self.transact(call, self.claims, f"reserve {len(items)} claims")
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def claim_payments(
        self,
        policy_ids: Iterable[int],
        refs: Mapping[int, str] | None = None,
        *,
        any_payout: bool = False,
    ) -> dict[int, tuple[str, Decimal]]:
        """`claim_payment` of many policies with one log query: policy → (tx, amount), for
        those the pool paid — with ``refs`` (policy → claimRef), the payout carrying the
        claim's own reference (a policy paid in parts has several), or with ``any_payout`` its
        first payout when none does (a policy no longer active was paid by someone)."""
        wanted = {int(p) for p in policy_ids}
        if not wanted:
            return {}
        want_ref = {int(k): HexBytes(v) for k, v in (refs or {}).items()}
        logs = self._rpc(
            lambda: self.pool.events.ClaimPaid().get_logs(
                from_block=self.deployment.block, to_block="latest"
            )
        )
        out: dict[int, tuple[str, Decimal]] = {}
        first: dict[int, tuple[str, Decimal]] = {}
        for log in logs:
            pid = int(log["args"]["policyId"])
            if pid not in wanted or pid in out:
                continue
            found = (log["transactionHash"].to_0x_hex(), from_units(int(log["args"]["amount"])))
            first.setdefault(pid, found)
            if pid not in want_ref or HexBytes(log["args"]["claimRef"]) == want_ref[pid]:
                out[pid] = found
        return {**first, **out} if any_payout else out

    def claim_payment(
        self, policy_id: int, ref: str | None = None, *, any_payout: bool = False
    ) -> tuple[str, Decimal] | None:
        """(tx hash, amount) of the payout of ``policy_id`` if the pool paid it (the one
        carrying claimRef ``ref`` when given; with ``any_payout`` its first one when none
        does), else None."""
        logs = self._rpc(
            lambda: self.pool.events.ClaimPaid().get_logs(
                from_block=self.deployment.block,
                to_block="latest",
                argument_filters={"policyId": int(policy_id)},
            )
        )
        found = [
            (log["transactionHash"].to_0x_hex(), from_units(int(log["args"]["amount"])))
            for log in logs
            if ref is None or HexBytes(log["args"]["claimRef"]) == HexBytes(ref)
        ]
        if not found and any_payout and logs:
            log = logs[0]
            return log["transactionHash"].to_0x_hex(), from_units(int(log["args"]["amount"]))
        return found[0] if found else None

    def release_cover(self, policy_id: int, sender: LocalAccount | None = None) -> str:
        receipt = self.transact(
            self.pool.functions.releaseCover(int(policy_id)), sender or self.claims, "release cover"
        )
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    # ------------------------------------------------------------------ capital

    def deposit(self, wallet: LocalAccount, amount: Decimal) -> str:
        """Deposit ``amount`` BTI of capital from ``wallet`` for pool shares."""
        self.ensure_allowance(wallet, amount)
        receipt = self.transact(
            self.pool.functions.deposit(to_units(amount), wallet.address), wallet, "deposit"
        )
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def request_withdrawal(self, wallet: LocalAccount, amount: Decimal | None = None) -> str:
        """Ask to withdraw ``amount`` BTI of ``wallet``'s capital at today's share price (None:
        all of its free shares): the shares go into the pool's escrow, still invested, and the
        cooldown starts again for everything pending (`InsurancePool.requestWithdrawal`)."""
        held = int(self._rpc(lambda: self.pool.functions.balanceOf(wallet.address).call()))
        if amount is None:
            shares = held
        else:
            if amount <= 0:
                raise ChainError(f"a withdrawal request must be positive; got {amount} BTI")
            units = to_units(amount)
            shares = int(self._rpc(lambda: self.pool.functions.previewWithdraw(units).call()))
            value = from_units(
                int(self._rpc(lambda: self.pool.functions.previewRedeem(held).call()))
            )
            if shares > held and units <= to_units(value):
                shares = held  # all of it, asked as the value shown (which is rounded down)
            if shares > held:
                raise ChainError(
                    f"a withdrawal request of {amount:,.2f} BTI is above the "
                    f"{value:,.2f} BTI {wallet.address} holds in the pool (outside requests)"
                )
        if shares == 0:
            raise ChainError(f"{wallet.address} holds no pool shares outside a request")
        receipt = self.transact(
            self.pool.functions.requestWithdrawal(shares), wallet, "request withdrawal"
        )
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def cancel_withdrawal(self, wallet: LocalAccount) -> str:
        """Give ``wallet``'s pending shares back (a lapsed request too)."""
        receipt = self.transact(self.pool.functions.cancelWithdrawal(), wallet, "cancel withdrawal")
        self._committed()
        return str(receipt["transactionHash"].to_0x_hex())

    def withdraw(self, wallet: LocalAccount, amount: Decimal | None = None) -> tuple[str, Decimal]:
        """Take ``wallet``'s ready request: ``amount`` BTI of it at today's share price, or all
        of it (None), never capital locked by active cover; (transaction, BTI received)."""
        f = self.pool.functions
        if amount is None:
            # all the pool lets go now; without a ready request, the request's shares, so that
            # the pool's refusal says why (none, cooling down until …, lapsed)
            shares = int(self._rpc(lambda: f.maxRedeem(wallet.address).call())) or int(
                self._rpc(lambda: f.withdrawalRequest(wallet.address).call())[0]
            )
            call = f.redeem(shares, wallet.address, wallet.address)
        else:
            call = f.withdraw(to_units(amount), wallet.address, wallet.address)
        receipt = self.transact(call, wallet, "withdraw")
        self._committed()
        (ev,) = self.pool.events.CapitalWithdrawn().process_receipt(receipt, errors=DISCARD)
        return (
            str(receipt["transactionHash"].to_0x_hex()),
            from_units(int(ev["args"]["assets"])),
        )

    def max_withdraw(self, address: str) -> Decimal:
        return from_units(
            int(
                self._rpc(
                    lambda: self.pool.functions.maxWithdraw(to_checksum_address(address)).call()
                )
            )
        )

    def share_price(self) -> Decimal:
        """BTI one pool share is worth now (what redeeming it would pay)."""
        one = 10**18
        return from_units(int(self._rpc(lambda: self.pool.functions.convertToAssets(one).call())))

    def provider(self, address: str) -> ProviderPosition:
        """``address``'s shares, request and values, read at one block."""
        a = to_checksum_address(address)
        f = self.pool.functions
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        at = int(block["number"])

        def call(fn: Any) -> Any:
            return self._rpc(lambda: fn.call(block_identifier=at))

        held = int(call(f.balanceOf(a)))
        shares, ready_at, expires_at = call(f.withdrawalRequest(a))
        one = 10**18
        return ProviderPosition(
            address=a,
            shares=from_units(held),
            requested=from_units(int(shares)),
            value=from_units(int(call(f.previewRedeem(held)))),
            requested_value=from_units(int(call(f.previewRedeem(int(shares))))),
            ready_at=int(ready_at),
            expires_at=int(expires_at),
            can_withdraw_now=from_units(int(call(f.maxWithdraw(a)))),
            share_price=from_units(int(call(f.convertToAssets(one)))),
            cooldown=int(call(f.withdrawalCooldown())),
            window=int(call(f.WITHDRAWAL_WINDOW())),
            now=int(block["timestamp"]),
        )

    def pause(self) -> str:
        r = self.transact(self.pool.functions.pause(), self.admin, "pause")
        self._committed()
        return str(r["transactionHash"].to_0x_hex())

    def unpause(self) -> str:
        r = self.transact(self.pool.functions.unpause(), self.admin, "unpause")
        self._committed()
        return str(r["transactionHash"].to_0x_hex())

    def pool_stats(self) -> PoolStats:
        f = self.pool.functions

        def u(call: Any) -> Decimal:
            return from_units(int(self._rpc(lambda: call.call())))

        return PoolStats(
            reserves=u(f.reserves()),
            locked=u(f.lockedCoverage()),
            free=u(f.freeReserves()),
            premiums_in=u(f.premiumsIn()),
            claims_paid=u(f.claimsPaid()),
            capital_in=u(f.capitalIn()),
            capital_out=u(f.capitalOut()),
            policies=int(self._rpc(lambda: f.policyCount().call())),
            paused=bool(self._rpc(lambda: f.paused().call())),
            premiums_refunded=u(f.premiumsRefunded()),
            claims_reserved=u(f.claimsReserved()),
        )

    # ------------------------------------------------------------------ events

    def decode_logs(self, logs: Iterable[Any]) -> list[DecodedEvent | dict[str, Any]]:
        """Decode logs by the project's ABIs; a log of no known event is returned raw."""
        return self._events.decode(logs)

    def events(
        self,
        from_block: int | None = None,
        to_block: Any = "latest",
        *,
        addresses: Iterable[str] | None = None,
    ) -> list[DecodedEvent | dict[str, Any]]:
        """The project contracts' events in a block range (from the deployment block by
        default), of ``addresses`` only when given (e.g. the pool's)."""
        d = self.deployment
        start = d.block if from_block is None else max(from_block, 0)
        of = list(addresses) if addresses is not None else [d.token, d.policy, d.pool]
        logs = self._rpc(
            lambda: self.w3.eth.get_logs(
                {
                    "fromBlock": start,
                    "toBlock": to_block,
                    "address": [to_checksum_address(a) for a in of],
                }
            )
        )
        return self.decode_logs(logs)
