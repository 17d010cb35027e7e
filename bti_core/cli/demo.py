"""Demo commands (local development chain only): synthetic markets, a demo book, a crash."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import typer

from bti_core.cli.common import (
    app,
    console,
    open_services,
    print_results,
    progress_bar,
    warehouse_context,
)
from bti_core.config import Settings
from bti_core.market.ingest import Ingestor
from bti_core.market.schema import Kind, allowed_times, timeframe_delta
from bti_core.market.warehouse import Warehouse


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
    open_services().require_demo("`bti demo` (synthetic markets)")
    with warehouse_context() as (settings, warehouse, ingestor):
        _demo(settings, warehouse, ingestor, seed, days, timeframe, end, if_missing, quiet)


@app.command("demo-book")
def demo_book(
    policies: Annotated[int, typer.Option(min=1, max=5000, help="Policies to buy")] = 300,
    traders: Annotated[int, typer.Option(min=1, max=500, help="Demo traders buying them")] = 30,
    seed: Annotated[int, typer.Option(help="The same seed buys the same book")] = 7,
    if_missing: Annotated[
        bool,
        typer.Option("--if-missing", help="Do nothing if a policy or an earlier demo book exists"),
    ] = False,
    progress_lines: Annotated[
        bool,
        typer.Option(
            "--progress-lines",
            help="Progress as plain lines on stdout, at most every 2 s (for a script that "
            "shows them, as `make run` does), instead of a bar",
        ),
    ] = False,
) -> None:
    """Demo: buy an insured book over the demo markets' history through the real service
    path on the local chain (its clock moved to each purchase), then run the claims once."""
    import time

    from bti_core.demo_book import build_demo_book

    services = open_services()
    try:
        services.require_demo("`bti demo-book`")
        if if_missing:
            from bti_core.demo_book import book_state, has_policies

            n, state = has_policies(services), book_state(services)
            if n or state != "absent":
                console.print(f"demo book: {state}, {n} policies stored; nothing to do")
                return
        if progress_lines:
            said = [0.0]

            def say(done: int, total: int, what: str) -> None:
                if time.monotonic() - said[0] >= 2.0 or done >= total:
                    said[0] = time.monotonic()
                    print(f"{what}: {done:,} of {total:,} ({done / max(total, 1):.0%})", flush=True)

            result = build_demo_book(
                services, policies=policies, traders=traders, seed=seed, progress=say
            )
        else:
            with progress_bar() as progress:
                task = progress.add_task("demo book", total=policies)

                def report(done: int, total: int, what: str) -> None:
                    progress.update(task, completed=done, total=total, description=what)

                result = build_demo_book(
                    services, policies=policies, traders=traders, seed=seed, progress=report
                )
        console.print(result.line())
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
        with progress_bar(disable=quiet) as progress:
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
    print_results(results)
    console.print(f"demo markets stored in {settings.warehouse_dir}")


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

    services = open_services()
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
    finally:
        services.close()


@app.command("demo-exchange")
def demo_exchange(
    port: Annotated[
        int | None,
        typer.Option(
            min=1024,
            max=65535,
            help="Port on 127.0.0.1 (default: BTI_DEMO_EXCHANGE_URL's, else 8610)",
        ),
    ] = None,
    ws_port: Annotated[
        int | None,
        typer.Option(
            min=1024,
            max=65535,
            help="Port of its user data streams (default: BTI_DEMO_EXCHANGE_WS_URL's, else 8611)",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Set up, follow the market once, save and stop")
    ] = False,
) -> None:
    """Demo (local chain only): run the demo exchange — Binance USDⓈ-M's REST protocol and its
    user data streams on 127.0.0.1 — with the demo trader's account linked in BTI, its
    positions following the demo market (`bti crash` liquidates them) until Ctrl-C."""
    import signal
    import threading
    from datetime import timedelta
    from urllib.parse import urlsplit

    from bti_core.accounts.demo_exchange import DemoExchange
    from bti_core.accounts.demo_market import MarketFollower, ensure_demo_trader, load, save
    from bti_core.accounts.service import AccountsService
    from bti_core.auth import ensure_demo_users

    services = open_services()
    try:
        services.require_demo("the demo exchange")
        settings = services.settings
        configured = settings.demo_exchange_url
        port = port or (urlsplit(configured).port if configured else None) or 8610
        configured_ws = settings.demo_exchange_ws_url
        ws_port = ws_port or (urlsplit(configured_ws).port if configured_ws else None) or 8611
        folder = settings.data_dir / "demo_exchange"
        books = DemoExchange()
        restored = load(books, folder)
        trader = ensure_demo_trader(books, folder, services.risk.spot)
        save(books, folder)
        books.start(port, ws_port)
        ensure_demo_users(services.db)
        accounts = AccountsService(
            services.db,
            services.accounts.vault,
            demo_url=books.url,
            require_demo=services.require_demo,
        )
        if not any(a.exchange == "demo" for a in accounts.accounts("trader")):
            accounts.link("trader", "demo", trader.api_key, trader.secret, label="demo")
        account = books.accounts[trader.uid]
        console.print(
            f"demo exchange on {books.url}, user streams on {books.ws_url} "
            f"({'restored' if restored else 'new'}): the demo "
            f"trader's account {trader.uid}, {len(account.positions)} open position(s), linked "
            "in BTI; Ctrl-C stops it"
        )
        follower = MarketFollower(books, services.warehouse, timedelta(hours=2))
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        seen = sum(len(a.forced) for a in books.accounts.values())
        while True:
            try:
                hit = follower.tick()
            except Exception as exc:  # one bad read must not stop the exchange
                # (a bar store read while `bti crash` writes it failed inside DuckDB once);
                # a tick feeds nothing until all of its reads are done, so the next one redoes it
                console.print(f"reading the market failed, tried again in a second: {exc}")
                hit = []
            if hit:
                save(books, folder)
                forced = [o for a in books.accounts.values() for o in a.forced]
                for o in sorted(forced, key=lambda o: o["orderId"])[seen:]:
                    did = "auto-deleveraged" if o["_kind"] == "adl" else "liquidated"
                    console.print(
                        f"{did} on the demo exchange: {o['symbol']} {o['origQty']} at "
                        f"{o['avgPrice']} (order {o['orderId']})"
                    )
                seen = len(forced)
            if once or stop.wait(1.0):
                break
        save(books, folder)
        books.stop()
    finally:
        services.close()
