"""``tlsgate config|rules|sets|users|explain``: the access policy from the command line.

Thin: options become calls to :mod:`tlsgate.config.loader`, :mod:`tlsgate.policy.edit`
and :mod:`tlsgate.policy.access`.  Reading commands work on ``--config FILE``, else on
the store's applied configuration, else on the defaults.  Changing commands stage their
change in the configuration store; ``tlsgate apply`` makes it take effect.
"""

from __future__ import annotations

import getpass
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tlsgate.commands.common import (
    console,
    err_console,
    home_option,
    read_password,
    store_option,
)
from tlsgate.config.home import Home
from tlsgate.config.loader import check_config_file, load_config_file
from tlsgate.config.model import DEFAULT_RULE, TlsgateConfig
from tlsgate.config.toml_writer import config_to_toml
from tlsgate.errors import ConfigError, StoreError, UsageError
from tlsgate.policy import edit
from tlsgate.policy.access import explain as explain_text
from tlsgate.policy.access import facts_for_url
from tlsgate.policy.auth import hash_password
from tlsgate.policy.inspection import ConnectFacts, LearnedEntry, explain_connect

CHECK_FAILED_EXIT = 2


# -- where the configuration comes from ---------------------------------------------------


def _config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Read this tlsgate.toml instead of the store's applied configuration.",
    )(func)


class StagingStore:
    """The seam to the configuration store (:mod:`tlsgate.store`).

    ``current()`` is the configuration with the changes staged so far (what ``apply``
    would make live), ``applied()`` the live one, ``stage()`` records changed sections.
    """

    def __init__(self, store_url: str | None, home: Home) -> None:
        try:
            store_mod = importlib.import_module("tlsgate.store")
        except ImportError:
            raise StoreError(
                "the configuration store is not available in this installation",
                fix="use --config FILE for reading commands",
            ) from None
        self._mod: Any = store_mod
        self._store: Any = store_mod.open_store(store_url, home)

    def applied(self) -> TlsgateConfig:
        cfg: TlsgateConfig = self._store.applied_config()
        return cfg

    def current(self) -> TlsgateConfig:
        cfg: TlsgateConfig = self._store.staged_config()
        return cfg

    def stage(self, changes: dict[str, Any], author: str) -> None:
        ops = [self._mod.ChangeOp(op="set", path=path, value=v) for path, v in changes.items()]
        self._store.stage(ops, author=author)

    def close(self) -> None:
        close = getattr(self._store, "close", None)
        if callable(close):
            close()


def _store_available() -> bool:
    return importlib.util.find_spec("tlsgate.store") is not None


def read_config(config_file: Path | None, store_url: str | None, home: Home) -> TlsgateConfig:
    """``--config FILE``, else the store's applied configuration, else the defaults."""
    if config_file is not None:
        return load_config_file(config_file)
    if not _store_available():
        return TlsgateConfig()
    store = StagingStore(store_url, home)
    try:
        return store.applied()
    finally:
        store.close()


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _stage(
    store_url: str | None,
    home: Home,
    change: Callable[[TlsgateConfig], TlsgateConfig],
    what: str,
) -> None:
    """Apply ``change`` to the staged configuration and stage what it changed."""
    store = StagingStore(store_url, home)
    try:
        before = store.current()
        after = change(before)
        changes = edit.changed_sections(before, after)
        if not changes:
            console.print(f"nothing to stage: {what} changes nothing")
            return
        store.stage(changes, _author())
    finally:
        store.close()
    console.print(f"staged: {what} (run 'tlsgate apply' to make it take effect)")


# -- config -------------------------------------------------------------------------------


@click.group("config")
def config_group() -> None:
    """Check, import and export tlsgate.toml."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE: every problem with file, line and option path; exit 2 if any."""
    _, problems = check_config_file(file)
    if problems:
        for p in problems:
            click.echo(p, err=True)
        n = len(problems)
        click.echo(f"{file}: {n} problem{'s' if n != 1 else ''}", err=True)
        sys.exit(CHECK_FAILED_EXIT)
    click.echo(f"{file}: OK")


@config_group.command("export")
@_config_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
@home_option
@store_option
def config_export(
    config_file: Path | None, out: Path | None, home: Home, store_url: str | None
) -> None:
    """Print the configuration as TOML (the applied one, or --config FILE normalised)."""
    cfg = read_config(config_file, store_url, home)
    text = config_to_toml(cfg, header="tlsgate configuration (tlsgate config export)")
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write: {exc.strerror}") from None
    err_console.print(f"wrote {out}")


@config_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@home_option
@store_option
def config_import(file: Path, home: Home, store_url: str | None) -> None:
    """Validate FILE and stage it as the new configuration (whole sections replaced)."""
    new = load_config_file(file)
    _stage(store_url, home, lambda _old: new, f"import of {file}")


# -- rules ---------------------------------------------------------------------------------


def _print(renderable: Table) -> None:
    console.print(renderable)


def _join(items: Sequence[object]) -> str:
    return ", ".join(str(i) for i in items)


def rules_table(cfg: TlsgateConfig) -> Table:
    t = Table(title=None, show_lines=False, header_style="bold")
    for col in ("#", "Name", "Action", "Sources", "Destinations", "Protocols", "CONNECT ports"):
        t.add_column(col, overflow="fold")
    t.add_column("Methods")
    t.add_column("Users")
    t.add_column("Enabled")
    for i, r in enumerate(cfg.rules, start=1):
        t.add_row(
            str(i),
            r.name,
            r.action,
            _join(r.sources),
            _join(r.destinations),
            _join(r.protocols),
            _join(r.connect_ports) if r.action == "allow" else "any",
            _join(r.methods) or "any",
            _join(r.users) or "anyone",
            "yes" if r.enabled else "no",
        )
    t.add_row("-", DEFAULT_RULE, "deny", "any", "any", "all", "any", "any", "anyone", "yes")
    return t


@click.group("rules")
def rules_group() -> None:
    """List and change the ordered access rules (first match wins)."""


@rules_group.command("list")
@_config_option
@home_option
@store_option
def rules_list(config_file: Path | None, home: Home, store_url: str | None) -> None:
    """The access rules in order, ending with the built-in Default rule."""
    _print(rules_table(read_config(config_file, store_url, home)))


@rules_group.command("add")
@click.argument("name")
@click.option("--action", type=click.Choice(["allow", "deny"]), required=True)
@click.option(
    "--source", "sources", multiple=True, required=True, help="Network, set, IP, CIDR or any."
)
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    required=True,
    help="any, network or set name, IP, CIDR, host, *.domain or URL prefix.",
)
@click.option(
    "--protocol", "protocols", multiple=True, type=click.Choice(["http", "https"]), default=None
)
@click.option("--port", "ports", multiple=True, type=int, help="CONNECT port (default 443).")
@click.option("--method", "methods", multiple=True, help="Request method (default any).")
@click.option("--user", "users", multiple=True, help="User, user set or 'authenticated'.")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@click.option("--description", default="")
@click.option("--position", type=int, default=None, help="1-based position (default: last).")
@click.option("--before", default=None, metavar="RULE", help="Insert just above this rule.")
@home_option
@store_option
def rules_add(
    name: str,
    action: str,
    sources: tuple[str, ...],
    destinations: tuple[str, ...],
    protocols: tuple[str, ...],
    ports: tuple[int, ...],
    methods: tuple[str, ...],
    users: tuple[str, ...],
    disabled: bool,
    description: str,
    position: int | None,
    before: str | None,
    home: Home,
    store_url: str | None,
) -> None:
    """Stage a new rule NAME (last, above the Default rule, unless placed)."""
    rule: dict[str, Any] = {
        "name": name,
        "action": action,
        "sources": list(sources),
        "destinations": list(destinations),
        "methods": list(methods),
        "users": list(users),
        "enabled": not disabled,
        "description": description,
    }
    if protocols:
        rule["protocols"] = list(protocols)
    if ports:
        rule["connect_ports"] = list(ports)
    _stage(
        store_url,
        home,
        lambda c: edit.add_rule(c, rule, position=position, before=before),
        f"add rule {name!r}",
    )


@rules_group.command("remove")
@click.argument("name")
@home_option
@store_option
def rules_remove(name: str, home: Home, store_url: str | None) -> None:
    """Stage the removal of rule NAME."""
    _stage(store_url, home, lambda c: edit.remove_rule(c, name), f"remove rule {name!r}")


@rules_group.command("move")
@click.argument("name")
@click.option("--position", type=int, default=None, help="New 1-based position.")
@click.option("--before", default=None, metavar="RULE", help="Move just above this rule.")
@home_option
@store_option
def rules_move(
    name: str, position: int | None, before: str | None, home: Home, store_url: str | None
) -> None:
    """Stage moving rule NAME to --position N or --before RULE."""
    if position is None and before is None:
        raise UsageError("give --position N or --before RULE")
    _stage(
        store_url,
        home,
        lambda c: edit.move_rule(c, name, position=position, before=before),
        f"move rule {name!r}",
    )


@rules_group.command("enable")
@click.argument("name")
@home_option
@store_option
def rules_enable(name: str, home: Home, store_url: str | None) -> None:
    """Stage enabling rule NAME."""
    _stage(store_url, home, lambda c: edit.set_rule_enabled(c, name, True), f"enable {name!r}")


@rules_group.command("disable")
@click.argument("name")
@home_option
@store_option
def rules_disable(name: str, home: Home, store_url: str | None) -> None:
    """Stage disabling rule NAME (it stays in place and is skipped)."""
    _stage(store_url, home, lambda c: edit.set_rule_enabled(c, name, False), f"disable {name!r}")


# -- sets ----------------------------------------------------------------------------------


def sets_table(cfg: TlsgateConfig) -> Table:
    t = Table(header_style="bold")
    t.add_column("Kind")
    t.add_column("Name")
    t.add_column("Entries", overflow="fold")
    t.add_column("Description", overflow="fold")
    for kind, (section, field) in edit.SET_SECTIONS.items():
        for obj in getattr(cfg, section):
            t.add_row(kind, obj.name, ", ".join(getattr(obj, field)), obj.description)
    t.add_row("network", "External", "(every address in no other network)", "built in")
    return t


@click.group("sets")
def sets_group() -> None:
    """Networks, computer sets, domain name sets, URL sets and user sets."""


@sets_group.command("list")
@_config_option
@home_option
@store_option
def sets_list(config_file: Path | None, home: Home, store_url: str | None) -> None:
    """Every network and set with its entries."""
    _print(sets_table(read_config(config_file, store_url, home)))


@sets_group.command("add")
@click.argument("kind", type=click.Choice(list(edit.SET_SECTIONS)))
@click.argument("name")
@click.argument("entries", nargs=-1)
@click.option("--description", default="")
@home_option
@store_option
def sets_add(
    kind: str,
    name: str,
    entries: tuple[str, ...],
    description: str,
    home: Home,
    store_url: str | None,
) -> None:
    """Stage a new network or set: KIND NAME [ENTRY]...

    Entries: IPs and CIDRs (network, computer), host names and *.domain (domain), URL
    prefixes such as https://www.example.com/docs/ (url), user names (user).
    """
    _stage(
        store_url,
        home,
        lambda c: edit.add_set(c, kind, name, entries, description=description),
        f"add {kind} set {name!r}",
    )


@sets_group.command("remove")
@click.argument("name")
@home_option
@store_option
def sets_remove(name: str, home: Home, store_url: str | None) -> None:
    """Stage the removal of a network or set no rule uses."""
    _stage(store_url, home, lambda c: edit.remove_set(c, name), f"remove set {name!r}")


@sets_group.command("update")
@click.argument("name")
@click.option("--add", "add", multiple=True, metavar="ENTRY", help="Entry to add (repeatable).")
@click.option(
    "--remove", "remove", multiple=True, metavar="ENTRY", help="Entry to remove (repeatable)."
)
@home_option
@store_option
def sets_update(
    name: str, add: tuple[str, ...], remove: tuple[str, ...], home: Home, store_url: str | None
) -> None:
    """Stage adding or removing entries of a network or set."""
    if not add and not remove:
        raise UsageError("give --add ENTRY and/or --remove ENTRY")
    _stage(
        store_url,
        home,
        lambda c: edit.update_set(c, name, add=add, remove=remove),
        f"update set {name!r}",
    )


# -- users ---------------------------------------------------------------------------------


@click.group("users")
def users_group() -> None:
    """Proxy users (HTTP Basic on the proxy connection); passwords kept as argon2 hashes."""


@users_group.command("list")
@_config_option
@home_option
@store_option
def users_list(config_file: Path | None, home: Home, store_url: str | None) -> None:
    """User names and whether they are enabled (never the hashes)."""
    cfg = read_config(config_file, store_url, home)
    for u in cfg.users:
        click.echo(f"{u.name}{'' if u.enabled else ' (disabled)'}")


_password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


@users_group.command("add")
@click.argument("name")
@_password_stdin
@home_option
@store_option
def users_add(name: str, password_stdin: bool, home: Home, store_url: str | None) -> None:
    """Stage a new user NAME; asks for the password and keeps only its argon2 hash."""
    digest = hash_password(read_password(password_stdin))
    _stage(store_url, home, lambda c: edit.add_user(c, name, digest), f"add user {name!r}")


@users_group.command("remove")
@click.argument("name")
@home_option
@store_option
def users_remove(name: str, home: Home, store_url: str | None) -> None:
    """Stage the removal of user NAME (not while a rule or user set names it)."""
    _stage(store_url, home, lambda c: edit.remove_user(c, name), f"remove user {name!r}")


@users_group.command("passwd")
@click.argument("name")
@_password_stdin
@home_option
@store_option
def users_passwd(name: str, password_stdin: bool, home: Home, store_url: str | None) -> None:
    """Stage a new password for user NAME."""
    digest = hash_password(read_password(password_stdin))
    _stage(store_url, home, lambda c: edit.set_password(c, name, digest), f"password of {name!r}")


# -- explain -------------------------------------------------------------------------------


@click.command("explain")
@click.option("--source", required=True, metavar="IP", help="The client's address.")
@click.option("--url", required=True, help="http://… or https://… the client asks for.")
@click.option("--user", default=None, help="Authenticated as this user (default anonymous).")
@click.option("--method", default=None, help="GET by default; CONNECT for the tunnel alone.")
@_config_option
@home_option
@store_option
def explain(
    source: str,
    url: str,
    user: str | None,
    method: str | None,
    config_file: Path | None,
    home: Home,
    store_url: str | None,
) -> None:
    """Which rule decides a request, and why each earlier rule did not match."""
    facts = facts_for_url(source, url, method=method, user=user)
    cfg = read_config(config_file, store_url, home)
    click.echo(explain_text(cfg, facts))
    for f in facts:
        if f.is_connect:
            learned = None
            if config_file is None and _store_available():
                learned = _learned_entry(store_url, home, f.host, f.port)
            lines = explain_connect(
                cfg.inspection, ConnectFacts(f.source_ip, f.host, f.port), learned=learned
            )
            click.echo("\n" + "\n".join(lines))


def _learned_entry(store_url: str | None, home: Home, host: str, port: int) -> LearnedEntry | None:
    from tlsgate.store import open_store

    store = open_store(store_url, home)
    try:
        for e in store.learned():
            if (e.host, e.port) == (host, port):
                return e
    finally:
        store.close()
    return None


POLICY_COMMANDS: list[click.Command] = [
    config_group,
    rules_group,
    sets_group,
    users_group,
    explain,
]
"""The command groups of this module, for ``tlsgate.cli`` to add."""
