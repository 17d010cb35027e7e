"""What every ``bti`` command shares: the root app, the consoles, one error handler, the
progress bar, the services, and the parsing of a UTC option."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bti_core.config import Settings, get_settings
from bti_core.errors import BTIError
from bti_core.market.ingest import Ingestor, IngestResult
from bti_core.market.warehouse import Warehouse
from bti_core.services import Services, build_services
from bti_core.timeutil import to_utc

console = Console(soft_wrap=True)  # paths and hashes stay on one line
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

#: What a command's user can cause and be told about: a bad value, a refusal, a missing
#: file, a service that is down. Anything else is a bug and keeps its traceback.
EXPECTED = (BTIError, ValueError, FileNotFoundError)


def fail(exc: Exception) -> typer.Exit:
    """Print ``error: …`` on stderr and exit 2 (1 is kept for "ran, and found a problem")."""
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


class App(typer.Typer):
    """A Typer app whose every command reports an `EXPECTED` error the same way (`fail`):
    the one error handler of the CLI, so no command can forget it or word it differently."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(fn: F) -> F:
            @functools.wraps(fn)  # Typer reads the options off the wrapped signature
            def handled(*a: Any, **kw: Any) -> Any:
                try:
                    return fn(*a, **kw)
                except EXPECTED as exc:
                    raise fail(exc) from exc

            register(handled)
            return fn

        return decorator


app = App(help="BTI: liquidation insurance for perpetual-futures traders.", no_args_is_help=True)


def open_services() -> Services:
    """The services of the current settings (`bti_core.services`, the one composition root)."""
    return build_services(get_settings())


@contextmanager
def services_context() -> Iterator[Services]:
    """`open_services`, closed on the way out."""
    svc = open_services()
    try:
        yield svc
    finally:
        svc.close()


@contextmanager
def warehouse_context() -> Iterator[tuple[Settings, Warehouse, Ingestor]]:
    with services_context() as svc:
        yield svc.settings, svc.warehouse, svc.ingestor


def progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=disable,  # a progress bar while it works, gone afterwards
    )


def print_results(results: list[IngestResult]) -> None:
    table = Table(title="Imported")
    table.add_column("data")
    for col in ("rows in", "kept", "added", "updated", "stored"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"{r.symbol} {r.kind} {r.timeframe}",
            f"{r.report.rows_in:,}",
            f"{r.report.rows_out:,}",
            f"{r.write.rows_added:,}",
            f"{r.write.rows_updated:,}",
            f"{r.write.rows_total:,}",
        )
    console.print(table)
    for r in results:
        console.print(f"[bold]{r.symbol} {r.kind} {r.timeframe}[/] cleaning:")
        for line in r.report.lines()[1:]:
            console.print(f"  {line.strip()}")


def utc_option(flag: str, value: str) -> pd.Timestamp:
    """A date-time option as a UTC timestamp (naive means UTC), or a usage error naming it."""
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        t = None
    if t is None or pd.isna(t):
        raise typer.BadParameter(f"{flag} must be a date-time such as 2025-03-01; got {value!r}")
    return to_utc(t)
