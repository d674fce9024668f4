"""``tlsgate admin …``: the console's admin users and API tokens, kept in the
configuration store (every member of the store accepts them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.table import Table

from tlsgate.admin import users
from tlsgate.commands.common import (
    Home,
    console,
    err_console,
    home_option,
    read_password,
    store_option,
)
from tlsgate.commands.store import opened
from tlsgate.store import Store


@click.group("admin")
def admin() -> None:
    """The admin console's users and API tokens (the console runs with 'tlsgate serve')."""


@contextmanager
def _opened(store_url: str | None, home: Home) -> Iterator[Store]:
    with opened(store_url, home.ensure()) as store:
        imported = users.import_users_file(home, store)
        if imported is not None:
            err_console.print(
                f"imported {len(imported)} admin user(s) from {users.users_file(home)} into "
                f"the store {store.location} (the file is no longer read)"
            )
        yield store


@admin.command("add-user")
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@home_option
@store_option
def add_user_cmd(name: str, password_stdin: bool, home: Home, store_url: str | None) -> None:
    """Create admin NAME (or set a new password); keeps only the argon2 hash."""
    password = read_password(password_stdin)
    with _opened(store_url, home) as store:
        new = users.add_user(store, name, password)
        where = store.location
    verb = "created" if new else "changed the password of"
    console.print(f"{verb} admin {name!r} in the store {where}; log in to the console with it")


@admin.command("remove-user")
@click.argument("name")
@home_option
@store_option
def remove_user_cmd(name: str, home: Home, store_url: str | None) -> None:
    """Remove admin NAME; its console sessions end at their next request."""
    with _opened(store_url, home) as store:
        users.remove_user(store, name)
    console.print(f"removed admin {name!r}")


@admin.command("add-token")
@click.argument("name")
@home_option
@store_option
def add_token_cmd(name: str, home: Home, store_url: str | None) -> None:
    """Create API token NAME and print it (once: only its SHA-256 is kept)."""
    with _opened(store_url, home) as store:
        token = users.add_token(store, name)
    # The token alone on stdout, so TOKEN=$(tlsgate admin add-token ci) works.
    click.echo(token)
    err_console.print(
        f"API token {name!r} created; it is shown only now. Send it as "
        "'Authorization: Bearer TOKEN' to the admin API."
    )


@admin.command("remove-token")
@click.argument("name")
@home_option
@store_option
def remove_token_cmd(name: str, home: Home, store_url: str | None) -> None:
    """Remove API token NAME; requests with it are refused at once."""
    with _opened(store_url, home) as store:
        users.remove_token(store, name)
    console.print(f"removed API token {name!r}")


@admin.command("list")
@home_option
@store_option
def list_cmd(home: Home, store_url: str | None) -> None:
    """List the admin users and API tokens (never their secrets)."""
    with _opened(store_url, home) as store:
        creds = store.admin_credentials()
    if not creds:
        console.print(
            f"no admin users or API tokens; create one with '{users.ADD_USER_HINT}' "
            f"or '{users.ADD_TOKEN_HINT}'"
        )
        return
    table = Table()
    for col in ("Kind", "Name", "Created (UTC)"):
        table.add_column(col)
    for c in creds:
        kind = "user" if c.kind == "user" else "API token"
        table.add_row(kind, c.name, f"{c.created_at:%Y-%m-%d %H:%M:%S}")
    console.print(table)
