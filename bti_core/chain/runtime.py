"""Connect the app to its chain: the local anvil node under data/chain (started on first use
and stopped at exit) or the node at ``BTI_RPC_URL``; BTI's contracts deployed once per chain,
their addresses recorded in ``data/chain/deployment-<chain id>.json``."""

from __future__ import annotations

import atexit

from bti_core.chain.client import ChainClient, Deployment
from bti_core.chain.node import AnvilNode, is_up
from bti_core.config import Settings, get_settings
from bti_core.errors import ChainError


def connect(settings: Settings | None = None, *, start_node: bool = True) -> ChainClient:
    """A client on a node with BTI deployed (deploying with ``pool_capacity`` BTI of seed
    capital the first time)."""
    s = settings or get_settings()
    admin, claims, quoter = (
        k.get_secret_value() for k in (s.admin_key, s.claims_key, s.quoter_key)
    )
    if s.rpc_url:
        client = ChainClient(s.rpc_url, admin_key=admin, claims_key=claims, quoter_key=quoter)
    else:
        node = AnvilNode(s.chain_dir, port=s.chain_port)
        if not is_up(node.url):
            if not start_node:
                raise ChainError(f"no chain node on {node.url}; start one with `bti chain up`")
            node.start()
            atexit.register(node.stop)
        # a node left by an earlier run is adopted: snapshots go through its RPC all the same
        client = ChainClient(
            node.url,
            admin_key=admin,
            claims_key=claims,
            quoter_key=quoter,
            on_commit=node.snapshot,
        )
    path = s.chain_dir / f"deployment-{client.chain_id}.json"
    client.use_deployment(Deployment.load(path))
    if not client.is_deployed():
        client.deploy(s.pool_capacity)
        client.deployment.save(path)
    return client
