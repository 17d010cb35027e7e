"""The ``bti`` command (Typer): one module per command group, each wired through
`bti_core.services.build_services` and reporting errors through `common.App`.

=================  ==========================================================
module             commands
=================  ==========================================================
`demo`             ``demo``, ``demo-book``, ``crash`` (local chain only)
`data`             ``ingest``, ``data summary|export``, ``db upgrade``
`risk`             ``backtest``, ``train``, ``forecast``, ``models list|show``
`chain`            ``chain up|status|deploy|faucet|reconcile``
`claims`           ``claims run|reconcile|verify``, ``worker``
`stream`           ``stream replay|broker|publish|kafka|spark|live``
`policies`         ``policies quote|permit|buy``
`users`            ``users add|set-role``
`accounts`         ``accounts link|list|positions|remove|rotate-key``
=================  ==========================================================
"""

from __future__ import annotations

# isort: off
# imported in the order `bti --help` lists their top-level commands
from bti_core.cli import demo as _demo  # noqa: F401 — registers demo, demo-book and crash
from bti_core.cli import data, risk, claims, chain, capital, policies, stream, users, accounts

# isort: on
from bti_core.cli.common import app

app.add_typer(data.data_app, name="data")
app.add_typer(data.db_app, name="db")
app.add_typer(chain.chain_app, name="chain")
app.add_typer(capital.capital_app, name="capital")
app.add_typer(claims.claims_app, name="claims")
app.add_typer(policies.policies_app, name="policies")
app.add_typer(users.users_app, name="users")
app.add_typer(accounts.accounts_app, name="accounts")
app.add_typer(stream.stream_app, name="stream")
app.add_typer(risk.models_app, name="models")

__all__ = ["app"]
