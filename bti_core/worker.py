"""The worker: everything BTI does on a clock, in a process of its own (`bti worker`).

Each round runs the embedded streaming engine over the newest mark bars (alerts; a claim at
the tick that reaches a liquidation price), scans the market for liquidations and audits,
decides and pays the claims that opened; expires policies whose window ended and releases
their cover; reconciles what a crash left half-done (purchases and payments); and fits each
symbol's price and volatility forecasts once an hour, for the pages to read; raises the pool's
utilisation alert; and delivers alerts to their webhooks. `make run` starts one beside the
dashboard, and the dashboard itself runs no background payer. Any number of
workers may run at once, beside CLI runs: every step takes its work under a database lock or a
payment lease, so each claim is decided once and paid once.
"""

from __future__ import annotations

import logging
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
    from bti_core.stream.engine import EmbeddedEngine

log = logging.getLogger("bti.worker")


class Worker:
    def __init__(self, services: Services, *, log: Callable[[str], None] | None = None) -> None:
        self.services = services
        self.say = log or (lambda m: logging.getLogger("bti.worker").info(m))
        self.stop = threading.Event()
        # per symbol: the hour and the forecasters its cached forecasts are from
        self._forecast_hours: dict[str, tuple[pd.Timestamp, tuple[str, ...]]] = {}
        self._engine: EmbeddedEngine | None = None

    def _step(self, name: str, fn: Callable[[], object]) -> tuple[str, bool]:
        """Run one duty: what it did, and whether that was anything."""
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
        from bti_core.risk.forecast import refresh_due

        svc = self.services
        return refresh_due(svc.warehouse, svc.settings.forecasts_dir, self._forecast_hours)

    def _stream(self) -> int:
        """The embedded streaming engine over the warehouse's newest mark bars: alerts, and a
        claim at the tick that reaches a liquidation price. Returns the ticks scored."""
        from bti_core.stream.engine import EmbeddedEngine, TailSource

        if self._engine is None:
            self._engine = EmbeddedEngine(
                self.services, TailSource(self.services.warehouse), name="worker"
            )
        return sum(r.ticks for r in self._engine.run())

    def _pool(self) -> Any:
        from bti_core.stream.pool import check_pool

        c = check_pool(self.services)
        return c if c.raised else 0  # a round reports the pool only when it raised an alert

    def _webhooks(self) -> Any:
        from bti_core.stream.webhooks import deliver

        return deliver(self.services.db)

    def round(self) -> str:
        """One round of every duty; a line saying what each did ("idle" when nothing)."""
        svc = self.services
        steps = [
            self._step("stream", self._stream),
            self._step("claims", svc.claims.run),
            self._step("expired", svc.insurance.expire_due),
            self._step("purchases", svc.insurance.reconcile),
            self._step("payments", svc.claims.reconcile),
            self._step("forecasts", self._forecasts),
            self._step("pool", self._pool),
            self._step("webhooks", self._webhooks),
        ]
        return "; ".join(text for text, busy in steps if busy) or "idle"

    def run_forever(self, every: float) -> None:
        """Rounds every ``every`` seconds until SIGTERM, SIGINT or `stop` is set."""

        def _stop(_sig: int, _frame: FrameType | None) -> None:
            self.stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
        self.say(f"worker started: a round every {every:g} s")
        while not self.stop.is_set():
            t0 = time.monotonic()
            line = self.round()
            if line != "idle":  # a quiet market writes nothing
                self.say(f"{time.strftime('%H:%M:%S')} {line}")
            self.stop.wait(max(0.0, every - (time.monotonic() - t0)))
        self.say("worker stopped")
