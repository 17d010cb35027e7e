"""The local chain node: anvil, started by BTI on 127.0.0.1 with its state kept under data/.

Durability (docs/architecture.md, "The local chain"): anvil's own ``--state`` file is
rewritten in place without fsync, and a truncated file stops anvil from starting. So after
every transaction that matters the client calls `AnvilNode.snapshot`, which takes
``anvil_dumpState`` (gzip, hex), unzips it and writes it through a temporary file, fsync and
``os.replace``; a start loads the last snapshot with ``--load-state``. A crash therefore loses
at most the transactions after the last snapshot, and the reconcilers (policies, claims)
re-send those idempotently.

The node keeps the chain's blocks, receipts and logs but only its recent states
(``--prune-history``): nothing it writes grows with the chain's length but that snapshot.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bti_core import files
from bti_core.errors import ChainError

ANVIL_BIN = (
    Path(__file__).resolve().parents[2]
    / "contracts"
    / "node_modules"
    / "@foundry-rs"
    / "anvil-linux-amd64"
    / "bin"
    / "anvil"
)
LOCAL_CHAIN_ID = 31337
STATES_IN_MEMORY = 64  # recent block states the node answers calls at (see `AnvilNode.start`)


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    """One JSON-RPC call over HTTP (used before web3 is set up, and for anvil's own methods)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ChainError(f"chain node at {url} is not answering ({exc})") from exc
    if "error" in reply:
        raise ChainError(f"{method} failed at {url}: {reply['error'].get('message')}")
    return reply["result"]


def is_up(url: str) -> bool:
    try:
        rpc_call(url, "eth_chainId", timeout=1.0)
    except ChainError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilNode:
    """An anvil process on 127.0.0.1 whose state lives in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 8545,
        host: str = "127.0.0.1",
        chain_id: int = LOCAL_CHAIN_ID,
        mnemonic: str | None = None,
    ):
        self.state_dir = Path(state_dir)
        # another mnemonic than anvil's published one: accounts that stand for a trader's own
        # wallet in tests (the node signs for them; their keys are not anyone's)
        self.mnemonic = mnemonic
        self.port = port
        self.host = host
        self.chain_id = chain_id  # another id stands in for a public network in tests
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://{host}:{port}"
        self.snapshot_path = self.state_dir / "anvil-state.json"  # the chain kept between runs
        self.log_path = self.state_dir / "anvil.log"

    def start(self, timeout: float = 20.0) -> AnvilNode:
        """Start anvil (loading the last snapshot) and wait until it answers."""
        if not ANVIL_BIN.exists():
            raise ChainError(
                f"anvil is not installed at {ANVIL_BIN}; run `make setup` (npm ci in contracts/)"
            )
        if is_up(self.url):
            raise ChainError(f"port {self.port} already has a node; stop it or use BTI_RPC_URL")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(ANVIL_BIN),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            # The latest STATES_IN_MEMORY block states in memory and none on disk. Without
            # this, anvil writes every older block's state under ~/.foundry/anvil/tmp, a folder
            # it deletes only on a clean exit: a killed node leaves it behind, and a busy one
            # wrote 1.6 GB in two minutes of tests (measured; docs/2026-12-06-a-bounded-chain.md).
            # BTI reads state only at the latest block; blocks, receipts and logs are all kept.
            "--prune-history",
            str(STATES_IN_MEMORY),
        ]
        if self.mnemonic is not None:
            cmd += ["--mnemonic", self.mnemonic]
        if self.snapshot_path.exists() and self.snapshot_path.stat().st_size > 0:
            cmd += ["--load-state", str(self.snapshot_path)]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                raise ChainError(f"anvil exited with code {self.proc.returncode}:\n{tail}")
            if is_up(self.url):
                return self
            time.sleep(0.05)
        self.stop(snapshot=False)
        raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f} s")

    def snapshot(self) -> Path:
        """Write the chain's full state durably (a temp file of this call's own, fsync, atomic
        rename): processes snapshotting at once each write their own file, and the last rename
        wins with a complete state. Any failure is a `ChainError`."""
        hexgz = rpc_call(self.url, "anvil_dumpState", timeout=30.0)
        try:
            raw = gzip.decompress(bytes.fromhex(hexgz[2:] if hexgz.startswith("0x") else hexgz))
            files.write_bytes(self.snapshot_path, raw, prefix=".anvil-state.")
        except (OSError, ValueError, EOFError) as exc:
            raise ChainError(
                f"could not save the chain's state to {self.snapshot_path}: {exc}"
            ) from exc
        return self.snapshot_path

    def stop(self, *, snapshot: bool = True) -> None:
        """Snapshot (unless told not to), then SIGTERM and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if snapshot:
            with contextlib.suppress(ChainError):  # a silent node has nothing newer to save
                self.snapshot()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Stop without a snapshot, as a crash would (for tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
