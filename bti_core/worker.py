"""The worker: everything BTI does on a clock, in a process of its own (`bti worker`).

Each round runs the embedded streaming engine over the newest mark bars (alerts; a claim at
the tick that reaches a liquidation price), scans the market for liquidations and audits,
decides and pays the claims that opened; expires policies whose window ended and releases
their cover; reconciles what a crash left half-done (purchases, changes to covers and
payments); and fits each
symbol's price and volatility forecasts once an hour, for the pages to read; raises the pool's
utilisation alert; re-checks held crossings against the stored bars; purges ended sessions;
and, in threads of their own with every request bounded, delivers alerts to their webhooks and
reads linked exchange accounts' positions (on the clock, and at once when an account's user
data stream says it changed), so no receiver or exchange holds a claim back.
`make run` starts one beside the dashboard, and the dashboard itself runs no background payer.
Any number of workers may run at once, beside CLI runs: every step takes its work under a
database lock or a payment lease, so each claim is decided once and paid once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import pandas as pd

from bti_core.errors import BTIError
from bti_core.services import Services

if TYPE_CHECKING:
    from bti_core.accounts.user_stream import UserStreams
    from bti_core.stream.engine import EmbeddedEngine

log = logging.getLogger("bti.worker")


STOP_GRACE = 5.0  # seconds the worker may finish its step after SIGTERM before it exits
WEBHOOK_EVERY = 5.0  # seconds between webhook rounds
ACCOUNTS_EVERY = 5.0  # seconds between looks for linked accounts due a read


class Worker:
    def __init__(self, services: Services, *, log: Callable[[str], None] | None = None) -> None:
        self.services = services
        self.say = log or (lambda m: logging.getLogger("bti.worker").info(m))
        self.stop = threading.Event()
        # per symbol: the hour and the forecasters its cached forecasts are from
        self._forecast_hours: dict[str, tuple[pd.Timestamp, tuple[str, ...]]] = {}
        self._engine: EmbeddedEngine | None = None
        self._hooks: list[threading.Thread] = []
        self.streams: UserStreams | None = None  # linked accounts' user data streams

    def duty(self, name: str, fn: Callable[[], object]) -> tuple[str, bool]:
        """Run one duty: what it did, and whether that was anything."""
        if self.stop.is_set():  # stopping: the steps after this one wait for the next start
            return f"{name}: not run (stopping)", False
        try:
            result = fn()
        except BTIError as exc:  # the chain or the data is not there: try again next round
            return f"{name}: skipped ({exc})", True
        except Exception:
            log.exception("worker step %s failed", name)
            return f"{name}: failed (see the log)", True
        busy = (
            bool(result)
            if isinstance(result, int)
            else any(bool(v) for v in getattr(result, "__dict__", {}).values())
        )
        return f"{name}: {result}", busy

    def _forecasts(self) -> int:
        from bti_core.risk.forecast_store import refresh_due

        svc = self.services
        return refresh_due(svc.warehouse, svc.settings.forecasts_dir, self._forecast_hours)

    def _stream(self) -> int:
        """The embedded streaming engine over the warehouse's newest mark bars: alerts, and a
        claim where the bars prove a liquidation. Returns the ticks scored."""
        from bti_core.stream.engine import EmbeddedEngine
        from bti_core.stream.ports import StreamDeps
        from bti_core.stream.sources import TailSource

        if self._engine is None:
            self._engine = EmbeddedEngine(
                StreamDeps.of(self.services),
                TailSource(self.services.warehouse, clock=self.services.claims.clock),
                name="worker",
            )
        return sum(r.ticks for r in self._engine.run())

    def _pool(self) -> Any:
        from bti_core.stream.pool import check_pool

        c = check_pool(self.services)
        return c if c.raised else 0  # a round reports the pool only when it raised an alert

    def _housekeeping(self) -> int:
        """Expired and revoked sign-in sessions, used tickets and old sign-in attempts."""
        from bti_core import sessions
        from bti_core.auth import purge_attempts

        db = self.services.db
        return sessions.purge(db) + purge_attempts(db)

    def deliver_webhooks(self) -> Any:
        """One round of webhook deliveries, each bounded (`bti_core.outbound`): apart from the
        money loop, in `run_forever`'s own thread."""
        from bti_core.stream.webhooks import deliver

        s = self.services
        return deliver(
            s.db,
            allowed=s.webhook_networks,
            deadline=s.settings.webhook_timeout_seconds,
            stop=self.stop,
        )

    def round(self) -> str:
        """One round of every money and market duty; a line saying what each did ("idle" when
        nothing). Webhooks are not among them: a receiver never holds a claim back."""
        svc = self.services
        steps = [
            self.duty("stream", self._stream),
            self.duty("claims", svc.claims.run),
            self.duty("held", svc.claims.recheck_held),
            self.duty("expired", svc.insurance.expire_due),
            self.duty("renewals", svc.insurance.renewals.run),
            self.duty("purchases", svc.insurance.reconcile),
            self.duty("changes", svc.insurance.changes.reconcile),
            self.duty("payments", svc.claims.reconcile),
            self.duty("reserves", svc.claims.reserves.sync),
            self.duty("forecasts", self._forecasts),
            self.duty("pool", self._pool),
            self.duty("sessions", self._housekeeping),
        ]
        return "; ".join(text for text, busy in steps if busy) or "idle"

    def follow_accounts(self) -> int:
        """Read the linked exchange accounts their user data streams woke and those due a read,
        record their positions' changes, then end the cover of positions the traders closed:
        in a thread of its own, so no exchange holds a claim back. Returns the changes and
        endings."""
        svc = self.services
        woken = svc.accounts.sync_many(self.streams.take()) if self.streams is not None else 0
        due = svc.accounts.follow(svc.settings.accounts_sync_seconds)
        return woken + due + svc.insurance.end_closed()

    def _accounts_wait(self, every: float) -> None:
        """Until the next accounts round: ``every`` seconds, or sooner when a stream wakes
        an account (checked each quarter second, so a stop is seen as soon)."""
        if self.streams is None:
            self.stop.wait(every)
            return
        end = time.monotonic() + every
        while not self.stop.is_set() and time.monotonic() < end:
            if self.streams.wait(min(0.25, max(0.0, end - time.monotonic()))):
                return

    def start_streams(self) -> UserStreams | None:
        """Open the linked accounts' user data streams (`accounts.user_stream`), if set."""
        from bti_core.accounts.user_stream import UserStreams

        settings = self.services.settings
        if settings.accounts_user_streams and self.streams is None:
            self.streams = UserStreams(
                self.services.accounts, demo_ws_url=settings.demo_exchange_ws_url
            ).start()
        return self.streams

    def _loop(self, name: str, fn: Callable[[], object], every: float) -> None:
        while not self.stop.is_set():
            text, busy = self.duty(name, fn)
            if busy:
                self.say(f"{time.strftime('%H:%M:%S')} {text}")
            if name == "accounts":
                self._accounts_wait(every)
            else:
                self.stop.wait(every)

    def run_forever(self, every: float) -> None:
        """Rounds every ``every`` seconds, webhooks in a thread of their own, until SIGTERM,
        SIGINT or `stop` is set. Stopping lets the step under way finish for at most
        `STOP_GRACE` seconds, then the process exits: every step is safe to cut short (a claim
        is decided under a lock and paid under a lease, and a restart settles what it left)."""

        def _stop(sig: int, _frame: FrameType | None) -> None:
            if self.stop.is_set():
                return
            self.stop.set()
            self.say(f"stopping ({signal.Signals(sig).name}): at most {STOP_GRACE:g} s more")
            timer = threading.Timer(STOP_GRACE, self._exit_now)
            timer.daemon = True
            timer.start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
        try:
            self.start_streams()
        except Exception:  # the clock's reads go on without them
            log.exception("user data streams could not start")
        self._hooks = [
            threading.Thread(
                target=self._loop, args=(name, fn, pause), name=f"bti-{name}", daemon=True
            )
            for name, fn, pause in (
                ("webhooks", self.deliver_webhooks, WEBHOOK_EVERY),
                ("accounts", self.follow_accounts, ACCOUNTS_EVERY),
            )
        ]
        for t in self._hooks:
            t.start()
        self.say(
            f"worker started: a round every {every:g} s; webhooks and exchange accounts on "
            "their own"
        )
        while not self.stop.is_set():
            t0 = time.monotonic()
            line = self.round()
            if line != "idle":  # a quiet market writes nothing
                self.say(f"{time.strftime('%H:%M:%S')} {line}")
            self.stop.wait(max(0.0, every - (time.monotonic() - t0)))
        if self.streams is not None:
            self.streams.stop()
        self.say("worker stopped")

    def _exit_now(self) -> None:
        self.say(f"worker stopped after {STOP_GRACE:g} s of grace, mid-step (safe: see docs)")
        from bti_core.chain.runtime import stop_started_nodes

        # os._exit skips atexit: the local node this worker started is stopped here, or it
        # would outlive the worker (bounded: a second grace, then out regardless)
        hard = threading.Timer(STOP_GRACE, os._exit, (0,))
        hard.daemon = True
        hard.start()
        try:
            stop_started_nodes()
        finally:
            logging.shutdown()
            os._exit(0)
