"""``tlsgate admin add-user NAME``: create (or reset) an admin of the console."""

from __future__ import annotations

import sys

import click

from tlsgate.admin.users import add_user, users_file
from tlsgate.commands.common import Home, console, home_option
from tlsgate.errors import UsageError


@click.group("admin")
def admin() -> None:
    """The admin console's users (the console runs with 'tlsgate serve --admin')."""


@admin.command("add-user")
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@home_option
def add_user_cmd(name: str, password_stdin: bool, home: Home) -> None:
    """Create admin NAME (or set a new password); keeps only the argon2 hash."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise UsageError("the password is empty")
    new = add_user(home, name, password)
    verb = "created" if new else "changed the password of"
    console.print(f"{verb} admin {name!r} in {users_file(home)}; log in to the console with it")
