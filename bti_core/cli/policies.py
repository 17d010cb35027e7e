"""``bti policies …``: quote and buy cover from the trader's own wallet."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bti_core.cli.common import App, console, open_services

policies_app = App(
    help="Quote and buy cover from your own wallet (any chain): quote, permit, buy.",
    no_args_is_help=True,
)


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

    svc = open_services()
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

    req = open_services().insurance.permit_request(user_id=user, quote_id=quote, wallet=wallet)
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

    p = open_services().insurance.buy(
        user_id=user, quote_id=quote, wallet=wallet, permit=Permit(signature, deadline)
    )
    console.print(
        f"policy {p.id} is {p.status} until {p.end_at:%Y-%m-%d %H:%M} UTC: on-chain policy "
        f"{p.chain_policy_id}, tx {p.tx_hash}",
        soft_wrap=True,
    )
