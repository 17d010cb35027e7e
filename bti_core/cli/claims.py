"""``bti claims …`` and ``bti worker``: what decides and pays claims."""

from __future__ import annotations

from typing import Annotated

import typer

from bti_core.cli.common import App, app, console, err, open_services
from bti_core.config import get_settings
from bti_core.services import build_services

claims_app = App(
    help="Claims: scan the market, decide, pay, verify the audit log.", no_args_is_help=True
)


@claims_app.command("run")
def claims_run() -> None:
    """Scan the market for liquidations of active policies; audit, decide and pay (safe beside
    workers and other runs)."""
    console.print(f"claims: {open_services().claims.run()}")


@claims_app.command("reconcile")
def claims_reconcile() -> None:
    """Settle claims a crash left half-done (never paying twice)."""
    console.print(f"claims reconciled: {open_services().claims.reconcile()}")


@claims_app.command("verify")
def claims_verify() -> None:
    """Check every hash and link of the claims audit log, every claim against it and every
    payout on-chain against the head it anchored; exit 1 if anything was tampered with."""
    verdict = open_services().claims.verify_log()
    if verdict.ok:
        console.print(str(verdict))
    else:
        err.print(f"[bold red]{verdict}[/]")
        raise typer.Exit(code=1)


@app.command()
def worker(
    every: Annotated[
        float | None,
        typer.Option(
            min=0.1, max=3600, help="Seconds between rounds (default BTI_CLAIMS_WATCH_SECONDS)"
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one round and exit")] = False,
) -> None:
    """Everything that runs on a clock: scan for liquidations, decide and pay claims, expire
    policies and release their cover, reconcile; webhooks apart, each delivery bounded. Any
    number may run beside each other and beside CLI runs; SIGTERM or Ctrl-C stops it within
    5 seconds (the step under way is safe to cut short)."""
    from bti_core.worker import Worker

    settings = get_settings()
    w = Worker(build_services(settings), log=lambda m: console.print(m, highlight=False))
    if once:
        console.print(w.round())
        text, busy = w.duty("webhooks", w.deliver_webhooks)
        if busy:
            console.print(text)
        return
    w.run_forever(every if every is not None else (settings.claims_watch_seconds or 30.0))
