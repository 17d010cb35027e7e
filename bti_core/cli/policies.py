"""``bti policies …``: quote and buy cover from the trader's own wallet."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bti_core.cli.common import App, console, open_services
from bti_core.db.statuses import Peril

policies_app = App(
    help="Quote and buy cover from your own wallet (any chain): quote, permit, buy.",
    no_args_is_help=True,
)


@policies_app.command("quote")
def policies_quote(
    user: Annotated[str, typer.Option(help="Your BTI user name")],
    coverage: Annotated[str, typer.Option(help="Cover in USDT (at most the margin)")],
    hours: Annotated[int, typer.Option(help="Cover duration in hours (1–720)")] = 24,
    position: Annotated[
        int | None,
        typer.Option(help="A linked exchange position's id (bti accounts positions)"),
    ] = None,
    symbol: Annotated[str | None, typer.Option(help="e.g. BTCUSDT")] = None,
    side: Annotated[str | None, typer.Option(help="long or short")] = None,
    quantity: Annotated[str | None, typer.Option(help="Order size in the base asset")] = None,
    leverage: Annotated[str | None, typer.Option(help="Leverage, e.g. 10")] = None,
    entry: Annotated[
        str | None, typer.Option(help="Limit price; default: a market order at the mark")
    ] = None,
    peril: Annotated[
        Peril,
        typer.Option(
            help="What the cover pays for: liquidation, or adl (auto-deleveraging of a "
            "linked position, at most a quarter of its margin)"
        ),
    ] = Peril.LIQUIDATION,
) -> None:
    """Price cover for a linked position (--position) or a described order (--symbol, --side,
    --quantity, --leverage); prints the quote id, the premium and any failed check."""
    from typing import cast

    from bti_core.orders import Cover, Order, OrderError, OrderType, Side, to_decimal

    svc = open_services()
    cover = Cover(coverage=to_decimal(coverage, "coverage"), duration_hours=hours)
    described = {"symbol": symbol, "side": side, "quantity": quantity, "leverage": leverage}
    if position is not None:
        if any(v is not None for v in (*described.values(), entry)):
            raise OrderError("a linked position's order is the exchange's: give --position alone")
        q = svc.insurance.quote_position(
            user_id=user, position_id=position, cover=cover, peril=peril
        )
    elif peril is Peril.ADL:
        raise OrderError("ADL cover is sold on a linked exchange position: give --position")
    else:
        missing = [f"--{k}" for k, v in described.items() if v is None]
        if missing:
            raise OrderError(
                f"describe the order ({', '.join(missing)} missing) or give --position"
            )
        price = to_decimal(entry or round(svc.risk.spot(str(symbol)), 2), "entry price")
        order = Order(
            str(symbol),
            cast(Side, side),  # Order checks it and says what is allowed
            to_decimal(quantity, "quantity"),
            price,
            to_decimal(leverage, "leverage"),
            order_type=OrderType.LIMIT if entry else OrderType.MARKET,
        )
        q = svc.insurance.quote(user_id=user, order=order, cover=cover)
    r = q.record
    if peril is Peril.ADL:
        adl = r.inputs["adl"]
        odds = (
            f"P(auto-deleveraging) {r.probability:.2%} (a {adl['crash_probability']:.2%} chance "
            f"of the mark reaching {adl['crash_level']:,.2f}, the queue's reach "
            f"{adl['reach']:.0%}{', the floor' if adl['floored'] else ''})"
        )
    else:
        odds = f"P(liquidation) {r.probability:.2%}; liquidation price {r.liquidation_price:,.2f}"
    console.print(
        f"quote {r.id}: premium {r.premium:,.2f} BTI for a payout of {r.payout:,.2f}; {odds}; "
        f"valid until {r.expires_at:%H:%M:%S} UTC"
    )
    for w in q.warnings:
        console.print(f"  note: {w}")
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
