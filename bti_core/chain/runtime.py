"""Connect the app to its chain: the local anvil node under data/chain (started on first use
and stopped at exit) or the node at ``BTI_RPC_URL``; BTI's contracts' addresses recorded in
``data/chain/deployment-<chain id>.json``.

Deploying is a decision, not a side effect. On the local dev chain (chain id 31337, the demo)
the contracts are deployed the first time the app connects, with ``pool_capacity`` BTI of seed
capital. On any other chain nothing deploys unless `bti chain deploy` is run (``deploy=True``),
and anvil's public development keys are refused before anything is sent or read.
"""

from __future__ import annotations

import atexit
from decimal import Decimal
from pathlib import Path

from bti_core.chain.client import WITHDRAWAL_COOLDOWN, ChainClient
from bti_core.chain.node import AnvilNode, is_up, rpc_call
from bti_core.chain.types import Deployment
from bti_core.chain.wallets import LOCAL_CHAIN_ID, require_safe_keys
from bti_core.config import Settings, get_settings
from bti_core.errors import BTIError, ChainError
from bti_core.filelock import file_lock


def _keys(s: Settings) -> dict[str, str]:
    return {
        "admin": s.admin_key.get_secret_value(),
        "claims": s.claims_key.get_secret_value(),
        "quoter": s.quoter_key.get_secret_value(),
    }


def connect(
    settings: Settings | None = None,
    *,
    start_node: bool = True,
    deploy: bool | None = None,
    seed_capital: Decimal | None = None,
) -> ChainClient:
    """A client on a node with BTI deployed.

    ``deploy``: None deploys only on the local dev chain when nothing is deployed yet; True
    deploys when nothing is deployed (what `bti chain deploy` asks); False never deploys.
    A chain other than 31337 with anvil's dev keys in the settings is refused."""
    s = settings or get_settings()
    keys = _keys(s)
    if s.rpc_url:
        client = ChainClient(
            s.rpc_url, admin_key=keys["admin"], claims_key=keys["claims"], quoter_key=keys["quoter"]
        )
    else:
        node = AnvilNode(s.chain_dir, port=s.chain_port)
        if not is_up(node.url):
            if not start_node:
                raise ChainError(f"no chain node on {node.url}; start one with `bti chain up`")
            with file_lock(s.chain_dir / "node.lock"):  # the dashboard and a worker at once
                if not is_up(node.url):
                    node.start()
                    _STARTED.append(node)
                    atexit.register(node.stop)
        # a node left by an earlier run is adopted: snapshots go through its RPC all the same
        client = ChainClient(
            node.url,
            admin_key=keys["admin"],
            claims_key=keys["claims"],
            quoter_key=keys["quoter"],
            on_commit=node.snapshot,
        )
    require_safe_keys(client.chain_id, keys)
    path = s.chain_dir / f"deployment-{client.chain_id}.json"
    client.use_deployment(Deployment.load(path))
    if client.is_deployed():
        _require_current(client, s, path)
        return client
    may_deploy = client.chain_id == LOCAL_CHAIN_ID if deploy is None else deploy
    if not may_deploy:
        raise ChainError(
            f"BTI's contracts are not deployed on chain {client.chain_id} at {client.url} "
            f"(no {path.name} with live contracts); run `bti chain deploy` to deploy them"
        )
    # one deployer at a time: processes starting together must not deploy two pools
    with file_lock(path.with_suffix(".lock")):
        client.use_deployment(Deployment.load(path))
        if not client.is_deployed():
            client.deploy(
                s.pool_capacity if seed_capital is None else seed_capital,
                withdrawal_cooldown=withdrawal_cooldown(s, client.chain_id),
            )
            client.deployment.save(path)
    return client


def _require_current(client: ChainClient, s: Settings, path: Path) -> None:
    """Refuse, with what to do, a deployment an older BTI made: its contracts lack what this
    one calls (claim reserves, changes to a cover), which would otherwise fail page by page
    with a bare revert."""
    old = client.outdated()
    if not old:
        return
    where = f"chain {client.chain_id} at {client.url}"
    fix = (
        f"this is the local demo chain: move {s.data_dir} aside (or set BTI_DATA_DIR to a new "
        "folder) and `make run` builds the demo afresh"
        if client.chain_id == LOCAL_CHAIN_ID
        else "deploy this version's contracts (`bti chain deploy` with a new deployment file) "
        "and move the policies over"
    )
    raise ChainError(
        f"BTI's contracts on {where} ({path.name}) were deployed by an older BTI: "
        f"{', '.join(old)} changed since; {fix}"
    )


#: the local demo chain's default cooldown: long enough to see, short enough to wait out
DEMO_WITHDRAWAL_COOLDOWN = 120


def withdrawal_cooldown(s: Settings, chain_id: int) -> int:
    """Seconds a pool deployed on ``chain_id`` makes providers wait between a withdrawal
    request and its first moment (``BTI_WITHDRAWAL_COOLDOWN_SECONDS``, else 7 days; 2 minutes
    on the local demo chain)."""
    if s.withdrawal_cooldown_seconds is not None:
        return s.withdrawal_cooldown_seconds
    return DEMO_WITHDRAWAL_COOLDOWN if chain_id == LOCAL_CHAIN_ID else WITHDRAWAL_COOLDOWN


_STARTED: list[AnvilNode] = []  # the local nodes this process started (and stops at exit)


def stop_started_nodes() -> None:
    """Snapshot and stop the local nodes this process started, now: for exits that skip
    ``atexit`` (the dashboard's ASGI server on SIGTERM, `bti worker` cut off after its grace),
    which would otherwise lose the chain's newest state and leave the node running."""
    while _STARTED:
        _STARTED.pop().stop()


def chain_id_of(settings: Settings) -> int:
    """The id of the chain ``settings`` point at, without connecting a client: the local node
    BTI starts is the dev chain (31337); any ``BTI_RPC_URL`` is asked (``eth_chainId``)."""
    if not settings.rpc_url:
        return LOCAL_CHAIN_ID
    try:
        return int(rpc_call(settings.rpc_url, "eth_chainId", timeout=5.0), 16)
    except (OSError, ValueError, TypeError, BTIError) as exc:
        raise ChainError(
            f"cannot tell which chain {settings.rpc_url} is ({exc}); BTI_RPC_URL must answer "
            "eth_chainId"
        ) from exc
