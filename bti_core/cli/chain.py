"""``bti chain …``: the local node, the contracts, the pool, the faucet, reconciliation."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from bti_core.cli.common import App, console, open_services
from bti_core.config import get_settings
from bti_core.errors import BTIError

chain_app = App(
    help="The chain: local node, contracts, pool, faucet, reconciliation.", no_args_is_help=True
)


@chain_app.command("up")
def chain_up() -> None:
    """Start the local anvil node (state under data/chain), deploy BTI's contracts if needed,
    and keep running until Ctrl-C (the state is snapshotted on the way out)."""
    import signal
    import threading

    from bti_core.chain.node import AnvilNode, is_up
    from bti_core.chain.runtime import connect
    from bti_core.filelock import file_lock

    settings = get_settings()
    if settings.rpc_url:
        raise ValueError("BTI_RPC_URL is set: that node is not started by BTI")
    node = AnvilNode(settings.chain_dir, port=settings.chain_port)
    try:
        # under the lock a process that would start a node of its own takes (`connect`)
        with file_lock(settings.chain_dir / "node.lock"):
            if is_up(node.url):
                raise ValueError(f"a node already answers on {node.url}")
            node.start()
        client = connect(settings, start_node=False)
        client.on_commit = node.snapshot
    except BTIError:
        node.stop(snapshot=False)
        raise
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
                raise ValueError(f"anvil exited (code {node.proc.returncode})")
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        console.print(f"stopped; state saved in {node.snapshot_path}")


@chain_app.command("status")
def chain_status() -> None:
    """The deployment and the pool's books (read-only: never deploys — `bti chain deploy`
    does — and never starts a node: `make run` asks it whether `bti chain up`'s node is there
    yet, and a node it started itself took the port from that one)."""
    from bti_core.chain.runtime import connect

    client = connect(get_settings(), deploy=False, start_node=False)
    d, p = client.deployment, client.pool_stats()
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
        ("open claims reserved", f"{p.claims_reserved:,.2f} BTI"),
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

    cap = None if seed_capital is None else Decimal(str(round(seed_capital, 2)))
    client = connect(get_settings(), deploy=True, seed_capital=cap)
    _print_pool(client.chain_id, client.url, client.deployment, client.pool_stats())


@chain_app.command("faucet")
def chain_faucet(
    user: Annotated[str, typer.Argument(help="Trader id (their demo wallet gets the BTI)")],
    amount: Annotated[
        float, typer.Option(min=0.01, max=1_000_000, help="BTI to mint (0.01 – 1,000,000)")
    ] = 1000.0,
) -> None:
    """Mint demo BTI to a trader's custodial demo wallet (local dev chain only)."""
    from decimal import Decimal

    svc = open_services()
    svc.require_demo("the faucet")
    wallet = svc.insurance.wallet_of(user)
    tx = svc.chain.faucet(wallet.address, Decimal(str(round(amount, 2))))
    console.print(
        f"{amount:,.2f} BTI to {user} ({wallet.address}); balance "
        f"{svc.chain.balance(wallet.address):,.2f} BTI; tx {tx}",
        soft_wrap=True,
    )


@chain_app.command("reconcile")
def chain_reconcile() -> None:
    """Settle policies whose database state and chain disagree (interrupted purchases, expired
    cover still locked)."""
    svc = open_services().insurance
    svc.expire_due()
    console.print(f"reconciled: {svc.reconcile()}")
