"""API secrets encrypted at rest, with a key kept apart from the database.

The database holds only Fernet tokens (AES-128-CBC with HMAC-SHA256, `cryptography`'s
recipe); the keys live in one file (``BTI_ACCOUNTS_KEY_FILE``, default
``<data_dir>/keys/accounts.key``, mode 0600), newest first, one per line. A copy of the
database alone decrypts nothing.

Rotation (`Vault.rotate`) writes a new key at the head of the file; `MultiFernet` still reads
tokens made under the older ones, so a process that dies mid-rotation loses nothing. The
service then re-encrypts every stored token under the newest key and only then drops the old
ones (`Vault.retire`).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bti_core.errors import ConfigError
from bti_core.filelock import file_lock
from bti_core.files import write_text


class Vault:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._seen: tuple[int, int, int] = (0, 0, 0)

    def __repr__(self) -> str:  # never the keys
        return f"Vault({str(self.key_file)!r})"

    @property
    def _lock(self) -> Path:
        return self.key_file.with_name(self.key_file.name + ".lock")

    def _read(self) -> list[bytes]:
        keys = [line.strip().encode() for line in self.key_file.read_text().splitlines()]
        keys = [k for k in keys if k]
        if not keys:
            raise ConfigError(f"{self.key_file} holds no key: restore it from your backup")
        try:
            for k in keys:
                Fernet(k)
        except ValueError:
            raise ConfigError(
                f"{self.key_file} holds a line that is not a Fernet key (32 url-safe "
                "base64-encoded bytes): restore it from your backup"
            ) from None
        return keys

    def keys(self) -> list[bytes]:
        """The keys, newest first; the file (mode 0600) is made on first use."""
        if not self.key_file.exists():
            with file_lock(self._lock):
                if not self.key_file.exists():
                    self._write([Fernet.generate_key()])
        return self._read()

    def _write(self, keys: list[bytes]) -> None:
        self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_text(self.key_file, "".join(k.decode() + "\n" for k in keys))
        os.chmod(self.key_file, 0o600)

    @cached_property
    def _fernet(self) -> MultiFernet:
        keys = self.keys()
        self._seen = self._stamp()
        return MultiFernet([Fernet(k) for k in keys])

    def _stamp(self) -> tuple[int, int, int]:
        st = self.key_file.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        self.__dict__.pop("_fernet", None)

    def encrypt(self, plain: str) -> str:
        """``plain`` under the newest key in the file *now*: a rotation by another process is
        seen before encrypting, so nothing new is made under a key about to be retired."""
        if "_fernet" in self.__dict__ and self._stamp() != self._seen:
            self._reload()
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            self._reload()  # another process may have rotated the keys since
            try:
                return self._fernet.decrypt(token.encode()).decode()
            except InvalidToken:
                raise ConfigError(
                    f"a stored secret does not decrypt with the keys in {self.key_file}: "
                    "the key file was replaced or a key retired too early"
                ) from None

    def reencrypt(self, token: str) -> str:
        """``token`` under the newest key (its contents unchanged)."""
        return self._fernet.rotate(token.encode()).decode()

    def rotate(self) -> None:
        """Put a new key at the head of the file; older keys still decrypt."""
        with file_lock(self._lock):
            self._write([Fernet.generate_key(), *self.keys()])
        self._reload()

    def retire(self) -> int:
        """Drop every key but the newest; returns how many were dropped. Call only once every
        stored token was re-encrypted under the newest key."""
        with file_lock(self._lock):
            keys = self.keys()
            self._write(keys[:1])
        self._reload()
        return len(keys) - 1
