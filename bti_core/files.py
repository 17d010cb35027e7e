"""Atomic file writes, written once: a reader (another process, or this one after a crash)
sees the old file or the new one, never half of one.

The data goes to a temporary file in the destination's own folder (a rename is atomic only
within one file system), is flushed and fsync'd, then renamed over the destination with
``os.replace``, and the folder is fsync'd so the rename itself survives a power loss
(POSIX ``rename(2)``; the same recipe as SQLite's and PostgreSQL's own files). A failure
anywhere removes the temporary file and leaves the destination as it was.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path, *, prefix: str = ".tmp-") -> Iterator[Path]:
    """A temporary path beside ``path`` for the caller to write (a name of its own, so
    processes writing at once never share one); on a clean exit it is fsync'd and renamed over
    ``path``, on an error removed. ``prefix`` lets an owner find temporary files a killed
    process left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # created here with O_EXCL and the umask's mode (mkstemp's 0600 would make
        # every warehouse file unreadable to another user's dashboard)
        tmp = path.with_name(f"{prefix}{secrets.token_hex(6)}-{path.name}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes, *, prefix: str = ".tmp-") -> Path:
    """Write ``data`` to ``path`` atomically (`replacing`)."""
    with replacing(path, prefix=prefix) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: Path, text: str, *, prefix: str = ".tmp-") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (`replacing`)."""
    return write_bytes(path, text.encode("utf-8"), prefix=prefix)
