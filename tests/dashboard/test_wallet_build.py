"""The browser wallet's committed build is the build of its source (`make wallet` rebuilds it;
nothing is built at run time)."""

from __future__ import annotations

import hashlib

from dashboard.browser_wallet import BUILD, SOURCE


def test_the_committed_wallet_build_is_of_the_current_source() -> None:
    first, _, body = BUILD.read_text().partition("\n")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert first == f"// source sha256: {digest}", "stale build: run `make wallet` and commit it"
    assert "export default function" in body and "eth_signTypedData_v4" in body
