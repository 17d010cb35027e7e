"""Decoding the logs of BTI's contracts by their compiled ABIs (`artifacts.event_table`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from bti_core.chain.artifacts import event_table
from bti_core.chain.types import DecodedEvent


def _hex_bytes(v: Any) -> Any:
    return HexBytes(v).to_0x_hex() if isinstance(v, bytes | bytearray) else v


class EventDecoder:
    """Decodes logs of any of the project's contracts; keeps one web3 decoder per event kind
    (building a web3 contract costs ~20 ms)."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self._decoders: dict[tuple[bytes, int], Any] = {}

    def decode(self, logs: Iterable[Any]) -> list[DecodedEvent | dict[str, Any]]:
        """Each log decoded by the project's ABIs; a log of no known event is returned raw."""
        out: list[DecodedEvent | dict[str, Any]] = []
        table = event_table()
        for log in logs:
            topics = log["topics"]
            key = (bytes(topics[0]), len(topics)) if topics else None
            hit = table.get(key) if key else None
            if key is None or hit is None:
                out.append(dict(log))
                continue
            contract_name, abi = hit
            decoder = self._decoders.get(key)
            if decoder is None:
                decoder = getattr(self.w3.eth.contract(abi=[abi]).events, abi["name"])()
                self._decoders[key] = decoder
            try:
                ev = decoder.process_log(log)
            except Exception:  # same signature, different indexing: show it raw
                out.append(dict(log))
                continue
            out.append(
                DecodedEvent(
                    contract_name,
                    abi["name"],
                    {k: _hex_bytes(v) for k, v in ev["args"].items()},
                    int(log["blockNumber"]),
                    HexBytes(log["transactionHash"]).to_0x_hex(),
                    int(log["logIndex"]),
                    str(log["address"]),
                )
            )
        return out
