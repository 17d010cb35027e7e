"""``bti accounts``: link, list, read positions, remove, rotate the key — against the demo
exchange, with the key and secret read from the environment or a hidden prompt."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bti_core.accounts.demo_exchange import DemoExchange
from bti_core.cli import app

runner = CliRunner()


def test_a_trader_links_reads_and_removes_an_account(
    data_dir: Path, exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", exchange.url)
    assert runner.invoke(app, ["users", "add", "ada", "--password", "long-enough"]).exit_code == 0
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "long", "0.25", 60_000, 25)
    key, secret = exchange.add_key(uid)
    res = runner.invoke(
        app,
        ["accounts", "link", "ada", "--exchange", "demo", "--label", "main"],
        input=f"{key}\n{secret}\n",
    )
    assert res.exit_code == 0, res.output
    assert "linked account #1: main" in res.output and "1 open position" in res.output
    assert key not in res.output and secret not in res.output
    listed = runner.invoke(app, ["accounts", "list", "ada"])
    assert "main" in listed.output and f"…{key[-4:]}" in listed.output, listed.output
    exchange.change(uid, "BTCUSDT", "long", size="0.5")
    shown = runner.invoke(app, ["accounts", "positions", "ada", "--sync"])
    assert "BTCUSDT" in shown.output and "0.5" in shown.output and "25×" in shown.output

    trading = exchange.add_key(exchange.add_account(), enableFutures=True)
    monkeypatch.setenv("BTI_EXCHANGE_API_KEY", trading[0])
    monkeypatch.setenv("BTI_EXCHANGE_API_SECRET", trading[1])
    refused = runner.invoke(app, ["accounts", "link", "ada", "--exchange", "demo"])
    assert refused.exit_code == 2 and "can also trade" in refused.output

    assert "1 account(s) re-encrypted" in runner.invoke(app, ["accounts", "rotate-key"]).output
    gone = runner.invoke(app, ["accounts", "remove", "ada", "1"])
    assert gone.exit_code == 0 and "wiped" in gone.output
    assert "no linked account" in runner.invoke(app, ["accounts", "list", "ada"]).output
    missing = runner.invoke(app, ["accounts", "remove", "ada", "7"])
    assert missing.exit_code == 2 and "no linked account #7" in missing.output


def test_the_demo_exchange_cannot_be_linked_when_bti_points_at_another_chain(
    data_dir: Path, exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", exchange.url)
    monkeypatch.setenv("BTI_RPC_URL", "http://127.0.0.1:9")  # nothing answers: not the dev chain
    runner.invoke(app, ["users", "add", "ada", "--password", "long-enough"])
    uid = exchange.add_account()
    key, secret = exchange.add_key(uid)
    res = runner.invoke(
        app, ["accounts", "link", "ada", "--exchange", "demo"], input=f"{key}\n{secret}\n"
    )
    assert res.exit_code == 2 and "cannot tell which chain" in res.output, res.output
    assert exchange.requests == []


def test_the_worker_follows_linked_accounts_on_its_clock(
    data_dir: Path, exchange: DemoExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bti_core.cli.common import open_services
    from bti_core.worker import Worker

    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", exchange.url)
    monkeypatch.setenv("BTI_ACCOUNTS_SYNC_SECONDS", "5")
    runner.invoke(app, ["users", "add", "ada", "--password", "long-enough"])
    uid = exchange.add_account()
    exchange.open_position(uid, "BTCUSDT", "short", 1, 60_000, 10)
    key, secret = exchange.add_key(uid)
    runner.invoke(
        app, ["accounts", "link", "ada", "--exchange", "demo"], input=f"{key}\n{secret}\n"
    )
    worker = Worker(open_services())
    assert worker.follow_accounts() == 0  # read at linking: not due yet
    exchange.close(uid, "BTCUSDT", "short")
    svc = worker.services
    [account] = svc.accounts.accounts("ada")
    later = account.created_at + timedelta(seconds=6)
    assert svc.accounts.follow(5, now=later) == 1
    assert svc.accounts.positions("ada") == []
    svc.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--position", "1", "--symbol", "BTCUSDT"], "give --position alone"),
        (["--symbol", "BTCUSDT"], "--side, --quantity, --leverage missing) or give --position"),
        (["--position", "5"], "you have no linked position #5"),
        (
            [
                "--symbol",
                "BTCUSDT",
                "--side",
                "long",
                "--quantity",
                "1",
                "--leverage",
                "10",
                "--peril",
                "adl",
            ],
            "ADL cover is sold on a linked exchange position: give --position",
        ),
        (["--position", "1", "--peril", "fire"], "'fire' is not one of"),
    ],
)
def test_quoting_a_position_or_an_order_says_what_is_missing(
    data_dir: Path, args: list[str], says: str
) -> None:
    res = runner.invoke(app, ["policies", "quote", "--user", "ada", "--coverage", "10", *args])
    assert res.exit_code == 2 and says in res.output, res.output
