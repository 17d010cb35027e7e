"""The `bti` command end to end on a temporary data folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from bti_core.chain.node import AnvilNode, is_up
from bti_core.cli import app
from bti_core.db.engine import make_engine, session_scope
from bti_core.db.repository import latest_ingest_runs
from bti_core.market.schema import Kind
from bti_core.market.sources import write_normalised_csv
from bti_core.market.warehouse import Warehouse
from tests.conftest import ROOT, free_port

runner = CliRunner()


def test_demo_then_summary(data_dir: Path) -> None:
    res = runner.invoke(app, ["demo", "--days", "20", "--end", "2025-03-01"])
    assert res.exit_code == 0, res.output
    assert "listing placeholders" in res.output
    wh = Warehouse(data_dir / "warehouse")
    assert wh.symbols() == ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert wh.latest(Kind.OHLCV, "SOLUSDT", "1h")["ts"] == pd.Timestamp("2025-03-01", tz="UTC")
    again = runner.invoke(app, ["demo", "--if-missing"])
    assert "kept (BNBUSDT, BTCUSDT, ETHUSDT, SOLUSDT)" in again.output
    summary = runner.invoke(app, ["data", "summary"])
    assert (
        summary.exit_code == 0
        and "BTCUSDT" in summary.output
        and "Latest imports" in summary.output
    )


def test_ingest_folder_reports_and_is_idempotent(
    data_dir: Path, tmp_path: Path, demo: dict
) -> None:
    src = tmp_path / "in"
    m = demo["BTCUSDT"]
    write_normalised_csv(m.mark, src / "BTCUSDT_1h_mark.csv.gz", Kind.MARK)
    write_normalised_csv(m.ohlcv, src / "BTCUSDT_1h_ohlcv.csv.gz", Kind.OHLCV)
    write_normalised_csv(m.funding, src / "BTCUSDT_1h_funding_rate.csv.gz", Kind.FUNDING)
    first = runner.invoke(app, ["ingest", str(src)])
    assert first.exit_code == 0, first.output
    assert "2 exchange listing placeholders, removed" in first.output
    second = runner.invoke(app, ["ingest", str(src)])
    assert second.exit_code == 0
    with session_scope(make_engine()) as s:
        runs = latest_ingest_runs(s, symbol="BTCUSDT", kind="ohlcv")
        assert [r.rows_added for r in runs] == [0, len(m.ohlcv) - 2]
        assert (
            runs[0].report["counts"]["unconfirmed_wicks"]
            == runs[1].report["counts"]["unconfirmed_wicks"]
        )


def test_bad_file_in_folder_writes_nothing(data_dir: Path, tmp_path: Path, demo: dict) -> None:
    src = tmp_path / "in"
    write_normalised_csv(demo["BTCUSDT"].ohlcv, src / "BTCUSDT_1h_ohlcv.csv", Kind.OHLCV)
    bad = src / "ETHUSDT_1h_ohlcv.csv"
    bad.write_text(
        "timestamp_utc,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n2024-01-01T01:00:00Z,1,2,0.5,oops,3\n"
    )
    res = runner.invoke(app, ["ingest", str(src)])
    assert res.exit_code == 2
    out = "".join(res.output.split())  # rich wraps long lines
    assert "ETHUSDT_1h_ohlcv.csv,line3:expectedcloseasanumber;got'oops'" in out
    assert Warehouse(data_dir / "warehouse").datasets() == []


def test_ingest_without_arguments_and_export(data_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["ingest"])
    assert res.exit_code != 0 and "give files or folders" in res.output
    runner.invoke(app, ["demo", "--days", "3", "--end", "2025-01-10"])
    out = tmp_path / "btc.parquet"
    res = runner.invoke(app, ["data", "export", "BTCUSDT", str(out)])
    assert res.exit_code == 0 and out.exists()
    bad = runner.invoke(app, ["data", "export", "BTCUSDT", str(tmp_path / "btc.xlsx")])
    assert bad.exit_code == 2 and "usea.parquet" in "".join(bad.output.split())


def test_chain_status_faucet_and_reconcile(
    data_dir: Path, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    r = runner.invoke(app, ["chain", "faucet", "zoe", "--amount", "250"])
    assert r.exit_code == 0, r.output
    assert "250.00 BTI to zoe" in r.output and "balance 250.00 BTI" in r.output
    r = runner.invoke(app, ["chain", "faucet", "zoe", "--amount", "-5"])
    assert r.exit_code == 2 and "greater than or equal to 0.01" in r.output
    r = runner.invoke(app, ["chain", "status"])
    assert r.exit_code == 0, r.output
    assert "1,000,000.00 BTI" in r.output and "paused" in r.output
    r = runner.invoke(app, ["chain", "reconcile"])
    assert r.exit_code == 0, r.output
    assert "activated 0, declined 0, cover released 0" in r.output


def test_capital_deposit_status_request_cancel(
    data_dir: Path, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    assert runner.invoke(app, ["chain", "faucet", "lena", "--amount", "1000"]).exit_code == 0
    r = runner.invoke(app, ["capital", "deposit", "lena", "400"])
    assert r.exit_code == 0 and "(400.00 BTI)" in r.output, r.output
    r = runner.invoke(app, ["capital", "deposit", "lena", "abc"])
    assert r.exit_code == 2 and "a deposit must be a number of BTI" in r.output, r.output
    r = runner.invoke(app, ["capital", "deposit", "lena", "601"])
    assert r.exit_code == 2 and "above the wallet's 600.00 BTI" in r.output, r.output
    r = runner.invoke(app, ["capital", "request", "lena", "100"])
    # the demo chain's cooldown is two minutes (seven days elsewhere)
    assert r.exit_code == 0 and "requested 100.00 BTI; cooling down until" in r.output, r.output
    r = runner.invoke(app, ["capital", "withdraw", "lena"])
    assert r.exit_code == 2 and "is cooling down until" in r.output, r.output
    from bti_core.cli.common import console

    monkeypatch.setattr(console, "width", 200)  # a table's cell on one line
    r = runner.invoke(app, ["capital", "status", "lena"])
    assert r.exit_code == 0, r.output
    for text in (
        "400.00 BTI (0.04% of the pool)",
        "cooling down until",
        "2 min, then 2 days",
        "Realised yield",
        "10 October 2025 (stylised)",
        "Every symbol −30% within",
    ):
        assert text in r.output, (text, r.output)
    r = runner.invoke(app, ["capital", "cancel", "lena"])
    assert r.exit_code == 0 and "request cancelled" in r.output, r.output
    r = runner.invoke(app, ["capital", "cancel", "lena"])
    assert r.exit_code == 2 and "has no withdrawal request" in r.output, r.output


@pytest.mark.slow
def test_chain_status_never_starts_a_node(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` asks `bti chain status` whether `bti chain up`'s node answers yet; a status
    that started a node of its own took the port from that one, and `make run` stopped."""
    port = free_port()
    monkeypatch.setenv("BTI_CHAIN_PORT", str(port))
    monkeypatch.delenv("BTI_RPC_URL", raising=False)
    r = runner.invoke(app, ["chain", "status"])
    assert r.exit_code != 0
    assert f"no chain node on http://127.0.0.1:{port}; start one with `bti chain up`" in r.output
    assert not is_up(f"http://127.0.0.1:{port}")


def test_chain_up_runs_a_node_until_stopped_and_keeps_its_state(data_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "BTI_DATA_DIR": str(data_dir), "BTI_CHAIN_PORT": str(port)}
    env.pop("BTI_RPC_URL", None)
    bti = str(Path(sys.executable).with_name("bti"))

    def up_and_faucet(amount: str) -> tuple[str, str]:
        """`bti chain up`, then `bti chain faucet amy` from another process, then SIGTERM:
        the faucet's output and the node's."""
        proc = subprocess.Popen(
            [bti, "chain", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"anvil on http://127.0.0.1:{port}" in line, line
            r = subprocess.run(
                [bti, "chain", "faucet", "amy", "--amount", amount],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        return r.stdout + r.stderr, line + out

    faucet, node = up_and_faucet("7")
    assert "balance 7.00 BTI" in faucet, faucet
    assert "state saved" in node
    assert (data_dir / "chain" / "anvil-state.json").exists()
    # a fresh start of the node finds the wallet's balance and the same contracts
    faucet, _ = up_and_faucet("1")
    assert "balance 8.00 BTI" in faucet, faucet


def test_crash_opens_and_pays_a_claim_and_verify_catches_tampering(
    data_dir: Path, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    from decimal import Decimal

    from sqlmodel import Session, select

    from bti_core.chain.runtime import connect
    from bti_core.config import get_settings
    from bti_core.db.models import ClaimAudit, Policy
    from bti_core.orders import Cover, Order
    from bti_core.policies import InsuranceService
    from bti_core.risk.engine import RiskEngine

    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    assert runner.invoke(app, ["demo", "--days", "60"]).exit_code == 0
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    chain = connect(settings)
    svc = InsuranceService(
        engine, RiskEngine(Warehouse(settings.warehouse_dir), n_paths=2_000), chain=chain
    )
    chain.faucet(svc.wallet_of("kai").address, Decimal(1000))
    spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
    q = svc.quote(
        user_id="kai",
        order=Order("BTCUSDT", "long", Decimal("0.1"), spot, Decimal(20)),
        cover=Cover(coverage="100", duration_hours=72),
    )
    bought = svc.buy(user_id="kai", quote_id=q.record.id)
    # as if bought two hours ago: a liquidation within the hour after purchase is referred
    with Session(engine) as s:
        pol = s.get(Policy, bought.id)
        assert pol is not None
        pol.start_at -= timedelta(hours=2)
        s.add(pol)
        s.commit()

    r = runner.invoke(app, ["crash", "--drop", "0.4"])
    assert r.exit_code == 0, r.output
    assert "opened 1" in r.output and "paid 1" in r.output
    # a drop, said as one, over 30 minutes or the time since the demo's last hour if shorter
    assert re.search(r"BTCUSDT: −40\.0% over ([1-9]|[12]\d|30) min, ", r.output), r.output
    assert "waiting" not in r.output
    # the replay ends at the present: no bar after the current minute, none after the hour's
    wh = Warehouse(settings.warehouse_dir)
    now = pd.Timestamp.now(tz="UTC")
    assert wh.latest(Kind.MARK, "BTCUSDT", "1m")["ts"] <= now
    assert wh.latest(Kind.MARK, "BTCUSDT", "1m")["ts"] >= now.floor("1min") - pd.Timedelta("3min")
    hour = wh.latest(Kind.MARK, "BTCUSDT", "1h")["ts"]
    assert now.floor("1h") - pd.Timedelta("1h") <= hour <= now  # the hour in progress
    hourly = wh.query(Kind.MARK, "BTCUSDT", "1h", now - pd.Timedelta(days=2), None)
    assert (hourly["ts"].diff().dropna() == pd.Timedelta("1h")).all()  # no gap before it
    r = runner.invoke(app, ["claims", "verify"])
    assert r.exit_code == 0 and "intact" in r.output
    with Session(engine) as s:
        e = s.exec(select(ClaimAudit)).first()
        assert e is not None
        e.detail = {"forged": True}
        s.add(e)
        s.commit()
    r = runner.invoke(app, ["claims", "verify"])
    assert r.exit_code == 1 and "BROKEN at entry" in r.output
    r = runner.invoke(app, ["crash", "--drop", "3"])
    assert r.exit_code == 2 and "0.9" in r.output


def test_users_add_refuses_bad_input(data_dir: Path) -> None:
    r = runner.invoke(
        app, ["users", "add", "lee", "--role", "underwriter", "--password", "s3cret-pass"]
    )
    assert r.exit_code == 0 and "lee (underwriter) created" in r.output
    r = runner.invoke(app, ["users", "add", "lee", "--password", "s3cret-pass"])
    assert r.exit_code == 2 and "exists already" in r.output
    r = runner.invoke(app, ["users", "add", "max", "--role", "admin", "--password", "s3cret-pass"])
    assert r.exit_code == 2 and "role must be one of trader, underwriter" in r.output
    r = runner.invoke(app, ["users", "add", "ned", "--password", "short"])
    assert r.exit_code == 2 and "at least 8 characters" in r.output
    # an underwriter who leaves the desk
    r = runner.invoke(app, ["users", "set-role", "lee", "trader"])
    assert r.exit_code == 0 and "lee is now trader" in r.output
    r = runner.invoke(app, ["users", "set-role", "lee", "admin"])
    assert r.exit_code == 2 and "role must be one of trader, underwriter" in r.output
    r = runner.invoke(app, ["users", "set-role", "zed", "trader"])
    assert r.exit_code == 2 and "no user 'zed'" in r.output


def _named_commands() -> set[tuple[str, ...]]:
    """Every `bti …` command the README, the pages and the engine's messages tell a user to run."""
    # in backticks, or at the start of a line of a README code block
    pattern = re.compile(r"(?:`|^)(?:\.venv/bin/)?bti ((?:[a-z][a-z-]* ?){1,2})", re.MULTILINE)
    texts = [ROOT / "README.md", *(ROOT / "pages").glob("*.py"), *(ROOT / "bti_core").rglob("*.py")]
    named: set[tuple[str, ...]] = set()
    for path in texts:
        for m in pattern.finditer(path.read_text()):
            named.add(tuple(m.group(1).split()))
    return named


def test_every_command_the_docs_and_messages_name_exists() -> None:
    root = typer.main.get_command(app)
    named = _named_commands()
    assert ("backtest",) in named and ("claims", "run") in named  # the scan finds them
    missing = []
    for words in named:
        cmd = root.commands.get(words[0])  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)  # a group's commands; None for a single command
        # a single command followed by a lower-case word is a subcommand that does not exist
        wrong = len(words) > 1 and (sub is None or words[1] not in sub)
        if cmd is None or wrong:
            missing.append(" ".join(words))
    assert not missing, f"named but not a bti command: {sorted(missing)}"
