"""One composition root: the CLI, the dashboard and the worker get the same services from the
same settings (before, the CLI dropped the pool-capacity limit and the macro table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bti_core.chain.node import AnvilNode


def test_cli_dashboard_and_worker_wire_the_same_services(
    data_dir: Path, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    macro = data_dir.parent / "macro.csv"
    macro.write_text("date,signal\n2025-01-01,-0.5\n2025-01-02,0.5\n")
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    monkeypatch.setenv("BTI_POOL_CAPACITY", "123456")
    monkeypatch.setenv("BTI_MACRO_FILE", str(macro))
    monkeypatch.setenv("BTI_CLAIMS_AUTO_LIMIT", "77")

    from bti_core.cli.common import open_services
    from bti_core.worker import Worker
    from dashboard import resources

    from_cli = open_services().wiring()
    from_dashboard = resources.services().wiring()
    from_worker = Worker(open_services()).services.wiring()
    assert from_cli == from_dashboard == from_worker
    assert from_cli.limits.pool_capacity == 123456
    assert from_cli.macro_days == 2 and from_cli.claims_auto_limit == "77"
