"""``bti users …``: the people who sign in."""

from __future__ import annotations

from typing import Annotated

import typer

from bti_core.cli.common import App, console, services_context

users_app = App(help="People who sign in (traders, underwriters).", no_args_is_help=True)


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

    with services_context() as svc:
        u = add_user(svc.db, username=username, name=name, role=role, password=password)
    console.print(f"user {u.username} ({u.role}) created")


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="An existing user")],
    role: Annotated[str, typer.Argument(help="trader or underwriter")],
) -> None:
    """Change a user's role; it takes effect at once (pages, claim decisions, webhooks)."""
    from bti_core.auth import set_role

    with services_context() as svc:
        u = set_role(svc.db, username, role)
    console.print(f"user {u.username} is now {u.role}")
