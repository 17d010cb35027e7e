"""Market data in and out: ``bti ingest``, ``bti data …`` and ``bti db upgrade``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID
from rich.table import Table

from bti_core.cli.common import (
    App,
    app,
    console,
    print_results,
    progress_bar,
    services_context,
    warehouse_context,
)
from bti_core.db.engine import session_scope
from bti_core.db.repository import latest_ingest_runs
from bti_core.market.ingest import Ingestor, IngestResult
from bti_core.market.schema import TIMEFRAMES, Kind
from bti_core.services import Services

data_app = App(help="Inspect and export the market warehouse.", no_args_is_help=True)


db_app = App(help="Database schema.", no_args_is_help=True)


@app.command()
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders to import")] = None,
    exchange: Annotated[
        str | None, typer.Option(help="Download from a ccxt exchange, e.g. binanceusdm")
    ] = None,
    symbol: Annotated[
        str | None, typer.Option(help="Symbol (BTCUSDT or BTC/USDT:USDT); overrides file names")
    ] = None,
    kind: Annotated[
        Kind | None, typer.Option(help="ohlcv, mark or funding; overrides file names")
    ] = None,
    timeframe: Annotated[str | None, typer.Option(help=f"One of {', '.join(TIMEFRAMES)}")] = None,
    since: Annotated[
        str | None, typer.Option(help="With --exchange: first time (UTC), e.g. 2024-01-01")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="With --exchange: end time (UTC); default now")
    ] = None,
) -> None:
    """Import market-data files (Binance public data, normalised CSV, Parquet) or download
    from an exchange; every run is cleaned and reported."""
    with warehouse_context() as (_settings, _warehouse, ingestor):
        results = _ingest(ingestor, paths, exchange, symbol, kind, timeframe, since, until)
    print_results(results)


def _ingest(
    ingestor: Ingestor,
    paths: list[Path] | None,
    exchange: str | None,
    symbol: str | None,
    kind: Kind | None,
    timeframe: str | None,
    since: str | None,
    until: str | None,
) -> list[IngestResult]:
    if exchange:
        results = _download(ingestor, exchange, symbol, kind, timeframe or "1h", since, until)
    else:
        if not paths:
            raise typer.BadParameter("give files or folders to import, or --exchange")
        with progress_bar() as progress:
            task = progress.add_task("reading", total=None)

            def report(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total, description=what)

            results = ingestor.ingest_paths(
                paths, kind=kind, symbol=symbol, timeframe=timeframe, progress=report
            )
    return results


def _download(
    ingestor: Ingestor,
    exchange_id: str,
    symbol: str | None,
    kind: Kind | None,
    timeframe: str,
    since: str | None,
    until: str | None,
) -> list[IngestResult]:
    from bti_core.market.exchange import download, make_exchange

    if not symbol or not since:
        raise typer.BadParameter("--exchange needs --symbol and --since")
    ex = make_exchange(exchange_id)
    kinds = [kind] if kind else [Kind.MARK, Kind.OHLCV, Kind.FUNDING]
    results = []
    with progress_bar() as progress:
        for k in kinds:
            task = progress.add_task(f"{exchange_id} {symbol} {k}", total=None)

            def report(done: int, total: int, what: str, task: TaskID = task) -> None:
                progress.update(task, completed=done, total=total)

            tf = "8h" if k is Kind.FUNDING else timeframe
            frame = download(ex, symbol, k, timeframe=tf, since=since, until=until, progress=report)
            results.append(
                ingestor.ingest_frame(
                    frame, symbol=symbol, kind=k, timeframe=tf, source=exchange_id
                )
            )
    return results


@data_app.command("summary")
def data_summary() -> None:
    """What the warehouse holds, and the latest imports with their cleaning reports."""
    with services_context() as svc:
        _summary(svc)


def _summary(svc: Services) -> None:
    settings = svc.settings
    datasets = svc.warehouse.datasets()
    if not datasets:
        console.print(
            f"the warehouse at {settings.warehouse_dir} is empty: "
            "run `bti demo` or `bti ingest PATH`"
        )
        return
    table = Table(title=f"Warehouse {settings.warehouse_dir}")
    for col in ("kind", "symbol", "tf", "rows", "first (UTC)", "last (UTC)", "size"):
        table.add_column(col)
    for d in datasets:
        table.add_row(
            str(d.kind),
            d.symbol,
            d.timeframe,
            f"{d.rows:,}",
            f"{d.first:%Y-%m-%d %H:%M}" if d.first is not None else "-",
            f"{d.last:%Y-%m-%d %H:%M}" if d.last is not None else "-",
            f"{d.bytes / 1e6:.1f} MB",
        )
    console.print(table)
    with session_scope(svc.db) as session:
        runs = latest_ingest_runs(session, limit=12)
    if runs:
        t = Table(title="Latest imports")
        for col in ("when (UTC)", "symbol", "kind", "tf", "added", "cleaning", "source"):
            t.add_column(col)
        for r in runs:
            changed = {k: v for k, v in r.report.get("counts", {}).items() if v}
            t.add_row(
                f"{r.created_at:%Y-%m-%d %H:%M}",
                r.symbol,
                r.kind,
                r.timeframe,
                f"{r.rows_added:,}",
                "; ".join(f"{k} {v:,}" for k, v in changed.items()) or "clean",
                r.source[-40:],
            )
        console.print(t)


@data_app.command("export")
def data_export(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. BTCUSDT")],
    out: Annotated[Path, typer.Argument(help="Output file: .parquet, .csv or .csv.gz")],
    kind: Annotated[Kind, typer.Option(help="ohlcv, mark or funding")] = Kind.OHLCV,
    timeframe: Annotated[str, typer.Option(help="Timeframe to export")] = "1h",
) -> None:
    """Export stored data as Parquet or normalised CSV (readable back by `bti ingest`)."""
    from bti_core.market.sources import write_normalised_csv, write_parquet

    tf = "8h" if kind is Kind.FUNDING else timeframe
    with services_context() as svc:
        frame = svc.warehouse.query(kind, symbol, tf)
    if out.suffix == ".parquet":
        write_parquet(frame, out)
    elif out.name.endswith((".csv", ".csv.gz")):
        write_normalised_csv(frame, out, kind)
    else:
        raise typer.BadParameter(f"cannot write {out.name}: use a .parquet, .csv or .csv.gz name")
    console.print(f"wrote {len(frame):,} rows to {out}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database schema (Alembic)."""
    with services_context() as svc:
        svc.db  # noqa: B018 — migrates on first use
        console.print(f"database at {svc.settings.resolved_database_url} is up to date")
