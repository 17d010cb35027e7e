"""Explorer queries over BTI's chain: blocks, transactions with decoded events, addresses,
policies, the pool, and a search box. Every query is bounded: block lists walk back from the
head, event queries start at the deployment block; nothing scans from genesis."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import pandas as pd
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from bti_core.chain.artifacts import PROJECT_CONTRACTS
from bti_core.chain.client import ChainClient
from bti_core.chain.types import DecodedEvent, OnChainPolicy, PoolStats
from bti_core.chain.units import from_units
from bti_core.errors import ChainError

SearchKind = Literal["block", "tx", "address", "policy"]
_TX = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
_POLICY = re.compile(r"^(?:policy\s*[:#]?\s*|#|p)(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class TxView:
    hash: str
    block: int
    time: datetime | None
    sender: str
    to: str | None
    contract: str | None  # the project contract called, if any
    function: str | None  # decoded call, e.g. "buyPolicy"
    arguments: dict[str, Any]
    status: str  # "success" | "reverted" | "pending"
    gas_used: int | None
    value_eth: Decimal
    events: list[DecodedEvent] = field(default_factory=list)
    raw_logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AddressView:
    address: str
    label: str | None
    bti: Decimal
    eth: Decimal
    pool_shares: Decimal
    nonce: int
    policies: list[int]
    events: list[DecodedEvent]


@dataclass(frozen=True)
class PolicyView:
    policy: OnChainPolicy
    events: list[DecodedEvent]

    @property
    def purchase_tx(self) -> str | None:
        return next((e.tx_hash for e in self.events if e.name == "PolicyPurchased"), None)

    @property
    def payout_tx(self) -> str | None:
        return next((e.tx_hash for e in self.events if e.name == "ClaimPaid"), None)


# event arguments that are token amounts (18 decimals), times (Unix seconds), or token ids
AMOUNT_ARGS = frozenset({"value", "amount", "premium", "coverage", "assets", "shares"})
TIME_ARGS = frozenset({"expiry", "deadline"})
ID_ARGS = frozenset({"policyId", "tokenId"})


def readable_arg(name: str, value: Any, label: Callable[[str], str | None] | None = None) -> str:
    """An event argument as a person reads it: BTI with separators, a date, ``#7``, or an
    address with its label (``0x5FbD…0aa3 (InsurancePool)``)."""
    if name in AMOUNT_ARGS and isinstance(value, int):
        unit = " shares" if name == "shares" else " BTI"
        return f"{from_units(value):,.2f}{unit}"
    if name in TIME_ARGS and isinstance(value, int):
        return f"{datetime.fromtimestamp(value, UTC):%Y-%m-%d %H:%M} UTC"
    if name in ID_ARGS and isinstance(value, int):
        return f"#{value}"
    if isinstance(value, str) and _ADDR.match(value):
        tag = label(value) if label else None
        short = f"{value[:6]}…{value[-4:]}"
        return f"{short} ({tag})" if tag else short
    if isinstance(value, bytes | bytearray):
        value = HexBytes(value).to_0x_hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) > 42:  # a hash
        return f"{value[:10]}…"
    return str(value)


def readable_args(e: DecodedEvent, label: Callable[[str], str | None] | None = None) -> str:
    return ", ".join(f"{k} {readable_arg(k, v, label)}" for k, v in e.args.items())


def classify(query: str) -> tuple[SearchKind, str | int]:
    """What a search string names: a block number, a tx hash, an address or a policy id."""
    q = query.strip()
    if q.isdigit():
        return "block", int(q)
    if _TX.match(q):
        return "tx", q.lower()
    if _ADDR.match(q):
        return "address", to_checksum_address(q)
    m = _POLICY.match(q)
    if m:
        return "policy", int(m.group(1))
    raise ValueError(
        f"cannot search for {query!r}: enter a block number (e.g. 12), a transaction hash "
        "(0x + 64 hex digits), an address (0x + 40 hex digits) or a policy (#3 or policy 3)"
    )


class Explorer:
    def __init__(self, client: ChainClient):
        self.c = client
        self.w3 = client.w3
        d = client.deployment
        self.labels = {
            d.token.lower(): "BTIToken",
            d.policy.lower(): "BTIPolicy",
            d.pool.lower(): "InsurancePool",
            client.admin.address.lower(): "BTI admin",
            client.claims.address.lower(): "BTI claims service",
            client.quoter.address.lower(): "BTI quoter",
        }

    def label(self, address: str | None) -> str | None:
        return self.labels.get(address.lower()) if address else None

    def head(self) -> int:
        return int(self.c._rpc(lambda: self.w3.eth.block_number))

    # ------------------------------------------------------------------ blocks

    def _blocks(self, numbers: Iterable[int], what: str) -> list[Any]:
        """The blocks ``numbers`` in one batched JSON-RPC request."""

        def fetch() -> list[Any]:
            with self.w3.batch_requests() as batch:
                for k in numbers:
                    batch.add(self.w3.eth.get_block(k))
                return list(batch.execute())

        return list(self.c._rpc(fetch, what))

    def latest_blocks(self, n: int = 50) -> pd.DataFrame:
        """The ``n`` newest blocks (one batched JSON-RPC request)."""
        if not 1 <= n <= 1000:
            raise ValueError(f"n must be between 1 and 1000; got {n}")
        head = self.head()
        blocks = self._blocks(range(head, max(-1, head - n), -1), "latest blocks")
        return pd.DataFrame(
            [
                {
                    "block": int(b["number"]),
                    "time": datetime.fromtimestamp(int(b["timestamp"]), UTC),
                    "transactions": len(b["transactions"]),
                    "gas_used": int(b["gasUsed"]),
                    "hash": HexBytes(b["hash"]).to_0x_hex(),
                }
                for b in blocks
            ]
        )

    def block(self, number: int) -> tuple[dict[str, Any], pd.DataFrame]:
        """A block's header fields and its transactions."""
        head = self.head()
        if not 0 <= number <= head:
            raise ChainError(f"no block {number}: the chain's head is block {head}")
        b = self.c._rpc(lambda: self.w3.eth.get_block(number, full_transactions=True), "block")
        header = {
            "block": int(b["number"]),
            "hash": HexBytes(b["hash"]).to_0x_hex(),
            "parent": HexBytes(b["parentHash"]).to_0x_hex(),
            "time": datetime.fromtimestamp(int(b["timestamp"]), UTC),
            "gas_used": int(b["gasUsed"]),
            "gas_limit": int(b["gasLimit"]),
            "transactions": len(b["transactions"]),
        }
        txs = pd.DataFrame(
            [
                {
                    "hash": HexBytes(t["hash"]).to_0x_hex(),
                    "from": t["from"],
                    "to": t.get("to"),
                    "to_label": self.label(t.get("to")),
                    "function": self._function_name(t),
                }
                for t in b["transactions"]
            ],
            columns=["hash", "from", "to", "to_label", "function"],
        )
        return header, txs

    # ------------------------------------------------------------------ transactions

    def _contract_at(self, address: str | None) -> tuple[str, Any] | None:
        name = self.label(address)
        if name in PROJECT_CONTRACTS and address is not None:
            return name, self.c._contract(name, address)  # built once per address
        return None

    def _function_name(self, tx: Any) -> str | None:
        hit = self._contract_at(tx.get("to"))
        if hit is None:
            return "deploy" if tx.get("to") is None else None
        try:
            fn, _ = hit[1].decode_function_input(tx["input"])
        except ValueError:
            return None
        return str(fn.fn_name)

    def transaction(self, tx_hash: str) -> TxView:
        """A transaction with its receipt, decoded call and decoded events (unknown logs raw)."""
        try:
            tx = self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound as exc:
            raise ChainError(f"no transaction {tx_hash} on this chain") from exc
        except Exception as exc:
            raise ChainError(f"transaction lookup failed: {exc}") from exc
        try:
            receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            receipt = None
        contract = function = None
        arguments: dict[str, Any] = {}
        hit = self._contract_at(tx.get("to"))
        if hit is not None:
            contract = hit[0]
            try:
                fn, arguments = hit[1].decode_function_input(tx["input"])
                function = str(fn.fn_name)
            except ValueError:
                pass
        decoded = self.c.decode_logs(receipt["logs"]) if receipt else []
        block_time = None
        if tx.get("blockNumber") is not None:
            blk = self.c._rpc(lambda: self.w3.eth.get_block(tx["blockNumber"]))
            block_time = datetime.fromtimestamp(int(blk["timestamp"]), UTC)
        return TxView(
            hash=HexBytes(tx["hash"]).to_0x_hex(),
            block=int(tx["blockNumber"]) if tx.get("blockNumber") is not None else -1,
            time=block_time,
            sender=str(tx["from"]),
            to=tx.get("to"),
            contract=contract if contract else ("(deploy)" if tx.get("to") is None else None),
            function=function,
            arguments={k: _plain(v) for k, v in arguments.items()},
            status=(
                "pending"
                if receipt is None
                else "success"
                if receipt["status"] == 1
                else "reverted"
            ),
            gas_used=int(receipt["gasUsed"]) if receipt else None,
            value_eth=from_units(int(tx["value"])),
            events=[e for e in decoded if isinstance(e, DecodedEvent)],
            raw_logs=[e for e in decoded if not isinstance(e, DecodedEvent)],
        )

    # ------------------------------------------------------------------ addresses & policies

    def _logs_with_topic(self, topic_index: int, value: bytes) -> list[DecodedEvent]:
        """Project events whose indexed argument ``topic_index`` equals ``value`` (from the
        deployment block: a range query the node answers from its log index)."""
        d = self.c.deployment
        topics: list[Any] = [None] * topic_index + ["0x" + value.rjust(32, b"\0").hex()]
        logs = self.c._rpc(
            lambda: self.w3.eth.get_logs(
                {
                    "fromBlock": d.block,
                    "toBlock": "latest",
                    "address": [to_checksum_address(a) for a in (d.token, d.policy, d.pool)],
                    "topics": topics,
                }
            ),
            "event query",
        )
        return [e for e in self.c.decode_logs(logs) if isinstance(e, DecodedEvent)]

    def address(self, address: str) -> AddressView:
        """Balances, policies held and project events involving ``address``."""
        addr = to_checksum_address(address)
        raw = bytes(HexBytes(addr))
        events: dict[tuple[str, int], DecodedEvent] = {}
        for idx in (1, 2):  # first and second indexed argument (from / to, holder, …)
            for e in self._logs_with_topic(idx, raw):
                events[(e.tx_hash, e.log_index)] = e
        ordered = sorted(events.values(), key=lambda e: (e.block, e.log_index), reverse=True)
        held: set[int] = set()
        for e in sorted(ordered, key=lambda e: (e.block, e.log_index)):
            if e.contract == "BTIPolicy" and e.name == "Transfer":
                if e.args["to"] == addr:
                    held.add(int(e.args["tokenId"]))
                elif e.args["from"] == addr:
                    held.discard(int(e.args["tokenId"]))
        shares = int(self.c._rpc(lambda: self.c.pool.functions.balanceOf(addr).call()))
        nonce = int(self.c._rpc(lambda: self.w3.eth.get_transaction_count(addr)))
        return AddressView(
            address=addr,
            label=self.label(addr),
            bti=self.c.balance(addr),
            eth=self.c.gas_balance(addr),
            pool_shares=from_units(shares),
            nonce=nonce,
            policies=sorted(held),
            events=ordered,
        )

    def policy(self, policy_id: int) -> PolicyView:
        """A policy's on-chain record and its events (purchase, payout, release)."""
        p = self.c.policy(policy_id)
        evs = self._logs_with_topic(1, int(policy_id).to_bytes(32, "big"))
        evs = [e for e in evs if e.contract == "InsurancePool"]
        return PolicyView(p, sorted(evs, key=lambda e: (e.block, e.log_index)))

    def block_times(self, blocks: Iterable[int]) -> dict[int, datetime]:
        """Each block's time (one batched request for all of them)."""
        wanted = sorted(set(blocks))
        if not wanted:
            return {}
        got = self._blocks(wanted, "block times")
        return {int(b["number"]): datetime.fromtimestamp(int(b["timestamp"]), UTC) for b in got}

    def transfers(self, view: AddressView) -> pd.DataFrame:
        """The address's BTI token transfers, newest first: time, direction, counterparty,
        amount (signed: + in, − out) and the transaction."""
        rows = [e for e in view.events if e.contract == "BTIToken" and e.name == "Transfer"]
        times = self.block_times(e.block for e in rows)
        out = []
        for e in rows:
            incoming = e.args.get("to") == view.address
            other = e.args.get("from") if incoming else e.args.get("to")
            amount = from_units(int(e.args.get("value", 0)))
            out.append(
                {
                    "time": times.get(e.block),
                    "block": e.block,
                    "direction": "in" if incoming else "out",
                    "counterparty": readable_arg("other", other, self.label),
                    "bti": float(amount if incoming else -amount),
                    "tx": e.tx_hash,
                }
            )
        return pd.DataFrame(
            out, columns=["time", "block", "direction", "counterparty", "bti", "tx"]
        )

    def pool(self) -> PoolStats:
        return self.c.pool_stats()

    def pool_history(self) -> pd.DataFrame:
        """Premiums in, claims paid and capital moves over blocks (for the pool chart)."""
        rows = []
        for e in self.c.events():
            if not isinstance(e, DecodedEvent) or e.contract != "InsurancePool":
                continue
            amount = {
                "PolicyPurchased": ("premium", e.args.get("premium")),
                "ClaimPaid": ("claim", e.args.get("amount")),
                "CapitalDeposited": ("deposit", e.args.get("assets")),
                "CapitalWithdrawn": ("withdrawal", e.args.get("assets")),
            }.get(e.name)
            if amount and amount[1] is not None:
                rows.append({"block": e.block, "kind": amount[0], "bti": from_units(amount[1])})
        frame = pd.DataFrame(rows, columns=["block", "kind", "bti"])
        times = self.block_times(frame["block"].astype(int))
        frame["time"] = pd.to_datetime([times[int(b)] for b in frame["block"]], utc=True)
        return frame

    def search(self, query: str) -> tuple[SearchKind, str | int]:
        """Classify a query and check that what it names exists."""
        kind, value = classify(query)
        if kind == "block":
            head = self.head()
            if int(value) > head:
                raise ChainError(f"no block {value}: the chain's head is block {head}")
        elif kind == "tx":
            self.transaction(str(value))
        elif kind == "policy":
            self.c.policy(int(value))
        return kind, value


def _status(receipt: Any) -> str:
    if receipt is None:
        return "pending"
    return "success" if receipt["status"] == 1 else "reverted"


def _plain(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        return HexBytes(v).to_0x_hex()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v
