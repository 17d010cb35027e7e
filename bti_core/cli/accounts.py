"""``bti accounts …``: traders' exchange accounts, linked with read-only API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bti_core.cli.common import App, console, services_context

accounts_app = App(help="Exchange accounts linked with read-only API keys.", no_args_is_help=True)

User = Annotated[str, typer.Argument(help="The BTI user who owns the account")]


@accounts_app.command("link")
def accounts_link(
    username: User,
    exchange: Annotated[
        str,
        typer.Option(help="binanceusdm, bybit, or demo / demo-bybit (the local demo exchange)"),
    ] = "binanceusdm",
    label: Annotated[str, typer.Option(help="A name to tell accounts apart")] = "",
    api_key: Annotated[
        str,
        typer.Option(
            prompt="API key",
            hide_input=True,
            envvar="BTI_EXCHANGE_API_KEY",
            show_envvar=True,
            help="A read-only key (never shown again)",
        ),
    ] = "",
    secret: Annotated[
        str,
        typer.Option(
            prompt="API secret",
            hide_input=True,
            envvar="BTI_EXCHANGE_API_SECRET",
            show_envvar=True,
            help="The key's secret (stored encrypted)",
        ),
    ] = "",
) -> None:
    """Link an exchange account by a read-only API key; a key that can trade, withdraw or
    transfer is refused."""
    with services_context() as svc:
        a = svc.accounts.link(username, exchange, api_key, secret, label=label)
        positions = svc.accounts.positions(username, a.id)
    console.print(
        f"linked account #{a.id}: {a.label} (key …{a.key_hint}), {len(positions)} open position(s)"
    )


@accounts_app.command("list")
def accounts_list(username: User) -> None:
    """The user's linked accounts and their state."""
    with services_context() as svc:
        rows = svc.accounts.accounts(username)
    if not rows:
        console.print(f"{username} has no linked account")
        return
    t = Table("id", "exchange", "label", "key", "status", "read", "last error")
    for a in rows:
        read = a.synced_at.strftime("%Y-%m-%d %H:%M:%S UTC") if a.synced_at else "never"
        t.add_row(str(a.id), a.venue, a.label, f"…{a.key_hint}", a.status, read, a.last_error or "")
    console.print(t)


@accounts_app.command("positions")
def accounts_positions(
    username: User,
    sync: Annotated[bool, typer.Option(help="Read the exchange first")] = False,
) -> None:
    """The open positions of the user's linked accounts, as the exchange last reported them."""
    with services_context() as svc:
        if sync:
            for a in svc.accounts.accounts(username):
                report = svc.accounts.sync(a.id)
                if report.error:
                    console.print(f"account #{a.id}: {report.error}")
        rows = svc.accounts.positions(username)
    if not rows:
        console.print(f"{username} has no open position on a linked account")
        return
    t = Table("position", "size", "entry", "leverage", "margin", "liquidation", "ADL")
    for p in rows:
        t.add_row(
            f"#{p.account_id} {p.symbol} {p.side}",
            f"{p.size:f}",
            f"{p.entry_price:,f}",
            f"{p.leverage}× {p.margin_mode}",
            f"{p.margin:,.2f}",
            "—" if p.liquidation_price is None else f"{p.liquidation_price:,f}",
            "—" if p.adl_quantile is None else str(p.adl_quantile),
        )
    console.print(t)


@accounts_app.command("remove")
def accounts_remove(
    username: User,
    account_id: Annotated[int, typer.Argument(help="The account's id (bti accounts list)")],
) -> None:
    """Remove a linked account: its key and secret are wiped."""
    with services_context() as svc:
        svc.accounts.remove(username, account_id)
    console.print(f"account #{account_id} removed; its key and secret are wiped")


@accounts_app.command("rotate-key")
def accounts_rotate_key() -> None:
    """Re-encrypt every stored secret under a new key, then retire the old one."""
    with services_context() as svc:
        n = svc.accounts.rotate_key()
    console.print(
        f"{n} account(s) re-encrypted; the key file {svc.settings.resolved_accounts_key_file} "
        "now holds only the new key: back it up"
    )
