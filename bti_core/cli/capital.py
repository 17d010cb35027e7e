"""``bti capital …``: a capital provider's deposits, withdrawal requests, withdrawals and report
(the custodial demo wallet of a user, on the local chain; elsewhere the provider's own wallet
signs, and these commands refuse with a message)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from bti_core.chain.types import ProviderPosition
from bti_core.cli.common import App, console, open_services

capital_app = App(
    help="Capital providers: deposit, request a withdrawal, withdraw, and the pool's yield.",
    no_args_is_help=True,
)
USER = Annotated[str, typer.Argument(help="The user whose demo wallet provides the capital")]
AMOUNT_HELP = "BTI, positive, at most 8 decimals, at most 1,000,000,000"


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@capital_app.command("status")
def capital_status(user: USER) -> None:
    """The user's shares, request, value and gain; the pool's capital, yield and flows; and
    what the user's share would lose in each stress scenario."""
    import pandas as pd

    from bti_core.analytics.book import load_book
    from bti_core.analytics.scenarios import marks_of, run_scenario, scenarios
    from bti_core.capital import flows
    from bti_core.display import duration_text

    svc = open_services()
    r = svc.capital.report_of(user)
    p, pool = r.position, r.pool
    t = Table(title=f"{user}'s capital ({p.address})", show_header=False)
    t.add_column("")
    t.add_column("", justify="right")
    for k, v in (
        ("value", f"{p.total_value:,.2f} BTI ({r.pool_share:.2%} of the pool)"),
        ("net deposited", f"{r.net_deposited:,.2f} BTI"),
        ("gain", f"{r.gain:+,.2f} BTI"),
        ("shares held", f"{p.shares:,.6f} ({p.value:,.2f} BTI)"),
        ("shares requested", f"{p.requested:,.6f} ({p.requested_value:,.2f} BTI)"),
        ("request", _request_line(p)),
        ("withdrawable now", f"{p.can_withdraw_now:,.2f} BTI"),
        ("share price", f"{p.share_price:,.6f} BTI"),
        ("pool capital", f"{pool.reserves:,.2f} BTI"),
        ("locked behind open cover", f"{pool.locked:,.2f} BTI ({pool.utilisation:.1%})"),
        ("reserved for open claims", f"{pool.claims_reserved:,.2f} BTI"),
        ("free to withdraw", f"{pool.free:,.2f} BTI"),
        ("cooldown, then window", f"{duration_text(p.cooldown)}, then {duration_text(p.window)}"),
    ):
        t.add_row(k, v)
    console.print(t)

    y = Table(title="Realised yield (share price)")
    for c in ("window", "return", "a year (simple)", "premiums", "claims paid", "from"):
        y.add_column(c, justify="left" if c in ("window", "from") else "right")
    for f in r.yields:
        moved = flows(r.history, f.start)
        y.add_row(
            f"{f.days} days",
            f"{f.ret:+.3%}",
            f"{f.annualised(r.now):+.1%}",
            f"{moved.premiums:,.2f}",
            f"{moved.claims:,.2f}",
            f"{f.start:%Y-%m-%d %H:%M}" + ("" if f.full_window else " (the pool's start)"),
        )
    console.print(y if r.yields else "no capital in the pool yet: no yield")

    book = load_book(svc.db, svc.warehouse)
    marks = marks_of(book, svc.risk.spot)
    s = Table(title="Stress: the open book's claims, and your share of them")
    for c in ("scenario", "claims", "payout (BTI)", "of the pool", "your share (BTI)"):
        s.add_column(c, justify="left" if c == "scenario" else "right")
    for sc in scenarios(float(svc.limits.crash_move)):
        res = run_scenario(book, sc, marks, now=pd.Timestamp.now("UTC"))
        share = res.payout / float(pool.reserves) if pool.reserves > 0 else 0.0
        s.add_row(
            sc.name,
            f"{res.claims:,}",
            f"{res.payout:,.2f}",
            f"{share:.1%}",
            f"{r.stress_loss(res.payout):,.2f}",
        )
    console.print(s)


def _request_line(p: ProviderPosition) -> str:
    state = p.request_state
    if state == "none":
        return "none"
    if state == "cooling down":
        return f"cooling down until {_when(p.ready_at)}"
    if state == "ready":
        return f"ready until {_when(p.expires_at)}"
    return f"lapsed at {_when(p.expires_at)} (cancel it, then request again)"


@capital_app.command("deposit")
def capital_deposit(user: USER, amount: Annotated[str, typer.Argument(help=AMOUNT_HELP)]) -> None:
    """Deposit BTI from the user's wallet for pool shares at today's share price."""
    svc = open_services()
    tx = svc.capital.deposit(user, amount)
    p = svc.capital.report_of(user).position
    console.print(
        f"deposited; {user} holds {p.shares:,.6f} shares ({p.value:,.2f} BTI); tx {tx}",
        soft_wrap=True,
    )


@capital_app.command("request")
def capital_request(
    user: USER,
    amount: Annotated[
        str | None, typer.Argument(help=f"{AMOUNT_HELP}; leave out for all free shares")
    ] = None,
) -> None:
    """Ask to withdraw: the shares wait in escrow (still earning and still bearing claims) for
    the cooldown, then may be taken within the window."""
    svc = open_services()
    tx = svc.capital.request(user, amount)
    p = svc.capital.report_of(user).position
    console.print(
        f"requested {p.requested_value:,.2f} BTI; {_request_line(p)}; tx {tx}", soft_wrap=True
    )


@capital_app.command("cancel")
def capital_cancel(user: USER) -> None:
    """Give the requested shares back to the user (a lapsed request too)."""
    tx = open_services().capital.cancel(user)
    console.print(f"request cancelled; tx {tx}", soft_wrap=True)


@capital_app.command("withdraw")
def capital_withdraw(
    user: USER,
    amount: Annotated[
        str | None, typer.Argument(help=f"{AMOUNT_HELP}; leave out for all that is ready")
    ] = None,
) -> None:
    """Take a ready request at today's share price (never capital locked by open cover)."""
    tx, got = open_services().capital.withdraw(user, amount)
    console.print(f"withdrew {got:,.2f} BTI; tx {tx}", soft_wrap=True)
