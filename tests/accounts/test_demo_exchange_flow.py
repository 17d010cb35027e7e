"""`bti demo-exchange` as `make run` starts it: the demo trader's account linked in BTI, cover
bought on its position, `bti crash` — and the claim paid on the demo exchange's own
liquidation record, without an underwriter; the exchange keeps its books across a restart."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from bti_core.accounts import user_stream
from bti_core.accounts.user_stream import UserStreams
from bti_core.claims.state import State
from bti_core.cli import app
from bti_core.cli.common import open_services
from bti_core.db.models import Policy
from bti_core.db.statuses import Peril
from bti_core.orders import Cover
from tests.conftest import free_port

BTI = str(Path(sys.executable).parent / "bti")


class Process:
    """`bti demo-exchange` in a process of its own, its output read line by line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [BTI, "demo-exchange"],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        seen = []
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(seen)
                continue
            seen.append(line)
            if text in line:
                return "".join(seen)
        raise AssertionError(f"no {text!r} in: {''.join(seen)}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.reader.join(10)  # the pipe's end: read to the last line, then closed
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_a_crash_pays_cover_on_the_demo_traders_position_on_the_exchanges_record(
    recent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_URL", f"http://127.0.0.1:{free_port()}")
    ws_url = f"ws://127.0.0.1:{free_port()}"
    monkeypatch.setenv("BTI_DEMO_EXCHANGE_WS_URL", ws_url)
    exchange = Process()
    try:
        assert "new): the demo trader's account" in exchange.wait_for("demo exchange on")
        svc = open_services()
        streams = UserStreams(svc.accounts, demo_ws_url=ws_url).start()  # as the worker does
        [account] = svc.accounts.accounts("trader")
        assert streams.wait(20) and streams.take() == [account.id]  # opened: read once
        btc = next(p for p in svc.accounts.positions("trader") if p.symbol == "BTCUSDT")
        assert (btc.side, btc.size, btc.leverage) == ("long", Decimal("0.05"), 20)
        svc.chain.faucet(svc.insurance.wallet_of("trader").address, Decimal(1000))
        q = svc.insurance.quote_position(
            user_id="trader", position_id=btc.id or 0, cover=Cover("50", 24)
        )
        policy = svc.insurance.buy(user_id="trader", quote_id=q.record.id)
        margin = btc.size * btc.entry_price / btc.leverage
        again = svc.insurance.quote_position(
            user_id="trader", position_id=btc.id or 0, cover=Cover(margin.quantize(Decimal(1)), 24)
        )
        assert [c.name for c in again.failed] == ["position_cover"]
        assert "already has 50.00 USDT of cover" in again.failed[0].reason  # and what is left

        with Session(svc.db) as s:  # bought two minutes ago: `bti crash` need not wait for
            row = s.get(Policy, policy.id)  # the next minute to fall after the purchase
            assert row is not None
            row.start_at -= timedelta(minutes=2)
            s.add(row)
            s.commit()
        crashed = CliRunner().invoke(app, ["crash", "--drop", "0.4", "--minutes", "10"])
        assert crashed.exit_code == 0, crashed.output
        exchange.wait_for("liquidated on the demo exchange")
        # the account's stream says so at once: the worker reads it before the clock would
        assert streams.wait(10)
        time.sleep(user_stream.MIN_GAP)
        assert streams.take() == [account.id]
        streams.stop()
        svc.claims.run()  # the worker's round
        claim = next(c for c in svc.claims.claims_of("trader") if c.policy_id == policy.id)
        assert claim.state == State.PAID.value, [
            (c["name"], c["outcome"], c["reason"]) for c in claim.checks
        ]
        assert claim.decided_by == "system" and claim.amount_approved == Decimal("50.00")
        [check] = [c for c in claim.checks if c["name"] == "exchange_confirms"]
        assert check["outcome"] == "pass"

        # ADL cover on the ETHUSDT short (first in the demo exchange's queue): a fall that runs
        # the demo fund dry deleverages it, and the cover pays on that record
        eth = next(p for p in svc.accounts.positions("trader") if p.symbol == "ETHUSDT")
        assert eth.adl_quantile == 4
        q = svc.insurance.quote_position(
            user_id="trader", position_id=eth.id or 0, cover=Cover("20", 24), peril=Peril.ADL
        )
        adl_policy = svc.insurance.buy(user_id="trader", quote_id=q.record.id)
        with Session(svc.db) as s:
            row = s.get(Policy, adl_policy.id)
            assert row is not None
            row.start_at -= timedelta(minutes=2)
            s.add(row)
            s.commit()
        crashed = CliRunner().invoke(
            app, ["crash", "--symbol", "ETHUSDT", "--drop", "0.3", "--minutes", "10"]
        )
        assert crashed.exit_code == 0, crashed.output
        exchange.wait_for("auto-deleveraged on the demo exchange")
        svc.accounts.sync(account.id)  # the worker's read (its stream woke it)
        svc.claims.run()
        adl = next(c for c in svc.claims.claims_of("trader") if c.policy_id == adl_policy.id)
        assert adl.source == "exchange_adl" and adl.state == State.PAID.value, adl.checks
        assert adl.amount_approved == Decimal("20.00")
        svc.close()
    finally:
        exchange.stop()
    again_up = Process()  # its books are kept: the liquidated position stays closed
    try:
        assert "(restored)" in again_up.wait_for("demo exchange on")
        svc = open_services()
        [account] = svc.accounts.accounts("trader")
        svc.accounts.sync(account.id)
        assert svc.accounts.positions("trader") == []  # liquidated, and deleveraged
        svc.close()
    finally:
        again_up.stop()
