"""Nonces taken once: a lock per (chain, sender) shared by every process on the machine."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from bti_core.filelock import file_lock

NONCE_LOCK_DIR = Path(tempfile.gettempdir()) / "bti-nonce-locks"


class NonceLock:
    """One lock per (chain, sender) shared by every process on this machine: a nonce is read
    ("pending" count) and its transaction sent while the lock is held, so no two senders ever
    take the same nonce. Threads of one process also take the in-process lock first."""

    _thread_locks: ClassVar[dict[str, threading.RLock]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path = NONCE_LOCK_DIR) -> None:
        self.directory = directory

    @contextmanager
    def hold(self, chain_id: int, address: str) -> Iterator[None]:
        key = f"{chain_id}-{address.lower()}"
        with NonceLock._guard:  # threads of this process that share the lock's folder
            tlock = NonceLock._thread_locks.setdefault(f"{self.directory}/{key}", threading.RLock())
        with tlock, file_lock(self.directory / f"{key}.lock"):
            yield
