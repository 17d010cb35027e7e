"""A process dying at a chosen step, in-process: the step raises `Crash` and nothing after it
runs (the kill tests in tests/test_concurrency.py kill real processes instead)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


class Crash(BaseException):
    """The process dying at an injected point (BaseException: no handler catches it)."""


def _crash(*_: object, **__: object) -> None:
    raise Crash


@contextmanager
def dies_at(mp: pytest.MonkeyPatch, owner: object, step: str) -> Iterator[None]:
    """Within the block, calling ``owner.step`` kills the process; the block must reach it."""
    with mp.context() as m:
        m.setattr(owner, step, _crash)
        with pytest.raises(Crash):
            yield
