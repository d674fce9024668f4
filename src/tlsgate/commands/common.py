"""Options and output helpers shared by every command."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console, ConsoleDimensions

from tlsgate.config.home import Home, resolve_home
from tlsgate.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


class _Console(Console):
    """Prints values verbatim: no markup and no emoji codes are read from text (names,
    URLs and certificate fields come from clients and servers; ``:CD:`` in a fingerprint
    is an emoji code); styles are given as Text.  Into a pipe or file, tables keep whole
    values on one line (for grep and scripts), decided at each print."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(240, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = _Console(highlight=False, soft_wrap=True, emoji=False, markup=False)
err_console = _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, markup=False)


def home_option(func: F) -> F:
    """``--home DIR``: replaces the argument with a resolved :class:`Home` named ``home``."""

    @click.option(
        "--home",
        "home_dir",
        metavar="DIR",
        default=None,
        help="tlsgate's home directory (CA, store, state). Default: $TLSGATE_HOME or "
        "~/.local/share/tlsgate.",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, home_dir: str | None, **kwargs: Any) -> Any:
        return func(*args, home=resolve_home(home_dir), **kwargs)

    return wrapper  # type: ignore[return-value]


def store_option(func: F) -> F:
    """``--store URL``: the configuration store (``postgresql://…``); default: embedded SQLite."""

    @click.option(
        "--store",
        "store_url",
        metavar="URL",
        default=lambda: os.environ.get("TLSGATE_STORE"),
        help="Configuration store: postgresql://user@host:port/db, or a SQLite file path. "
        "Default: $TLSGATE_STORE, else tlsgate.db in the home directory.",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, store_url: str | None, **kwargs: Any) -> Any:
        return func(*args, store_url=store_url, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_password(password_stdin: bool) -> str:
    """A new password: the first line of stdin, or typed twice at a hidden prompt."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise UsageError("the password is empty")
    return password


__all__ = ["Home", "console", "err_console", "home_option", "read_password", "store_option"]
