"""Compiled contracts (ABI + bytecode, committed under contracts/out/) and revert decoding.

Custom errors are decoded by their 4-byte selector against every project ABI, so a revert
reads ``InsurancePoolInsufficientCapacity(requested=…, available=…)`` rather than hex.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from bti_core.errors import ContractRefusalError

OUT_DIR = Path(__file__).resolve().parents[2] / "contracts" / "out"
PROJECT_CONTRACTS = ("BTIToken", "BTIPolicy", "InsurancePool")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    runtime_size: int = 0  # bytes of the deployed code (immutables fill fixed-size slots)


@cache
def artifact(name: str) -> Artifact:
    path = OUT_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `make contracts` to compile")
    data = json.loads(path.read_text())
    runtime = str(data.get("deployedBytecode", "")).removeprefix("0x")
    return Artifact(name, data["abi"], data["bytecode"], len(runtime) // 2)


def _signature(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(_type(i) for i in item['inputs'])})"


def _type(inp: dict[str, Any]) -> str:
    t = str(inp["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in inp["components"]) + ")" + t[len("tuple") :]
    return t


@dataclass(frozen=True)
class ErrorAbi:
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]


@cache
def error_table() -> dict[bytes, ErrorAbi]:
    """Selector → custom error, over all project ABIs (OpenZeppelin's errors included)."""
    table: dict[bytes, ErrorAbi] = {}
    for name in PROJECT_CONTRACTS:
        for item in artifact(name).abi:
            if item["type"] == "error":
                sel = keccak(text=_signature(item))[:4]
                table[sel] = ErrorAbi(
                    item["name"],
                    tuple(i["name"] for i in item["inputs"]),
                    tuple(_type(i) for i in item["inputs"]),
                )
    return table


@cache
def event_table() -> dict[tuple[bytes, int], tuple[str, dict[str, Any]]]:
    """(topic0, number of topics) → (contract name, event ABI), over all project ABIs. The
    count tells ERC-20's ``Transfer`` (2 indexed) from ERC-721's (3 indexed), which share
    topic0."""
    table: dict[tuple[bytes, int], tuple[str, dict[str, Any]]] = {}
    for name in PROJECT_CONTRACTS:
        for item in artifact(name).abi:
            if item["type"] == "event":
                n_topics = 1 + sum(1 for i in item["inputs"] if i.get("indexed"))
                table.setdefault((keccak(text=_signature(item)), n_topics), (name, item))
    return table


def decode_revert(data: bytes | str | None) -> tuple[str, dict[str, Any]] | None:
    """``(error name, {arg: value})`` for revert data of a known custom error, else None.
    ``Error(string)`` reverts decode to ``("Error", {"message": …})``."""
    if data is None:
        return None
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    if len(raw) < 4:
        return None
    sel, body = raw[:4], raw[4:]
    if sel == keccak(text="Error(string)")[:4]:
        return "Error", {"message": abi_decode(["string"], body)[0]}
    err = error_table().get(sel)
    if err is None:
        return None
    try:
        values = abi_decode(list(err.arg_types), body)
    except Exception:  # malformed data: report the name only
        return err.name, {}
    return err.name, dict(zip(err.arg_names, values, strict=True))


@cache
def refusal_type(name: str) -> type[ContractRefusalError]:
    """The `ContractRefusalError` subclass of the custom error ``name`` (one class per name, so
    ``except refusal_type("InsurancePoolPolicyExists")`` works anywhere)."""
    known = {e.name for e in error_table().values()} | {"Error", "Panic"}
    if name not in known:
        raise KeyError(f"{name} is not a custom error of BTI's contracts")
    return type(
        name, (ContractRefusalError,), {"__module__": __name__, "__doc__": f"{name} revert"}
    )
